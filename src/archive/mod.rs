//! Backup archives: zip creation from the data dir (with consistent SQLite snapshots),
//! validation of untrusted archives and their safe extraction.
//!
//! Everything here is synchronous std::fs code; the server runs it on a blocking thread.
//! `create` writes archives, `read` checks and extracts them; both share the entry-name
//! rules below so that we never write an archive we would refuse to restore.

mod central;
mod create;
mod format;
mod read;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod zip64_check;
mod zip_writer;

pub use create::{create_backup, create_backup_counted, CreateOptions, CreateStats};
pub use central::ArchiveSource;
pub use read::{check_restorable, extract, extract_restorable, read_declared, validate, Declared, Output};

/// The first 16 bytes of every SQLite 3 database file.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

use crate::layout::DATA_DB;

/// Longest entry name, in bytes once decoded (without a directory's trailing '/').
/// PocketBase cuts a stored file's name to about 130 bytes, so its longest, a thumb
/// (`storage/<collection>/<record>/thumbs_<file>/<size>_<file>`), stays near 330; three
/// times that leaves room, and a name never nears `PATH_MAX` (4096) once under a data dir.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most '/'-separated components in a name. PocketBase's deepest is 5 (a thumb); other
/// folders an operator keeps in the data dir get six times that. Depth is work per entry
/// (a folder to create, a prefix to compare), so it is bounded apart from the length.
pub const MAX_NAME_DEPTH: usize = 32;
/// Longest component of a name: `NAME_MAX` of Linux file systems, so such a name could never
/// be extracted anyway.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Bounds that an archive must respect before and during extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Sum of the uncompressed sizes of all entries, declared and actual.
    pub max_total_size: u64,
    /// Number of entries in the central directory (files and folders alike). A create
    /// refuses a data dir with more, so that every backup made here restores here.
    pub max_entries: usize,
    /// Uncompressed size divided by compressed size, per entry.
    pub max_ratio: u64,
    /// Bytes an extraction may write to disk: the free space where it writes, less a margin.
    pub max_written: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_total_size: 1 << 40,
            // Ten times the largest data dirs reported upstream (a million files in a
            // thousand folders is about 1,001,000 entries). An archive in walk order (ours,
            // PocketBase's) is read a record at a time; any other keeps about 44 bytes and the
            // name of each entry, so for those this is a bound on memory as much as on work.
            max_entries: 10_000_000,
            // Deflate cannot exceed about 1032:1, so a higher declared ratio is a lie; a lower
            // limit would refuse genuine zero-filled files.
            max_ratio: 1100,
            max_written: u64::MAX,
        }
    }
}

/// What validation learned about an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Number of entries (files and directories).
    pub entries: usize,
    /// Sum of the declared uncompressed sizes.
    pub total_size: u64,
    /// A top-level regular file entry named `data.db` exists.
    pub has_data_db: bool,
    /// Listed in walk order (ours and PocketBase's are): read a record at a time, in memory
    /// that does not grow with the entries. Otherwise its entries were held in a list.
    pub in_walk_order: bool,
}

/// Why an archive could not be created, validated or extracted.
///
/// Fields carry detail for the log; [`ArchiveError::client_message`] is what a client may see.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a valid zip archive: {0}")]
    NotZip(String),
    #[error("unsafe entry name {name:?}")]
    UnsafePath { name: String },
    #[error("entry {name:?} is a link or another special file")]
    SpecialEntry { name: String },
    #[error("entry {name:?} is duplicated or conflicts with another entry")]
    DuplicateEntry { name: String },
    #[error(
        "entry name {name:?}... exceeds {MAX_NAME_BYTES} bytes, {MAX_COMPONENT_BYTES} bytes per \
         component or {MAX_NAME_DEPTH} levels"
    )]
    NameTooLong { name: String },
    /// A zip bomb's trick: several entries decoding the same compressed bytes.
    #[error("the data of entry {name:?} overlaps {other}")]
    Overlapping { name: String, other: String },
    #[error("entry {name:?} is encrypted or uses an unsupported compression method")]
    Unsupported { name: String },
    #[error("the archive's uncompressed size exceeds the limit")]
    TooLarge,
    #[error("the archive has {entries} entries, more than the {max} allowed")]
    TooManyEntries { entries: u64, max: u64 },
    #[error("entry {name:?} has a suspicious compression ratio")]
    SuspiciousRatio { name: String },
    #[error("entry {name:?} does not match its declared size or checksum")]
    SizeMismatch { name: String },
    #[error("the archive has no data.db")]
    MissingDataDb,
    #[error("data.db in the archive is not an SQLite database")]
    DataDbNotSqlite,
    #[error("data.db in the archive fails SQLite's integrity check: {0}")]
    DataDbCorrupt(String),
    #[error("snapshot of {name:?} failed: {source}")]
    Snapshot {
        name: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ArchiveError {
    /// A short English message for clients: no path, no OS detail.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::NotZip(_) => "The archive is not a valid zip file.",
            Self::UnsafePath { .. } => "The archive contains an unsafe file path.",
            Self::SpecialEntry { .. } => "The archive contains links or special files.",
            Self::DuplicateEntry { .. } => "The archive contains duplicate or conflicting entries.",
            Self::NameTooLong { .. } => "The archive contains a file path that is too long or too deep.",
            Self::Overlapping { .. } => "The archive contains entries that share their data.",
            Self::Unsupported { .. } => {
                "The archive uses encryption or an unsupported compression method."
            }
            Self::TooLarge => "The archive is too large to extract.",
            Self::TooManyEntries { .. } => "The archive has too many entries.",
            Self::SuspiciousRatio { .. } => "The archive has a suspicious compression ratio.",
            Self::SizeMismatch { .. } => "The archive is corrupt.",
            Self::MissingDataDb => "The archive has no data.db.",
            Self::DataDbNotSqlite => "The data.db in the archive is not an SQLite database.",
            Self::DataDbCorrupt(_) => "The data.db in the archive is corrupt.",
            Self::Snapshot { .. } => "The database could not be copied.",
            Self::Io(_) => "A file operation failed.",
        }
    }
}

/// Checks that `name` is a safe relative entry name: '/'-separated, no empty, `.` or `..`
/// component, no absolute path, drive letter, backslash or NUL, and within
/// [`MAX_NAME_BYTES`], [`MAX_COMPONENT_BYTES`] and [`MAX_NAME_DEPTH`]. A single trailing
/// '/' (a directory entry) is allowed. Returns the name without that trailing '/'.
fn check_entry_name(name: &str) -> Result<&str, ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath {
        name: name.to_owned(),
    };
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    // First, so that the work below is bounded too.
    if trimmed.len() > MAX_NAME_BYTES {
        return Err(name_too_long(name));
    }
    let bytes = trimmed.as_bytes();
    let has_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if trimmed.is_empty() || has_drive || trimmed.contains(['\\', '\0']) {
        return Err(unsafe_path());
    }
    let mut depth = 0;
    for part in trimmed.split('/') {
        // A leading '/' shows up as an empty first component.
        if part.is_empty() || part == "." || part == ".." {
            return Err(unsafe_path());
        }
        depth += 1;
        if part.len() > MAX_COMPONENT_BYTES || depth > MAX_NAME_DEPTH {
            return Err(name_too_long(name));
        }
    }
    Ok(trimmed)
}

/// The error for an over-long name, keeping only its start for the log.
fn name_too_long(name: &str) -> ArchiveError {
    let mut end = name.len().min(100);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    ArchiveError::NameTooLong { name: name[..end].to_owned() }
}
