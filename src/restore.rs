//! Swapping extracted backup data into the data dir so that a crash can never leave a mix of
//! old and new entries: a journal in `<data dir>/<temp>/restore/` records what the data dir held
//! before, so a restore can be rolled back whole at any point, including at the next start.
//!
//! The backups storage and temp folders, and the names in [`KEPT_IN_PLACE`], are reserved:
//! a restore never moves or deletes them.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{BACKUPS_DIR, JOURNAL_DIR, KEPT_IN_PLACE, TEMP_DIR};

const JOURNAL_FILE: &str = "journal.json";
const JOURNAL_TMP: &str = "journal.json.tmp";
const NEW_DIR: &str = "new";
const OLD_DIR: &str = "old";
/// Entries that came from the backup go here on rollback: a rename is atomic, deleting a tree is not.
const DISCARD_DIR: &str = "discard";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a restore is already pending in {0} (run recovery first)")]
    AlreadyPending(PathBuf),
    #[error("no restore is pending in {0}")]
    NotPending(PathBuf),
    #[error("the restore in {0} has not finished swapping, it can only be rolled back")]
    NotSwapped(PathBuf),
    #[error("the extracted backup {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("the extracted backup {0} lies inside the restore journal folder")]
    InsideJournal(PathBuf),
    #[error("unreadable restore journal {path}: {source}")]
    BadJournal {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0:?} is not a valid reserved folder name (one plain path component)")]
    BadReservedName(String),
    #[error("{cause}; rolling back also failed: {rollback}")]
    RollbackFailed {
        cause: Box<RestoreError>,
        rollback: Box<RestoreError>,
    },
    #[cfg(test)]
    #[error("injected failure")]
    Injected,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What `recover_at_start` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No restore was in progress.
    None,
    /// A restore had crashed mid-swap: the old data is back in place.
    RolledBack,
    /// The new data is in place: open it, then call `commit` on success or `rollback` on failure.
    PendingCommit,
}

/// The data dir and the names of its two reserved top-level folders.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    backups_dir: OsString,
    temp_dir: OsString,
}

impl DataDir {
    /// A data dir with the default reserved names `backups` and `.pb_temp`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir {
            root: root.into(),
            backups_dir: BACKUPS_DIR.into(),
            temp_dir: TEMP_DIR.into(),
        }
    }

    /// A data dir with other reserved names; each must be one plain path component.
    pub fn with_reserved(
        root: impl Into<PathBuf>,
        backups_dir: &str,
        temp_dir: &str,
    ) -> Result<Self, RestoreError> {
        for name in [backups_dir, temp_dir] {
            let plain =
                !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
            if !plain {
                return Err(RestoreError::BadReservedName(name.to_owned()));
            }
        }
        if backups_dir == temp_dir {
            return Err(RestoreError::BadReservedName(temp_dir.to_owned()));
        }
        Ok(DataDir {
            root: root.into(),
            backups_dir: backups_dir.into(),
            temp_dir: temp_dir.into(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temp folder, where extractions must go so that renames stay on one filesystem.
    pub fn temp(&self) -> PathBuf {
        self.root.join(&self.temp_dir)
    }

    fn is_reserved(&self, name: &OsStr) -> bool {
        name == self.backups_dir || name == self.temp_dir || KEPT_IN_PLACE.iter().any(|kept| name == *kept)
    }

    fn journal_dir(&self) -> PathBuf {
        self.temp().join(JOURNAL_DIR)
    }

    fn journal_file(&self) -> PathBuf {
        self.journal_dir().join(JOURNAL_FILE)
    }
}

/// The new data is in place and the journal says `swapped`: restart the server, which then
/// commits once it has opened the new data, or rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "restart the server, then commit or roll back"]
pub struct PendingRestore {
    /// How many top-level entries of the old data were moved aside.
    pub old_entries: usize,
    /// How many top-level entries of the backup were moved into the data dir.
    pub new_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Swapping,
    Swapped,
    /// Written before a rollback moves anything: from then on the only way is back, even
    /// when the new data was whole (`swapped`) and part of the old is already in place.
    RollingBack,
}

/// A file name as stored in the journal: readable when it is UTF-8, raw bytes otherwise.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredName {
    Text(String),
    Bytes(Vec<u8>),
}

impl From<&OsStr> for StoredName {
    fn from(name: &OsStr) -> Self {
        match name.to_str() {
            Some(text) => StoredName::Text(text.to_owned()),
            None => StoredName::Bytes(name.as_bytes().to_vec()),
        }
    }
}

impl From<StoredName> for OsString {
    fn from(name: StoredName) -> Self {
        match name {
            StoredName::Text(text) => text.into(),
            StoredName::Bytes(bytes) => OsString::from_vec(bytes),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    phase: Phase,
    /// The non-reserved top-level names the data dir held before the swap.
    old_entries: Vec<StoredName>,
}

/// Called after every rename with the number done so far; tests use it to fail or crash there.
type AfterRename<'a> = &'a mut dyn FnMut(usize) -> Result<(), RestoreError>;

/// Moves the tree at `extracted` (a folder inside the temp folder) into the data dir in place of
/// its current non-reserved entries, keeping the backups storage (R23). On an error the old data
/// is put back before returning.
pub fn swap_in(dir: &DataDir, extracted: &Path) -> Result<PendingRestore, RestoreError> {
    swap_in_with(dir, extracted, &mut |_| Ok(()))
}

fn swap_in_with(
    dir: &DataDir,
    extracted: &Path,
    after_rename: AfterRename,
) -> Result<PendingRestore, RestoreError> {
    let journal_dir = dir.journal_dir();
    if exists(&dir.journal_file())? {
        return Err(RestoreError::AlreadyPending(dir.root.clone()));
    }
    let is_dir = fs::metadata(extracted)
        .map_err(io_err("read", extracted))?
        .is_dir();
    if !is_dir {
        return Err(RestoreError::NotADirectory(extracted.to_path_buf()));
    }
    if extracted.starts_with(&journal_dir) {
        return Err(RestoreError::InsideJournal(extracted.to_path_buf()));
    }
    // A folder without a journal is the leftover of a swap that never moved any data.
    remove_if_exists(&journal_dir)?;

    let prepared = prepare_journal_dir(dir, extracted);
    let old_entries = match prepared {
        Ok(names) => names,
        Err(err) => {
            // Nothing of the data dir has moved yet: dropping the journal folder is enough.
            let _ = fs::remove_dir_all(&journal_dir);
            return Err(err);
        }
    };

    let moved = move_entries(dir, &old_entries, after_rename);
    match moved {
        Ok(new_entries) => Ok(PendingRestore {
            old_entries: old_entries.len(),
            new_entries,
        }),
        Err(cause) => match rollback(dir) {
            Ok(()) => Err(cause),
            Err(rollback) => Err(RestoreError::RollbackFailed {
                cause: Box::new(cause),
                rollback: Box::new(rollback),
            }),
        },
    }
}

/// Creates the journal folder with `new/` (the extracted tree) and `old/`, and writes the journal
/// in phase `swapping`. Returns the data dir's current non-reserved names.
fn prepare_journal_dir(dir: &DataDir, extracted: &Path) -> Result<Vec<OsString>, RestoreError> {
    let journal_dir = dir.journal_dir();
    fs::create_dir_all(&journal_dir).map_err(io_err("create", &journal_dir))?;
    let new_dir = journal_dir.join(NEW_DIR);
    fs::rename(extracted, &new_dir).map_err(io_err("move into place", extracted))?;
    let old_dir = journal_dir.join(OLD_DIR);
    fs::create_dir(&old_dir).map_err(io_err("create", &old_dir))?;
    sync_dir(&journal_dir)?;
    sync_dir(&dir.temp())?;
    if let Some(parent) = extracted.parent() {
        sync_dir(parent)?;
    }

    let old_entries = list_names(dir, &dir.root)?;
    write_journal(
        dir,
        &Journal {
            phase: Phase::Swapping,
            old_entries: old_entries.iter().map(|n| n.as_os_str().into()).collect(),
        },
    )?;
    Ok(old_entries)
}

/// Renames the old entries into `old/`, then the new ones into the data dir, then marks the
/// journal `swapped`. Returns the number of new entries.
fn move_entries(
    dir: &DataDir,
    old_entries: &[OsString],
    after_rename: AfterRename,
) -> Result<usize, RestoreError> {
    let journal_dir = dir.journal_dir();
    let old_dir = journal_dir.join(OLD_DIR);
    let new_dir = journal_dir.join(NEW_DIR);
    let mut renames = 0;
    after_rename(renames)?;

    for name in old_entries {
        rename(&dir.root.join(name), &old_dir.join(name))?;
        renames += 1;
        after_rename(renames)?;
    }
    sync_dir(&dir.root)?;
    sync_dir(&old_dir)?;

    // Reserved names in a hand-made archive stay in new/ and go away with it.
    let new_entries = list_names(dir, &new_dir)?;
    for name in &new_entries {
        rename(&new_dir.join(name), &dir.root.join(name))?;
        renames += 1;
        after_rename(renames)?;
    }
    sync_dir(&dir.root)?;
    sync_dir(&new_dir)?;

    write_journal(
        dir,
        &Journal {
            phase: Phase::Swapped,
            old_entries: old_entries.iter().map(|n| n.as_os_str().into()).collect(),
        },
    )?;
    Ok(new_entries.len())
}

/// Keeps the new data: drops the old entries and the journal. Only valid in phase `swapped`.
pub fn commit(dir: &DataDir) -> Result<(), RestoreError> {
    let journal = read_journal(dir)?.ok_or_else(|| RestoreError::NotPending(dir.root.clone()))?;
    if journal.phase != Phase::Swapped {
        return Err(RestoreError::NotSwapped(dir.root.clone()));
    }
    // Removing the journal file is the commit point; a crash after it leaves only a folder
    // without a journal, which the next start deletes.
    finish(dir)
}

/// Puts the old entries back whole and drops the journal; works in any phase, and a crash
/// part-way leaves the journal in phase `rolling_back`, which the next start finishes.
pub fn rollback(dir: &DataDir) -> Result<(), RestoreError> {
    rollback_with(dir, &mut |_| Ok(()))
}

fn rollback_with(dir: &DataDir, after_rename: AfterRename) -> Result<(), RestoreError> {
    let mut journal =
        read_journal(dir)?.ok_or_else(|| RestoreError::NotPending(dir.root.clone()))?;
    if journal.phase != Phase::RollingBack {
        // Before the first rename: a crash part-way through must resume the rollback, never
        // commit a data dir that is half old, half new.
        journal.phase = Phase::RollingBack;
        write_journal(dir, &journal)?;
    }
    let recorded: HashSet<OsString> = journal.old_entries.into_iter().map(Into::into).collect();
    let journal_dir = dir.journal_dir();
    let old_dir = journal_dir.join(OLD_DIR);
    let discard_dir = journal_dir.join(DISCARD_DIR);
    let mut renames = 0;

    // An entry came from the backup (or from the server that ran on it) unless it is an old
    // name whose old copy is no longer in old/ (never moved, or already moved back).
    fs::create_dir_all(&discard_dir).map_err(io_err("create", &discard_dir))?;
    for name in list_names(dir, &dir.root)? {
        let from_backup = !recorded.contains(&name) || exists(&old_dir.join(&name))?;
        if from_backup {
            let target = discard_dir.join(&name);
            remove_if_exists(&target)?;
            rename(&dir.root.join(&name), &target)?;
            renames += 1;
            after_rename(renames)?;
        }
    }
    sync_dir(&dir.root)?;

    if exists(&old_dir)? {
        for name in list_names(dir, &old_dir)? {
            rename(&old_dir.join(&name), &dir.root.join(&name))?;
            renames += 1;
            after_rename(renames)?;
        }
    }
    sync_dir(&dir.root)?;
    finish(dir)
}

/// Removes the journal file (the point of no return), then the rest of the journal folder.
fn finish(dir: &DataDir) -> Result<(), RestoreError> {
    let journal_dir = dir.journal_dir();
    let journal_file = dir.journal_file();
    fs::remove_file(&journal_file).map_err(io_err("remove", &journal_file))?;
    sync_dir(&journal_dir)?;
    // The folder now holds only garbage (the old data, or the discarded new one): move it
    // aside and delete it in the background, so the server serves again without waiting
    // for thousands of unlinks. What a crash leaves behind, the next start removes.
    let trash = dir.temp().join(format!("{TRASH_PREFIX}{}", crate::util::random_suffix()));
    rename(&journal_dir, &trash)?;
    sync_dir(&dir.temp())?;
    remove_in_background(trash);
    Ok(())
}

/// Names in the temp folder of garbage that is being deleted in the background.
const TRASH_PREFIX: &str = "trash-";

/// Removals still running, for a process about to exit ([`RemovalsAwaited`]).
static REMOVALS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

fn remove_in_background(path: PathBuf) {
    let spawned = std::thread::Builder::new().name("remove-trash".into()).spawn(move || {
        if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove old data");
        }
    });
    match spawned {
        Ok(handle) => {
            let mut removals = REMOVALS.lock().unwrap_or_else(|e| e.into_inner());
            removals.retain(|h| !h.is_finished());
            removals.push(handle);
        }
        Err(e) => tracing::warn!(error = %e, "could not start removing old data; the next start will"),
    }
}

/// Waits, when dropped, until the old data that restores replaced is deleted: a server
/// deletes it in the background, but a command about to exit would leave it in the temp
/// folder, taking its space until the next start.
pub struct RemovalsAwaited;

impl Drop for RemovalsAwaited {
    fn drop(&mut self) {
        let removals = std::mem::take(&mut *REMOVALS.lock().unwrap_or_else(|e| e.into_inner()));
        if removals.iter().any(|h| !h.is_finished()) {
            tracing::info!("deleting the replaced data");
        }
        for handle in removals {
            let _ = handle.join();
        }
    }
}

/// Run first at every start: finishes or undoes an interrupted restore and clears the temp
/// folder of anything else (stale uploads, partial archives, extractions).
pub fn recover_at_start(dir: &DataDir) -> Result<Recovery, RestoreError> {
    let temp = dir.temp();
    if !exists(&temp)? {
        return Ok(Recovery::None);
    }
    let journal = read_journal(dir)?;
    let keep: Option<OsString> = journal.as_ref().map(|_| JOURNAL_DIR.into());
    let entries = fs::read_dir(&temp).map_err(io_err("list", &temp))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", &temp))?;
        let name = entry.file_name();
        if keep.as_ref() == Some(&name) {
            continue;
        }
        let path = entry.path();
        if name.to_string_lossy().starts_with(TRASH_PREFIX) {
            remove_in_background(path);
            continue;
        }
        remove_if_exists(&path)?;
        tracing::info!(path = %path.display(), "removed leftover from the temp folder");
    }

    match journal.map(|j| j.phase) {
        None => Ok(Recovery::None),
        Some(Phase::Swapping | Phase::RollingBack) => {
            tracing::warn!(dir = %dir.root.display(), "an interrupted restore is being rolled back");
            rollback(dir)?;
            Ok(Recovery::RolledBack)
        }
        Some(Phase::Swapped) => Ok(Recovery::PendingCommit),
    }
}

fn read_journal(dir: &DataDir) -> Result<Option<Journal>, RestoreError> {
    let path = dir.journal_file();
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_err("read", &path)(err)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RestoreError::BadJournal { path, source })
}

/// Writes the journal beside its final name, fsyncs it, then renames it over: a reader sees
/// either the previous journal or the new one, whole.
fn write_journal(dir: &DataDir, journal: &Journal) -> Result<(), RestoreError> {
    let journal_dir = dir.journal_dir();
    let tmp = journal_dir.join(JOURNAL_TMP);
    let bytes = serde_json::to_vec_pretty(journal).map_err(|source| RestoreError::BadJournal {
        path: tmp.clone(),
        source,
    })?;
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(&bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    rename(&tmp, &dir.journal_file())?;
    sync_dir(&journal_dir)
}

/// The non-reserved entry names of `folder`, sorted so that runs are reproducible.
fn list_names(dir: &DataDir, folder: &Path) -> Result<Vec<OsString>, RestoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(folder).map_err(io_err("list", folder))? {
        let name = entry.map_err(io_err("list", folder))?.file_name();
        if !dir.is_reserved(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn rename(from: &Path, to: &Path) -> Result<(), RestoreError> {
    fs::rename(from, to).map_err(io_err("rename", from))
}

/// Whether `path` exists, without following a symlink at its end.
fn exists(path: &Path) -> Result<bool, RestoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_err("read", path)(err)),
    }
}

/// Removes a file, a symlink (not its target) or a whole folder, if present.
fn remove_if_exists(path: &Path) -> Result<(), RestoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    };
    result.map_err(io_err("remove", path))
}

/// Makes renames and removals inside `folder` durable.
fn sync_dir(folder: &Path) -> Result<(), RestoreError> {
    File::open(folder)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", folder))
}

#[cfg(test)]
mod tests;
