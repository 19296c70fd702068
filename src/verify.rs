//! Whether a backup would restore: the checks a restore makes before its 204, in one
//! function that the restore and `pb-backups backups verify` both call, and the fetch
//! before them, which refuses a backup that could not fit before it is downloaded.
//!
//! Every entry is decoded (CRC-32 and sizes against the central directory, safe names, no
//! links, within the limits), `data.db` must open as SQLite and pass `integrity_check`, and
//! it must hold a usable superuser collection with an account (R31).

use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::accounts::{self, AccountsError};
use crate::archive::{self, ArchiveError, ArchiveLimits, ArchiveSource, ArchiveSummary, Output};
use crate::model::names::BackupKey;
use crate::progress::ProgressCounter;
use crate::sqlite::{self, Access};
use crate::storage::{BackupStorage, ByteStream, StorageError};
use crate::util::TempPath;

/// Room left free on the disk a check writes to: an archive that would leave less is refused.
pub const FREE_SPACE_MARGIN: u64 = 64 << 20;

/// Why an archive would not restore.
#[derive(Debug, thiserror::Error)]
pub enum Unrestorable {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Its text already names data.db (or the accounts database) as the problem.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
}

/// Why a stored backup could not be fetched for its checks.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Refused before the download: it could not fit, or its directory is unreadable.
    #[error(transparent)]
    Unrestorable(#[from] Unrestorable),
}

/// Checks the archive at `zip` and extracts `output` of it into `dest` (which must not
/// exist yet): the restore's checks, every entry decoded whatever `output` keeps; the
/// decoding counts into `progress`. On error `dest` may hold part of the archive; the
/// caller removes it.
pub fn check_and_extract(
    zip: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
    output: Output,
    progress: &ProgressCounter,
) -> Result<ArchiveSummary, Unrestorable> {
    std::fs::create_dir(dest).map_err(ArchiveError::Io)?;
    let summary = archive::extract_restorable(zip, dest, limits, output, progress)?;
    let data_db = dest.join(crate::layout::DATA_DB);
    integrity_check(&data_db)?;
    accounts::check_usable(&data_db)?;
    Ok(summary)
}

/// SQLite's own consistency check of every page, index and constraint, bounded in time by
/// the file's size.
fn integrity_check(path: &Path) -> Result<(), ArchiveError> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let budget = sqlite::integrity_check_budget(size);
    let corrupt = |e: rusqlite::Error| {
        ArchiveError::DataDbCorrupt(if sqlite::is_interrupted(&e) {
            format!("it did not finish within its {} s bound", budget.as_secs())
        } else {
            e.to_string()
        })
    };
    let (conn, _deadline) = sqlite::open(path, Access::ReadOnly, budget).map_err(corrupt)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(corrupt)?;
    let problems: Vec<String> =
        stmt.query_map([], |r| r.get(0)).map_err(corrupt)?.collect::<Result<_, _>>().map_err(corrupt)?;
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(ArchiveError::DataDbCorrupt(problems.join("; "))),
    }
}

/// Makes the stored backup `key` (of `size` bytes) a local file at `zip`, and answers the
/// limits to check it with: `limits`, with what may be written capped by the room then left
/// on `zip`'s disk (less [`FREE_SPACE_MARGIN`]).
///
/// When the storage fetches by copying (a download, or a copy to another file system), the
/// archive's central directory is read from the storage first, in a few ranged reads, and
/// the backup is refused before the download when its size plus what `output` writes of it
/// would not fit.
pub async fn fetch(
    storage: &Arc<dyn BackupStorage>,
    key: &BackupKey,
    size: u64,
    zip: &Path,
    limits: &ArchiveLimits,
    output: Output,
) -> Result<ArchiveLimits, FetchError> {
    let scratch = zip.parent().unwrap_or(Path::new("."));
    if storage.fetch_copies(scratch) {
        let source = StoredArchive {
            storage: storage.clone(),
            key: key.clone(),
            size,
            runtime: tokio::runtime::Handle::current(),
        };
        let limits = *limits;
        let declared = tokio::task::spawn_blocking(move || archive::read_declared(&source, &limits))
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?
            .map_err(|e| match e {
                ArchiveError::Io(e) => FetchError::Storage(storage_error(e)),
                e => FetchError::Unrestorable(e.into()),
            })?;
        let needed = size.saturating_add(declared.written(output));
        match crate::util::free_space(scratch) {
            Ok(free) if needed > free.saturating_sub(FREE_SPACE_MARGIN) => {
                tracing::warn!(key = %key, needed, free, "the backup cannot fit on the disk; not fetched");
                return Err(Unrestorable::Archive(ArchiveError::TooLarge).into());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "free space unknown; fetching anyway"),
        }
    }
    storage.fetch_to_file(key, zip).await?;
    Ok(within_free_space(limits, scratch))
}

/// `limits` with what may be written capped by the free space of `dir`'s disk, less the
/// margin.
fn within_free_space(limits: &ArchiveLimits, dir: &Path) -> ArchiveLimits {
    let mut limits = *limits;
    match crate::util::free_space(dir) {
        Ok(free) => limits.max_written = limits.max_written.min(free.saturating_sub(FREE_SPACE_MARGIN)),
        Err(e) => tracing::warn!(error = %e, "free space unknown; using the configured limits"),
    }
    limits
}

/// A stored backup read in ranges through its storage, from a blocking thread (each read
/// waits on the runtime): of it, `read_declared` reads the end and the central directory.
struct StoredArchive {
    storage: Arc<dyn BackupStorage>,
    key: BackupKey,
    size: u64,
    runtime: tokio::runtime::Handle,
}

impl ArchiveSource for StoredArchive {
    fn len(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.read_range(at..at.saturating_add(buf.len() as u64))?.read_exact(buf)
    }

    fn read_range(&self, range: Range<u64>) -> io::Result<Box<dyn Read + '_>> {
        if range.end > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let reader = self.runtime.block_on(self.storage.open(&self.key, Some(range))).map_err(io::Error::other)?;
        Ok(Box::new(StreamRead { body: reader.body, chunk: Bytes::new(), runtime: &self.runtime }))
    }
}

/// A storage's byte stream read from a blocking thread.
struct StreamRead<'a> {
    body: ByteStream,
    chunk: Bytes,
    runtime: &'a tokio::runtime::Handle,
}

impl Read for StreamRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.body.next()) {
                Some(chunk) => self.chunk = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// The storage's own error back out of the I/O error it travelled in.
fn storage_error(e: io::Error) -> StorageError {
    if !e.get_ref().is_some_and(|inner| inner.is::<StorageError>()) {
        return StorageError::Unavailable(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<StorageError>()) {
        Some(Ok(storage)) => *storage,
        _ => StorageError::Unavailable(kind.into()),
    }
}

/// What a verify of one stored backup found.
#[derive(Debug)]
pub enum Verdict {
    Good { size: u64, summary: ArchiveSummary },
    Bad(Unrestorable),
    /// No backup with this key (the API's 404).
    Missing,
}

/// Verifies the stored backup `key`: fetched into `temp` (a folder of our own) and checked
/// as a restore would, every entry decoded, with only `data.db` written there (for SQLite's
/// checks), then removed. Read-only for the storage and the data dir, so it may run beside
/// a server. Storage failures are errors, not verdicts.
pub async fn verify_stored(
    storage: &Arc<dyn BackupStorage>,
    key: &BackupKey,
    temp: &Path,
    limits: &ArchiveLimits,
) -> Result<Verdict, StorageError> {
    let size = match storage.head(key).await {
        Ok(meta) => meta.size,
        Err(StorageError::NotFound) => return Ok(Verdict::Missing),
        Err(e) => return Err(e),
    };
    let zip = TempPath::new_in(temp, "verify", ".zip");
    let limits = match fetch(storage, key, size, zip.path(), limits, Output::DataDbOnly).await {
        Ok(limits) => limits,
        Err(FetchError::Storage(StorageError::NotFound)) => return Ok(Verdict::Missing),
        Err(FetchError::Storage(e)) => return Err(e),
        Err(FetchError::Unrestorable(e)) => return Ok(Verdict::Bad(e)),
    };
    let extracted = TempPath::new_in(temp, "verify", "");
    let (src, dest) = (zip.path().to_path_buf(), extracted.path().to_path_buf());
    let checked = tokio::task::spawn_blocking(move || {
        check_and_extract(&src, &dest, &limits, Output::DataDbOnly, &ProgressCounter::default())
    })
    .await
    .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
    Ok(match checked {
        Ok(summary) => Verdict::Good { size, summary },
        Err(e) => Verdict::Bad(e),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use futures_util::FutureExt;

    use super::*;
    use crate::storage::{BackupMeta, BackupReader, LocalStorage, StorageResult};

    /// A local folder that fetches by copying, as a remote store does, and counts what is
    /// read from it: bytes served through ranged reads, and whole fetches.
    struct CopyingStore {
        inner: LocalStorage,
        served: AtomicU64,
        fetches: AtomicUsize,
    }

    impl BackupStorage for CopyingStore {
        fn list(&self) -> BoxFuture<'_, StorageResult<Vec<BackupMeta>>> {
            self.inner.list()
        }
        fn head<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<BackupMeta>> {
            self.inner.head(key)
        }
        fn open<'a>(&'a self, key: &'a BackupKey, range: Option<Range<u64>>) -> BoxFuture<'a, StorageResult<BackupReader>> {
            let len = range.as_ref().map(|r| r.end - r.start);
            async move {
                let reader = self.inner.open(key, range).await?;
                self.served.fetch_add(len.unwrap_or(reader.meta.size), Ordering::Relaxed);
                Ok(reader)
            }
            .boxed()
        }
        fn put_file<'a>(&'a self, key: &'a BackupKey, local: &'a Path) -> BoxFuture<'a, StorageResult<()>> {
            self.inner.put_file(key, local)
        }
        fn delete<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<()>> {
            self.inner.delete(key)
        }
        fn fetch_to_file<'a>(&'a self, key: &'a BackupKey, dest: &'a Path) -> BoxFuture<'a, StorageResult<()>> {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            self.inner.fetch_to_file(key, dest)
        }
    }

    /// A store holding `zip` as `k.zip`, and a scratch folder.
    fn store_with(zip: &[u8]) -> (tempfile::TempDir, Arc<CopyingStore>, BackupKey) {
        let tmp = tempfile::tempdir().unwrap();
        let inner = LocalStorage::open(tmp.path().join("store")).unwrap();
        std::fs::write(inner.root().join("k.zip"), zip).unwrap();
        std::fs::create_dir(tmp.path().join("scratch")).unwrap();
        let store = Arc::new(CopyingStore { inner, served: AtomicU64::new(0), fetches: AtomicUsize::new(0) });
        (tmp, store, BackupKey::parse("k.zip").unwrap())
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// An archive whose only entry's zip64 field declares `size` uncompressed bytes: its
    /// data need not exist for the directory to say so.
    fn declaring(size: u64) -> Vec<u8> {
        let mut bytes = zip_of(&[("data.db", b"x")]);
        let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        let end = bytes.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
        let mut record = bytes[central..end].to_vec();
        record[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let name_len = u16::from_le_bytes([record[28], record[29]]) as usize;
        let mut extra = vec![1, 0, 8, 0];
        extra.extend_from_slice(&size.to_le_bytes());
        record[30..32].copy_from_slice(&(extra.len() as u16).to_le_bytes());
        record.splice(46 + name_len..46 + name_len, extra);
        let mut eocd = bytes[end..].to_vec();
        eocd[12..16].copy_from_slice(&(record.len() as u32).to_le_bytes());
        bytes.truncate(central);
        bytes.extend(record);
        bytes.extend(eocd);
        bytes
    }

    fn fetch_blocking(store: &Arc<CopyingStore>, key: &BackupKey, zip: &Path, limits: &ArchiveLimits, output: Output) -> Result<ArchiveLimits, FetchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            let storage: Arc<dyn BackupStorage> = store.clone();
            let size = storage.head(key).await.unwrap().size;
            fetch(&storage, key, size, zip, limits, output).await
        })
    }

    /// More than any disk here holds, declared by a 200-byte archive: refused from its
    /// central directory, before the download, for a restore and for a verify alike.
    #[test]
    fn a_backup_that_cannot_fit_is_refused_before_it_is_fetched() {
        let (tmp, store, key) = store_with(&declaring(1 << 60));
        let zip = tmp.path().join("scratch/k.zip");
        let limits = ArchiveLimits { max_total_size: u64::MAX, ..ArchiveLimits::default() };
        for output in [Output::Everything, Output::DataDbOnly] {
            let result = fetch_blocking(&store, &key, &zip, &limits, output);
            assert!(
                matches!(result, Err(FetchError::Unrestorable(Unrestorable::Archive(ArchiveError::TooLarge)))),
                "{output:?}: {result:?}"
            );
        }
        assert_eq!(store.fetches.load(Ordering::Relaxed), 0);
        assert!(!zip.exists());
        // Within the configured limit, it is that limit that refuses it.
        let result = fetch_blocking(&store, &key, &zip, &ArchiveLimits::default(), Output::Everything);
        assert!(matches!(result, Err(FetchError::Unrestorable(Unrestorable::Archive(ArchiveError::TooLarge)))), "{result:?}");
        assert_eq!(store.fetches.load(Ordering::Relaxed), 0);
    }

    /// A backup that fits is fetched whole after a look at its directory alone; the limits
    /// answered cap what may be written by the room left.
    #[test]
    fn a_backup_that_fits_is_fetched_after_reading_its_directory_only() {
        let big = vec![7u8; 4 << 20];
        let bytes = zip_of(&[("data.db", b"SQLite format 3\0"), ("storage/big.bin", &big)]);
        let (tmp, store, key) = store_with(&bytes);
        let zip = tmp.path().join("scratch/k.zip");
        let limits = fetch_blocking(&store, &key, &zip, &ArchiveLimits::default(), Output::Everything).unwrap();
        assert_eq!(store.fetches.load(Ordering::Relaxed), 1);
        assert_eq!(std::fs::read(&zip).unwrap(), bytes);
        let served = store.served.load(Ordering::Relaxed);
        assert!(served > 0 && served < 128 * 1024, "read {served} bytes before fetching");
        // Capped by the room left (not compared with a second reading: the machine's other
        // work moves it meanwhile).
        let disk = rustix::fs::statvfs(tmp.path()).unwrap();
        assert!(limits.max_written < disk.f_blocks * disk.f_frsize, "{limits:?}");
        assert_eq!(limits.max_total_size, ArchiveLimits::default().max_total_size);
    }
}
