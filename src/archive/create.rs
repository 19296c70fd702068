//! Writing a backup zip of the data dir, deflating on every core with bounded memory.
//!
//! `plan` lists what goes into the archive; then a pipeline runs: a reader thread cuts each
//! large file into blocks and groups small files into batches, worker threads checksum and
//! deflate blocks (and read and deflate the batches' files whole), and the calling thread
//! writes the results in archive order. A large deflated entry is one ordinary deflate stream:
//! every block but the last ends with a sync flush (byte-aligned, not final) and each is
//! primed with the 32 KiB before it, so splitting costs almost nothing in size. Memory is
//! bounded by the blocks in flight, whatever the size of the files.
//!
//! The zip container is written by `zip_writer`: the zip crate cannot take an entry's
//! compressed bytes from elsewhere without holding the whole entry in memory.
//!
//! Top-level SQLite databases are copied to a snapshot file with the online backup API
//! just before they are read.
//!
//! The parts, each in its own file: `plan` (what goes in), `snapshot` (consistent copies of
//! live databases), `pipeline` (reader, deflate workers, writer) and, one level up,
//! `zip_writer` (the container).

mod pace;
mod pipeline;
mod plan;
mod snapshot;

use std::io::Write;
use std::path::Path;

use super::zip_writer::Zip64Limits;
use super::{ArchiveError, ArchiveLimits};
use crate::progress::ProgressCounter;

/// Tuning of archive creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// Deflate level (1 fastest ..= 9 smallest) for files that compress.
    pub deflate_level: u32,
    /// The level the blocks of a large file may drop to while compression cannot keep up
    /// with the output (0: stored deflate blocks); `deflate_level` or more keeps the level
    /// fixed. See `pace`.
    pub fastest_level: u32,
    /// A file is stored uncompressed when deflating its first 64 KiB saves less than this
    /// percentage.
    pub min_saving_percent: u32,
    /// What a restore of the archive will accept: a data dir past them is refused before
    /// anything is written, so that no backup is made that would not restore.
    pub limits: ArchiveLimits,
}

impl Default for CreateOptions {
    /// Level 2: zlib-rs's level 1 is a much cruder algorithm (text comes out about 30%
    /// larger than at level 2), while level 2 is within 1-2% of level 6 at twice its speed.
    fn default() -> Self {
        Self {
            deflate_level: 2,
            fastest_level: 0,
            min_saving_percent: 3,
            limits: ArchiveLimits::default(),
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
/// The data dir is counted first: more entries or bytes than `opts.limits` allow refuse the
/// backup before anything is written (and a data dir that grows past them meanwhile fails
/// it). Top-level names in `exclude_top_level` (the backups storage, the temp folder) and SQLite
/// side files are left out; symlinks and special files are skipped with a warning. Top-level
/// `*.db` SQLite files are snapshotted into `scratch_dir` (deleted afterwards), so they are
/// consistent even while the server writes to them. `out` is flushed but not synced: the
/// caller owns the file and decides when to `sync_all`.
pub fn create_backup<W: Write>(
    data_dir: &Path,
    exclude_top_level: &[&str],
    scratch_dir: &Path,
    out: W,
    opts: &CreateOptions,
) -> Result<CreateStats, ArchiveError> {
    create_backup_counted(data_dir, exclude_top_level, scratch_dir, out, opts, &ProgressCounter::default())
}

/// [`create_backup`], counting into `progress`: its total is the planned files' size, and
/// each file's bytes count as they are written into the archive.
pub fn create_backup_counted<W: Write>(
    data_dir: &Path,
    exclude_top_level: &[&str],
    scratch_dir: &Path,
    out: W,
    opts: &CreateOptions,
    progress: &ProgressCounter,
) -> Result<CreateStats, ArchiveError> {
    create_backup_with(data_dir, exclude_top_level, scratch_dir, out, opts, Zip64Limits::default(), progress)
}

/// [`create_backup_counted`] with the zip64 thresholds given: tests lower them to drive the
/// zip64 paths on small data.
pub(crate) fn create_backup_with<W: Write>(
    data_dir: &Path,
    exclude_top_level: &[&str],
    scratch_dir: &Path,
    out: W,
    opts: &CreateOptions,
    zip64: Zip64Limits,
    progress: &ProgressCounter,
) -> Result<CreateStats, ArchiveError> {
    let plan = plan::Plan::new(data_dir, exclude_top_level);
    let count = plan.count()?;
    let limits = &opts.limits;
    if count.entries > limits.max_entries as u64 {
        return Err(ArchiveError::TooManyEntries { entries: count.entries, max: limits.max_entries as u64 });
    }
    if count.bytes > limits.max_total_size {
        return Err(ArchiveError::TooLarge);
    }
    progress.set_total(count.bytes);
    pipeline::run(&plan, plan.walk(), scratch_dir, out, opts, zip64, progress)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use zip::{CompressionMethod, ZipArchive};

    use std::fs;
    use std::io::Read;

    use super::pipeline::BLOCK_SIZE;
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

    /// A data dir past the entry cap or the size limit is refused before a byte is written,
    /// with the count and the cap; at the cap exactly it is archived.
    #[test]
    fn a_data_dir_past_the_limits_is_refused_up_front() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        fs::create_dir_all(data.join("sub")).unwrap();
        for name in ["a", "sub/b", "sub/c"] {
            fs::write(data.join(name), b"12345").unwrap();
        }
        // Four entries (a, sub/, sub/b, sub/c) and 15 bytes.
        let with = |max_entries, max_total_size| CreateOptions {
            limits: ArchiveLimits { max_entries, max_total_size, ..ArchiveLimits::default() },
            ..CreateOptions::default()
        };
        let mut out = Vec::new();
        let err = create_backup(&data, &[], tmp.path(), &mut out, &with(3, 15)).unwrap_err();
        assert!(matches!(err, ArchiveError::TooManyEntries { entries: 4, max: 3 }), "{err:?}");
        assert!(out.is_empty(), "nothing written");
        let err = create_backup(&data, &[], tmp.path(), &mut out, &with(4, 14)).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge), "{err:?}");
        assert!(out.is_empty(), "nothing written");
        let stats = create_backup(&data, &[], tmp.path(), &mut out, &with(4, 15)).unwrap();
        assert_eq!((stats.entries, stats.bytes_in), (4, 15));
        let zip = tmp.path().join("b.zip");
        fs::write(&zip, &out).unwrap();
        let summary = crate::archive::validate(&zip, &with(4, 15).limits).unwrap();
        assert_eq!(summary.entries, 4, "a restore with the same limits accepts it");
    }

    /// Top-level `.db` files that are no SQLite databases are archived as they are: the
    /// snapshot, which opens them through SQLite, finds out and hands them back.
    #[test]
    fn top_level_db_files_that_are_not_sqlite_are_archived_as_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        fs::create_dir_all(&data).unwrap();
        let text = b"not a database, only text long enough for a header".to_vec();
        fs::write(data.join("notes.db"), &text).unwrap();
        fs::write(data.join("tiny.db"), b"short").unwrap();
        let mut out = Cursor::new(Vec::new());
        create_backup(&data, &[], tmp.path(), &mut out, &CreateOptions::default()).unwrap();
        let mut zip = ZipArchive::new(Cursor::new(out.into_inner())).unwrap();
        for (name, content) in [("notes.db", &text[..]), ("tiny.db", b"short")] {
            let mut read = Vec::new();
            zip.by_name(name).unwrap().read_to_end(&mut read).unwrap();
            assert_eq!(read, content, "{name}");
        }
    }

    /// A create keeps the locks that this process's SQLite connections hold on a database
    /// it archives. POSIX locks belong to the process and the inode: a plain open and close
    /// of the file anywhere in the create would release them (see `plan.rs`).
    #[test]
    fn a_create_keeps_the_locks_of_open_database_connections() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        fs::create_dir_all(&data).unwrap();
        let db = data.join("data.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode = DELETE; CREATE TABLE t (x); INSERT INTO t VALUES (1); BEGIN IMMEDIATE;")
            .unwrap();
        // Open until the end: closing it would release the locks itself.
        let probe = fs::File::open(&db).unwrap();
        assert!(reserved_lock_held(&probe), "the connection holds its write lock before the create");
        let mut out = Cursor::new(Vec::new());
        create_backup(&data, &[], tmp.path(), &mut out, &CreateOptions::default()).unwrap();
        assert!(reserved_lock_held(&probe), "the create released the connection's lock");
        conn.execute_batch("COMMIT").unwrap();
        let mut zip = ZipArchive::new(Cursor::new(out.into_inner())).unwrap();
        assert!(zip.by_name("data.db").is_ok());
    }

    /// Whether some lock covers SQLite's reserved byte (a writer's). Asked through an open
    /// file description lock: those conflict with this process's own POSIX locks, which a
    /// plain F_GETLK does not report.
    fn reserved_lock_held(file: &fs::File) -> bool {
        use std::os::fd::AsRawFd;
        const RESERVED_BYTE: libc::off_t = 0x4000_0001;
        // SAFETY: a zeroed flock is valid (l_pid must be 0 for F_OFD_GETLK).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as _;
        lock.l_whence = libc::SEEK_SET as _;
        lock.l_start = RESERVED_BYTE;
        lock.l_len = 1;
        // SAFETY: the descriptor is open for the call, and `lock` is a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
        assert_eq!(rc, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
        lock.l_type != libc::F_UNLCK as libc::c_short
    }
}
