//! Where function archives live: S3 (any S3-compatible server) or a local directory (the
//! embedded default). Keys look like `functions/<function-uuid>/v<version>.tar.gz` (seed 000).
//!
//! An enum rather than a trait object: there are exactly two stores, and inherent async fns keep
//! callers free of boxing (`Arc<ArchiveStore>` is shared the way `Arc<dyn _>` would be).
//!
//! Both stores accept the same keys (see `check_key`) and answer the same way: `NotFound` only
//! from `get`, deletes of missing keys succeed, `list` is sorted.

mod fs;
mod s3;

use bytes::Bytes;
use uuid::Uuid;

pub use fs::FsArchiveStore;
pub use s3::S3ArchiveStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no object at {0}")]
    NotFound(String),
    /// A programming error, never retried: keys come from [`archive_key`].
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// Network failure or a 5xx: worth retrying.
    #[error("object store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("object store error: {0:#}")]
    Other(anyhow::Error),
}

/// Where version `version` of a function's archive is stored.
pub fn archive_key(function_id: Uuid, version: i32) -> String {
    format!("{}v{version}.tar.gz", function_prefix(function_id))
}

/// The prefix under which every archive of a function lives.
pub fn function_prefix(function_id: Uuid) -> String {
    format!("functions/{function_id}/")
}

pub enum ArchiveStore {
    Fs(FsArchiveStore),
    S3(S3ArchiveStore),
}

impl std::fmt::Debug for ArchiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fs(s) => f.debug_tuple("Fs").field(&s.root()).finish(),
            Self::S3(s) => f.debug_tuple("S3").field(&s.bucket()).finish(),
        }
    }
}

impl ArchiveStore {
    /// `file:///abs/dir` or `s3://bucket`; `s3_endpoint` for servers other than AWS.
    pub async fn from_url(url: &str, s3_endpoint: Option<&str>) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("file://") {
            anyhow::ensure!(
                path.starts_with('/'),
                "{url}: file:// needs an absolute path"
            );
            return Ok(Self::Fs(FsArchiveStore::new(path.into())?));
        }
        if let Some(bucket) = url.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            anyhow::ensure!(
                !bucket.is_empty() && !bucket.contains('/'),
                "{url}: expected s3://bucket"
            );
            return Ok(Self::S3(S3ArchiveStore::new(bucket, s3_endpoint).await));
        }
        anyhow::bail!("{url}: the archive store must be file:///dir or s3://bucket")
    }

    /// The store the binaries are configured with.
    pub async fn from_config(config: &crate::config::StoreConfig) -> anyhow::Result<Self> {
        Self::from_url(&config.url, config.s3_endpoint.as_deref()).await
    }

    /// Stores `bytes` at `key`, replacing any previous object; readers see the old or the new
    /// object, never a partial one.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        match self {
            Self::Fs(s) => s.put(key, bytes).await,
            Self::S3(s) => s.put(key, bytes).await,
        }
    }

    /// [`Self::put`] of the file at `source`, streamed rather than loaded.
    pub async fn put_file(&self, key: &str, source: &std::path::Path) -> Result<(), StoreError> {
        match self {
            Self::Fs(s) => s.put_file(key, source).await,
            Self::S3(s) => s.put_file(key, source).await,
        }
    }

    /// The object at `key`; [`StoreError::NotFound`] if there is none.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        match self {
            Self::Fs(s) => s.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }

    /// Deleting a missing key succeeds: deletes are retried after crashes.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Fs(s) => s.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }

    /// Whether an object is stored at `key` (a mere prefix of other keys is not one).
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Self::Fs(s) => s.exists(key).await,
            Self::S3(s) => s.exists(key).await,
        }
    }

    /// Keys starting with `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Fs(s) => s.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }
}

/// Keys are relative and `/`-separated, with no empty part, no part starting with `.` (so no `.`
/// or `..`, and no clash with the filesystem store's temporary files) and no NUL: no key escapes
/// a root, and every key means the same object in both stores.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && !key.contains('\0')
        && key
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        assert!(check_key("functions/a/v1.tar.gz").is_ok());
        assert!(check_key("a").is_ok());
        for bad in [
            "",
            "/abs",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a/",
            "a/.hidden",
            ".x.tmp",
            "a\0b",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_keys_follow_the_seed() {
        let id = Uuid::nil();
        assert_eq!(archive_key(id, 3), format!("functions/{id}/v3.tar.gz"));
    }
}
