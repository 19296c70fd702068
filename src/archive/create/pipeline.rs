//! The pipeline that writes an archive: a reader thread cuts each file into blocks, worker
//! threads checksum and deflate blocks, and the calling thread writes the results in archive
//! order through the zip writer. Memory is bounded by the blocks in flight.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::SystemTime;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use super::plan::{open_if_present, PlannedEntry, Source};
use super::snapshot::Snapshot;
use super::{CreateOptions, CreateStats};
use crate::archive::zip_writer::{OpenEntry, Zip64Limits, ZipOut};
use crate::archive::ArchiveError;
use crate::progress::ProgressCounter;

/// How much of a file is deflated up front to decide between Deflated and Stored.
const SAMPLE_SIZE: usize = 64 * 1024;
/// Unit of work of the pipeline: files are read, checksummed and deflated in blocks.
pub(super) const BLOCK_SIZE: usize = 1 << 20;
/// Deflate's window: each block is primed with this much of the input before it.
const WINDOW: usize = 32 * 1024;
/// Blocks queued for the writer beyond those being worked on, per worker.
const QUEUED_PER_WORKER: usize = 3;
/// Compression threads at most: memory grows with them (about 5 MiB each in flight), and
/// the disk rather than the CPU limits a backup beyond a few cores.
const MAX_WORKERS: usize = 4;
/// Output buffer of the archive file.
const WRITE_BUFFER: usize = 1 << 20;

/// Runs the pipeline over `entries` and writes the archive to `out`.
pub(super) fn run<W: Write + Seek>(
    entries: &[PlannedEntry],
    scratch_dir: &Path,
    out: W,
    opts: &CreateOptions,
    zip64: Zip64Limits,
    progress: &ProgressCounter,
) -> Result<CreateStats, ArchiveError> {
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
        scope.spawn(move || {
            let mut reader = Reader { parts: part_tx, jobs: job_tx, chooser: MethodChooser::new(opts), zip64 };
            if let Err(err) = reader.read_all(entries, scratch_dir) {
                // The writer may be gone already (it failed first): then nobody listens.
                let _ = reader.parts.send(Part::Failed(err));
            }
        });
        // Returning drops `part_rx`: a reader still sending then stops, and the workers
        // stop once it has.
        write_all(part_rx, ZipOut::new(BufWriter::with_capacity(WRITE_BUFFER, out), zip64), progress)
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
    zip64: Zip64Limits,
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
fn write_all<W: Write + Seek>(parts: Receiver<Part>, mut zip: ZipOut<W>, progress: &ProgressCounter) -> Result<CreateStats, ArchiveError> {
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
                zip.write_data(entry, &block.bytes, block.input_len, &block.crc)?;
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
    stats.bytes_out = zip.finish()?;
    Ok(stats)
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
