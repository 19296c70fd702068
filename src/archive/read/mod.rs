//! Checking and extracting untrusted archives (uploads, restores).
//!
//! Validation reads the central directory, record by record (see `central`). An archive
//! listed in walk order (ours, PocketBase's) is checked and extracted one record at a
//! time, in memory that does not grow with its entries (`in_order`). Any other goes into a
//! compact list: about 40 bytes per entry plus its name, all names in one arena; then the
//! local headers, to refuse entries whose data overlap. Names are checked in one sorted
//! pass (4 bytes per entry), which extraction walks again to make the folders.
//! Extraction validates first, then decodes each entry itself (Stored or Deflated only) so
//! that it counts the bytes really produced and stops as soon as an entry yields more than
//! it declared; files are decoded on a few threads, each with its own buffers, so memory
//! does not grow with the archive beyond that list.
//!
//! The parts, each in its own file: `check` (the compact list and every check on it),
//! `in_order` (the same checks between neighbours, for archives in walk order), `dirs`
//! (the order of names and the folders an extraction makes), `extract` (the extraction
//! threads) and `window` (reads of the archive at an offset).

mod check;
mod dirs;
mod extract;
mod in_order;
mod window;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::DeflateDecoder;

use check::{check_entries, CheckedArchive, Entry, Named};
use in_order::InOrder;
use extract::extract_checked;
use window::Window;
use super::central;
use super::format::LOCAL_LEN;
use super::{ArchiveError, ArchiveLimits, ArchiveSummary, DATA_DB, SQLITE_HEADER};
use crate::progress::ProgressCounter;

/// Checks the archive at `path` without extracting it: the central directory parses, names
/// are safe, no links or special entries, no duplicates, sizes and ratios within `limits`.
pub fn validate(path: &Path, limits: &ArchiveLimits) -> Result<ArchiveSummary, ArchiveError> {
    let file = File::open(path)?;
    Ok(check(&file, limits)?.summary().clone())
}

/// An archive that passed every check, in one of two forms.
enum Checked {
    /// Listed in walk order: read again, a record at a time, to extract it.
    InOrder(InOrder),
    /// Any other order: its entries in a compact list.
    Listed(CheckedArchive),
}

impl Checked {
    fn summary(&self) -> &ArchiveSummary {
        match self {
            Checked::InOrder(in_order) => &in_order.summary,
            Checked::Listed(listed) => &listed.summary,
        }
    }

    /// The top-level `data.db` file: its position and entry.
    fn data_db(&self) -> Option<(usize, &Entry)> {
        match self {
            Checked::InOrder(in_order) => in_order.data_db.as_ref().map(|(position, entry)| (*position, entry)),
            Checked::Listed(listed) => listed.data_db.map(|position| (position, &listed.entries.list[position])),
        }
    }
}

/// Every check on the archive: in walk order when it is listed so, else on the compact
/// list, which also reports every fault.
fn check(file: &File, limits: &ArchiveLimits) -> Result<Checked, ArchiveError> {
    match in_order::check(file, limits) {
        Some(in_order) => Ok(Checked::InOrder(in_order)),
        None => Ok(Checked::Listed(check_entries(file, limits)?)),
    }
}

/// [`validate`], plus: the archive holds a top-level `data.db` that starts like an SQLite
/// database (R22).
pub fn check_restorable(
    path: &Path,
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    let file = File::open(path)?;
    let checked = check(&file, limits)?;
    check_data_db(&file, &checked)?;
    Ok(checked.summary().clone())
}

/// The `data.db` part of [`check_restorable`], on an archive already opened and checked.
fn check_data_db(file: &File, checked: &Checked) -> Result<(), ArchiveError> {
    let Some((_, data_db)) = checked.data_db() else {
        return Err(ArchiveError::MissingDataDb);
    };
    let data_db = (data_db, DATA_DB);
    let mut header = [0u8; 16];
    let read = open_entry(file, data_db)?.read_exact(&mut header);
    match read {
        Ok(()) if &header == SQLITE_HEADER => Ok(()),
        Ok(()) => Err(ArchiveError::DataDbNotSqlite),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ArchiveError::DataDbNotSqlite)
        }
        Err(err) => Err(entry_read_error(err, data_db)),
    }
}

/// Validates the archive, then extracts it into `dest`, an existing empty directory.
///
/// Files are created with `create_new` and never through a symlink, every file and
/// directory is made durable (one `syncfs` at the end), permissions are restored without setuid/setgid/sticky bits (and
/// always with owner read/write). On error `dest` holds an unspecified part of the archive
/// and the caller deletes it; nothing is ever written outside `dest`.
///
/// Directories are created first, in series; then a few threads decode the files, each
/// reading the archive with `pread` through its own buffers. Every entry is decoded and
/// checked before this returns Ok; on failures the error reported is that of the first
/// failing entry in archive order, as a serial extraction would report it.
pub fn extract(path: &Path, dest: &Path, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
    let file = File::open(path)?;
    let checked = check(&file, limits)?;
    extract_checked(&file, checked, dest, limits, Output::Everything, &ProgressCounter::default())
}

/// What an extraction writes into its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Every entry, as files and folders: a restore's extraction.
    Everything,
    /// `data.db` alone; every other entry is decoded and checked like the rest, and its bytes
    /// dropped: the checks of a restore with almost no scratch space (`backups verify`).
    DataDbOnly,
}

/// [`check_restorable`], then [`extract`] of `output`, reading the central directory once;
/// the decoding counts into `progress` (its total is the entries' uncompressed size).
pub fn extract_restorable(
    path: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
    output: Output,
    progress: &ProgressCounter,
) -> Result<ArchiveSummary, ArchiveError> {
    let file = File::open(path)?;
    let checked = check(&file, limits)?;
    check_data_db(&file, &checked)?;
    let summary = checked.summary().clone();
    extract_checked(&file, checked, dest, limits, output, progress)?;
    Ok(summary)
}

/// What an archive's central directory declares, read without any entry's data: enough
/// to know the room a restore or a verify needs before the archive is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    pub entries: u64,
    /// Sum of the entries' uncompressed sizes, within the limit.
    pub total_size: u64,
    /// Uncompressed size of the top-level `data.db`, if there is one.
    pub data_db_size: Option<u64>,
}

impl Declared {
    /// The bytes an extraction of `output` writes.
    pub fn written(&self, output: Output) -> u64 {
        match output {
            Output::Everything => self.total_size,
            Output::DataDbOnly => self.data_db_size.unwrap_or(0),
        }
    }
}

/// Reads the central directory of `source` (its records only, one at a time) for the
/// entry count and sizes it declares, refusing what is over `limits` (count, total).
pub fn read_declared(source: &dyn central::ArchiveSource, limits: &ArchiveLimits) -> Result<Declared, ArchiveError> {
    let directory = central::open(source, limits.max_entries)?;
    let mut records = directory.records(source)?;
    let mut declared = Declared { entries: directory.count, total_size: 0, data_db_size: None };
    while let Some(record) = records.next_record()? {
        declared.total_size = declared
            .total_size
            .checked_add(record.size)
            .filter(|total| *total <= limits.max_total_size)
            .ok_or(ArchiveError::TooLarge)?;
        if record.name == DATA_DB {
            declared.data_db_size.get_or_insert(record.size);
        }
    }
    Ok(declared)
}

/// The decoded content of an entry, from its local header on. Decoding ourselves lets the
/// caller count and bound the real output.
fn open_entry<'a>(file: &'a File, named: Named) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    let (start, end) = Window::new(LOCAL_LEN).data_range(file, named)?;
    let mut reader = file;
    reader.seek(SeekFrom::Start(start))?;
    let raw = reader.take(end - start);
    Ok(if named.0.deflated {
        Box::new(DeflateDecoder::new(raw))
    } else {
        Box::new(raw)
    })
}

/// Corrupt compressed data surfaces as InvalidData/InvalidInput from the decoder.
fn entry_read_error(err: io::Error, named: Named) -> ArchiveError {
    match err.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => ArchiveError::SizeMismatch {
            name: named.1.to_owned(),
        },
        _ => ArchiveError::Io(err),
    }
}
