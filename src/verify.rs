//! Whether a backup would restore: the checks a restore makes before its 204, in one
//! function that the restore and `pb-backups backups verify` both call.
//!
//! Every entry is decoded (CRC-32 and sizes against the central directory, safe names, no
//! links, within the limits), `data.db` must open as SQLite and pass `integrity_check`, and
//! it must hold a usable superuser collection with an account (R31).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::accounts::{self, AccountsError};
use crate::archive::{self, ArchiveError, ArchiveLimits, ArchiveSummary};
use crate::model::names::BackupKey;
use crate::progress::ProgressCounter;
use crate::storage::{BackupStorage, StorageError};
use crate::util::TempPath;

/// Why an archive would not restore.
#[derive(Debug, thiserror::Error)]
pub enum Unrestorable {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Its text already names data.db (or the accounts database) as the problem.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
}

/// Checks the archive at `zip` and extracts it into `dest` (which must not exist yet): the
/// restore's checks; the extraction counts into `progress`. On error `dest` may hold part of
/// the archive; the caller removes it.
pub fn check_and_extract(
    zip: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
    progress: &ProgressCounter,
) -> Result<ArchiveSummary, Unrestorable> {
    std::fs::create_dir(dest).map_err(ArchiveError::Io)?;
    let summary = archive::extract_restorable(zip, dest, limits, progress)?;
    let data_db = dest.join(crate::layout::DATA_DB);
    integrity_check(&data_db)?;
    accounts::check_usable(&data_db)?;
    Ok(summary)
}

/// SQLite's own consistency check of every page, index and constraint.
fn integrity_check(path: &Path) -> Result<(), ArchiveError> {
    let corrupt = |e: rusqlite::Error| ArchiveError::DataDbCorrupt(e.to_string());
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(corrupt)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(corrupt)?;
    let problems: Vec<String> =
        stmt.query_map([], |r| r.get(0)).map_err(corrupt)?.collect::<Result<_, _>>().map_err(corrupt)?;
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(ArchiveError::DataDbCorrupt(problems.join("; "))),
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

/// Verifies the stored backup `key`: fetched into `temp` (a folder of our own), checked and
/// extracted there as a restore would, then removed. Read-only for the storage and the data
/// dir, so it may run beside a server. Storage failures are errors, not verdicts.
pub async fn verify_stored(
    storage: &dyn BackupStorage,
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
    match storage.fetch_to_file(key, zip.path()).await {
        Ok(()) => {}
        Err(StorageError::NotFound) => return Ok(Verdict::Missing),
        Err(e) => return Err(e),
    }
    let extracted = TempPath::new_in(temp, "verify", "");
    let (src, dest, limits) = (zip.path().to_path_buf(), extracted.path().to_path_buf(), *limits);
    let checked = tokio::task::spawn_blocking(move || check_and_extract(&src, &dest, &limits, &ProgressCounter::default()))
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
    Ok(match checked {
        Ok(summary) => Verdict::Good { size, summary },
        Err(e) => Verdict::Bad(e),
    })
}
