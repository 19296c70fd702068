//! The data dir's names, in one place at the bottom: every module that finds its way around
//! the data dir takes them from here.

/// The main database: accounts, settings, token secrets. Also its name inside an archive.
pub const DATA_DB: &str = "data.db";
/// The default (local) backups storage folder.
pub const BACKUPS_DIR: &str = "backups";
/// The temp folder: uploads, archives being written, extractions, the restore journal. Inside
/// the data dir so that every rename into place stays on one filesystem.
pub const TEMP_DIR: &str = ".pb_temp";
/// The restore journal's folder, inside the temp folder.
pub const JOURNAL_DIR: &str = "restore";
