//! The data dir's names, in one place at the bottom: every module that finds its way around
//! the data dir takes them from here.

/// The main database: accounts, settings, token secrets. Also its name inside an archive.
pub const DATA_DB: &str = "data.db";
/// PocketBase's second database (its logs); created beside a `data.db` we initialise.
pub const AUX_DB: &str = "auxiliary.db";
/// The lock that keeps one server per data dir (see `lock`); reserved like the backups and
/// temp folders, so a restore never moves it from under the running server, and never archived.
pub const LOCK_FILE: &str = ".pb_backups.lock";
/// The default (local) backups storage folder.
pub const BACKUPS_DIR: &str = "backups";
/// The temp folder: uploads, archives being written, extractions, the restore journal. Inside
/// the data dir so that every rename into place stays on one filesystem.
pub const TEMP_DIR: &str = ".pb_temp";
/// The restore journal's folder, inside the temp folder.
pub const JOURNAL_DIR: &str = "restore";

/// Top-level names that are the data dir's own rather than its data, besides the backups
/// and temp folders: a backup leaves them out, and a restore leaves them where they are
/// (an archive's copies are dropped). Our lock, then the names PocketBase treats the same
/// way: its folder of files awaiting deletion, `.notify`, the TLS certificates and private
/// keys it obtained, and a file system's `lost+found` (often unreadable).
pub const KEPT_IN_PLACE: [&str; 5] = [LOCK_FILE, ".pb_temp_to_delete", ".notify", ".autocert_cache", "lost+found"];
