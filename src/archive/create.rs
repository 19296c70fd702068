//! Writing a backup zip of the data dir, deflating on every core with bounded memory.
//!
//! `plan_entries` lists what goes into the archive; then a pipeline runs: a reader thread
//! cuts each file into blocks, worker threads checksum and deflate blocks, and the calling
//! thread writes the results in archive order. A deflated entry is one ordinary deflate
//! stream: every block but the last ends with a sync flush (byte-aligned, not final) and
//! each is primed with the 32 KiB before it, so splitting costs almost nothing in size.
//! Memory is bounded by the blocks in flight, whatever the size of the files.
//!
//! The zip container is written here (local headers patched once an entry's size and CRC
//! are known, zip64 where needed): the zip crate cannot take an entry's compressed bytes
//! from elsewhere without holding the whole entry in memory.
//!
//! Top-level SQLite databases are copied to a snapshot file with the online backup API
//! just before they are read.

use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{check_entry_name, ArchiveError, SQLITE_HEADER};

/// How much of a file is deflated up front to decide between Deflated and Stored.
const SAMPLE_SIZE: usize = 64 * 1024;
/// Unit of work of the pipeline: files are read, checksummed and deflated in blocks.
const BLOCK_SIZE: usize = 1 << 20;
/// Deflate's window: each block is primed with this much of the input before it.
const WINDOW: usize = 32 * 1024;
/// Blocks queued for the writer beyond those being worked on, per worker.
const QUEUED_PER_WORKER: usize = 3;
/// Compression threads at most: memory grows with them (about 5 MiB each in flight), and
/// the disk rather than the CPU limits a backup beyond a few cores.
const MAX_WORKERS: usize = 4;
/// Output buffer of the archive file.
const WRITE_BUFFER: usize = 1 << 20;
/// Files from this size on get zip64 headers: deflate may grow an incompressible tail past
/// the 4 GiB limit of classic headers, and the local header is written before the data.
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
    /// Level 2: zlib-rs's level 1 is a much cruder algorithm (text comes out about 30%
    /// larger than at level 2), while level 2 is within 1-2% of level 6 at twice its speed.
    fn default() -> Self {
        Self {
            deflate_level: 2,
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
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS);
    let level = Compression::new(opts.deflate_level.clamp(1, 9));
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
    let job_rx = Mutex::new(job_rx);
    let (part_tx, part_rx) = mpsc::sync_channel::<Part>(QUEUED_PER_WORKER * workers);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let job_rx = &job_rx;
            scope.spawn(move || work(job_rx, level));
        }
        let entries = &entries;
        scope.spawn(move || {
            let mut reader = Reader { parts: part_tx, jobs: job_tx, chooser: MethodChooser::new(opts) };
            if let Err(err) = reader.read_all(entries, scratch_dir) {
                // The writer may be gone already (it failed first): then nobody listens.
                let _ = reader.parts.send(Part::Failed(err));
            }
        });
        // Returning drops `part_rx`: a reader still sending then stops, and the workers
        // stop once it has.
        write_all(part_rx, out)
    })
}

/// What the reader hands to the writer, in archive order.
enum Part {
    Dir { name: String, mode: u32, modified: Option<SystemTime> },
    FileStart { name: String, mode: u32, modified: Option<SystemTime>, deflated: bool, large: bool },
    /// The result of one block, ready once a worker has finished it.
    Block(Receiver<io::Result<DoneBlock>>),
    FileEnd,
    Failed(ArchiveError),
}

struct Job {
    data: Vec<u8>,
    /// The input just before `data` (up to 32 KiB), as deflate's initial window.
    dictionary: Vec<u8>,
    deflate: bool,
    last: bool,
    reply: SyncSender<io::Result<DoneBlock>>,
}

struct DoneBlock {
    /// The bytes to write: deflated, or the input itself.
    bytes: Vec<u8>,
    input_len: u64,
    crc: Crc,
}

fn work(jobs: &Mutex<Receiver<Job>>, level: Compression) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match jobs.lock().map(|rx| rx.recv()) {
            Ok(Ok(job)) => job,
            _ => return,
        };
        let mut crc = Crc::new();
        crc.update(&job.data);
        let input_len = job.data.len() as u64;
        let bytes = if job.deflate {
            deflate_block(&job.data, &job.dictionary, job.last, level)
        } else {
            Ok(job.data)
        };
        // The writer may have given up: then the result is not wanted.
        let _ = job.reply.send(bytes.map(|bytes| DoneBlock { bytes, input_len, crc }));
    }
}

/// Deflates one block as part of a longer stream: primed with `dictionary`, ending with a
/// sync flush (or the end of the stream when `last`).
fn deflate_block(data: &[u8], dictionary: &[u8], last: bool, level: Compression) -> io::Result<Vec<u8>> {
    // A fresh state per block: zlib-rs panics when a stream left unfinished (as a sync
    // flush leaves it) is reset and reused.
    let mut compress = Compress::new(level, false);
    if !dictionary.is_empty() {
        compress.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = compress.total_in() as usize == data.len();
        // A flush is complete when it returns with output space to spare.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

struct Reader {
    parts: SyncSender<Part>,
    jobs: SyncSender<Job>,
    chooser: MethodChooser,
}

/// The writer hung up (it failed): stop reading quietly, its error is the one reported.
struct WriterGone;

impl Reader {
    fn read_all(&mut self, entries: &[PlannedEntry], scratch_dir: &Path) -> Result<(), ArchiveError> {
        for entry in entries {
            let sent = match entry.source {
                Source::Dir => self.send(Part::Dir {
                    name: entry.name.clone(),
                    mode: entry.mode,
                    modified: entry.modified,
                }),
                Source::File => {
                    let Some(file) = open_if_present(&entry.path)? else {
                        tracing::debug!(name = %entry.name, "file vanished before archiving");
                        continue;
                    };
                    self.read_file(entry, file)?
                }
                Source::Sqlite => {
                    // Deleted once read, before the next entry.
                    let snapshot = Snapshot::take(&entry.path, scratch_dir, &entry.name)?;
                    self.read_file(entry, File::open(&snapshot.path)?)?
                }
            };
            if sent.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn send(&self, part: Part) -> Result<(), WriterGone> {
        self.parts.send(part).map_err(|_| WriterGone)
    }

    /// Queues the file's blocks; the writer gets each block's result handle in order.
    fn read_file(&mut self, entry: &PlannedEntry, file: File) -> Result<Result<(), WriterGone>, ArchiveError> {
        let len = file.metadata()?.len();
        // Reading exactly the length seen now keeps the entry consistent if the file grows.
        let mut source = file.take(len);
        let mut block = read_block(&mut source)?;
        let deflate = self.chooser.deflate_saves_enough(&block[..block.len().min(SAMPLE_SIZE)]);
        let start = Part::FileStart {
            name: entry.name.clone(),
            mode: entry.mode,
            modified: entry.modified,
            deflated: deflate,
            large: len >= LARGE_FILE_THRESHOLD,
        };
        if self.send(start).is_err() {
            return Ok(Err(WriterGone));
        }
        let mut dictionary = Vec::new();
        while !block.is_empty() {
            let next = if block.len() == BLOCK_SIZE { read_block(&mut source)? } else { Vec::new() };
            let last = next.is_empty();
            let next_dictionary = if deflate && !last { block[block.len() - WINDOW.min(block.len())..].to_vec() } else { Vec::new() };
            let (reply, result) = mpsc::sync_channel(1);
            // The handle goes to the writer first, so it waits for blocks in order.
            if self.send(Part::Block(result)).is_err() {
                return Ok(Err(WriterGone));
            }
            let job = Job { data: block, dictionary, deflate, last, reply };
            if self.jobs.send(job).is_err() {
                return Ok(Err(WriterGone));
            }
            block = next;
            dictionary = next_dictionary;
        }
        Ok(self.send(Part::FileEnd))
    }
}

/// Reads up to BLOCK_SIZE bytes; fewer only at the end of the source.
fn read_block(source: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(BLOCK_SIZE);
    source.take(BLOCK_SIZE as u64).read_to_end(&mut block)?;
    Ok(block)
}

/// Receives the parts in order and writes the archive; returns its counters.
fn write_all<W: Write + Seek>(parts: Receiver<Part>, out: W) -> Result<CreateStats, ArchiveError> {
    let mut zip = ZipOut { out: BufWriter::with_capacity(WRITE_BUFFER, out), pos: 0, central: Vec::new() };
    let mut stats = CreateStats::default();
    let mut current: Option<OpenEntry> = None;
    let worker_gone = || ArchiveError::Io(io::Error::other("a compression worker stopped"));
    // The reader hangs up after the last part (or after sending its error).
    for part in parts {
        match part {
            Part::Dir { name, mode, modified } => {
                zip.directory(&name, mode, modified)?;
                stats.entries += 1;
            }
            Part::FileStart { name, mode, modified, deflated, large } => {
                current = Some(zip.start_file(name, mode, modified, deflated, large)?);
            }
            Part::Block(result) => {
                let entry = current.as_mut().ok_or_else(worker_gone)?;
                let block = result.recv().map_err(|_| worker_gone())??;
                zip.out.write_all(&block.bytes)?;
                zip.pos += block.bytes.len() as u64;
                entry.compressed += block.bytes.len() as u64;
                entry.uncompressed += block.input_len;
                entry.crc.combine(&block.crc);
            }
            Part::FileEnd => {
                let entry = current.take().ok_or_else(worker_gone)?;
                stats.bytes_in += entry.uncompressed;
                zip.finish_file(entry)?;
                stats.entries += 1;
            }
            Part::Failed(err) => return Err(err),
        }
    }
    if current.is_some() {
        return Err(worker_gone());
    }
    zip.finish()?;
    stats.bytes_out = zip.pos;
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

const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// General purpose flag: names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// "Version made by": Unix (so readers honour the mode bits), spec 4.5.
const MADE_BY_UNIX: u16 = (3 << 8) | 45;
const VERSION_DEFAULT: u16 = 20;
const VERSION_ZIP64: u16 = 45;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const MSDOS_DIR: u32 = 0x10;
const U32_MAX: u64 = u32::MAX as u64;

/// The zip container around the entries' bytes, written sequentially except for patching
/// each local header once its entry is complete.
struct ZipOut<W: Write + Seek> {
    out: BufWriter<W>,
    /// Bytes written so far: where the next header goes.
    pos: u64,
    central: Vec<CentralEntry>,
}

struct CentralEntry {
    name: String,
    method: u16,
    dos_time: (u16, u16),
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    external: u32,
    /// The local header has zip64 sizes: the central one must say so too.
    large: bool,
}

/// A file entry whose data is being written.
struct OpenEntry {
    name: String,
    method: u16,
    dos_time: (u16, u16),
    external: u32,
    large: bool,
    offset: u64,
    crc: Crc,
    compressed: u64,
    uncompressed: u64,
}

impl<W: Write + Seek> ZipOut<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn local_header(&mut self, name: &str, method: u16, dos_time: (u16, u16), large: bool) -> io::Result<()> {
        let mut h = Vec::with_capacity(30 + name.len() + 20);
        put32(&mut h, LOCAL_HEADER_SIG);
        put16(&mut h, if large { VERSION_ZIP64 } else { VERSION_DEFAULT });
        put16(&mut h, FLAG_UTF8);
        put16(&mut h, method);
        put16(&mut h, dos_time.1);
        put16(&mut h, dos_time.0);
        put32(&mut h, 0); // crc, patched
        let size_placeholder = if large { u32::MAX } else { 0 };
        put32(&mut h, size_placeholder);
        put32(&mut h, size_placeholder);
        put16(&mut h, name_len(name)?);
        put16(&mut h, if large { 20 } else { 0 });
        h.extend_from_slice(name.as_bytes());
        if large {
            put16(&mut h, ZIP64_EXTRA_ID);
            put16(&mut h, 16);
            put64(&mut h, 0); // sizes, patched
            put64(&mut h, 0);
        }
        self.write(&h)
    }

    fn directory(&mut self, name: &str, mode: u32, modified: Option<SystemTime>) -> io::Result<()> {
        let name = format!("{name}/");
        let dos_time = dos_time(modified);
        let offset = self.pos;
        self.local_header(&name, METHOD_STORED, dos_time, false)?;
        self.central.push(CentralEntry {
            name,
            method: METHOD_STORED,
            dos_time,
            crc: 0,
            compressed: 0,
            uncompressed: 0,
            offset,
            external: ((S_IFDIR | mode) << 16) | MSDOS_DIR,
            large: false,
        });
        Ok(())
    }

    fn start_file(
        &mut self,
        name: String,
        mode: u32,
        modified: Option<SystemTime>,
        deflated: bool,
        large: bool,
    ) -> io::Result<OpenEntry> {
        let method = if deflated { METHOD_DEFLATED } else { METHOD_STORED };
        let dos_time = dos_time(modified);
        let offset = self.pos;
        self.local_header(&name, method, dos_time, large)?;
        Ok(OpenEntry {
            name,
            method,
            dos_time,
            external: (S_IFREG | mode) << 16,
            large,
            offset,
            crc: Crc::new(),
            compressed: 0,
            uncompressed: 0,
        })
    }

    /// Patches the entry's local header with its CRC and sizes.
    fn finish_file(&mut self, entry: OpenEntry) -> io::Result<()> {
        if !entry.large && (entry.compressed >= U32_MAX || entry.uncompressed >= U32_MAX) {
            return Err(io::Error::other(format!("{} grew past 4 GiB while archived", entry.name)));
        }
        let crc = entry.crc.sum();
        let mut patch = Vec::with_capacity(12);
        put32(&mut patch, crc);
        if !entry.large {
            put32(&mut patch, entry.compressed as u32);
            put32(&mut patch, entry.uncompressed as u32);
        }
        self.out.seek(SeekFrom::Start(entry.offset + 14))?;
        self.out.write_all(&patch)?;
        if entry.large {
            let mut sizes = Vec::with_capacity(16);
            put64(&mut sizes, entry.uncompressed);
            put64(&mut sizes, entry.compressed);
            self.out.seek(SeekFrom::Start(entry.offset + 30 + entry.name.len() as u64 + 4))?;
            self.out.write_all(&sizes)?;
        }
        self.out.seek(SeekFrom::Start(self.pos))?;
        self.central.push(CentralEntry {
            name: entry.name,
            method: entry.method,
            dos_time: entry.dos_time,
            crc,
            compressed: entry.compressed,
            uncompressed: entry.uncompressed,
            offset: entry.offset,
            external: entry.external,
            large: entry.large,
        });
        Ok(())
    }

    /// Writes the central directory and the end records, and flushes.
    fn finish(&mut self) -> io::Result<()> {
        let central_offset = self.pos;
        let central = std::mem::take(&mut self.central);
        for e in &central {
            let mut zip64 = Vec::new();
            let sizes_64 = e.large || e.compressed >= U32_MAX || e.uncompressed >= U32_MAX;
            if sizes_64 {
                put64(&mut zip64, e.uncompressed);
                put64(&mut zip64, e.compressed);
            }
            if e.offset >= U32_MAX {
                put64(&mut zip64, e.offset);
            }
            let mut h = Vec::with_capacity(46 + e.name.len() + 28);
            put32(&mut h, CENTRAL_HEADER_SIG);
            put16(&mut h, MADE_BY_UNIX);
            put16(&mut h, if zip64.is_empty() && !e.large { VERSION_DEFAULT } else { VERSION_ZIP64 });
            put16(&mut h, FLAG_UTF8);
            put16(&mut h, e.method);
            put16(&mut h, e.dos_time.1);
            put16(&mut h, e.dos_time.0);
            put32(&mut h, e.crc);
            put32(&mut h, if sizes_64 { u32::MAX } else { e.compressed as u32 });
            put32(&mut h, if sizes_64 { u32::MAX } else { e.uncompressed as u32 });
            put16(&mut h, name_len(&e.name)?);
            put16(&mut h, if zip64.is_empty() { 0 } else { 4 + zip64.len() as u16 });
            put16(&mut h, 0); // comment
            put16(&mut h, 0); // disk
            put16(&mut h, 0); // internal attributes
            put32(&mut h, e.external);
            put32(&mut h, e.offset.min(U32_MAX) as u32);
            h.extend_from_slice(e.name.as_bytes());
            if !zip64.is_empty() {
                put16(&mut h, ZIP64_EXTRA_ID);
                put16(&mut h, zip64.len() as u16);
                h.extend_from_slice(&zip64);
            }
            self.write(&h)?;
        }
        let central_size = self.pos - central_offset;
        let count = central.len() as u64;
        let mut end = Vec::with_capacity(56 + 20 + 22);
        if count >= 0xFFFF || central_offset >= U32_MAX || central_size >= U32_MAX {
            let zip64_end_offset = self.pos;
            put32(&mut end, ZIP64_END_SIG);
            put64(&mut end, 44); // size of the rest of this record
            put16(&mut end, MADE_BY_UNIX);
            put16(&mut end, VERSION_ZIP64);
            put32(&mut end, 0); // this disk
            put32(&mut end, 0); // disk of the central directory
            put64(&mut end, count);
            put64(&mut end, count);
            put64(&mut end, central_size);
            put64(&mut end, central_offset);
            put32(&mut end, ZIP64_LOCATOR_SIG);
            put32(&mut end, 0);
            put64(&mut end, zip64_end_offset);
            put32(&mut end, 1); // total disks
        }
        put32(&mut end, END_SIG);
        put16(&mut end, 0);
        put16(&mut end, 0);
        put16(&mut end, count.min(0xFFFF) as u16);
        put16(&mut end, count.min(0xFFFF) as u16);
        put32(&mut end, central_size.min(U32_MAX) as u32);
        put32(&mut end, central_offset.min(U32_MAX) as u32);
        put16(&mut end, 0); // comment
        self.write(&end)?;
        self.out.flush()
    }
}

fn name_len(name: &str) -> io::Result<u16> {
    u16::try_from(name.len()).map_err(|_| io::Error::other(format!("entry name too long: {name}")))
}

fn put16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// A modification time in MS-DOS form, (date, time): UTC, 2-second precision; times
/// outside 1980..=2107 become 1980-01-01 00:00.
fn dos_time(modified: Option<SystemTime>) -> (u16, u16) {
    let Some(t) = modified.map(time::OffsetDateTime::from) else {
        return (dos_date(1980, 1, 1), 0);
    };
    if !(1980..=2107).contains(&t.year()) {
        return (dos_date(1980, 1, 1), 0);
    }
    let date = dos_date(t.year() as u16, u8::from(t.month()) as u16, t.day() as u16);
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    (date, time)
}

fn dos_date(year: u16, month: u16, day: u16) -> u16 {
    ((year - 1980) << 9) | (month << 5) | day
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use zip::{CompressionMethod, ZipArchive};

    use super::*;

    /// Entries spanning several blocks (sync-flushed deflate with dictionaries, and stored)
    /// read back intact through an independent zip reader.
    #[test]
    fn multi_block_entries_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        fs::create_dir_all(data.join("sub")).unwrap();
        let text: Vec<u8> = (0..120_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"note\":\"line {}\"}}\n", i % 977).into_bytes())
            .collect();
        assert!(text.len() > 3 * BLOCK_SIZE);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..BLOCK_SIZE * 2 + 12_345)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs::write(data.join("sub/text.jsonl"), &text).unwrap();
        fs::write(data.join("random.bin"), &random).unwrap();
        fs::write(data.join("empty"), b"").unwrap();

        let mut out = Cursor::new(Vec::new());
        let stats = create_backup(&data, &[], tmp.path(), &mut out, &CreateOptions::default()).unwrap();
        assert_eq!(stats.entries, 4);
        assert_eq!(stats.bytes_in, (text.len() + random.len()) as u64);
        assert_eq!(stats.bytes_out, out.get_ref().len() as u64);

        let mut zip = ZipArchive::new(Cursor::new(out.into_inner())).unwrap();
        for (name, content, method) in [
            ("sub/text.jsonl", &text, CompressionMethod::Deflated),
            ("random.bin", &random, CompressionMethod::Stored),
            ("empty", &Vec::new(), CompressionMethod::Stored),
        ] {
            let mut entry = zip.by_name(name).unwrap();
            assert_eq!(entry.compression(), method, "{name}");
            assert_eq!(entry.unix_mode().map(|m| m & 0o170_000), Some(0o100_000), "{name}");
            let mut read = Vec::new();
            entry.read_to_end(&mut read).unwrap();
            assert!(read == *content, "{name} differs");
        }
        let dir = zip.by_name("sub/").unwrap();
        assert!(dir.is_dir());
        assert_eq!(dir.unix_mode().map(|m| m & 0o170_000), Some(0o040_000));
    }

    #[test]
    fn dos_times() {
        let at = |s: i64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s as u64));
        // 2023-05-19 16:25:57 UTC: seconds are halved.
        assert_eq!(dos_time(at(1_684_513_557)), (dos_date(2023, 5, 19), (16 << 11) | (25 << 5) | 28));
        assert_eq!(dos_time(at(0)), (dos_date(1980, 1, 1), 0), "before 1980");
        assert_eq!(dos_time(None), (dos_date(1980, 1, 1), 0));
    }
}
