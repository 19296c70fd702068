//! The backups operations (list, create, upload, delete, restore, verify, download), and the
//! create and restore tasks they run: each owns what it needs, so that it finishes (or
//! cleans up) even when the client goes away.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{
    lock, ActivityGuard, ArchiveProblem, BackupError, CachedListing, Gate, Listing, RestartHandle, RestartRequest,
    Service, UploadedFile, LIST_CACHE_MAX_AGE,
};
use crate::archive::{self, ArchiveError, ArchiveLimits, Output};
use crate::backends::Backend;
use crate::layout::{BACKUPS_DIR, KEPT_IN_PLACE, TEMP_DIR};
use crate::model::coordinator::Activity;
use crate::model::names::{self, BackupKey};
use crate::progress::{Progress, ProgressCounter};
use crate::storage::{BackupMeta, BackupReader, BackupStorage, StorageError, Upload};
use crate::util::{OutputFile, TempPath};
use crate::verify;

impl Service {
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
            let mut out = OutputFile::new(out);
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
