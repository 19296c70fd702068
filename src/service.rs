//! The one place that owns the server's state and does the backup and restore work.
//!
//! It holds the exclusivity coordinator, the backups storages, the accounts and the data
//! dir, and exposes one async method per API operation, each returning a typed error that
//! the HTTP layer maps to a documented response. Each operation takes the storage the
//! settings choose when it starts ([`Service::backups_storage`]) and keeps it to its end; the
//! coordinator is the server's, whatever storage an operation works on. Heavy work (zip,
//! SQLite, password hashes) runs on blocking threads; creates and restores run in tasks of
//! their own, so a client that disconnects cannot abandon them half-way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

mod app_settings;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::accounts::{Accounts, AccountsError, Record};
use crate::backends::{self, Backend, Backends};
use crate::archive::{self, ArchiveError, ArchiveLimits, Output};
use crate::auth::{self, AuthError, TokenKind};
use crate::model::coordinator::{Activity, Busy, Coordinator};
use crate::model::names::{self, BackupKey, NameError};
use crate::progress::{self, Progress, ProgressCounter};
use crate::storage::{BackupMeta, BackupReader, BackupStorage, StorageError, Upload};
use crate::util::{TempPath, WritebackFile};
use crate::verify;

use crate::layout::{BACKUPS_DIR, KEPT_IN_PLACE, TEMP_DIR};

/// A test hook that may hold work in progress: called with the key of a create whose archive
/// is written, before it is published, or of a restore that is extracted, before the swap.
/// The server has none.
pub type Gate = Arc<dyn Fn(BackupKey) -> BoxFuture<'static, ()> + Send + Sync>;

/// The way from a restore to the server loop. Once a restart is requested the server is
/// *draining*: every response says `Connection: close`, so that clients come back on a new
/// connection, which the restarted server will take from the socket's backlog.
#[derive(Clone, Debug)]
pub struct RestartHandle {
    tx: mpsc::UnboundedSender<RestartRequest>,
    draining: Arc<AtomicBool>,
    /// Woken when draining starts.
    drain_started: Arc<tokio::sync::Notify>,
}

impl RestartHandle {
    pub fn new() -> (RestartHandle, mpsc::UnboundedReceiver<RestartRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (RestartHandle { tx, draining: Arc::default(), drain_started: Arc::default() }, rx)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the server is draining.
    pub async fn drained(&self) {
        loop {
            let started = self.drain_started.notified();
            tokio::pin!(started);
            // Registered before the check, so a start in between still wakes us.
            started.as_mut().enable();
            if self.is_draining() {
                return;
            }
            started.await;
        }
    }

    /// Hands `request` to the server loop; gives it back if the loop is gone.
    fn request(&self, request: RestartRequest) -> Result<(), RestartRequest> {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_started.notify_waiters();
        self.tx.send(request).map_err(|e| {
            self.draining.store(false, Ordering::SeqCst);
            e.0
        })
    }
}

/// Sent to the server loop once a restore is extracted and ready to be swapped in.
#[derive(Debug)]
pub struct RestartRequest {
    pub key: BackupKey,
    /// The extracted archive, inside the temp folder.
    pub extracted: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("another backup or restore is running")]
    Busy,
    #[error("no such backup")]
    NotFound,
    #[error("invalid name: {0:?}")]
    InvalidName(NameError),
    #[error("a backup with that name exists")]
    NameExists,
    #[error("no file was sent")]
    FileRequired,
    #[error("not a zip archive: {0}")]
    NotZip(#[source] ArchiveError),
    /// An uploaded archive that is a zip, but one we refuse.
    #[error("unsafe or oversized archive: {source}")]
    BadArchive {
        problem: ArchiveProblem,
        #[source]
        source: ArchiveError,
    },
    #[error("archive cannot be restored: {source}")]
    Unrestorable {
        problem: ArchiveProblem,
        #[source]
        source: ArchiveError,
    },
    /// A create refused because its archive would be past what a restore accepts.
    #[error("backup not made, a restore would refuse it: {source}")]
    WouldNotRestore {
        problem: ArchiveProblem,
        #[source]
        source: ArchiveError,
    },
    /// The archive is sound but its `data.db` could not serve as accounts: nobody could log in.
    #[error("archive cannot be restored: {0}")]
    NoUsableAccounts(#[source] AccountsError),
    #[error("backups storage: {0}")]
    Storage(#[source] StorageError),
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why an archive was refused, in the terms a client is told (the detail goes to the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveProblem {
    NoDataDb,
    DataDbNotSqlite,
    /// Too big, or a suspicious compression ratio.
    TooLarge,
    /// More entries than the cap (`--max-archive-entries`).
    TooManyEntries { entries: u64, max: u64 },
    /// Unsafe paths, links or special files, duplicate or overlapping entries, names too
    /// long or too deep.
    Unsafe,
    /// Anything else: not decodable, sizes or checksums that do not match.
    Corrupt,
}

impl ArchiveProblem {
    fn of(e: &ArchiveError) -> ArchiveProblem {
        use ArchiveError as A;
        match e {
            A::MissingDataDb => ArchiveProblem::NoDataDb,
            A::DataDbNotSqlite => ArchiveProblem::DataDbNotSqlite,
            A::TooLarge | A::SuspiciousRatio { .. } => ArchiveProblem::TooLarge,
            A::TooManyEntries { entries, max } => ArchiveProblem::TooManyEntries { entries: *entries, max: *max },
            A::UnsafePath { .. }
            | A::SpecialEntry { .. }
            | A::DuplicateEntry { .. }
            | A::NameTooLong { .. }
            | A::Overlapping { .. } => ArchiveProblem::Unsafe,
            _ => ArchiveProblem::Corrupt,
        }
    }
}

impl From<Busy> for BackupError {
    fn from(_: Busy) -> Self {
        BackupError::Busy
    }
}

impl From<StorageError> for BackupError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => BackupError::NotFound,
            StorageError::AlreadyExists => BackupError::NameExists,
            StorageError::Busy => BackupError::Busy,
            e => BackupError::Storage(e),
        }
    }
}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Failed(Box::new(e))
    }
}

impl From<tokio::task::JoinError> for BackupError {
    fn from(e: tokio::task::JoinError) -> Self {
        BackupError::Failed(Box::new(e))
    }
}

/// Why a token could not be checked or issued (logins have their own, `logins::LoginError`).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("worker thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

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

/// Marks a delete as under way; dropping it (also when the request is dropped mid-way) ends
/// the delete and wakes the restores waiting for it.
struct DeleteGuard<'a> {
    service: &'a Service,
    key: &'a BackupKey,
}

impl Drop for DeleteGuard<'_> {
    fn drop(&mut self) {
        lock(&self.service.coordinator).end_delete(self.key);
        self.service.deletes_done.notify_waiters();
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

    // ---- backups ----

    /// Every backup, newest first (then by key), reused while nothing has changed (R8).
    pub async fn listing(&self) -> Result<Arc<Listing>, BackupError> {
        self.listing_in(&self.backups_storage().await?).await
    }

    /// [`Service::listing`] of the storage an operation holds.
    pub async fn listing_in(&self, storage: &Backend) -> Result<Arc<Listing>, BackupError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let stamp = storage.change_stamp();
        if let Some(c) = &*self.list_cache.lock().unwrap_or_else(|p| p.into_inner()) {
            if c.backend == storage.id
                && c.generation == generation
                && c.stamp == stamp
                && c.at.elapsed() < LIST_CACHE_MAX_AGE
            {
                return Ok(c.listing.clone());
            }
        }
        let at = Instant::now();
        let listing = Arc::new(Listing { items: list(storage).await? });
        *self.list_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(CachedListing { backend: storage.id, generation, stamp, at, listing: listing.clone() });
        Ok(listing)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Creates a backup named `name` (generated when absent or empty) and returns its key
    /// once it is complete and stored (R15, R16).
    pub async fn create(&self, name: Option<&str>) -> Result<BackupKey, BackupError> {
        if !lock(&self.coordinator).admits_create() {
            return Err(BackupError::Busy);
        }
        // A name that is not valid is refused before the storage is looked at.
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => Some(names::create_name(name).map_err(BackupError::InvalidName)?),
            None => None,
        };
        let storage = self.backups_storage().await?;
        let key = match name {
            Some(key) => match storage.head(&key).await {
                Ok(_) => return Err(BackupError::NameExists),
                Err(StorageError::NotFound) => key,
                Err(e) => return Err(BackupError::Storage(e)),
            },
            None => {
                let existing = storage.list().await.map_err(BackupError::Storage)?;
                names::generated_name(time::OffsetDateTime::now_utc(), |k| {
                    existing.iter().any(|m| m.key.as_str() == k)
                })
            }
        };
        self.create_in(&storage, key).await
    }

    /// Creates a backup in `storage` under a key already chosen: the API's create once the
    /// name is checked, and scheduled backups ([`crate::schedule`]). `Busy` at once while a
    /// create or restore runs (in any storage: the server runs one at a time): never queued.
    pub async fn create_in(&self, storage: &Backend, key: BackupKey) -> Result<BackupKey, BackupError> {
        let guard = self.start(|c| c.start_create(key.clone()))?;
        let progress = Progress::start("create", key.as_str(), self.progress).shown_in(&self.running);
        let work = CreateWork {
            data_dir: self.data_dir.clone(),
            temp_dir: self.temp_dir.clone(),
            storage: storage.storage.clone(),
            limits: self.limits,
            gate: self.create_gate.clone(),
            key: key.clone(),
            progress: progress.counter(),
        };
        tracing::info!(key = %key, "backup create started");
        // Own task: the work finishes (or cleans up) even if the client goes away.
        let result = tokio::spawn(async move {
            let _progress = progress;
            let result = work.run().await;
            drop(guard);
            result
        })
        .await?;
        self.changed();
        if result.is_ok() && crate::metrics::enabled() {
            if let Ok(meta) = storage.head(&key).await {
                crate::metrics::archive_created(meta.size);
            }
        }
        match &result {
            Ok(()) => tracing::info!(key = %key, "backup created"),
            Err(e) => tracing::warn!(key = %key, error = %e, "backup create failed"),
        }
        result.map(|()| key)
    }

    /// Stores an uploaded archive under the base name of its file name (R18, R19).
    pub async fn upload(&self, file: Option<UploadedFile>) -> Result<BackupKey, BackupError> {
        let file = file.ok_or(BackupError::FileRequired)?;
        let key = names::upload_key(&file.file_name).map_err(BackupError::InvalidName)?;
        let (path, limits) = (file.temp.path().to_path_buf(), self.limits);
        tokio::task::spawn_blocking(move || archive::validate(&path, &limits))
            .await?
            .map_err(|e| match e {
                ArchiveError::NotZip(_) => BackupError::NotZip(e),
                ArchiveError::Io(_) => BackupError::Failed(Box::new(e)),
                e => BackupError::BadArchive { problem: ArchiveProblem::of(&e), source: e },
            })?;
        if lock(&self.coordinator).key_in_use() == Some(&key) {
            return Err(BackupError::NameExists);
        }
        self.backups_storage().await?.put_file(&key, file.temp.path()).await?;
        file.temp.keep(); // consumed by the storage
        self.changed();
        tracing::info!(key = %key, "backup uploaded");
        Ok(key)
    }

    /// Deletes a backup, unless a create or restore works on its key (R20).
    pub async fn delete(&self, raw_key: &str) -> Result<(), BackupError> {
        let key = BackupKey::parse(raw_key).ok_or(BackupError::NotFound)?;
        self.delete_in(&self.backups_storage().await?, &key).await
    }

    /// [`Service::delete`] in the storage an operation holds. A key a create or restore works
    /// on is busy in every storage: the coordinator knows keys, not storages.
    pub async fn delete_in(&self, storage: &Backend, key: &BackupKey) -> Result<(), BackupError> {
        let key = key.clone();
        // Decided under the coordinator's lock: a restore of this key either started before
        // (busy) or waits until the delete has ended.
        lock(&self.coordinator).start_delete(&key).map_err(|_| BackupError::Busy)?;
        let _deleting = DeleteGuard { service: self, key: &key };
        storage.delete(&key).await?;
        self.changed();
        tracing::info!(key = %key, "backup deleted");
        Ok(())
    }

    /// Accepts a restore: marks the server busy, fetches and checks the archive, and extracts
    /// it into the temp folder, so that the 204 means the data is ready to be swapped in;
    /// then hands the swap and the restart to the server loop. An archive that fails any
    /// check (including a decode of every entry) is refused with nothing changed (R21).
    pub async fn restore(&self, raw_key: &str) -> Result<(), BackupError> {
        let key = BackupKey::parse(raw_key).ok_or(BackupError::NotFound)?;
        let storage = self.backups_storage().await?;
        let guard = self.start_restore(&key).await?;
        let size = storage.head(&key).await?.size;
        // Counts the extraction (not the fetch from the storage).
        let progress = Progress::start("restore", key.as_str(), self.progress).shown_in(&self.running);
        let work = RestoreWork {
            storage: storage.storage.clone(),
            temp_dir: self.temp_dir.clone(),
            limits: self.limits,
            restart: self.restart.clone(),
            gate: self.restore_gate.clone(),
            key: key.clone(),
            size,
            progress: progress.counter(),
        };
        tracing::info!(key = %key, "restore started");
        // Own task, as for create: a client that goes away does not abandon it half-way.
        let result = tokio::spawn(work.run(guard)).await?;
        drop(progress);
        match &result {
            Ok(()) => tracing::info!(key = %key, "restore accepted: extracted, swapping in next"),
            Err(e) => tracing::warn!(key = %key, error = %e, "restore refused; data unchanged"),
        }
        result
    }

    /// Whether the stored backup `key` would restore: the restore's checks (R31 included), on
    /// a copy fetched into the temp folder, in a task of its own. `Ok(())` if it would; else
    /// `Unrestorable` or `NoUsableAccounts` say why. Not a create or restore for exclusivity:
    /// it only reads, so creates, uploads, deletes (of this key too: the copy is checked) and
    /// restores go on. Refused as busy while a restore runs, and given up as busy when one
    /// is accepted meanwhile: the restart must not wait for it.
    pub async fn verify(&self, raw_key: &str) -> Result<(), BackupError> {
        let key = BackupKey::parse(raw_key).ok_or(BackupError::NotFound)?;
        let restoring = || matches!(lock(&self.coordinator).activity(), Activity::Restoring(_));
        if restoring() || self.is_draining() {
            return Err(BackupError::Busy);
        }
        let storage = self.backups_storage().await?.storage;
        let work = {
            let (temp_dir, limits) = (self.temp_dir.clone(), self.limits);
            let verifying = self.verifying.clone();
            async move {
                let _permit = verifying.acquire_owned().await.map_err(|e| BackupError::Failed(Box::new(e)))?;
                // The fetch measures the room once this verify has its turn: a verify that ran
                // before has removed its extraction by then.
                match verify::verify_stored(&storage, &key, &temp_dir, &limits).await? {
                    verify::Verdict::Good { .. } => Ok(()),
                    verify::Verdict::Missing => Err(BackupError::NotFound),
                    verify::Verdict::Bad(e) => Err(refused(e)),
                }
            }
        };
        // Own task: a client that goes away does not leave half an extraction behind.
        let work = tokio::spawn(work);
        tokio::select! {
            result = work => result?,
            () = self.restart.drained() => Err(BackupError::Busy),
        }
    }

    /// Opens the backup (or `range` of it) for streaming.
    pub async fn download(
        &self,
        raw_key: &str,
        range: impl FnOnce(u64) -> Option<std::ops::Range<u64>>,
    ) -> Result<BackupReader, BackupError> {
        let key = BackupKey::parse(raw_key).ok_or(BackupError::NotFound)?;
        let storage = self.backups_storage().await?;
        let meta = storage.head(&key).await?;
        Ok(storage.open(&key, range(meta.size)).await?)
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

/// Every backup of `storage`, newest first (then by key).
async fn list(storage: &Backend) -> Result<Vec<BackupMeta>, BackupError> {
    let mut list = storage.list().await.map_err(BackupError::Storage)?;
    list.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.key.cmp(&b.key)));
    Ok(list)
}

/// Everything a restore needs before the swap, owned, so it can run in a task of its own.
struct RestoreWork {
    storage: Arc<dyn BackupStorage>,
    temp_dir: PathBuf,
    limits: ArchiveLimits,
    restart: RestartHandle,
    gate: Option<Gate>,
    key: BackupKey,
    /// The archive's size in the storage.
    size: u64,
    progress: Arc<ProgressCounter>,
}

impl RestoreWork {
    async fn run(self, guard: ActivityGuard) -> Result<(), BackupError> {
        let archive_path = TempPath::new_in(&self.temp_dir, "restore", ".zip");
        // Refused before the download when it could not fit (the extraction's limits then
        // follow the room left).
        let limits = verify::fetch(&self.storage, &self.key, self.size, archive_path.path(), &self.limits, Output::Everything)
            .await
            .map_err(|e| match e {
                verify::FetchError::Storage(e) => BackupError::from(e),
                verify::FetchError::Unrestorable(e) => refused(e),
            })?;
        let extracted = TempPath::new_in(&self.temp_dir, "restore", "");
        let (src, dest) = (archive_path.path().to_path_buf(), extracted.path().to_path_buf());
        let progress = self.progress.clone();
        // The same checks as `backups verify` (R31 included), before the 204.
        tokio::task::spawn_blocking(move || {
            verify::check_and_extract(&src, &dest, &limits, Output::Everything, &progress).map(drop)
        })
        .await?
        .map_err(refused)?;
        drop(archive_path);
        if let Some(gate) = &self.gate {
            gate(self.key.clone()).await;
        }
        let request = RestartRequest { key: self.key.clone(), extracted: extracted.keep() };
        if let Err(request) = self.restart.request(request) {
            let _ = std::fs::remove_dir_all(&request.extracted);
            return Err(BackupError::Failed("the server loop is gone".into()));
        }
        guard.hand_over();
        Ok(())
    }
}

/// A restore refused by its checks.
fn refused(e: verify::Unrestorable) -> BackupError {
    match e {
        verify::Unrestorable::Archive(e @ ArchiveError::Io(_)) => BackupError::Failed(Box::new(e)),
        verify::Unrestorable::Archive(e) => BackupError::Unrestorable { problem: ArchiveProblem::of(&e), source: e },
        verify::Unrestorable::Accounts(e) => BackupError::NoUsableAccounts(e),
    }
}

/// Everything a create needs, owned, so it can run in a task of its own.
struct CreateWork {
    data_dir: PathBuf,
    temp_dir: PathBuf,
    storage: Arc<dyn BackupStorage>,
    /// The archive must pass a restore with these.
    limits: ArchiveLimits,
    gate: Option<Gate>,
    key: BackupKey,
    progress: Arc<ProgressCounter>,
}

impl CreateWork {
    async fn run(self) -> Result<(), BackupError> {
        if let Some(upload) = self.storage.start_upload(&self.key).await? {
            return self.run_streamed(upload).await;
        }
        let zip = TempPath::new_in(&self.temp_dir, "create", ".zip");
        let (data_dir, temp_dir, path) = (self.data_dir.clone(), self.temp_dir.clone(), zip.path().to_path_buf());
        let (progress, limits) = (self.progress.clone(), self.limits);
        tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
            let out = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
            let mut out = WritebackFile::new(out);
            archive_data_dir(&data_dir, &temp_dir, &mut out, &limits, &progress)?;
            out.sync_all()?;
            Ok(())
        })
        .await??;
        if let Some(gate) = &self.gate {
            gate(self.key.clone()).await;
        }
        self.storage.put_file(&self.key, zip.path()).await?;
        zip.keep(); // consumed by the storage
        Ok(())
    }

    /// The archive goes straight into the store while it is made.
    async fn run_streamed(self, upload: Box<dyn Upload>) -> Result<(), BackupError> {
        let (data_dir, temp_dir, progress, limits) = (self.data_dir.clone(), self.temp_dir.clone(), self.progress.clone(), self.limits);
        let (upload, made) = tokio::task::spawn_blocking(move || {
            let mut upload = upload;
            let made = archive_data_dir(&data_dir, &temp_dir, &mut upload, &limits, &progress);
            (upload, made)
        })
        .await?;
        if let Err(e) = made {
            // A failing store shows up to the archive as a write error: report the store's.
            return Err(upload.abort().await.map_or(e, BackupError::from));
        }
        if let Some(gate) = &self.gate {
            gate(self.key.clone()).await;
        }
        upload.finish().await?;
        Ok(())
    }
}

/// Writes the backup archive of `data_dir` to `out`, refusing one that a restore with
/// `limits` would refuse.
fn archive_data_dir(
    data_dir: &Path,
    temp_dir: &Path,
    out: impl std::io::Write,
    limits: &ArchiveLimits,
    progress: &ProgressCounter,
) -> Result<(), BackupError> {
    let excluded: Vec<&str> = [BACKUPS_DIR, TEMP_DIR].into_iter().chain(KEPT_IN_PLACE).collect();
    let opts = archive::CreateOptions { limits: *limits, ..Default::default() };
    archive::create_backup_counted(data_dir, &excluded, temp_dir, out, &opts, progress).map_err(|e| match e {
        ArchiveError::TooManyEntries { .. } | ArchiveError::TooLarge => {
            BackupError::WouldNotRestore { problem: ArchiveProblem::of(&e), source: e }
        }
        e => BackupError::Failed(Box::new(e)),
    })?;
    Ok(())
}
