//! Where function archives live: S3 (any S3-compatible server) or a local directory (the
//! embedded default). Keys look like `functions/<function-uuid>/v<version>.tar.gz` (seed 000).
//!
//! An enum rather than a trait object: there are exactly two stores, and inherent async fns keep
//! callers free of boxing.

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
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// Network failure or a 5xx: worth retrying.
    #[error("object store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("object store error: {0:#}")]
    Other(anyhow::Error),
}

pub fn archive_key(function_id: Uuid, version: i32) -> String {
    format!("functions/{function_id}/v{version}.tar.gz")
}

pub enum ArchiveStore {
    Fs(FsArchiveStore),
    S3(S3ArchiveStore),
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

    pub async fn from_config(config: &crate::config::StoreConfig) -> anyhow::Result<Self> {
        Self::from_url(&config.url, config.s3_endpoint.as_deref()).await
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        match self {
            Self::Fs(s) => s.put(key, bytes).await,
            Self::S3(s) => s.put(key, bytes).await,
        }
    }

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

/// Keys are relative, `/`-separated, without empty, `.` or `..` parts, so no key escapes a root.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
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
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a/"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_keys_follow_the_seed() {
        let id = Uuid::nil();
        assert_eq!(archive_key(id, 3), format!("functions/{id}/v3.tar.gz"));
    }
}
