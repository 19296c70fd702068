//! The backups storage: where finished backup archives live, behind one interface.
//!
//! The service only ever talks to [`BackupStorage`]; `local` (a folder, by default
//! `<data dir>/backups`) is the embedded default, and other backends plug in here without
//! the service or the HTTP layer changing. A backend must never show a partial archive:
//! `put_file` publishes a complete file at once, or not at all.

mod buffers;
pub mod local;
pub mod s3;

use std::ops::Range;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::model::names::BackupKey;

pub use local::LocalStorage;

/// One stored backup as the list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupMeta {
    pub key: BackupKey,
    pub size: u64,
    pub modified: SystemTime,
}

/// A byte range of a stored archive, ready to stream.
pub struct BackupReader {
    pub meta: BackupMeta,
    /// The bytes served: the whole file, or the requested range.
    pub range: Range<u64>,
    pub body: ByteStream,
}

/// An archive's bytes in chunks, as the storage hands them over (no copy on the way out).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("backup not found")]
    NotFound,
    #[error("a backup with this key already exists")]
    AlreadyExists,
    /// Another server is working on this key (a lease of a shared remote store).
    #[error("another server is working on this backup")]
    Busy,
    #[error("backups storage unavailable: {0}")]
    Unavailable(#[source] std::io::Error),
    #[error("backups storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A backup being written into the store in sequence (from a blocking thread, through
/// `Write`). Nothing is visible under its key before `finish`; an upload dropped unfinished
/// publishes nothing.
pub trait Upload: std::io::Write + Send {
    /// Publishes what was written, unless the key exists meanwhile (`AlreadyExists`).
    fn finish(self: Box<Self>) -> BoxFuture<'static, StorageResult<()>>;
    /// Gives the upload up; returns the store's error if that is why writing failed.
    fn abort(self: Box<Self>) -> BoxFuture<'static, Option<StorageError>>;
}

pub trait BackupStorage: Send + Sync {
    /// Every complete backup, in no particular order.
    fn list(&self) -> BoxFuture<'_, StorageResult<Vec<BackupMeta>>>;

    /// A cheap value that changes whenever the set of stored backups may have changed
    /// behind the server's back (for a folder: its modification and change times). `None`
    /// when the backend has no such thing: listings are then cached only briefly.
    fn change_stamp(&self) -> Option<(i64, i64, i64, i64)> {
        None
    }

    /// `NotFound` when there is no such backup.
    fn head<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<BackupMeta>>;

    /// Opens the archive, or the part of it in `range` (already clamped by the caller).
    fn open<'a>(
        &'a self,
        key: &'a BackupKey,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, StorageResult<BackupReader>>;

    /// Publishes the complete file at `local` (synced by the caller) under `key`, consuming
    /// it, unless the key exists already (`AlreadyExists`, and `local` is left as it was).
    fn put_file<'a>(&'a self, key: &'a BackupKey, local: &'a Path)
        -> BoxFuture<'a, StorageResult<()>>;

    /// Starts a new backup under `key` written straight into the store, for backends where
    /// that beats `put_file` of a finished local file (remote stores: upload while the
    /// archive is made). `None`: write a local file and `put_file` it.
    fn start_upload<'a>(&'a self, _key: &'a BackupKey) -> BoxFuture<'a, StorageResult<Option<Box<dyn Upload>>>> {
        Box::pin(async { Ok(None) })
    }

    fn delete<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<()>>;

    /// Until the clean-up the backend started in the background has ended (the abort of an
    /// upload whose request was dropped), so that a server that stops leaves none half-done.
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Makes the archive available as a local file at `dest` (for restore), as cheaply as the
    /// backend can: a hard link for the local folder, a download for remote stores.
    fn fetch_to_file<'a>(&'a self, key: &'a BackupKey, dest: &'a Path)
        -> BoxFuture<'a, StorageResult<()>>;

    /// Whether `fetch_to_file` into the folder `dest_dir` copies the archive's bytes (a
    /// download, or a copy to another file system) rather than linking them: a copy needs
    /// room there.
    fn fetch_copies(&self, _dest_dir: &Path) -> bool {
        true
    }
}
