//! Archives listed in walk order, checked and extracted one record at a time, in memory
//! that does not grow with the number of entries.
//!
//! Ours and PocketBase's archives list a folder's content right after it, each folder's
//! names sorted (the order of [`name_order`]), and their entries' data in the order of
//! their records; top-level files may come anywhere (PocketBase lists its databases
//! first), and are few. In such an archive every check on the compact list (`check`) is a
//! check between neighbours, or against the few top-level names: a duplicate, or a file
//! that is also a folder, is next to what it repeats; overlapping data starts before the
//! previous entry's data ends. So the central
//! directory is read once to check it, again to extract the files (folders made on the
//! way, in order), and once more to set the folders' modes, each pass checking every
//! record anew (the file could change between passes; fail closed).
//!
//! Any other archive, and any archive with a fault, goes to the compact list, which
//! reports the fault the same way for every archive: this path only ever accepts.

use std::collections::HashSet;
use std::fs::File;

use super::check::{check_entry, Entries, Entry};
use super::dirs::{is_inside, name_order};
use super::window::Window;
use crate::archive::central::{self, Records};
use crate::archive::{ArchiveError, ArchiveLimits, ArchiveSummary, DATA_DB};

/// Local headers are read through a window this large: neighbours share a read.
const HEADER_WINDOW: usize = 64 * 1024;

/// An archive whose records passed every check in walk order.
pub(super) struct InOrder {
    pub(super) summary: ArchiveSummary,
    /// The top-level `data.db` file: its position and entry.
    pub(super) data_db: Option<(usize, Entry)>,
}

/// Checks the archive in walk order; `None` when it is not in that order or any check
/// fails (the compact list's checks then decide, and report what is wrong).
pub(super) fn check(file: &File, limits: &ArchiveLimits) -> Option<InOrder> {
    let mut pass = Pass::new(file, limits).ok()?;
    let mut data_db = None;
    pass.for_each(|position, entry, name| {
        if data_db.is_none() && !entry.is_dir && name == DATA_DB {
            data_db = Some((position, entry.clone()));
        }
        Ok(())
    })
    .ok()?;
    Some(InOrder {
        summary: ArchiveSummary {
            entries: pass.position,
            total_size: pass.total_size,
            has_data_db: data_db.is_some(),
            in_walk_order: true,
        },
        data_db,
    })
}

/// One pass over the records of an archive in walk order, each checked as `check_entries`
/// checks it, and against its neighbour.
pub(super) struct Pass<'f> {
    file: &'f File,
    limits: &'f ArchiveLimits,
    records: Records<'f>,
    directory_start: u64,
    headers: Window,
    /// Entries read so far.
    pub(super) position: usize,
    total_size: u64,
    /// Where the previous entry's data ended: every entry's lies after it.
    data_end: u64,
    /// The previous entry in walk order (every entry but top-level files): its name (without
    /// a trailing '/') and whether it was a file.
    previous: Option<(String, bool)>,
    /// The top-level files, and the first folders of the other names: a top-level file may
    /// be listed anywhere (PocketBase lists its databases first), so it is checked against
    /// these instead of its neighbour. A few dozen in a data dir; past [`MAX_TOP_LEVEL`],
    /// the compact list decides.
    top_files: HashSet<String>,
    top_dirs: HashSet<String>,
}

/// Top-level files, and top-level folders, a pass keeps.
const MAX_TOP_LEVEL: usize = 256;

/// Whether `name` (without a trailing '/') is a top-level file: listed anywhere, not
/// walked (its folder is the destination itself).
pub(super) fn is_top_level_file(entry: &Entry, name: &str) -> bool {
    !entry.is_dir && !name.contains('/')
}

impl<'f> Pass<'f> {
    pub(super) fn new(file: &'f File, limits: &'f ArchiveLimits) -> Result<Self, ArchiveError> {
        let directory = central::open(file, limits.max_entries)?;
        Ok(Self {
            file,
            limits,
            records: directory.records(file)?,
            directory_start: directory.start(),
            headers: Window::new(HEADER_WINDOW),
            position: 0,
            total_size: 0,
            data_end: 0,
            previous: None,
            top_files: HashSet::new(),
            top_dirs: HashSet::new(),
        })
    }

    /// Calls `f` with each remaining entry (its position, itself, its name), one at a time.
    pub(super) fn for_each(
        &mut self,
        mut f: impl FnMut(usize, &Entry, &str) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut one = Entries::with_capacity(1, 0);
        while let Some(position) = self.next_into(&mut one)? {
            f(position, &one.list[0], one.name(&one.list[0]))?;
            one.clear();
        }
        Ok(())
    }

    /// Appends the next entry to `batch` and returns its position in the archive; `None`
    /// after the last. An error when the entry is refused or out of walk order.
    pub(super) fn next_into(&mut self, batch: &mut Entries) -> Result<Option<usize>, ArchiveError> {
        let Some(record) = self.records.next_record()? else {
            return Ok(None);
        };
        let mode = check_entry(&record, self.limits, &mut self.total_size)?;
        let entry = batch.push(&record, mode)?.clone();
        let name = batch.name(&entry);
        let out_of_order = || ArchiveError::NotZip(format!("{name:?} is out of walk order"));
        let first = name.split('/').next().unwrap_or(name);
        if is_top_level_file(&entry, name) {
            if self.top_dirs.contains(name) || self.top_files.contains(name) || self.top_files.len() >= MAX_TOP_LEVEL {
                return Err(out_of_order());
            }
            self.top_files.insert(name.to_owned());
        } else {
            if self.top_files.contains(first) {
                return Err(out_of_order());
            }
            if !self.top_dirs.contains(first) {
                if self.top_dirs.len() >= MAX_TOP_LEVEL {
                    return Err(out_of_order());
                }
                self.top_dirs.insert(first.to_owned());
            }
            if let Some((previous, previous_is_file)) = &self.previous {
                if name_order(previous, name).is_ge() || (*previous_is_file && is_inside(name, previous)) {
                    return Err(out_of_order());
                }
            }
            let previous = self.previous.get_or_insert_with(Default::default);
            previous.0.clear();
            previous.0.push_str(name);
            previous.1 = !entry.is_dir;
        }
        let (_, data_end) = self.headers.data_range(self.file, (&entry, name))?;
        if entry.header_start < self.data_end || data_end > self.directory_start {
            return Err(out_of_order());
        }
        self.data_end = data_end;
        self.position += 1;
        Ok(Some(self.position - 1))
    }
}
