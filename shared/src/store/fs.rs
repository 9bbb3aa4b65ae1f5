//! Archives in a local directory: the embedded default for one machine.

use std::{
    io::{ErrorKind, Write as _},
    path::{Path, PathBuf},
};

use bytes::Bytes;

use super::{StoreError, check_key};

pub struct FsArchiveStore {
    root: PathBuf,
}

fn other(e: std::io::Error) -> StoreError {
    StoreError::Other(e.into())
}

/// Writes the object with `fill` to a temporary file next to `path`, syncs it and renames it into
/// place, so a reader (or a crash) never leaves half an archive under a key.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a key always has a parent"))?;
    std::fs::create_dir_all(parent)?;
    // A leading dot: keys cannot have one, so this never collides with a key nor gets listed.
    let temporary = parent.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::File::create_new(&temporary)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    // The rename is durable only once the directory is.
    std::fs::File::open(parent)?.sync_all()
}

impl FsArchiveStore {
    /// Creates `root` if needed.
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || write_atomically(&path, |file| file.write_all(&bytes)))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
            .map_err(other)
    }

    pub async fn put_file(&self, key: &str, source: &Path) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let source = source.to_owned();
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, |file| {
                std::io::copy(&mut std::fs::File::open(&source)?, file).map(drop)
            })
        })
        .await
        .map_err(|e| StoreError::Other(e.into()))?
        .map_err(other)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(data) => Ok(data.into()),
            // A directory is a prefix of other keys, not an object (as in S3).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {
                Err(StoreError::NotFound(key.into()))
            }
            Err(e) => Err(other(e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) => {
                tracing::debug!(key, error = %e, "delete of a key that is only a prefix: nothing to do");
                Ok(())
            }
            Err(e) => Err(other(e)),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(metadata) => Ok(metadata.is_file()),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(e) => Err(other(e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Start from the deepest directory the prefix names rather than walking the whole root.
        let start = match prefix.rsplit_once('/') {
            None => self.root.clone(),
            Some((dir, _)) if check_key(dir).is_ok() => self.root.join(dir),
            // No valid key can start with this prefix.
            Some(_) => return Ok(Vec::new()),
        };
        let mut keys = Vec::new();
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => return Err(other(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(other)? {
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                if entry.file_type().await.map_err(other)?.is_dir() {
                    pending.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = relative.to_string_lossy().into_owned();
                if key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}
