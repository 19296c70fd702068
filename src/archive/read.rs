//! Checking and extracting untrusted archives (uploads, restores).
//!
//! Validation reads only the central directory. Extraction validates first, then decodes
//! each entry itself (Stored or Deflated only) so that it counts the bytes really produced
//! and stops as soon as an entry yields more than it declared.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::read::DeflateDecoder;
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use crate::progress::ProgressCounter;
use super::{
    check_entry_name, ArchiveError, ArchiveLimits, ArchiveSummary, DATA_DB, SQLITE_HEADER,
};

const CHUNK_SIZE: usize = 256 * 1024;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
/// Owner bits always granted on extraction, so the server can read, move and delete what
/// it extracted whatever the archive says.
const OWNER_FILE_BITS: u32 = 0o600;
const OWNER_DIR_BITS: u32 = 0o700;
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

/// Checks the archive at `path` without extracting it: the central directory parses, names
/// are safe, no links or special entries, no duplicates, sizes and ratios within `limits`.
pub fn validate(path: &Path, limits: &ArchiveLimits) -> Result<ArchiveSummary, ArchiveError> {
    let archive = open_archive(path, limits)?;
    Ok(check_entries(&archive, limits)?.summary)
}

/// [`validate`], plus: the archive holds a top-level `data.db` that starts like an SQLite
/// database (R22).
pub fn check_restorable(
    path: &Path,
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    let mut archive = open_archive(path, limits)?;
    let checked = check_entries(&archive, limits)?;
    let Some(data_db) = checked
        .entries
        .iter()
        .find(|e| !e.is_dir && e.name == DATA_DB)
    else {
        return Err(ArchiveError::MissingDataDb);
    };
    let mut header = [0u8; 16];
    let read = open_entry(&mut archive, data_db)?.read_exact(&mut header);
    match read {
        Ok(()) if &header == SQLITE_HEADER => Ok(checked.summary),
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
pub fn extract(path: &Path, dest: &Path, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
    extract_counted(path, dest, limits, &ProgressCounter::default())
}

/// [`extract`], counting into `progress`: its total is the entries' uncompressed size, and
/// each chunk counts as it is written.
pub fn extract_counted(path: &Path, dest: &Path, limits: &ArchiveLimits, progress: &ProgressCounter) -> Result<(), ArchiveError> {
    let mut archive = open_archive(path, limits)?;
    let checked = check_entries(&archive, limits)?;
    progress.set_total(checked.summary.total_size);
    let mut dirs = DirTracker::new(dest);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut total_written = 0u64;

    for entry in &checked.entries {
        if entry.is_dir {
            dirs.ensure(&entry.name, entry.mode)?;
            continue;
        }
        let parent = match entry.name.rsplit_once('/') {
            Some((parent, _)) => dirs.ensure(parent, None)?,
            None => dest.to_path_buf(),
        };
        let file_name = entry.name.rsplit('/').next().unwrap_or(&entry.name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(OWNER_FILE_BITS)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(parent.join(file_name))?;
        let mut reader = open_entry(&mut archive, entry)?;
        let mut crc = flate2::Crc::new();
        let mut written = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(entry_read_error(err, entry)),
            };
            written += n as u64;
            total_written += n as u64;
            if written > entry.size {
                return Err(ArchiveError::SizeMismatch {
                    name: entry.name.clone(),
                });
            }
            if total_written > limits.max_total_size {
                return Err(ArchiveError::TooLarge);
            }
            crc.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            progress.add(n as u64);
        }
        if written != entry.size || crc.sum() != entry.crc32 {
            return Err(ArchiveError::SizeMismatch {
                name: entry.name.clone(),
            });
        }
        let mode = entry.mode.unwrap_or(DEFAULT_FILE_MODE) & 0o777 | OWNER_FILE_BITS;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    dirs.finish()
}

/// An entry that passed validation.
#[derive(Debug)]
struct CheckedEntry {
    index: usize,
    /// Safe relative name without the trailing '/'.
    name: String,
    is_dir: bool,
    size: u64,
    crc32: u32,
    method: CompressionMethod,
    /// Permission bits recorded by a Unix archiver.
    mode: Option<u32>,
}

struct CheckedArchive {
    summary: ArchiveSummary,
    entries: Vec<CheckedEntry>,
}

fn open_archive(
    path: &Path,
    limits: &ArchiveLimits,
) -> Result<ZipArchive<BufReader<File>>, ArchiveError> {
    let mut file = File::open(path)?;
    if declared_entry_count(&mut file)? > limits.max_entries as u64 {
        return Err(ArchiveError::TooManyEntries);
    }
    file.rewind()?;
    ZipArchive::new(BufReader::new(file)).map_err(|err| match err {
        // A short or garbled file surfaces as an I/O error from the parser.
        ZipError::Io(io)
            if !matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::InvalidData
                    | io::ErrorKind::InvalidInput
            ) =>
        {
            ArchiveError::Io(io)
        }
        other => ArchiveError::NotZip(other.to_string()),
    })
}

/// The entry count from the end-of-central-directory record (zip64 when present), read
/// before the zip crate parses the directory: it allocates per declared entry, so a huge
/// count in a small upload must be refused first. 0 when no record is found (the parser
/// then reports the archive as invalid).
fn declared_entry_count(file: &mut File) -> Result<u64, ArchiveError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const ZIP64_LOCATOR: &[u8] = b"PK\x06\x07";
    const ZIP64_EOCD: &[u8] = b"PK\x06\x06";
    // The record is 22 bytes plus a comment of at most 64 KiB, preceded by the 20-byte
    // zip64 locator.
    let len = file.metadata()?.len();
    let tail_len = len.min(22 + 0xFFFF + 20);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    Read::by_ref(file).take(tail_len).read_to_end(&mut tail)?;
    let Some(eocd) = tail
        .windows(4)
        .rposition(|w| w == EOCD)
        .filter(|pos| pos + 22 <= tail.len())
    else {
        return Ok(0);
    };
    let classic = u64::from(u16::from_le_bytes([tail[eocd + 10], tail[eocd + 11]]));
    let Some(locator) = eocd
        .checked_sub(20)
        .filter(|l| &tail[*l..l + 4] == ZIP64_LOCATOR)
    else {
        return Ok(classic);
    };
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&tail[locator + 8..locator + 16]);
    let mut record = [0u8; 40];
    file.seek(SeekFrom::Start(u64::from_le_bytes(offset)))?;
    match file.read_exact(&mut record) {
        Ok(()) if &record[..4] == ZIP64_EOCD => {
            let mut count = [0u8; 8];
            count.copy_from_slice(&record[32..40]);
            Ok(u64::from_le_bytes(count))
        }
        Ok(()) => Err(ArchiveError::NotZip(
            "zip64 record not where its locator says".into(),
        )),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(ArchiveError::NotZip(
            "zip64 locator points past the end".into(),
        )),
        Err(err) => Err(err.into()),
    }
}

fn check_entries<R: Read + Seek>(
    archive: &ZipArchive<R>,
    limits: &ArchiveLimits,
) -> Result<CheckedArchive, ArchiveError> {
    if archive.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries);
    }
    // The zip crate keeps one entry per name, so exact duplicates are only visible here.
    if archive.has_duplicate_names() {
        return Err(ArchiveError::DuplicateEntry {
            name: "(a name repeated in the central directory)".to_owned(),
        });
    }
    let mut entries = Vec::with_capacity(archive.len());
    let mut seen = HashSet::with_capacity(archive.len());
    let mut total_size = 0u64;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_data(index)
            .map_err(|err| ArchiveError::NotZip(err.to_string()))?;
        let raw_name = entry
            .name()
            .map_err(|err| ArchiveError::NotZip(err.to_string()))?;
        let name = check_entry_name(&raw_name)?.to_owned();
        let is_dir = raw_name.ends_with('/');
        let special = || ArchiveError::SpecialEntry { name: name.clone() };

        // Unix archivers put the file type in the upper half of the external attributes.
        let unix_mode = match entry.system() {
            zip::System::Unix => Some(entry.external_attributes() >> 16).filter(|m| *m != 0),
            _ => None,
        };
        match unix_mode.map(|m| m & S_IFMT) {
            None | Some(0) => {}
            Some(S_IFREG) if !is_dir => {}
            Some(S_IFDIR) if is_dir => {}
            Some(_) => return Err(special()),
        }
        if is_dir && entry.size() != 0 {
            return Err(special());
        }
        if entry.encrypted()
            || !matches!(
                entry.compression(),
                CompressionMethod::Stored | CompressionMethod::Deflated
            )
        {
            return Err(ArchiveError::Unsupported { name });
        }
        if entry.size() / entry.compressed_size().max(1) > limits.max_ratio {
            return Err(ArchiveError::SuspiciousRatio { name });
        }
        total_size = total_size
            .checked_add(entry.size())
            .filter(|total| *total <= limits.max_total_size)
            .ok_or(ArchiveError::TooLarge)?;
        if !seen.insert(name.clone()) {
            return Err(ArchiveError::DuplicateEntry { name });
        }
        entries.push(CheckedEntry {
            index,
            is_dir,
            size: entry.size(),
            crc32: entry.crc32(),
            method: entry.compression(),
            mode: unix_mode.map(|m| m & 0o777),
            name,
        });
    }

    // A file cannot also be the parent of another entry ("a" and "a/b").
    let files: HashSet<&str> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .map(|e| e.name.as_str())
        .collect();
    for entry in &entries {
        let mut ancestors = entry.name.match_indices('/').map(|(i, _)| &entry.name[..i]);
        if ancestors.any(|ancestor| files.contains(ancestor)) {
            return Err(ArchiveError::DuplicateEntry {
                name: entry.name.clone(),
            });
        }
    }

    let has_data_db = entries.iter().any(|e| !e.is_dir && e.name == DATA_DB);
    Ok(CheckedArchive {
        summary: ArchiveSummary {
            entries: entries.len(),
            total_size,
            has_data_db,
        },
        entries,
    })
}

/// The decoded content of an entry. Decoding ourselves (rather than through the zip
/// crate's reader) lets the caller count and bound the real output.
fn open_entry<'a, R: Read + Seek>(
    archive: &'a mut ZipArchive<R>,
    entry: &CheckedEntry,
) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    let raw = archive.by_index_raw(entry.index).map_err(|err| match err {
        ZipError::Io(io) => ArchiveError::Io(io),
        other => ArchiveError::NotZip(other.to_string()),
    })?;
    Ok(match entry.method {
        CompressionMethod::Deflated => Box::new(DeflateDecoder::new(raw)),
        _ => Box::new(raw),
    })
}

/// Corrupt compressed data surfaces as InvalidData/InvalidInput from the decoder.
fn entry_read_error(err: io::Error, entry: &CheckedEntry) -> ArchiveError {
    match err.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => ArchiveError::SizeMismatch {
            name: entry.name.clone(),
        },
        _ => ArchiveError::Io(err),
    }
}

/// Creates the directories of an extraction and finishes them (permissions, fsync) once
/// their content is written.
struct DirTracker {
    dest: PathBuf,
    /// Directories created by us, parents before children, with their recorded mode.
    created: Vec<(PathBuf, Option<u32>)>,
    known: HashSet<PathBuf>,
}

impl DirTracker {
    fn new(dest: &Path) -> Self {
        Self {
            dest: dest.to_path_buf(),
            created: Vec::new(),
            known: HashSet::new(),
        }
    }

    /// Makes sure the directory `name` (relative, validated) exists as a real directory
    /// under `dest`, creating missing parents; returns its path.
    fn ensure(&mut self, name: &str, mode: Option<u32>) -> Result<PathBuf, ArchiveError> {
        let mut path = self.dest.clone();
        for part in name.split('/') {
            path.push(part);
            if self.known.contains(&path) {
                continue;
            }
            match fs::create_dir(&path) {
                Ok(()) => {}
                // Only possible if `dest` was not empty or someone races us: accept a real
                // directory, never a symlink.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    if !fs::symlink_metadata(&path)?.is_dir() {
                        return Err(ArchiveError::UnsafePath {
                            name: name.to_owned(),
                        });
                    }
                }
                Err(err) => return Err(err.into()),
            }
            self.known.insert(path.clone());
            self.created.push((path.clone(), None));
        }
        if mode.is_some() {
            if let Some(slot) = self.created.iter_mut().rev().find(|(p, _)| *p == path) {
                slot.1 = mode;
            }
        }
        Ok(path)
    }

    /// Applies directory permissions children first (a read-only parent must not block its
    /// children), then makes everything extracted durable with one `syncfs`: an fsync per
    /// file and directory costs a journal commit each, seconds for a few thousand files.
    fn finish(self) -> Result<(), ArchiveError> {
        for (path, mode) in self.created.iter().rev() {
            let mode = mode.unwrap_or(DEFAULT_DIR_MODE) & 0o777 | OWNER_DIR_BITS;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        let dest = File::open(&self.dest)?;
        rustix::fs::syncfs(&dest).map_err(io::Error::from)?;
        Ok(())
    }
}
