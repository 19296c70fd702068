//! The pipeline that writes an archive: a reader thread cuts each large file into blocks and
//! groups small files (and directories) into batches, worker threads checksum and deflate
//! blocks and read, checksum and deflate the batches' files whole, and the calling thread
//! writes the results in archive order through the zip writer. Memory is bounded by the
//! blocks and batches in flight.
//!
//! Small files are what a PocketBase `storage/` mostly holds: tens of thousands of uploads.
//! Their cost is per file, not per byte, so they are read by the workers (two per core: one
//! compresses while another waits for a read), deflated once with a compressor each worker
//! reuses, and written with their final header.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use super::pace::{Behind, BlockCost, Pace};
use super::plan::{open_if_present, Plan, PlannedEntry, Source};
use super::snapshot::Snapshot;
use super::{CreateOptions, CreateStats};
use crate::archive::zip_writer::{OpenEntry, WholeFile, Zip64Limits, ZipOut};
use crate::archive::{ArchiveError, ArchiveLimits};
use crate::progress::ProgressCounter;

/// How much of a file is deflated up front to decide between Deflated and Stored.
const SAMPLE_SIZE: usize = 64 * 1024;
/// Unit of work of the pipeline: files are read, checksummed and deflated in blocks.
pub(super) const BLOCK_SIZE: usize = 1 << 20;
/// Deflate's window: each block is primed with this much of the input before it.
const WINDOW: usize = 32 * 1024;
/// Parts in flight (queued for the writer or being worked on) per core compressing: what
/// bounds the blocks in memory, whatever the number of workers.
const QUEUED_PER_CORE: usize = 3;
/// Cores used for compression at most: memory grows with them (about 5 MiB each in flight),
/// and the disk rather than the CPU limits a backup beyond a few cores.
const MAX_COMPRESSING: usize = 4;
/// Workers per core compressing: the workers read the small files, and while one waits for
/// a read the page cache no longer holds, another compresses (a 200,000-file create with
/// the page cache emptied: 12.6 s with one per core, 8.4 s with two; four, 6.9 s, took
/// a 16 GiB create's RSS from 55 to 78 MiB).
const THREADS_PER_CORE: usize = 2;
/// Output buffer of the archive file.
const WRITE_BUFFER: usize = 1 << 20;
/// Files smaller than this (when planned) are read and compressed whole, in batches.
const SMALL_FILE: u64 = BLOCK_SIZE as u64;
/// The level of large files' blocks moves only after the create has run this long: a
/// backup done within it is compressed at the configured level, as small as PocketBase's
/// (issue 14: at most 1.02x its size), and only a long one trades size for time.
const PACE_AFTER: Duration = Duration::from_secs(5);
/// A batch ends after this many entries or once its files' planned sizes reach BLOCK_SIZE.
const BATCH_ENTRIES: usize = 256;

/// Runs the pipeline over `entries` (of `plan`, in archive order) and writes the archive to
/// `out`.
pub(super) fn run<W: Write>(
    plan: &Plan<'_>,
    entries: impl Iterator<Item = Result<PlannedEntry, ArchiveError>> + Send,
    scratch_dir: &Path,
    out: W,
    opts: &CreateOptions,
    zip64: Zip64Limits,
    progress: &ProgressCounter,
) -> Result<CreateStats, ArchiveError> {
    let compressing = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_COMPRESSING);
    let workers = compressing * THREADS_PER_CORE;
    let highest = opts.deflate_level.clamp(1, 9);
    // The pace weighs compression by the blocks compressed at once: the cores, not the threads.
    let pace = Pace::new(opts.fastest_level, highest, compressing as u32);
    // The level of large files' blocks, set by the writer, read by a worker per block.
    let block_level = AtomicU32::new(pace.level());
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
    let job_rx = Mutex::new(job_rx);
    let (part_tx, part_rx) = mpsc::sync_channel::<Part>((QUEUED_PER_CORE * compressing).max(workers));

    std::thread::scope(|scope| {
        let block_level = &block_level;
        for _ in 0..workers {
            let job_rx = &job_rx;
            scope.spawn(move || work(job_rx, plan, Compression::new(highest), block_level, opts));
        }
        scope.spawn(move || {
            let mut reader = Reader { parts: part_tx, jobs: job_tx, chooser: MethodChooser::new(opts), zip64 };
            if let Err(err) = reader.read_all(plan, entries, scratch_dir) {
                // The writer may be gone already (it failed first): then nobody listens.
                let _ = reader.parts.send(Part::Failed(err));
            }
        });
        // Returning drops `part_rx`: a reader still sending then stops, and the workers
        // stop once it has.
        let zip = ZipOut::new(BufWriter::with_capacity(WRITE_BUFFER, out), zip64, scratch_dir);
        write_all(plan, part_rx, zip, &opts.limits, progress, Paced::new(pace, block_level, PACE_AFTER))
    })
}

/// What the reader hands to the writer, in archive order.
enum Part {
    /// Directories and small files, done by a worker.
    Batch { entries: Arc<[PlannedEntry]>, result: Receiver<io::Result<Vec<SmallFile>>> },
    FileStart { name: String, mode: u32, modified: Option<SystemTime>, deflated: bool, large: bool },
    /// The result of one block, ready once a worker has finished it.
    Block(Receiver<io::Result<DoneBlock>>),
    FileEnd,
    Failed(ArchiveError),
}

enum Job {
    Block(BlockJob),
    /// Read and compress the small files among these entries.
    Batch { entries: Arc<[PlannedEntry]>, reply: SyncSender<io::Result<Vec<SmallFile>>> },
}

/// A small file of a batch, as a worker found it.
enum SmallFile {
    Done(WholeFile),
    /// Deleted since it was planned: left out.
    Vanished,
    /// Grown to SMALL_FILE or more since it was planned: the writer archives it itself.
    Grown,
}

struct BlockJob {
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
    /// The level it was deflated at, and the worker's time on it.
    level: u32,
    compress: Duration,
}

/// A worker: small files at `level`, large files' blocks at `block_level` as it is when
/// each block starts (small files' cost is per file, not per byte: no pace for them).
fn work(jobs: &Mutex<Receiver<Job>>, plan: &Plan<'_>, level: Compression, block_level: &AtomicU32, opts: &CreateOptions) {
    let mut small = SmallFileCompressor::new(level, opts.min_saving_percent);
    loop {
        // The lock is held only while waiting for the next job.
        let job = match jobs.lock().map(|rx| rx.recv()) {
            Ok(Ok(job)) => job,
            _ => return,
        };
        // The writer may have given up: then the result is not wanted.
        match job {
            Job::Block(BlockJob { data, dictionary, deflate, last, reply }) => {
                let level = block_level.load(Ordering::Relaxed);
                let _ = reply.send(block_done(data, &dictionary, deflate, last, level));
            }
            Job::Batch { entries, reply } => {
                let _ = reply.send(small.batch(plan, &entries));
            }
        }
    }
}

/// Checksums a block and deflates it (or passes it through when stored).
fn block_done(data: Vec<u8>, dictionary: &[u8], deflate: bool, last: bool, level: u32) -> io::Result<DoneBlock> {
    let started = Instant::now();
    let mut crc = Crc::new();
    crc.update(&data);
    let input_len = data.len() as u64;
    let bytes = if deflate { deflate_block(&data, dictionary, last, Compression::new(level))? } else { data };
    Ok(DoneBlock { bytes, input_len, crc, level, compress: started.elapsed() })
}

/// Reads, checksums and deflates small files whole, with buffers and a compressor reused
/// from file to file: a fresh compressor zeroes a few hundred KiB, more than a small file
/// costs to deflate.
struct SmallFileCompressor {
    level: Compression,
    min_saving_percent: u32,
    compress: Compress,
    input: Vec<u8>,
    out: Vec<u8>,
}

impl SmallFileCompressor {
    fn new(level: Compression, min_saving_percent: u32) -> Self {
        Self {
            level,
            min_saving_percent: min_saving_percent.min(100),
            compress: Compress::new(level, false),
            input: Vec::with_capacity(SMALL_FILE as usize),
            // Grown to the largest file seen (see deflated_len), not to SMALL_FILE up front:
            // most small files are a few hundred bytes, and each worker held 1.1 MiB for
            // them (a quick bench's creates peaked 4-5 MiB lower in every case since).
            out: Vec::new(),
        }
    }

    fn batch(&mut self, plan: &Plan<'_>, entries: &[PlannedEntry]) -> io::Result<Vec<SmallFile>> {
        entries
            .iter()
            .filter(|entry| entry.source == Source::File)
            .map(|entry| self.file(&plan.path(entry)))
            .collect()
    }

    fn file(&mut self, path: &Path) -> io::Result<SmallFile> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(SmallFile::Vanished),
            Err(err) => return Err(err),
        };
        self.input.clear();
        file.take(SMALL_FILE).read_to_end(&mut self.input)?;
        if self.input.len() as u64 == SMALL_FILE {
            return Ok(SmallFile::Grown);
        }
        let mut crc = Crc::new();
        crc.update(&self.input);
        let len = self.input.len() as u64;
        let done = match self.deflated_len() {
            Some(n) => WholeFile { bytes: self.out[..n].to_vec(), deflated: true, crc: crc.sum(), len },
            None => WholeFile { bytes: self.input.clone(), deflated: false, crc: crc.sum(), len },
        };
        Ok(SmallFile::Done(done))
    }

    /// Deflates the input into `out`; its length if that saves enough, else `None` (stored).
    fn deflated_len(&mut self) -> Option<usize> {
        if self.input.is_empty() {
            return None;
        }
        // Deflate grows incompressible data by well under 1/8.
        let room = self.input.len() + self.input.len() / 8 + 1024;
        if self.out.len() < room {
            self.out.resize(room, 0);
        }
        self.compress.reset();
        let status = self.compress.compress(&self.input, &mut self.out, FlushCompress::Finish);
        if !matches!(status, Ok(Status::StreamEnd)) {
            // zlib-rs 0.6 panics when a stream left unfinished is reset and reused.
            self.compress = Compress::new(self.level, false);
            return None;
        }
        let n = self.compress.total_out() as usize;
        let budget = self.input.len() * (100 - self.min_saving_percent as usize) / 100;
        (n < budget).then_some(n)
    }
}

/// Deflates one block as part of a longer stream: primed with `dictionary`, ending with a
/// sync flush (or the end of the stream when `last`). Blocks of one stream may differ in
/// level (level 0 writes stored deflate blocks).
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
    zip64: Zip64Limits,
}

/// The writer hung up (it failed): stop reading quietly, its error is the one reported.
struct WriterGone;

impl Reader {
    fn read_all(
        &mut self,
        plan: &Plan<'_>,
        entries: impl Iterator<Item = Result<PlannedEntry, ArchiveError>>,
        scratch_dir: &Path,
    ) -> Result<(), ArchiveError> {
        let mut batch = BatchBuilder::default();
        for entry in entries {
            let entry = entry?;
            let small = match entry.source {
                Source::Dir => true,
                Source::File => entry.size < SMALL_FILE,
                Source::Sqlite => false,
            };
            if small {
                if batch.push(entry) && self.send_batch(&mut batch).is_err() {
                    return Ok(());
                }
                continue;
            }
            if self.send_batch(&mut batch).is_err() {
                return Ok(());
            }
            let sent = match entry.source {
                Source::Sqlite => match Snapshot::take(&plan.path(&entry), scratch_dir, &entry.name) {
                    // Deleted once read, before the next entry.
                    Ok(snapshot) => self.read_file(&entry, File::open(&snapshot.path)?)?,
                    // A `.db` that is no SQLite database: no connection of ours has it open,
                    // so it is read as any file.
                    Err(ArchiveError::Snapshot { source, .. })
                        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) =>
                    {
                        let Some(file) = open_if_present(&plan.path(&entry))? else { continue };
                        self.read_file(&entry, file)?
                    }
                    Err(e) => return Err(e),
                },
                _ => {
                    let Some(file) = open_if_present(&plan.path(&entry))? else {
                        tracing::debug!(name = %entry.name, "file vanished before archiving");
                        continue;
                    };
                    self.read_file(&entry, file)?
                }
            };
            if sent.is_err() {
                return Ok(());
            }
        }
        let _ = self.send_batch(&mut batch);
        Ok(())
    }

    /// Hands the batch (if any) to a worker and its result handle to the writer.
    fn send_batch(&self, batch: &mut BatchBuilder) -> Result<(), WriterGone> {
        let Some(entries) = batch.take() else { return Ok(()) };
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Part::Batch { entries: entries.clone(), result })?;
        self.jobs.send(Job::Batch { entries, reply }).map_err(|_| WriterGone)
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
            name: entry.name.to_string(),
            mode: entry.mode,
            modified: entry.modified,
            deflated: deflate,
            large: len >= self.zip64.large_file,
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
            let job = Job::Block(BlockJob { data: block, dictionary, deflate, last, reply });
            if self.jobs.send(job).is_err() {
                return Ok(Err(WriterGone));
            }
            block = next;
            dictionary = next_dictionary;
        }
        Ok(self.send(Part::FileEnd))
    }
}

/// Consecutive small entries gathered into one job.
#[derive(Default)]
struct BatchBuilder {
    entries: Vec<PlannedEntry>,
    bytes: u64,
}

impl BatchBuilder {
    /// Adds the entry after the last added; true when the batch is full.
    fn push(&mut self, entry: PlannedEntry) -> bool {
        if entry.source == Source::File {
            self.bytes += entry.size;
        }
        self.entries.push(entry);
        self.entries.len() >= BATCH_ENTRIES || self.bytes >= BLOCK_SIZE as u64
    }

    fn take(&mut self) -> Option<Arc<[PlannedEntry]>> {
        self.bytes = 0;
        (!self.entries.is_empty()).then(|| std::mem::take(&mut self.entries).into())
    }
}

/// Reads up to BLOCK_SIZE bytes; fewer only at the end of the source.
fn read_block(source: &mut impl Read) -> io::Result<Vec<u8>> {
    // Whole-block reads: `read_to_end` starts each call with small reads and doubles them,
    // eight syscalls a block, which made reading a cached tree the slowest part of a create.
    let mut block = vec![0u8; BLOCK_SIZE];
    let mut filled = 0;
    while filled < BLOCK_SIZE {
        match source.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    block.truncate(filled);
    Ok(block)
}

/// Receives the parts in order and writes the archive; returns its counters. The archive
/// must stay within what a restore accepts (`limits`): the data dir may have grown since
/// it was counted.
fn write_all<W: Write>(
    plan: &Plan<'_>,
    parts: Receiver<Part>,
    mut zip: ZipOut<W>,
    limits: &ArchiveLimits,
    progress: &ProgressCounter,
    mut paced: Paced<'_>,
) -> Result<CreateStats, ArchiveError> {
    let mut stats = CreateStats::default();
    let mut current: Option<OpenEntry> = None;
    let mut deflating = false;
    let worker_gone = || ArchiveError::Io(io::Error::other("a compression worker stopped"));
    loop {
        let (part, waited_for_reader) = match parts.try_recv() {
            Ok(part) => (part, false),
            Err(TryRecvError::Empty) => match parts.recv() {
                Ok(part) => (part, true),
                Err(_) => break,
            },
            // The reader hangs up after the last part (or after sending its error).
            Err(TryRecvError::Disconnected) => break,
        };
        check_within(&stats, limits)?;
        match part {
            Part::Batch { entries, result } => {
                let mut files = result.recv().map_err(|_| worker_gone())??.into_iter();
                for entry in entries.iter() {
                    if entry.source == Source::Dir {
                        zip.directory(&entry.name, entry.mode, entry.modified)?;
                        stats.entries += 1;
                        continue;
                    }
                    let written = match files.next().ok_or_else(worker_gone)? {
                        SmallFile::Done(file) => {
                            zip.whole_file(&entry.name, entry.mode, entry.modified, &file)?;
                            Some(file.len)
                        }
                        SmallFile::Vanished => None,
                        SmallFile::Grown => write_grown_file(&mut zip, plan, entry)?,
                    };
                    if let Some(len) = written {
                        progress.add(len);
                        stats.bytes_in += len;
                        stats.entries += 1;
                    }
                }
            }
            Part::FileStart { name, mode, modified, deflated, large } => {
                current = Some(zip.start_file(name, mode, modified, deflated, large)?);
                deflating = deflated;
            }
            Part::Block(result) => {
                let entry = current.as_mut().ok_or_else(worker_gone)?;
                let (block, waited_for_workers) = match result.try_recv() {
                    Ok(block) => (block, false),
                    Err(_) => (result.recv().map_err(|_| worker_gone())?, true),
                };
                let block = block?;
                let started = Instant::now();
                zip.write_data(entry, &block.bytes, block.input_len, &block.crc)?;
                if deflating {
                    let behind = match (waited_for_reader, waited_for_workers) {
                        _ if paced.waiting() => Behind::Neither,
                        // Reading is the slowest: no level would help.
                        (true, _) => Behind::Neither,
                        (false, true) => Behind::Workers,
                        (false, false) => Behind::Writer,
                    };
                    let cost = BlockCost {
                        level: block.level,
                        input: block.input_len,
                        output: block.bytes.len() as u64,
                        compress: block.compress,
                        write: started.elapsed(),
                    };
                    paced.observe(behind, cost);
                }
                progress.add(block.input_len);
            }
            Part::FileEnd => {
                let entry = current.take().ok_or_else(worker_gone)?;
                stats.bytes_in += entry.uncompressed();
                zip.finish_file(entry)?;
                stats.entries += 1;
            }
            Part::Failed(err) => return Err(err),
        }
    }
    if current.is_some() {
        return Err(worker_gone());
    }
    check_within(&stats, limits)?;
    stats.bytes_out = zip.finish()?;
    Ok(stats)
}

/// The pace of the blocks' level and where the workers read it.
struct Paced<'a> {
    pace: Pace,
    block_level: &'a AtomicU32,
    /// Until then the level stays where it starts (see PACE_AFTER).
    from: Instant,
}

impl<'a> Paced<'a> {
    fn new(pace: Pace, block_level: &'a AtomicU32, after: Duration) -> Self {
        Self { pace, block_level, from: Instant::now() + after }
    }

    fn waiting(&self) -> bool {
        Instant::now() < self.from
    }

    fn observe(&mut self, behind: Behind, cost: BlockCost) {
        self.block_level.store(self.pace.observe(behind, cost), Ordering::Relaxed);
    }
}

/// Refuses an archive past what a restore of it would accept.
fn check_within(stats: &CreateStats, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
    if stats.entries as u64 > limits.max_entries as u64 {
        return Err(ArchiveError::TooManyEntries { entries: stats.entries as u64, max: limits.max_entries as u64 });
    }
    if stats.bytes_in > limits.max_total_size {
        return Err(ArchiveError::TooLarge);
    }
    Ok(())
}

/// Archives, stored, a file planned as small that has grown since (rare: the data dir is
/// live); returns its size, or `None` if it is gone.
fn write_grown_file<W: Write>(zip: &mut ZipOut<W>, plan: &Plan<'_>, entry: &PlannedEntry) -> Result<Option<u64>, ArchiveError> {
    let Some(file) = open_if_present(&plan.path(entry))? else { return Ok(None) };
    let len = file.metadata()?.len();
    let large = len >= zip.limits().large_file;
    let mut open = zip.start_file(entry.name.to_string(), entry.mode, entry.modified, false, large)?;
    let mut source = file.take(len);
    loop {
        let block = read_block(&mut source)?;
        if block.is_empty() {
            break;
        }
        let mut crc = Crc::new();
        crc.update(&block);
        zip.write_data(&mut open, &block, block.len() as u64, &crc)?;
    }
    let written = open.uncompressed();
    zip.finish_file(open)?;
    Ok(Some(written))
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

#[cfg(test)]
mod tests;
