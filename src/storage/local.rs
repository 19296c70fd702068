//! Backups in a local folder (by default `<data dir>/backups`).
//!
//! Publishing uses `link(2)`, which fails when the name exists: a create-if-absent that is
//! atomic, so two writers can never overwrite each other and a reader never sees half a
//! file. Names starting with `.` are staging files of this backend and never listed.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};

use super::{BackupMeta, BackupReader, BackupStorage, StorageError, StorageResult};
use crate::model::names::BackupKey;

mod chunks;

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Uses (and creates if needed) the folder `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<LocalStorage> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &BackupKey) -> PathBuf {
        // BackupKey has no separators and no leading dot, so this stays inside `root`.
        self.root.join(key.as_str())
    }

    fn meta(key: BackupKey, md: &std::fs::Metadata) -> BackupMeta {
        BackupMeta {
            key,
            size: md.len(),
            modified: md.modified().unwrap_or(std::time::UNIX_EPOCH),
        }
    }

    fn list_blocking(root: &Path) -> StorageResult<Vec<BackupMeta>> {
        let entries = std::fs::read_dir(root).map_err(StorageError::Unavailable)?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(key) = entry.file_name().to_str().and_then(BackupKey::parse) else {
                continue; // staging files and anything that is not a backup
            };
            // symlink_metadata: a link planted in the folder is not followed.
            match entry.path().symlink_metadata() {
                Ok(md) if md.is_file() => out.push(Self::meta(key, &md)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn publish_blocking(root: &Path, target: &Path, local: &Path) -> StorageResult<()> {
        match std::fs::hard_link(local, target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists)
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                // Another filesystem: copy into a staging name beside the target, then link.
                let staging = root.join(format!(".staging-{}", crate::util::random_suffix()));
                let result = copy_synced(local, &staging).and_then(|_| std::fs::hard_link(&staging, target));
                let _ = std::fs::remove_file(&staging);
                match result {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(StorageError::AlreadyExists)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        crate::util::sync_dir(root)?;
        std::fs::remove_file(local)?;
        Ok(())
    }
}

fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_all()
}

fn not_found_or(e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Io(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
}

impl BackupStorage for LocalStorage {
    fn change_stamp(&self) -> Option<(i64, i64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        // One stat: adding, removing or renaming an entry updates the folder's mtime/ctime.
        let md = std::fs::metadata(&self.root).ok()?;
        Some((md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec()))
    }

    fn list(&self) -> BoxFuture<'_, StorageResult<Vec<BackupMeta>>> {
        let root = self.root.clone();
        blocking(move || Self::list_blocking(&root)).boxed()
    }

    fn head<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<BackupMeta>> {
        async move {
            let md = tokio::fs::symlink_metadata(self.path(key)).await.map_err(not_found_or)?;
            if !md.is_file() {
                return Err(StorageError::NotFound);
            }
            Ok(Self::meta(key.clone(), &md))
        }
        .boxed()
    }

    fn open<'a>(
        &'a self,
        key: &'a BackupKey,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, StorageResult<BackupReader>> {
        async move {
            let path = self.path(key);
            let (file, md) = blocking(move || {
                let file = std::fs::File::open(path).map_err(not_found_or)?;
                let md = file.metadata()?;
                // Read ahead further for a file read from start to end (no-op if cached).
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
                Ok((file, md))
            })
            .await?;
            if !md.is_file() {
                return Err(StorageError::NotFound);
            }
            let meta = Self::meta(key.clone(), &md);
            let range = range.unwrap_or(0..meta.size);
            let body = chunks::FileChunks::new(file, range.clone()).boxed();
            Ok(BackupReader { meta, range, body })
        }
        .boxed()
    }

    fn put_file<'a>(
        &'a self,
        key: &'a BackupKey,
        local: &'a Path,
    ) -> BoxFuture<'a, StorageResult<()>> {
        let (root, target, local) = (self.root.clone(), self.path(key), local.to_path_buf());
        blocking(move || Self::publish_blocking(&root, &target, &local)).boxed()
    }

    fn delete<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<()>> {
        async move {
            tokio::fs::remove_file(self.path(key)).await.map_err(not_found_or)?;
            Ok(())
        }
        .boxed()
    }

    fn fetch_copies(&self, dest_dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        // A hard link needs one file system; failing that, `fetch_to_file` copies.
        match (std::fs::metadata(&self.root), std::fs::metadata(dest_dir)) {
            (Ok(root), Ok(dest)) => root.dev() != dest.dev(),
            _ => true,
        }
    }

    fn fetch_to_file<'a>(
        &'a self,
        key: &'a BackupKey,
        dest: &'a Path,
    ) -> BoxFuture<'a, StorageResult<()>> {
        let (src, dest) = (self.path(key), dest.to_path_buf());
        blocking(move || {
            match std::fs::hard_link(&src, &dest) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound),
                // Another filesystem, or links not allowed: a plain copy does.
                Err(_) => copy_synced(&src, &dest).map_err(not_found_or),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(s: &str) -> BackupKey {
        BackupKey::parse(s).unwrap()
    }

    #[tokio::test]
    async fn put_list_open_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path().join("backups")).unwrap();
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"0123456789").unwrap();
        store.put_file(&key("a.zip"), &staged).await.unwrap();
        assert!(!staged.exists(), "put_file consumes the local file");

        std::fs::write(&staged, b"other").unwrap();
        assert!(matches!(
            store.put_file(&key("a.zip"), &staged).await,
            Err(StorageError::AlreadyExists)
        ));
        assert!(staged.exists(), "a refused put leaves the local file");

        // Staging files and non-backups are not listed.
        std::fs::write(store.root().join(".staging-x"), b"").unwrap();
        std::fs::write(store.root().join("notes.txt"), b"").unwrap();
        let list = store.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].key, key("a.zip"));
        assert_eq!(list[0].size, 10);

        let r = store.open(&key("a.zip"), Some(2..5)).await.unwrap();
        let chunks: Vec<Bytes> = r.body.map(Result::unwrap).collect().await;
        assert_eq!(chunks.concat(), b"234");

        store.delete(&key("a.zip")).await.unwrap();
        assert!(matches!(store.delete(&key("a.zip")).await, Err(StorageError::NotFound)));
        assert!(matches!(store.head(&key("a.zip")).await, Err(StorageError::NotFound)));
    }

    #[tokio::test]
    async fn a_missing_root_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path().join("backups")).unwrap();
        std::fs::remove_dir(store.root()).unwrap();
        assert!(matches!(store.list().await, Err(StorageError::Unavailable(_))));
    }
}
