//! Writing a backup zip of the data dir.
//!
//! Two phases, so that compression can later move to worker threads without touching the
//! walk: `plan_entries` lists what goes into the archive, then `create_backup` writes each
//! entry in order. Top-level SQLite databases are copied to a snapshot file with the
//! online backup API just before their entry is written; every file is streamed.

use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::{Compress, Compression, FlushCompress, Status};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::{check_entry_name, ArchiveError, SQLITE_HEADER};

/// How much of a file is deflated up front to decide between Deflated and Stored.
const SAMPLE_SIZE: usize = 64 * 1024;
/// Read/write chunk for streaming file contents.
const CHUNK_SIZE: usize = 256 * 1024;
/// Files from this size on get zip64 headers: deflate may grow an incompressible tail past
/// the 4 GiB limit of classic headers, and the zip writer must know before it starts.
const LARGE_FILE_THRESHOLD: u64 = 3 << 30;
/// Suffixes of SQLite side files: their content is in the snapshots (or meaningless alone).
const SQLITE_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// How long a snapshot waits for a lock held by a writer before giving up.
const SNAPSHOT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Tuning of archive creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// Deflate level (1 fastest ..= 9 smallest) for files that compress.
    pub deflate_level: u32,
    /// A file is stored uncompressed when deflating its first 64 KiB saves less than this
    /// percentage.
    pub min_saving_percent: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            deflate_level: 1,
            min_saving_percent: 3,
        }
    }
}

/// Counters of a finished archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateStats {
    /// Entries written (files and directories).
    pub entries: usize,
    /// Bytes read from the data dir (snapshots counted at their size).
    pub bytes_in: u64,
    /// Size of the archive.
    pub bytes_out: u64,
}

/// Writes a zip of `data_dir` to `out`.
///
/// Top-level names in `exclude_top_level` (the backups storage, the temp folder) and SQLite
/// side files are left out; symlinks and special files are skipped with a warning. Top-level
/// `*.db` SQLite files are snapshotted into `scratch_dir` (deleted afterwards), so they are
/// consistent even while the server writes to them. `out` is flushed but not synced: the
/// caller owns the file and decides when to `sync_all`.
pub fn create_backup<W: Write + Seek>(
    data_dir: &Path,
    exclude_top_level: &[&str],
    scratch_dir: &Path,
    out: W,
    opts: &CreateOptions,
) -> Result<CreateStats, ArchiveError> {
    let entries = plan_entries(data_dir, exclude_top_level)?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(CHUNK_SIZE, out));
    let mut chooser = MethodChooser::new(opts);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut stats = CreateStats::default();

    for entry in &entries {
        let base = SimpleFileOptions::default()
            .unix_permissions(entry.mode)
            .last_modified_time(zip_time(entry.modified));
        match entry.source {
            Source::Dir => zip.add_directory(entry.name.as_str(), base)?,
            Source::File => {
                let Some(mut file) = open_if_present(&entry.path)? else {
                    tracing::debug!(name = %entry.name, "file vanished before archiving");
                    continue;
                };
                let len = file.metadata()?.len();
                stats.bytes_in += write_file(
                    &mut zip,
                    entry,
                    base,
                    &mut file,
                    len,
                    &mut chooser,
                    &mut buf,
                )?;
            }
            Source::Sqlite => {
                let snapshot = Snapshot::take(&entry.path, scratch_dir, &entry.name)?;
                let mut file = File::open(&snapshot.path)?;
                let len = file.metadata()?.len();
                stats.bytes_in += write_file(
                    &mut zip,
                    entry,
                    base,
                    &mut file,
                    len,
                    &mut chooser,
                    &mut buf,
                )?;
            }
        }
        stats.entries += 1;
    }

    let mut writer = zip.finish()?;
    stats.bytes_out = writer.stream_position()?;
    writer.flush()?;
    Ok(stats)
}

/// Where an entry's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Dir,
    File,
    /// A top-level SQLite database, archived through a snapshot.
    Sqlite,
}

#[derive(Debug)]
struct PlannedEntry {
    /// Name in the archive: relative, '/'-separated, no trailing '/'.
    name: String,
    path: PathBuf,
    source: Source,
    mode: u32,
    modified: Option<SystemTime>,
}

/// Lists the archive's entries in a stable order (sorted names, each directory before its
/// content). Memory grows with the number of files, not with their size.
fn plan_entries(
    data_dir: &Path,
    exclude_top_level: &[&str],
) -> Result<Vec<PlannedEntry>, ArchiveError> {
    let mut entries = Vec::new();
    walk(data_dir, None, exclude_top_level, &mut entries)?;
    Ok(entries)
}

fn walk(
    dir: &Path,
    prefix: Option<&str>,
    exclude_top_level: &[&str],
    entries: &mut Vec<PlannedEntry>,
) -> Result<(), ArchiveError> {
    let mut children = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let path = child.path();
        let Some(file_name) = child.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if prefix.is_none() && exclude_top_level.contains(&file_name.as_str()) {
            continue;
        }
        let name = match prefix {
            Some(prefix) => format!("{prefix}/{file_name}"),
            None => file_name.clone(),
        };
        // Restore refuses such names, so archiving them would make the backup unusable.
        if check_entry_name(&name).is_err() {
            tracing::warn!(path = %path.display(), "skipping a file whose name is not portable");
            continue;
        }
        // DirEntry::metadata does not follow symlinks.
        let metadata = match child.metadata() {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            tracing::warn!(path = %path.display(), "skipping a symlink in the data dir");
            continue;
        }
        let source = if file_type.is_dir() {
            Source::Dir
        } else if file_type.is_file() {
            if SQLITE_SIDE_SUFFIXES.iter().any(|s| file_name.ends_with(s)) {
                continue;
            }
            if prefix.is_none() && file_name.ends_with(".db") && is_sqlite(&path)? {
                Source::Sqlite
            } else {
                Source::File
            }
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file in the data dir");
            continue;
        };
        entries.push(planned(name.clone(), path.clone(), source, &metadata));
        if source == Source::Dir {
            walk(&path, Some(&name), exclude_top_level, entries)?;
        }
    }
    Ok(())
}

fn planned(name: String, path: PathBuf, source: Source, metadata: &Metadata) -> PlannedEntry {
    PlannedEntry {
        name,
        path,
        source,
        mode: metadata.permissions().mode() & 0o777,
        modified: metadata.modified().ok(),
    }
}

fn is_sqlite(path: &Path) -> Result<bool, ArchiveError> {
    let Some(file) = open_if_present(path)? else {
        return Ok(false);
    };
    let mut header = [0u8; 16];
    match file.take(16).read_exact(&mut header) {
        Ok(()) => Ok(&header == SQLITE_HEADER),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Opens a file for reading; `None` when it has been deleted meanwhile (the data dir is live).
fn open_if_present(path: &Path) -> Result<Option<File>, ArchiveError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Streams `len` bytes of `file` into a new entry; returns the bytes read.
fn write_file<W: Write + Seek>(
    zip: &mut ZipWriter<W>,
    entry: &PlannedEntry,
    base: SimpleFileOptions,
    file: &mut File,
    len: u64,
    chooser: &mut MethodChooser,
    buf: &mut [u8],
) -> Result<u64, ArchiveError> {
    // Reading exactly the length seen now keeps the entry consistent if the file grows.
    let mut source = file.take(len);
    let sample_len = read_full(&mut source, &mut buf[..SAMPLE_SIZE])?;
    let sample = &buf[..sample_len];
    let options = chooser
        .options_for(base, sample)
        .large_file(len >= LARGE_FILE_THRESHOLD);
    zip.start_file(entry.name.as_str(), options)?;
    zip.write_all(sample)?;
    let mut total = sample_len as u64;
    loop {
        let n = source.read(buf)?;
        if n == 0 {
            break;
        }
        zip.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Picks Deflated or Stored for each file from a sample of its start: the zip crate never
/// stores on its own, and level 1 makes random data about 5% larger.
struct MethodChooser {
    level: u32,
    min_saving_percent: u32,
    compress: Compress,
    out: Vec<u8>,
}

impl MethodChooser {
    fn new(opts: &CreateOptions) -> Self {
        let level = opts.deflate_level.clamp(1, 9);
        Self {
            level,
            min_saving_percent: opts.min_saving_percent.min(100),
            compress: Compress::new(Compression::new(level), false),
            // Deflate grows random data by at most about 12%: this always fits.
            out: vec![0; 2 * SAMPLE_SIZE],
        }
    }

    fn options_for(&mut self, base: SimpleFileOptions, sample: &[u8]) -> SimpleFileOptions {
        if self.deflate_saves_enough(sample) {
            base.compression_method(CompressionMethod::Deflated)
                .compression_level(Some(i64::from(self.level)))
        } else {
            base.compression_method(CompressionMethod::Stored)
        }
    }

    /// Deflates `sample` completely and compares the output with the required saving.
    fn deflate_saves_enough(&mut self, sample: &[u8]) -> bool {
        if sample.is_empty() {
            return false;
        }
        let budget = sample.len() * (100 - self.min_saving_percent as usize) / 100;
        self.compress.reset();
        let status = self
            .compress
            .compress(sample, &mut self.out, FlushCompress::Finish);
        let finished = matches!(status, Ok(Status::StreamEnd));
        if !finished {
            // zlib-rs 0.6 panics when a stream left unfinished is reset and reused.
            self.compress = Compress::new(Compression::new(self.level), false);
        }
        finished && (self.compress.total_out() as usize) < budget
    }
}

/// Converts a modification time to the zip format (UTC, 2-second precision, 1980..2107).
fn zip_time(modified: Option<SystemTime>) -> zip::DateTime {
    modified
        .map(time::OffsetDateTime::from)
        .and_then(|t| {
            zip::DateTime::try_from(time::PrimitiveDateTime::new(t.date(), t.time())).ok()
        })
        .unwrap_or_default()
}

/// A consistent copy of a live SQLite database in the scratch dir, deleted on drop.
struct Snapshot {
    path: PathBuf,
}

impl Snapshot {
    fn take(source: &Path, scratch_dir: &Path, name: &str) -> Result<Self, ArchiveError> {
        let path = scratch_dir.join(format!(".snapshot-{:016x}-{name}", rand::random::<u64>()));
        // create_new: never reuse (or follow) anything already at that path.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let snapshot = Self { path };
        copy_database(source, &snapshot.path).map_err(|source| ArchiveError::Snapshot {
            name: name.to_owned(),
            source,
        })?;
        Ok(snapshot)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut side = self.path.clone().into_os_string();
            side.push(suffix);
            if let Err(err) = fs::remove_file(&side) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = ?side, error = %err, "could not delete a snapshot file");
                }
            }
        }
    }
}

/// Copies the database with the online backup API in a single step: one read transaction
/// sees one consistent state, and in WAL mode writers go on meanwhile. (Copying a few pages
/// per step would restart whenever another connection writes, possibly forever.)
fn copy_database(source: &Path, dest: &Path) -> Result<(), rusqlite::Error> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    from.busy_timeout(SNAPSHOT_BUSY_TIMEOUT)?;
    let mut to = Connection::open(dest)?;
    {
        let backup = Backup::new(&from, &mut to)?;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => continue,
                // The busy handler has already waited SNAPSHOT_BUSY_TIMEOUT.
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("database stayed locked during the snapshot".to_owned()),
                    ))
                }
            }
        }
    }
    to.close().map_err(|(_, err)| err)?;
    from.close().map_err(|(_, err)| err)
}
