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
