//! What goes into a backup: the data dir's entries in a stable order, with the backups
//! storage, the temp folder, SQLite side files, links and special files left out.
//!
//! The entries are walked, not listed: only the folders on the way to the current entry
//! are held (their children's names, sorted), so memory does not grow with the number of
//! files in the data dir. A create walks twice: once to count (the entry cap and the
//! progress total, known before anything is written), then to archive.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::archive::{check_entry_name, ArchiveError, SQLITE_HEADER};

/// Suffixes of SQLite side files: their content is in the snapshots (or meaningless alone).
const SQLITE_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Where an entry's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Dir,
    File,
    /// A top-level SQLite database, archived through a snapshot.
    Sqlite,
}

/// The data dir to archive and the top-level names left out.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    pub(super) root: PathBuf,
    exclude_top_level: &'a [&'a str],
}

impl<'a> Plan<'a> {
    pub(super) fn new(root: &Path, exclude_top_level: &'a [&'a str]) -> Self {
        Plan { root: root.to_path_buf(), exclude_top_level }
    }

    /// Where `entry` is on disk.
    pub(super) fn path(&self, entry: &PlannedEntry) -> PathBuf {
        self.root.join(&*entry.name)
    }

    /// The entries in archive order: names sorted within each folder, a folder right before
    /// its content.
    pub(super) fn walk(&self) -> Walk<'_> {
        Walk { plan: self, stack: Vec::new(), started: false }
    }

    /// Counts the entries and their bytes, as `walk` would yield them now.
    pub(super) fn count(&self) -> Result<Count, ArchiveError> {
        let mut count = Count::default();
        for entry in self.walk() {
            let entry = entry?;
            count.entries += 1;
            count.bytes += entry.size;
        }
        Ok(count)
    }
}

/// What a walk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Count {
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

#[derive(Debug)]
pub(super) struct PlannedEntry {
    /// Name in the archive, also the path under the data dir: relative, '/'-separated, no
    /// trailing '/'.
    pub(super) name: Box<str>,
    pub(super) source: Source,
    pub(super) mode: u32,
    pub(super) modified: Option<SystemTime>,
    /// Size when planned (0 for a directory): the total that progress counts towards.
    pub(super) size: u64,
}

/// The entries of a [`Plan`], one at a time.
pub(super) struct Walk<'p> {
    plan: &'p Plan<'p>,
    /// The folders being walked, outermost first.
    stack: Vec<Folder>,
    started: bool,
}

/// A folder being walked: its children's names, sorted, and how far the walk has got.
struct Folder {
    fd: OwnedFd,
    /// Its name in the archive ("" for the data dir itself).
    name: String,
    /// The children's names, one after the other, and where each is in it (start, length):
    /// one allocation per folder rather than one per name.
    names: Vec<u8>,
    spans: Vec<(u32, u32)>,
    next: usize,
}

impl Folder {
    /// Opens and lists the folder at `path` (relative to `at`), `None` if it is gone. Only
    /// the data dir itself may be reached through a symlink.
    fn open(at: impl AsFd, path: &Path, name: String) -> Result<Option<Folder>, ArchiveError> {
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !name.is_empty() {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = match rustix::fs::openat(at, path, flags, Mode::empty()) {
            Ok(fd) => fd,
            // The data dir is live: a folder deleted (or replaced by a link or a file) since
            // it was seen is left out.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) if !name.is_empty() => {
                tracing::warn!(name, "a folder changed while the backup was made; left out");
                return Ok(None);
            }
            Err(e) => return Err(io::Error::from(e).into()),
        };
        let mut names = Vec::new();
        let mut spans = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&fd).map_err(io::Error::from)?;
        while let Some(child) = dir.read() {
            let child = child.map_err(io::Error::from)?;
            let child = child.file_name().to_bytes();
            if child == b"." || child == b".." {
                continue;
            }
            let start = u32::try_from(names.len()).map_err(|_| io::Error::other("a folder's names exceed 4 GiB"))?;
            names.extend_from_slice(child);
            spans.push((start, child.len() as u32));
        }
        let name_of = |&(start, len): &(u32, u32)| &names[start as usize..][..len as usize];
        spans.sort_unstable_by(|a, b| name_of(a).cmp(name_of(b)));
        names.shrink_to_fit();
        spans.shrink_to_fit();
        Ok(Some(Folder { fd, name, names, spans, next: 0 }))
    }

    fn next_child(&mut self) -> Option<&[u8]> {
        let &(start, len) = self.spans.get(self.next)?;
        self.next += 1;
        Some(&self.names[start as usize..][..len as usize])
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<PlannedEntry, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            match Folder::open(rustix::fs::CWD, &self.plan.root, String::new()) {
                Ok(Some(root)) => self.stack.push(root),
                Ok(None) => return Some(Err(io::Error::from(io::ErrorKind::NotFound).into())),
                Err(e) => return Some(Err(e)),
            }
        }
        loop {
            let top = self.stack.last_mut()?;
            let Some(child) = top.next_child().map(<[u8]>::to_vec) else {
                self.stack.pop();
                continue;
            };
            match self.entry(child) {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Walk<'_> {
    /// The entry for `child` of the innermost folder, `None` if it is left out. A folder
    /// becomes the innermost one, so that its content comes next.
    fn entry(&mut self, child: Vec<u8>) -> Result<Option<PlannedEntry>, ArchiveError> {
        let depth = self.stack.len();
        let top = self.stack.last().expect("called with a folder open");
        let top_level = depth == 1;
        // Only for the log and the rare top-level database: not made for every file.
        let path = || self.plan.root.join(&top.name).join(OsStr::from_bytes(&child));
        let Ok(file_name) = std::str::from_utf8(&child) else {
            tracing::warn!(path = %path().display(), "skipping a file whose name is not UTF-8");
            return Ok(None);
        };
        if top_level && self.plan.exclude_top_level.contains(&file_name) {
            return Ok(None);
        }
        let name = if top_level { file_name.to_owned() } else { format!("{}/{file_name}", top.name) };
        // Restore refuses such names (not portable, too long or too deep), so archiving them
        // would make the backup unusable.
        if let Err(e) = check_entry_name(&name) {
            tracing::warn!(path = %path().display(), reason = %e, "skipping a file whose name a restore would refuse");
            return Ok(None);
        }
        // Relative to the folder's descriptor: no path to resolve again for every file.
        let stat = match rustix::fs::statat(&top.fd, OsStr::from_bytes(&child), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io::Error::from(e).into()),
        };
        #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
        let (raw_mode, len, secs, nanos) = (stat.st_mode as u32, stat.st_size as u64, stat.st_mtime as i64, stat.st_mtime_nsec as u32);
        let source = match FileType::from_raw_mode(raw_mode) {
            FileType::Directory => Source::Dir,
            FileType::RegularFile => {
                if SQLITE_SIDE_SUFFIXES.iter().any(|s| file_name.ends_with(s)) {
                    return Ok(None);
                }
                // Judged by name and size, not by reading the header: opening a live
                // database with a plain open(2) and closing it drops the POSIX locks that
                // this process's SQLite connections hold on it (they belong to the process
                // and the inode). Another process's connection may then believe itself the
                // last one, checkpoint and delete the WAL under ours, which goes on reading
                // a stale state. The snapshot opens it through SQLite, and archives a file
                // that turns out not to be a database as it is.
                if top_level && file_name.ends_with(".db") && len >= SQLITE_HEADER.len() as u64 {
                    Source::Sqlite
                } else {
                    Source::File
                }
            }
            FileType::Symlink => {
                tracing::warn!(path = %path().display(), "skipping a symlink in the data dir");
                return Ok(None);
            }
            _ => {
                tracing::warn!(path = %path().display(), "skipping a special file in the data dir");
                return Ok(None);
            }
        };
        let modified = u64::try_from(secs)
            .ok()
            .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999))));
        let entry = PlannedEntry {
            name: name.as_str().into(),
            source,
            mode: raw_mode & 0o777,
            modified,
            size: if source == Source::Dir { 0 } else { len },
        };
        if source == Source::Dir {
            let top = self.stack.last().expect("checked above");
            if let Some(folder) = Folder::open(&top.fd, Path::new(OsStr::from_bytes(&child)), name)? {
                self.stack.push(folder);
            }
        }
        Ok(Some(entry))
    }
}

/// Opens a file for reading; `None` when it has been deleted meanwhile (the data dir is live).
pub(super) fn open_if_present(path: &Path) -> Result<Option<File>, ArchiveError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}
