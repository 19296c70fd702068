//! Checking and extracting untrusted archives (uploads, restores).
//!
//! Validation reads the central directory, record by record (see `central`), into a
//! compact list: about 40 bytes per entry plus its name, all names in one arena; then the
//! local headers, to refuse entries whose data overlap. Names are checked in one sorted
//! pass (4 bytes per entry), which extraction walks again to make the folders.
//! Extraction validates first, then decodes each entry itself (Stored or Deflated only) so
//! that it counts the bytes really produced and stops as soon as an entry yields more than
//! it declared; files are decoded on a few threads, each with its own buffers, so memory
//! does not grow with the archive beyond that list.

use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use flate2::read::DeflateDecoder;
use flate2::{Decompress, FlushDecompress, Status};
use rustix::fs::{Mode, OFlags};

use super::central::{self, Record};
use super::format::{LOCAL_LEN, LOCAL_SIG, METHOD_DEFLATED, METHOD_STORED, S_IFDIR, S_IFMT, S_IFREG};
use super::{
    check_entry_name, ArchiveError, ArchiveLimits, ArchiveSummary, DATA_DB, SQLITE_HEADER,
};
use crate::progress::ProgressCounter;

const CHUNK_SIZE: usize = 256 * 1024;
/// Owner bits always granted on extraction, so the server can read, move and delete what
/// it extracted whatever the archive says.
const OWNER_FILE_BITS: u32 = 0o600;
const OWNER_DIR_BITS: u32 = 0o700;
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

/// Checks the archive at `path` without extracting it: the central directory parses, names
/// are safe, no links or special entries, no duplicates, sizes and ratios within `limits`.
pub fn validate(path: &Path, limits: &ArchiveLimits) -> Result<ArchiveSummary, ArchiveError> {
    let file = File::open(path)?;
    Ok(check_entries(&file, limits)?.summary)
}

/// [`validate`], plus: the archive holds a top-level `data.db` that starts like an SQLite
/// database (R22).
pub fn check_restorable(
    path: &Path,
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    let file = File::open(path)?;
    let checked = check_entries(&file, limits)?;
    check_data_db(&file, &checked)?;
    Ok(checked.summary)
}

/// The `data.db` part of [`check_restorable`], on an archive already opened and checked.
fn check_data_db(file: &File, checked: &CheckedArchive) -> Result<(), ArchiveError> {
    let Some(data_db) = checked.data_db.map(|position| &checked.entries.list[position]) else {
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
    let checked = check_entries(&file, limits)?;
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
    let checked = check_entries(&file, limits)?;
    check_data_db(&file, &checked)?;
    let summary = checked.summary.clone();
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

/// The extraction itself, of an archive that passed `check_entries`.
fn extract_checked(
    file: &File,
    checked: CheckedArchive,
    dest: &Path,
    limits: &ArchiveLimits,
    output: Output,
    progress: &ProgressCounter,
) -> Result<(), ArchiveError> {
    // What is written (everything, or data.db alone), refused up front when it cannot fit.
    let (written, only) = match output {
        Output::Everything => (checked.summary.total_size, None),
        Output::DataDbOnly => {
            let position = checked.data_db.ok_or(ArchiveError::MissingDataDb)?;
            (checked.entries.list[position].size, Some(position))
        }
    };
    if written > limits.max_written {
        return Err(ArchiveError::TooLarge);
    }
    progress.set_total(checked.summary.total_size);
    let (entries, order) = (checked.entries, checked.order);
    if output == Output::Everything {
        walk_dirs(&entries, &order, |path| make_dir(dest, path), |_, _| Ok(()))?;
    }
    let files: Vec<u32> = (0..entries.list.len() as u32)
        .filter(|&p| !entries.list[p as usize].is_dir)
        .collect();
    let units = work_units(&entries.list, &files);
    drop(files);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(units.len())
        .max(1);
    let job = Job {
        archive: file,
        dest: dest.as_os_str().as_bytes(),
        entries: &entries,
        units: &units,
        next_unit: AtomicUsize::new(0),
        total_written: AtomicU64::new(0),
        progress,
        max_total_size: match output {
            Output::Everything => limits.max_total_size.min(limits.max_written),
            Output::DataDbOnly => limits.max_total_size,
        },
        only,
        umask: creation_mask(dest),
        first_failure: AtomicUsize::new(usize::MAX),
        failure: Mutex::new(None),
    };
    if threads == 1 {
        job.work();
    } else {
        std::thread::scope(|scope| {
            for _ in 1..threads {
                // A thread that cannot start only leaves more units to the others.
                let spawned = std::thread::Builder::new()
                    .name("extract".into())
                    .spawn_scoped(scope, || job.work());
                if spawned.is_err() {
                    break;
                }
            }
            job.work();
        });
    }
    if let Some((_, err)) = job.failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err);
    }
    if output == Output::DataDbOnly {
        // Scratch for checks: nothing to keep across a crash.
        return Ok(());
    }
    // Permissions once the content is written (a read-only folder must not block its
    // children), children first; then everything extracted is made durable with one
    // `syncfs`: an fsync per file and directory costs a journal commit each, seconds for a
    // few thousand files.
    walk_dirs(&entries, &order, |_| Ok(()), |path, mode| {
        let mode = mode.unwrap_or(DEFAULT_DIR_MODE) & 0o777 | OWNER_DIR_BITS;
        fs::set_permissions(dest.join(path), fs::Permissions::from_mode(mode)).map_err(Into::into)
    })?;
    let dest = File::open(dest)?;
    rustix::fs::syncfs(&dest).map_err(io::Error::from)?;
    Ok(())
}

/// More threads than this only contend for the disk and the directory locks.
const MAX_THREADS: usize = 4;
/// Small files go to a worker in batches of about this many compressed bytes (or
/// [`BATCH_FILES`] files): fewer hand-offs, and one batch is read with few `pread`s.
const BATCH_BYTES: u64 = 1 << 20;
const BATCH_FILES: usize = 512;

/// Splits the file entries (positions in `entries`, archive order) into units of work: a
/// large file alone, small files in runs. Largest first, so that no big file starts last
/// while the other threads idle.
fn work_units(entries: &[Entry], files: &[u32]) -> Vec<Range<usize>> {
    let mut units = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, &position) in files.iter().enumerate() {
        let position = position as usize;
        let size = entries[position]
            .compressed_size
            .max(entries[position].size);
        if size >= BATCH_BYTES {
            if start < i {
                units.push(start..i);
            }
            units.push(i..i + 1);
            start = i + 1;
            bytes = 0;
            continue;
        }
        bytes += size;
        if bytes >= BATCH_BYTES || i + 1 - start >= BATCH_FILES {
            units.push(start..i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < files.len() {
        units.push(start..files.len());
    }
    let weight = |unit: &Range<usize>| -> u64 {
        files[unit.clone()].iter().map(|&p| entries[p as usize].size).sum()
    };
    units.sort_by_cached_key(|unit| std::cmp::Reverse(weight(unit)));
    units
        .into_iter()
        .map(|unit| files[unit.start] as usize..files[unit.end - 1] as usize + 1)
        .collect()
}

/// What the extraction threads share.
struct Job<'a> {
    archive: &'a File,
    dest: &'a [u8],
    entries: &'a Entries,
    /// Ranges of positions in `entries`; directories inside them are skipped.
    units: &'a [Range<usize>],
    next_unit: AtomicUsize,
    total_written: AtomicU64,
    progress: &'a ProgressCounter,
    /// Decoded bytes allowed in all (what is written too, when everything is).
    max_total_size: u64,
    /// The only entry written to a file, when not every one is ([`Output::DataDbOnly`]).
    only: Option<usize>,
    umask: Option<u32>,
    /// Position of the first failing entry so far: entries after it need no decoding.
    first_failure: AtomicUsize,
    failure: Mutex<Option<(usize, ArchiveError)>>,
}

impl Job<'_> {
    /// Takes units until none are left, decoding every entry before the first failure.
    fn work(&self) {
        let mut worker = Worker::new();
        loop {
            let unit = self.next_unit.fetch_add(1, Ordering::Relaxed);
            let Some(range) = self.units.get(unit) else {
                return;
            };
            for position in range.clone() {
                if position > self.first_failure.load(Ordering::Relaxed) {
                    break;
                }
                let entry = &self.entries.list[position];
                if entry.is_dir {
                    continue;
                }
                let entry = (entry, self.entries.name(entry));
                let result = if self.only.is_some_and(|only| only != position) {
                    worker.decode(self, entry, None)
                } else {
                    worker.extract_file(self, entry)
                };
                if let Err(err) = result {
                    self.fail(position, err);
                    break;
                }
            }
        }
    }

    fn fail(&self, position: usize, err: ArchiveError) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.as_ref().is_none_or(|(first, _)| position < *first) {
            *failure = Some((position, err));
            self.first_failure.store(position, Ordering::Relaxed);
        }
    }
}

/// One extraction thread's buffers, reused for every file it writes.
struct Worker {
    window: Window,
    out: Vec<u8>,
    inflate: Decompress,
    /// `dest/name` with a trailing NUL, for `openat`.
    path: Vec<u8>,
}

impl Worker {
    fn new() -> Self {
        Self {
            window: Window::new(CHUNK_SIZE),
            out: vec![0u8; CHUNK_SIZE],
            inflate: Decompress::new(false),
            path: Vec::new(),
        }
    }

    fn extract_file(&mut self, job: &Job, named: Named) -> Result<(), ArchiveError> {
        let (entry, name) = named;
        self.path.clear();
        self.path.extend_from_slice(job.dest);
        self.path.push(b'/');
        self.path.extend_from_slice(name.as_bytes());
        self.path.push(0);
        let path = CStr::from_bytes_with_nul(&self.path).map_err(|_| ArchiveError::UnsafePath {
            name: name.to_owned(),
        })?;
        let mode = entry.mode().unwrap_or(DEFAULT_FILE_MODE) & 0o777 | OWNER_FILE_BITS;
        // Created with its final mode when the umask leaves it whole: a `fchmod` per file
        // is a journalled inode change, a real cost for tens of thousands of small files.
        let create_mode = match job.umask {
            Some(umask) if mode & umask == 0 => mode,
            _ => OWNER_FILE_BITS,
        };
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(create_mode),
        )
        .map_err(io::Error::from)?;
        let mut file = File::from(fd);
        self.decode(job, named, Some(&mut file))?;
        if create_mode != mode {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// Decodes `entry` into `file` (or into nothing), checking the output against the
    /// declared size as it comes and against the CRC at the end.
    fn decode(
        &mut self,
        job: &Job,
        named: Named,
        mut file: Option<&mut File>,
    ) -> Result<(), ArchiveError> {
        let (entry, name) = named;
        let corrupt = || ArchiveError::SizeMismatch {
            name: name.to_owned(),
        };
        let (mut pos, end) = self.window.data_range(job.archive, named)?;
        let mut crc = flate2::Crc::new();
        let mut written = 0u64;
        let mut emit = |chunk: &[u8]| -> Result<(), ArchiveError> {
            let n = chunk.len() as u64;
            written += n;
            if written > entry.size {
                return Err(corrupt());
            }
            if job.total_written.fetch_add(n, Ordering::Relaxed) + n > job.max_total_size {
                return Err(ArchiveError::TooLarge);
            }
            crc.update(chunk);
            if let Some(file) = file.as_mut() {
                file.write_all(chunk)?;
            }
            job.progress.add(n);
            Ok(())
        };
        if entry.deflated {
            self.inflate.reset(false);
            loop {
                let input = self.window.read(job.archive, pos, end)?;
                let input_len = input.len();
                let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
                let status = self
                    .inflate
                    .decompress(input, &mut self.out, FlushDecompress::None)
                    .map_err(|_| corrupt())?;
                let consumed = self.inflate.total_in() - before_in;
                let produced = (self.inflate.total_out() - before_out) as usize;
                pos += consumed;
                emit(&self.out[..produced])?;
                match status {
                    Status::StreamEnd => break,
                    // The compressed data ended before the stream did: what came out is
                    // judged by its size and CRC below, as the zip crate's reader would.
                    _ if consumed == 0 && produced == 0 && input_len == 0 => break,
                    _ if consumed == 0 && produced == 0 => return Err(corrupt()),
                    _ => {}
                }
            }
        } else {
            while pos < end {
                let input = self.window.read(job.archive, pos, end)?;
                if input.is_empty() {
                    break;
                }
                pos += input.len() as u64;
                emit(input)?;
            }
        }
        if written != entry.size || crc.sum() != entry.crc32 {
            return Err(corrupt());
        }
        Ok(())
    }
}

/// A read buffer over the archive at some offset, filled with `pread` so that threads share
/// one file without sharing a position; consecutive small entries come from one read.
struct Window {
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl Window {
    fn new(size: usize) -> Self {
        Self {
            buf: vec![0u8; size],
            start: 0,
            len: 0,
        }
    }

    /// The archive's bytes from `offset` on, at least `min` of them unless the file ends
    /// first (at most what the buffer holds).
    fn at(&mut self, archive: &File, offset: u64, min: usize) -> io::Result<&[u8]> {
        let buffered = offset >= self.start && offset.saturating_add(min as u64) <= self.start + self.len as u64;
        if !buffered {
            self.start = offset;
            self.len = 0;
            while self.len < min.max(1) {
                match archive.read_at(&mut self.buf[self.len..], offset + self.len as u64) {
                    Ok(0) => break,
                    Ok(n) => self.len += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(&self.buf[(offset - self.start) as usize..self.len])
    }

    /// Up to a buffer of the archive's bytes in `pos..end`; empty at the end of either.
    fn read(&mut self, archive: &File, pos: u64, end: u64) -> io::Result<&[u8]> {
        if pos >= end {
            return Ok(&[]);
        }
        let bytes = self.at(archive, pos, 1)?;
        Ok(&bytes[..bytes.len().min((end - pos) as usize)])
    }

    /// Where `entry`'s data lies, from its local header (whose name and extra field lengths
    /// may differ from the central directory's).
    fn data_range(&mut self, archive: &File, named: Named) -> Result<(u64, u64), ArchiveError> {
        let (entry, name) = named;
        let header = self.at(archive, entry.header_start, LOCAL_LEN)?;
        if header.len() < LOCAL_LEN || &header[..4] != LOCAL_SIG {
            return Err(ArchiveError::NotZip(format!("no local header for {name:?}")));
        }
        let name_len = u16::from_le_bytes([header[26], header[27]]);
        let extra_len = u16::from_le_bytes([header[28], header[29]]);
        let start = entry.header_start
            + LOCAL_LEN as u64
            + u64::from(name_len)
            + u64::from(extra_len);
        let end = start.checked_add(entry.compressed_size).ok_or_else(|| {
            ArchiveError::NotZip(format!("data of {name:?} ends past 2^64"))
        })?;
        Ok((start, end))
    }
}

/// What `open` removes from the mode of a new file under `dest`: the process umask, read
/// from /proc (reading it with umask(2) would change it for a moment, under other threads'
/// feet). `None` where unknown, or where a default ACL on `dest` (inherited by the folders
/// we create) decides instead: files then get an explicit chmod.
fn creation_mask(dest: &Path) -> Option<u32> {
    match rustix::fs::getxattr(dest, "system.posix_acl_default", &mut [0u8; 0][..]) {
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => {}
        _ => return None,
    }
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// A central directory entry as kept for the checks and the extraction: a few dozen bytes,
/// its name in [`Entries::names`].
#[derive(Debug)]
struct Entry {
    size: u64,
    compressed_size: u64,
    /// Offset of the local header.
    header_start: u64,
    crc32: u32,
    /// The name, without a trailing '/', is `names[name_start..][..name_len]` (longer than
    /// the 16-bit name field once decoded from CP437).
    name_start: u32,
    name_len: u32,
    /// Permission bits recorded by a Unix archiver, or [`NO_MODE`] (a u16, not an Option:
    /// this keeps the entry at 40 bytes).
    mode: u16,
    /// The name ended with '/'.
    is_dir: bool,
    /// Deflated, else stored (once checked).
    deflated: bool,
}

const NO_MODE: u16 = u16::MAX;
const _: () = assert!(std::mem::size_of::<Entry>() == 40);

impl Entry {
    fn mode(&self) -> Option<u32> {
        (self.mode != NO_MODE).then_some(u32::from(self.mode))
    }
}

/// An entry with its name.
type Named<'a> = (&'a Entry, &'a str);

/// The entries in archive order, their names in one arena.
struct Entries {
    list: Vec<Entry>,
    names: String,
}

impl Entries {
    fn name(&self, entry: &Entry) -> &str {
        let start = entry.name_start as usize;
        &self.names[start..start + entry.name_len as usize]
    }
}

/// The order of entry names in which a folder's content comes right after it: names compared
/// component by component, i.e. bytewise with '/' below every other byte. Equal names end
/// up side by side, and a folder's descendants form one run after it.
fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).position(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some(i) => {
            let rank = |byte: u8| if byte == b'/' { 0 } else { u16::from(byte) + 1 };
            rank(a[i]).cmp(&rank(b[i]))
        }
    }
}

/// Whether `name` lies inside the folder `folder`.
fn is_inside(name: &str, folder: &str) -> bool {
    name.len() > folder.len() && name.as_bytes()[folder.len()] == b'/' && name.starts_with(folder)
}

struct CheckedArchive {
    summary: ArchiveSummary,
    entries: Entries,
    /// Entry positions in [`name_order`]: what extraction walks to make the folders.
    order: Vec<u32>,
    /// Position of the top-level `data.db` file.
    data_db: Option<usize>,
}

/// Reads the central directory and checks every entry: names are safe, no links or
/// special entries, no duplicates, sizes and ratios within `limits`.
///
/// Every record is read (a malformed one makes the archive NotZip) and every name kept,
/// even past a refused entry: an exact duplicate anywhere is reported first. Otherwise the
/// error is that of the first bad entry in archive order, a name repeated once normalised
/// (trailing '/' dropped) counting as bad where it repeats.
fn check_entries(file: &File, limits: &ArchiveLimits) -> Result<CheckedArchive, ArchiveError> {
    let directory = central::open(file, limits.max_entries)?;
    let mut records = directory.records(file)?;
    let mut entries = Entries {
        list: Vec::with_capacity(directory.capacity()),
        // Only the pages really written count: the bound is cheap when it is loose. (Raw
        // bytes: CP437 names grow when decoded, and the arena then grows once.)
        names: String::with_capacity(directory.names_bound().min(1 << 28) as usize),
    };
    let mut total_size = 0u64;
    // The first refused entry: its position and why.
    let mut refused: Option<(usize, ArchiveError)> = None;
    while let Some(record) = records.next_record()? {
        let position = entries.list.len();
        let is_dir = record.name.ends_with('/');
        let name = record.name.strip_suffix('/').unwrap_or(record.name);
        let name_start = u32::try_from(entries.names.len() + name.len())
            .map(|end| end - name.len() as u32)
            .map_err(|_| ArchiveError::NotZip("entry names exceed 4 GiB".into()))?;
        entries.names.push_str(name);
        let mut entry = Entry {
            size: record.size,
            compressed_size: record.compressed_size,
            header_start: record.header_start,
            crc32: record.crc32,
            name_start,
            name_len: name.len() as u32,
            mode: NO_MODE,
            is_dir,
            deflated: record.method == METHOD_DEFLATED,
        };
        if refused.is_none() {
            match check_entry(&record, limits, &mut total_size) {
                Ok(mode) => entry.mode = mode.unwrap_or(NO_MODE),
                Err(err) => refused = Some((position, err)),
            }
        }
        entries.list.push(entry);
    }
    drop(records);

    // Positions in name order, ties in archive order (a stable sort): four bytes an entry,
    // and the checks below are single passes over it. Archives list their entries in this
    // order already (ours and PocketBase's walk each folder sorted), so sorting is one pass.
    let name_of = |position: u32| entries.name(&entries.list[position as usize]);
    let mut order: Vec<u32> = (0..entries.list.len() as u32).collect();
    order.sort_by(|&a, &b| name_order(name_of(a), name_of(b)));

    // The first entry in archive order that repeats an earlier one: exactly (name and
    // trailing '/'), or once normalised (a file and a directory of one name). Repeats of a
    // name are side by side in `order`, earliest first.
    let mut first_exact = None::<u32>;
    let mut first_normalised = None::<u32>;
    // Whether the current run of one name had a file, a directory so far.
    let mut seen = [false; 2];
    for (i, &position) in order.iter().enumerate() {
        if i > 0 && name_of(position) != name_of(order[i - 1]) {
            seen = [false; 2];
        }
        let is_dir = entries.list[position as usize].is_dir;
        if seen[usize::from(is_dir)] {
            earliest(&mut first_exact, position);
        } else if seen[usize::from(!is_dir)] {
            earliest(&mut first_normalised, position);
        }
        seen[usize::from(is_dir)] = true;
    }
    let duplicate = |position: u32| ArchiveError::DuplicateEntry { name: name_of(position).to_owned() };
    if let Some(position) = first_exact {
        return Err(duplicate(position));
    }
    let refused_at = refused.as_ref().map_or(usize::MAX, |(position, _)| *position);
    if let Some(position) = first_normalised.filter(|p| (*p as usize) < refused_at) {
        return Err(duplicate(position));
    }
    if let Some((_, err)) = refused {
        return Err(err);
    }

    // A file cannot also be the parent of another entry ("a" and "a/b"): such entries are
    // the run right after the file in `order`. The one reported is the first in archive order.
    let mut last_file: Option<&str> = None;
    let mut first_inside_file = None::<u32>;
    for &position in &order {
        let name = name_of(position);
        if last_file.is_some_and(|file| is_inside(name, file)) {
            earliest(&mut first_inside_file, position);
            continue;
        }
        last_file = (!entries.list[position as usize].is_dir).then_some(name);
    }
    if let Some(position) = first_inside_file {
        return Err(duplicate(position));
    }
    let data_db = entries
        .list
        .iter()
        .position(|entry| !entry.is_dir && entries.name(entry) == DATA_DB);
    check_data_ranges(file, &entries, directory.start())?;

    Ok(CheckedArchive {
        summary: ArchiveSummary {
            entries: entries.list.len(),
            total_size,
            has_data_db: data_db.is_some(),
        },
        entries,
        order,
        data_db,
    })
}

/// Refuses entries whose bytes overlap: each entry's local header and compressed data must
/// lie apart from every other's and before the central directory. Without this, many
/// records can point at one deflated run of zeros (a zip bomb of a few KiB that extracts
/// to gigabytes, each entry within every ratio). Reads each local header (for its name and
/// extra field lengths), in file order, neighbours together.
fn check_data_ranges(file: &File, entries: &Entries, directory_start: u64) -> Result<(), ArchiveError> {
    /// Local headers closer together than this are read with one `pread`.
    const READ_SPAN: u64 = 64 * 1024;
    let list = &entries.list;
    let mut by_offset: Vec<u32> = (0..list.len() as u32).collect();
    by_offset.sort_unstable_by_key(|&p| (list[p as usize].header_start, p));
    let header_start = |i: usize| list[by_offset[i] as usize].header_start;
    let mut buf = Vec::new();
    // Where the previous entry's data ends, and that entry.
    let mut previous: Option<(u64, u32)> = None;
    let mut i = 0;
    while i < by_offset.len() {
        let start = header_start(i);
        let mut j = i + 1;
        while j < by_offset.len() && header_start(j) + LOCAL_LEN as u64 <= start + READ_SPAN {
            j += 1;
        }
        // Records keep every local header before the directory, so this is in the file.
        let len = (header_start(j - 1) + LOCAL_LEN as u64 - start) as usize;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, start)?;
        for &position in &by_offset[i..j] {
            let entry = &list[position as usize];
            let name = entries.name(entry);
            if let Some((_, before)) = previous.filter(|&(end, _)| entry.header_start < end) {
                return Err(ArchiveError::Overlapping {
                    name: name.to_owned(),
                    other: format!("that of entry {:?}", entries.name(&list[before as usize])),
                });
            }
            let header = &buf[(entry.header_start - start) as usize..][..LOCAL_LEN];
            if &header[..4] != LOCAL_SIG {
                return Err(ArchiveError::NotZip(format!("no local header for {name:?}")));
            }
            let (name_len, extra_len) = (u16_at(header, 26), u16_at(header, 28));
            let end = entry.header_start
                + LOCAL_LEN as u64
                + u64::from(name_len)
                + u64::from(extra_len)
                + entry.compressed_size;
            if end > directory_start {
                return Err(ArchiveError::Overlapping {
                    name: name.to_owned(),
                    other: "the central directory".to_owned(),
                });
            }
            previous = Some((end, position));
        }
        i = j;
    }
    Ok(())
}

/// Keeps in `slot` the smallest position given.
fn earliest(slot: &mut Option<u32>, position: u32) {
    *slot = Some(slot.map_or(position, |p| p.min(position)));
}

fn u16_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// The checks of one central directory record, except duplicates; adds its size to
/// `total_size`. Returns the permission bits it records.
fn check_entry(
    record: &Record,
    limits: &ArchiveLimits,
    total_size: &mut u64,
) -> Result<Option<u16>, ArchiveError> {
    let name = check_entry_name(record.name)?;
    let is_dir = record.name.ends_with('/');
    let special = || ArchiveError::SpecialEntry { name: name.to_owned() };

    // Unix archivers put the file type in the upper half of the external attributes.
    let unix_mode = Some(record.external_attributes >> 16).filter(|m| record.unix && *m != 0);
    match unix_mode.map(|m| m & S_IFMT) {
        None | Some(0) => {}
        Some(S_IFREG) if !is_dir => {}
        Some(S_IFDIR) if is_dir => {}
        Some(_) => return Err(special()),
    }
    if is_dir && record.size != 0 {
        return Err(special());
    }
    if record.encrypted() || !matches!(record.method, METHOD_STORED | METHOD_DEFLATED) {
        return Err(ArchiveError::Unsupported { name: name.to_owned() });
    }
    if record.size / record.compressed_size.max(1) > limits.max_ratio {
        return Err(ArchiveError::SuspiciousRatio { name: name.to_owned() });
    }
    *total_size = total_size
        .checked_add(record.size)
        .filter(|total| *total <= limits.max_total_size)
        .ok_or(ArchiveError::TooLarge)?;
    Ok(unix_mode.map(|m| (m & 0o777) as u16))
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

/// Walks the folders of an extraction in name order (`order`, see [`name_order`]): `open`
/// for each folder the first time it is needed (parents first), `close` once nothing after
/// it in that order lies inside it (children first), with the mode its own entry records.
/// The folders open at a time are one name's ancestors, so memory is one name's depth
/// whatever the number or depth of names, and each folder is opened once.
fn walk_dirs(
    entries: &Entries,
    order: &[u32],
    mut open: impl FnMut(&str) -> Result<(), ArchiveError>,
    mut close: impl FnMut(&str, Option<u32>) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    // The open folders: the length of each one's name (a prefix of `path`), and its mode.
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut path = String::new();
    for &position in order {
        let entry = &entries.list[position as usize];
        let name = entries.name(entry);
        // The folder this entry needs: itself, or its parent ("" at the top).
        let folder = if entry.is_dir { name } else { name.rsplit_once('/').map_or("", |(parent, _)| parent) };
        while let Some(&(len, mode)) = stack.last() {
            let prefix = &path[..len];
            if folder == prefix || is_inside(folder, prefix) {
                break;
            }
            close(prefix, mode)?;
            stack.pop();
        }
        let open_len = stack.last().map_or(0, |&(len, _)| len);
        path.clear();
        path.push_str(folder);
        if folder.len() > open_len {
            let from = if open_len == 0 { 0 } else { open_len + 1 };
            let ends = folder[from..].match_indices('/').map(|(i, _)| from + i).chain([folder.len()]);
            for end in ends {
                open(&folder[..end])?;
                stack.push((end, None));
            }
        }
        if entry.is_dir {
            // Names are unique, so the folder was opened just now, by this entry.
            if let Some(top) = stack.last_mut() {
                top.1 = entry.mode();
            }
        }
    }
    while let Some((len, mode)) = stack.pop() {
        close(&path[..len], mode)?;
    }
    Ok(())
}

/// Creates the folder `name` (relative, validated) under `dest`, whose parent exists.
fn make_dir(dest: &Path, name: &str) -> Result<(), ArchiveError> {
    let path = dest.join(name);
    match fs::create_dir(&path) {
        Ok(()) => Ok(()),
        // Only possible if `dest` was not empty or someone races us: accept a real
        // directory, never a symlink.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(&path)?.is_dir() {
                Ok(())
            } else {
                Err(ArchiveError::UnsafePath { name: name.to_owned() })
            }
        }
        Err(err) => Err(err.into()),
    }
}
