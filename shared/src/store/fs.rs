//! Archives in a local directory: the embedded default for one machine.

use std::{io::ErrorKind, path::PathBuf};

use bytes::Bytes;

use super::{StoreError, check_key};

pub struct FsArchiveStore {
    root: PathBuf,
}

fn other(e: std::io::Error) -> StoreError {
    StoreError::Other(e.into())
}

impl FsArchiveStore {
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Written to a temporary file and renamed, so a reader never sees half an archive.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let parent = path
            .parent()
            .ok_or_else(|| StoreError::InvalidKey(key.into()))?;
        tokio::fs::create_dir_all(parent).await.map_err(other)?;
        let temporary = parent.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&temporary, &bytes).await.map_err(other)?;
        tokio::fs::rename(&temporary, &path).await.map_err(other)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(data) => Ok(data.into()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(key.into())),
            Err(e) => Err(other(e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(other(e)),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        tokio::fs::try_exists(self.path(key)?).await.map_err(other)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(other(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(other)? {
                let path = entry.path();
                if entry.file_type().await.map_err(other)?.is_dir() {
                    pending.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = relative.to_string_lossy().into_owned();
                let hidden = key
                    .rsplit('/')
                    .next()
                    .is_some_and(|name| name.starts_with('.'));
                if !hidden && key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}
