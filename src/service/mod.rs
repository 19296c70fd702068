//! The one place that owns the server's state and does the backup and restore work.
//!
//! It holds the exclusivity coordinator, the backups storages, the accounts and the data
//! dir, and exposes one async method per API operation, each returning a typed error that
//! the HTTP layer maps to a documented response. Each operation takes the storage the
//! settings choose when it starts ([`Service::backups_storage`]) and keeps it to its end; the
//! coordinator is the server's, whatever storage an operation works on. Heavy work (zip,
//! SQLite, password hashes) runs on blocking threads; creates and restores run in tasks of
//! their own, so a client that disconnects cannot abandon them half-way.
//!
//! The parts, each in its own file: `backups` (the backups operations, and the create and
//! restore tasks they run), `app_settings` (the settings row, seen from the service),
//! `error` (what the operations may answer) and `restart` (the hand-off to the server loop).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

mod app_settings;
mod backups;
mod error;
mod restart;

pub use error::{AccountError, ArchiveProblem, BackupError};
pub use restart::{RestartHandle, RestartRequest};

use futures_util::future::BoxFuture;

use crate::accounts::{Accounts, Record};
use crate::backends::{self, Backend, Backends};
use crate::archive::ArchiveLimits;
use crate::auth::{self, TokenKind};
use crate::model::coordinator::{Busy, Coordinator};
use crate::model::names::BackupKey;
use crate::progress;
use crate::storage::{BackupMeta, StorageError};
use crate::util::TempPath;

use crate::layout::TEMP_DIR;

/// A test hook that may hold work in progress: called with the key of a create whose archive
/// is written, before it is published, or of a restore that is extracted, before the swap.
/// The server has none.
pub type Gate = Arc<dyn Fn(BackupKey) -> BoxFuture<'static, ()> + Send + Sync>;

/// A multipart upload already streamed to a file in the temp folder.
#[derive(Debug)]
pub struct UploadedFile {
    pub file_name: String,
    pub temp: TempPath,
}

pub struct ServiceConfig {
    pub data_dir: PathBuf,
    /// Where backups go: chosen per operation, from the flags or the settings.
    pub backends: Arc<Backends>,
    pub limits: ArchiveLimits,
    pub create_gate: Option<Gate>,
    pub restore_gate: Option<Gate>,
    /// How the progress of creates and restores is shown.
    pub progress: progress::Display,
}

pub struct Service {
    data_dir: PathBuf,
    temp_dir: PathBuf,
    backends: Arc<Backends>,
    /// The storage the settings chose at their last reading (see [`Service::backups_storage`]).
    chosen: Mutex<ChosenStorage>,
    accounts: Arc<Accounts>,
    coordinator: Arc<Mutex<Coordinator>>,
    /// Woken whenever a delete ends: a restore of the key it deleted waits for it.
    deletes_done: tokio::sync::Notify,
    limits: ArchiveLimits,
    create_gate: Option<Gate>,
    restore_gate: Option<Gate>,
    progress: progress::Display,
    /// The create or restore running now, for health's `progress`.
    running: progress::Running,
    /// One verify at a time: each extracts a whole archive into the temp folder.
    verifying: Arc<tokio::sync::Semaphore>,
    restart: RestartHandle,
    /// Password hashes run at once at most: each takes a core for tens of milliseconds (and
    /// a legacy argon2 hash 19 MiB), so a burst of logins must queue, not pile up.
    hashing: tokio::sync::Semaphore,
    /// Bumped by every change this server makes to the backups: create, upload, delete.
    generation: AtomicU64,
    list_cache: Mutex<Option<CachedListing>>,
    /// `superuserIPs` and `trustedProxy` as last read (see [`crate::settings::AccessCache`]).
    access: crate::settings::AccessCache,
}

/// A listing of the backups, newest first, shared by all the requests that ask while
/// nothing changes: the same `Arc` until then, so a caller may cache what it derives from it.
#[derive(Debug)]
pub struct Listing {
    pub items: Vec<BackupMeta>,
}

struct CachedListing {
    /// The storage listed.
    backend: u64,
    generation: u64,
    stamp: Option<(i64, i64, i64, i64)>,
    at: Instant,
    listing: Arc<Listing>,
}

/// How long the storage the settings chose is used before they are read again. Our own
/// changes take effect at once (they drop it); this bounds how long a change made to
/// `data.db` some other way goes unseen.
const CHOSEN_MAX_AGE: Duration = Duration::from_secs(2);

/// The storage chosen at the last reading of the settings. `generation` is bumped by every
/// change of the settings, so that a reading that began before one is not kept.
#[derive(Default)]
struct ChosenStorage {
    generation: u64,
    current: Option<(Instant, Backend)>,
}

/// How long a listing is reused at most: the folder's timestamps have a coarse clock (a
/// change within the same tick goes unseen) and other backends have no stamp at all.
const LIST_CACHE_MAX_AGE: Duration = Duration::from_millis(500);

/// Holds the coordinator's slot for a create or restore; dropping it frees the server,
/// so an error or a panic anywhere in the work can never leave it busy.
struct ActivityGuard {
    coordinator: Arc<Mutex<Coordinator>>,
    armed: bool,
}

impl ActivityGuard {
    /// The restart now owns the slot: the server stays busy until the new one serves.
    fn hand_over(mut self) {
        self.armed = false;
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.coordinator).finish();
        }
    }
}

fn lock(c: &Mutex<Coordinator>) -> MutexGuard<'_, Coordinator> {
    // The coordinator's state stays valid even if a holder panicked mid-way.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Service {
    /// Opens the service on a data dir whose accounts are already open. Restore requests
    /// are sent to `restart`.
    pub fn new(
        config: ServiceConfig,
        accounts: Arc<Accounts>,
        restart: RestartHandle,
    ) -> std::io::Result<Service> {
        let temp_dir = config.data_dir.join(TEMP_DIR);
        std::fs::create_dir_all(&temp_dir)?;
        Ok(Service {
            data_dir: config.data_dir,
            temp_dir,
            backends: config.backends,
            chosen: Mutex::default(),
            accounts,
            coordinator: Arc::default(),
            deletes_done: tokio::sync::Notify::new(),
            limits: config.limits,
            create_gate: config.create_gate,
            restore_gate: config.restore_gate,
            progress: config.progress,
            running: Default::default(),
            verifying: Arc::new(tokio::sync::Semaphore::new(1)),
            restart,
            hashing: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from)),
            generation: AtomicU64::new(0),
            list_cache: Mutex::new(None),
            access: crate::settings::AccessCache::default(),
        })
    }

    /// True once a restore has asked for a restart: see [`RestartHandle`].
    pub fn is_draining(&self) -> bool {
        self.restart.is_draining()
    }

    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn access_cache(&self) -> &crate::settings::AccessCache {
        &self.access
    }

    /// What the `--backups-s3-*` flags chose, when they win over the settings' `backups.s3`.
    pub fn s3_override(&self) -> Option<&backends::Override> {
        self.backends.overridden()
    }

    /// The backups storage for an operation starting now: the flags' bucket when they name
    /// one, else as the settings' `backups.s3` says (read again after any change). The
    /// operation keeps it to its end, whatever the settings say meanwhile. Settings that
    /// cannot be read or used are the storage error: backups never go somewhere else than
    /// configured.
    pub async fn backups_storage(&self) -> Result<Backend, BackupError> {
        if let Some(fixed) = self.backends.fixed() {
            return Ok(fixed);
        }
        let generation = {
            let chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, backend)) = &chosen.current {
                if at.elapsed() < CHOSEN_MAX_AGE {
                    return Ok(backend.clone());
                }
            }
            chosen.generation
        };
        let unavailable = |e: String| BackupError::Storage(StorageError::Unavailable(std::io::Error::other(e)));
        let settings = self.settings().await.map_err(|e| {
            tracing::error!(error = %e, "settings unreadable: the backups storage cannot be chosen");
            unavailable(e.to_string())
        })?;
        let backend = self.backends.for_settings(&settings.backups_s3).map_err(|e| {
            tracing::error!(error = %e, "the settings' backups.s3 cannot be used");
            unavailable(e.to_string())
        })?;
        let mut chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        if chosen.generation == generation {
            chosen.current = Some((Instant::now(), backend.clone()));
        }
        Ok(backend)
    }

    /// The settings changed: the next operation reads them again.
    pub(crate) fn settings_changed(&self) {
        let mut chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        chosen.generation += 1;
        chosen.current = None;
    }

    /// Tests the saved S3 section (`backups.s3`, or the file storage's `s3`) as PocketBase
    /// does, whatever the flags say: writes a small object and deletes it.
    pub async fn test_s3(&self, backups: bool) -> Result<(), backends::TestError> {
        let settings = self.settings().await.map_err(|e| {
            tracing::error!(error = %e, "settings unreadable: S3 not tested");
            backends::TestError::SettingsUnreadable
        })?;
        backends::test(if backups { &settings.backups_s3 } else { &settings.storage_s3 }).await
    }

    /// Until the storages' background clean-up has ended (see `BackupStorage::settle`).
    pub async fn settle(&self) {
        self.backends.settle().await;
    }

    /// Whether a create or restore runs now (health's `canBackup` is the opposite).
    pub fn is_busy(&self) -> bool {
        lock(&self.coordinator).is_busy()
    }

    /// How far the running create or restore is, if one runs.
    pub fn progress(&self) -> Option<progress::Report> {
        self.running.report()
    }

    fn start(&self, start: impl FnOnce(&mut Coordinator) -> Result<(), Busy>) -> Result<ActivityGuard, Busy> {
        start(&mut lock(&self.coordinator))?;
        Ok(ActivityGuard { coordinator: self.coordinator.clone(), armed: true })
    }

    /// Starts a restore of `key` once no delete of it is under way, so that the delete's
    /// outcome decides whether the archive is still there (R20, R21).
    async fn start_restore(&self, key: &BackupKey) -> Result<ActivityGuard, Busy> {
        loop {
            let delete_ended = self.deletes_done.notified();
            tokio::pin!(delete_ended);
            // Registered before the check, so a delete ending in between still wakes us.
            delete_ended.as_mut().enable();
            {
                let mut c = lock(&self.coordinator);
                if c.is_busy() || !c.is_deleting(key) {
                    c.start_restore(key.clone())?;
                    return Ok(ActivityGuard { coordinator: self.coordinator.clone(), armed: true });
                }
            }
            delete_ended.await;
        }
    }

    // ---- accounts ----

    async fn with_accounts<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Accounts) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let accounts = self.accounts.clone();
        tokio::task::spawn_blocking(move || f(&accounts)).await?
    }

    /// Whether `name_or_id` is an auth collection one can log in to.
    pub fn has_auth_collection(&self, name_or_id: &str) -> bool {
        self.accounts.collection(name_or_id).is_some()
    }

    pub(crate) fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// A turn at password hashing (see `hashing`); `None` only if the semaphore were closed.
    pub(crate) async fn hashing_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.hashing.acquire().await.ok()
    }

    /// The record a token of `kind` belongs to, if the token is valid now.
    pub async fn verify_token(&self, token: String, kind: TokenKind) -> Result<Record, AccountError> {
        self.with_accounts(move |a| Ok(auth::verify(a, &token, kind, now_unix())?)).await
    }

    pub async fn file_token(&self, record: Record) -> Result<String, AccountError> {
        self.with_accounts(move |a| Ok(auth::issue(a, &record, TokenKind::File, now_unix())?)).await
    }
}
