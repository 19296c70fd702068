//! The extraction of a checked archive: folders first, then files decoded on a few threads,
//! each with its own buffers, every byte counted against the declared sizes and the limits.

use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use flate2::{Decompress, FlushDecompress, Status};
use rustix::fs::{Mode, OFlags};

use super::check::{Entries, Entry, Named};
use super::dirs::{make_dir, walk_dirs, DirWalk};
use super::in_order::{is_top_level_file, Pass};
use super::window::Window;
use super::{Checked, Output};
use crate::archive::{ArchiveError, ArchiveLimits};
use crate::progress::ProgressCounter;
use crate::util::OutputFile;

const CHUNK_SIZE: usize = 256 * 1024;
/// Owner bits always granted on extraction, so the server can read, move and delete what
/// it extracted whatever the archive says.
const OWNER_FILE_BITS: u32 = 0o600;
const OWNER_DIR_BITS: u32 = 0o700;
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

/// The extraction itself, of an archive that passed every check.
pub(super) fn extract_checked(
    file: &File,
    checked: Checked,
    dest: &Path,
    limits: &ArchiveLimits,
    output: Output,
    progress: &ProgressCounter,
) -> Result<(), ArchiveError> {
    // What is written (everything, or data.db alone), refused up front when it cannot fit.
    let (written, only) = match output {
        Output::Everything => (checked.summary().total_size, None),
        Output::DataDbOnly => {
            let (position, entry) = checked.data_db().ok_or(ArchiveError::MissingDataDb)?;
            (entry.size, Some(position))
        }
    };
    if written > limits.max_written {
        return Err(ArchiveError::TooLarge);
    }
    progress.set_total(checked.summary().total_size);
    // Twice the cores: while one thread waits for its writes (direct ones take a few ms
    // each), another decodes; with as many threads as cores, a 16 GiB restore on two cores
    // left them idle a third of the time (16.1 s against 11.4-13.8 s with four).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (2 * cores).min(MAX_THREADS);
    let job = Job {
        archive: file,
        dest: dest.as_os_str().as_bytes(),
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
    let make_dirs = output == Output::Everything;
    let listed = match checked {
        Checked::Listed(listed) => {
            if make_dirs {
                walk_dirs(&listed.entries, &listed.order, |path| make_dir(dest, path), |_, _| Ok(()))?;
            }
            job.run_listed(&listed.entries, threads);
            Some(listed)
        }
        Checked::InOrder(_) => {
            job.run_in_order(limits, dest, make_dirs, threads)?;
            None
        }
    };
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
    let set_mode = |path: &str, mode: Option<u32>| {
        let mode = mode.unwrap_or(DEFAULT_DIR_MODE) & 0o777 | OWNER_DIR_BITS;
        fs::set_permissions(dest.join(path), fs::Permissions::from_mode(mode)).map_err(Into::into)
    };
    match listed {
        Some(listed) => walk_dirs(&listed.entries, &listed.order, |_| Ok(()), set_mode)?,
        None => {
            let (mut walk, mut set_mode) = (DirWalk::default(), set_mode);
            Pass::new(file, limits)?.for_each(|_, entry, name| match is_top_level_file(entry, name) {
                true => Ok(()),
                false => walk.visit(name, entry.is_dir, entry.mode(), &mut |_| Ok(()), &mut set_mode),
            })?;
            walk.finish(&mut set_mode)?;
        }
    }
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

/// A run of entries for one thread, read from the archive in walk order: their positions
/// start at `first`.
struct Batch {
    first: usize,
    entries: Entries,
}

impl Job<'_> {
    /// The files of a compact list, in units taken by `threads` threads (this one too).
    fn run_listed(&self, entries: &Entries, threads: usize) {
        let files: Vec<u32> = (0..entries.list.len() as u32)
            .filter(|&p| !entries.list[p as usize].is_dir)
            .collect();
        let units = work_units(&entries.list, &files);
        drop(files);
        let next_unit = AtomicUsize::new(0);
        let work = || {
            let mut worker = Worker::new();
            while let Some(range) = units.get(next_unit.fetch_add(1, Ordering::Relaxed)) {
                self.decode_run(&mut worker, entries, range.clone(), 0);
            }
        };
        let threads = threads.min(units.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 1..threads {
                // A thread that cannot start only leaves more units to the others.
                if std::thread::Builder::new().name("extract".into()).spawn_scoped(scope, work).is_err() {
                    break;
                }
            }
            work();
        });
    }

    /// The files of an archive in walk order: this thread reads the records again (each
    /// checked anew), makes the folders on the way when `make_dirs`, and hands the files in
    /// batches to `threads` threads through a short queue, so memory stays flat.
    fn run_in_order(&self, limits: &ArchiveLimits, dest: &Path, make_dirs: bool, threads: usize) -> Result<(), ArchiveError> {
        let mut pass = Pass::new(self.archive, limits)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(threads);
        let receiver = Mutex::new(receiver);
        let work = || {
            let mut worker = Worker::new();
            loop {
                let batch = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(batch) = batch else { return };
                self.decode_run(&mut worker, &batch.entries, 0..batch.entries.list.len(), batch.first);
            }
        };
        std::thread::scope(|scope| {
            let mut spawned = 0;
            for _ in 0..threads {
                if std::thread::Builder::new().name("extract".into()).spawn_scoped(scope, work).is_err() {
                    break;
                }
                spawned += 1;
            }
            let mut inline = None;
            let mut dispatch = |batch: Batch| match spawned {
                // No thread could start: this one decodes too.
                0 => {
                    let worker = inline.get_or_insert_with(Worker::new);
                    self.decode_run(worker, &batch.entries, 0..batch.entries.list.len(), batch.first)
                }
                _ => {
                    let _ = sender.send(batch);
                }
            };
            let result = self.produce(&mut pass, dest, make_dirs, &mut dispatch);
            drop(sender);
            result
        })
    }

    /// The producer of [`Job::run_in_order`]: batches of about [`BATCH_BYTES`] or
    /// [`BATCH_FILES`] files, a large file alone.
    fn produce(
        &self,
        pass: &mut Pass,
        dest: &Path,
        make_dirs: bool,
        dispatch: &mut impl FnMut(Batch),
    ) -> Result<(), ArchiveError> {
        let mut walk = DirWalk::default();
        let new_batch = |first| Batch { first, entries: Entries::with_capacity(BATCH_FILES, 0) };
        let mut batch = new_batch(0);
        let mut bytes = 0u64;
        loop {
            let position = pass.position;
            if position > self.first_failure.load(Ordering::Relaxed) {
                return Ok(());
            }
            match pass.next_into(&mut batch.entries) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(err) => {
                    // A fault here means the archive changed since it was checked.
                    self.fail(position, err);
                    return Ok(());
                }
            }
            let entry = batch.entries.list.last().expect("just read").clone();
            let name = batch.entries.name(&entry);
            if make_dirs && !is_top_level_file(&entry, name) {
                walk.visit(name, entry.is_dir, entry.mode(), &mut |path| make_dir(dest, path), &mut |_, _| Ok(()))?;
            }
            bytes += entry.compressed_size.max(entry.size);
            if bytes >= BATCH_BYTES || batch.entries.list.len() >= BATCH_FILES {
                dispatch(std::mem::replace(&mut batch, new_batch(position + 1)));
                bytes = 0;
            }
        }
        if !batch.entries.list.is_empty() {
            dispatch(batch);
        }
        Ok(())
    }

    /// Decodes the files among `range` of `entries` (positions from `first`), up to the
    /// first failure.
    fn decode_run(&self, worker: &mut Worker, entries: &Entries, range: Range<usize>, first: usize) {
        for index in range {
            let position = first + index;
            if position > self.first_failure.load(Ordering::Relaxed) {
                break;
            }
            let entry = &entries.list[index];
            if entry.is_dir {
                continue;
            }
            let entry = (entry, entries.name(entry));
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
        if entry.size >= OutputFile::WORTH_IT {
            // Large files past the page cache: the kernel's copies and writeback were most
            // of a 16 GiB restore's CPU on two cores.
            let mut out = OutputFile::new(file);
            self.decode(job, named, Some(&mut out))?;
            file = out.finish()?;
        } else {
            self.decode(job, named, Some(&mut file))?;
        }
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
        mut file: Option<&mut dyn Write>,
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
