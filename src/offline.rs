//! Backup tools of the command line that work without a server: `backups list | create |
//! restore | delete` on a data dir whose server is stopped (through the same service the API
//! uses, so the same rules, names, exclusivity, journaled swap and choice of storage), and
//! `backups verify`, which only reads and so also runs beside a server. The storage is the
//! server's: the `--backups-s3-*` flags' bucket when given, else as the data dir's settings
//! (`backups.s3`) say.

use std::path::Path;
use std::sync::Arc;

use crate::archive::ArchiveLimits;
use crate::backends::{Backend, Backends};
use crate::datadir::{self, DataDirError};
use crate::lock::{DataDirLock, LockError};
use crate::model::names::BackupKey;
use crate::layout::{BACKUPS_DIR, DATA_DB};
use crate::service::{BackupError, RestartHandle, Service, ServiceConfig};
use crate::storage::s3::S3Config;
use crate::verify::{self, Verdict};

/// Why a command failed; `main` prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("no such backup: {0} (404: the requested resource wasn't found)")]
    NotFound(String),
    #[error("{bad} of {total} backups would not restore")]
    Bad { bad: usize, total: usize },
    #[error("backups storage: {0}")]
    Storage(String),
    /// A server (or another command) holds the data dir.
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{0}")]
    Backup(BackupError),
    #[error("restore: {0}")]
    Swap(#[from] crate::restore::RestoreError),
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
}

impl From<BackupError> for OfflineError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::NotFound => OfflineError::NotFound(String::new()),
            e => OfflineError::Backup(e),
        }
    }
}

/// `e`, with `key` named when it is the 404.
fn named(e: BackupError, key: &str) -> OfflineError {
    match OfflineError::from(e) {
        OfflineError::NotFound(_) => OfflineError::NotFound(key.to_string()),
        e => e,
    }
}

/// One offline command on a stopped server's data dir.
#[derive(Debug, Clone)]
pub enum Offline {
    List,
    /// `None`: a generated `pb_backup_<UTC time>.zip`.
    Create(Option<String>),
    Restore(String),
    Delete(String),
}

/// Runs `command` on `dir` with the server stopped: refused at once while anyone holds the
/// data dir's lock (a running server does for as long as it runs). `flags`: the bucket the
/// command line names, which wins over the settings; `checksums` for buckets they name.
pub async fn run(
    dir: &Path,
    flags: Option<S3Config>,
    checksums: bool,
    limits: ArchiveLimits,
    command: Offline,
) -> Result<(), OfflineError> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let _lock = DataDirLock::acquire(&dir)?;
    // Declared after the lock, so dropped (waited for) while it is still held.
    let _removals = crate::restore::RemovalsAwaited;
    // Finishes or undoes a restore a crash interrupted, as a server's start would.
    let accounts = Arc::new(datadir::open(&dir)?);
    let backends = Backends::new(dir.join(BACKUPS_DIR), flags, checksums).map_err(|e| OfflineError::Storage(e.to_string()))?;
    let (restart, mut restarts) = RestartHandle::new();
    let config = ServiceConfig {
        data_dir: dir.clone(),
        backends: Arc::new(backends),
        limits,
        create_gate: None,
        restore_gate: None,
        progress: crate::progress::Display::for_stderr(),
    };
    let service = Service::new(config, accounts, restart)?;
    match command {
        Offline::List => {
            let listing = service.listing().await?;
            for meta in &listing.items {
                let modified = time::OffsetDateTime::from(meta.modified);
                println!("{}\t{}\t{}", meta.key, meta.size, modified.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
            }
        }
        Offline::Create(name) => {
            tracing::info!("creating a backup of {}", dir.display());
            let started = std::time::Instant::now();
            let key = service.create(name.as_deref()).await?;
            let size = service.listing().await?.items.iter().find(|m| m.key == key).map_or(0, |m| m.size);
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "backup created");
            println!("created {key} ({size} bytes)");
        }
        Offline::Delete(key) => {
            service.delete(&key).await.map_err(|e| named(e, &key))?;
            println!("deleted {key}");
        }
        Offline::Restore(key) => {
            tracing::info!(key = %key, "checking and extracting the backup");
            service.restore(&key).await.map_err(|e| named(e, &key))?;
            let request = restarts.recv().await.ok_or(OfflineError::Backup(BackupError::Failed("the restore was lost".into())))?;
            // The service (and its hold on data.db) goes before the swap, as in the server.
            drop(service);
            let data_db_id = |root: &Path| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(root.join(crate::layout::DATA_DB)).ok().map(|m| (m.dev(), m.ino()))
            };
            let restored = data_db_id(&request.extracted);
            let swapped = crate::restore::swap_in(&crate::restore::DataDir::new(&dir), &request.extracted);
            let _ = std::fs::remove_dir_all(&request.extracted);
            let pending = swapped?;
            tracing::info!(old_entries = pending.old_entries, new_entries = pending.new_entries, "restored data swapped in");
            // Commits the swap once the restored data opens with a superuser, else rolls back
            // (the restored data.db, moved in whole, is then no longer in place).
            drop(datadir::open(&dir)?);
            if data_db_id(&dir) != restored {
                return Err(OfflineError::Backup(BackupError::Failed("the restored data did not open; the old data is back".into())));
            }
            println!("restored {key} into {}", dir.display());
        }
    }
    Ok(())
}

/// The backups storage of a data dir, for a reader beside a running server: the flags'
/// bucket when given, else as the settings say, read without writing (a dir without a
/// `data.db` has no settings: the local folder).
pub fn open_storage(dir: &Path, flags: Option<S3Config>, checksums: bool) -> Result<Backend, OfflineError> {
    let storage_error = |e: String| OfflineError::Storage(e);
    let backends = Backends::new(dir.join(BACKUPS_DIR), flags, checksums).map_err(|e| storage_error(e.to_string()))?;
    if let Some(fixed) = backends.fixed() {
        return Ok(fixed);
    }
    let s3 = match dir.join(DATA_DB).exists() {
        true => crate::settings::load_read_only(dir).map_err(|e| storage_error(format!("settings: {e}")))?.backups_s3,
        false => Default::default(),
    };
    backends.for_settings(&s3).map_err(|e| storage_error(e.to_string()))
}

/// Verifies `key`, or every stored backup with `all`, printing one line per backup. Work
/// files go to the system's temp folder (`TMPDIR`), never into the data dir, so a server
/// running meanwhile is not disturbed.
pub async fn verify(storage: &Backend, key: Option<&str>, all: bool, limits: &ArchiveLimits) -> Result<(), OfflineError> {
    let keys: Vec<BackupKey> = if all {
        let mut list = storage.list().await.map_err(|e| OfflineError::Storage(e.to_string()))?;
        list.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.key.cmp(&b.key)));
        list.into_iter().map(|m| m.key).collect()
    } else {
        let raw = key.unwrap_or_default();
        vec![BackupKey::parse(raw).ok_or_else(|| OfflineError::NotFound(raw.to_string()))?]
    };
    let temp = std::env::temp_dir();
    let mut bad = 0;
    for key in &keys {
        match verify::verify_stored(&storage.storage, key, &temp, limits).await {
            Ok(Verdict::Good { size, summary }) => {
                let order = if summary.in_walk_order { "in walk order" } else { "not in walk order: read into memory" };
                println!("ok   {key}: {size} bytes, {} entries, {} bytes decoded, {order}", summary.entries, summary.total_size)
            }
            Ok(Verdict::Bad(e)) => {
                bad += 1;
                println!("BAD  {key}: {e}");
            }
            Ok(Verdict::Missing) if !all => return Err(OfflineError::NotFound(key.to_string())),
            // Deleted between the listing and its turn.
            Ok(Verdict::Missing) => println!("gone {key}: deleted meanwhile"),
            Err(e) => return Err(OfflineError::Storage(e.to_string())),
        }
    }
    if bad > 0 {
        return Err(OfflineError::Bad { bad, total: keys.len() });
    }
    if keys.is_empty() {
        println!("no backups stored");
    }
    Ok(())
}
