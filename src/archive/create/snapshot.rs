//! Consistent copies of live SQLite databases, taken with the online backup API just before
//! they are read into the archive.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::archive::ArchiveError;

/// How long a snapshot waits for a lock held by a writer before giving up.
const SNAPSHOT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A consistent copy of a live SQLite database in the scratch dir, deleted on drop.
pub(super) struct Snapshot {
    pub(super) path: PathBuf,
}

impl Snapshot {
    pub(super) fn take(source: &Path, scratch_dir: &Path, name: &str) -> Result<Self, ArchiveError> {
        let path = scratch_dir.join(format!(".snapshot-{:016x}-{name}", rand::random::<u64>()));
        // create_new: never reuse (or follow) anything already at that path.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let snapshot = Self { path };
        copy_database(source, &snapshot.path).map_err(|source| ArchiveError::Snapshot {
            name: name.to_owned(),
            source,
        })?;
        Ok(snapshot)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut side = self.path.clone().into_os_string();
            side.push(suffix);
            if let Err(err) = fs::remove_file(&side) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = ?side, error = %err, "could not delete a snapshot file");
                }
            }
        }
    }
}

/// Copies the database with the online backup API in a single step: one read transaction
/// sees one consistent state, and in WAL mode writers go on meanwhile. (Copying a few pages
/// per step would restart whenever another connection writes, possibly forever.)
fn copy_database(source: &Path, dest: &Path) -> Result<(), rusqlite::Error> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    from.busy_timeout(SNAPSHOT_BUSY_TIMEOUT)?;
    let mut to = Connection::open(dest)?;
    {
        let backup = Backup::new(&from, &mut to)?;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => continue,
                // The busy handler has already waited SNAPSHOT_BUSY_TIMEOUT.
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("database stayed locked during the snapshot".to_owned()),
                    ))
                }
            }
        }
    }
    to.close().map_err(|(_, err)| err)?;
    from.close().map_err(|(_, err)| err)
}
