//! Reading an archive's central directory into a compact list of its entries, and the
//! checks on that list: safe names, no links or special entries, no duplicates, sizes and
//! ratios within the limits, no entries sharing their data.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::dirs::{is_inside, name_order};
use crate::archive::central::{self, Record};
use crate::archive::format::{LOCAL_LEN, LOCAL_SIG, METHOD_DEFLATED, METHOD_STORED, S_IFDIR, S_IFMT, S_IFREG};
use crate::archive::{check_entry_name, ArchiveError, ArchiveLimits, ArchiveSummary, DATA_DB};

/// A central directory entry as kept for the checks and the extraction: a few dozen bytes,
/// its name in [`Entries::names`].
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) size: u64,
    pub(super) compressed_size: u64,
    /// Offset of the local header.
    pub(super) header_start: u64,
    pub(super) crc32: u32,
    /// The name, without a trailing '/', is `names[name_start..][..name_len]` (longer than
    /// the 16-bit name field once decoded from CP437).
    name_start: u32,
    name_len: u32,
    /// Permission bits recorded by a Unix archiver, or [`NO_MODE`] (a u16, not an Option:
    /// this keeps the entry at 40 bytes).
    mode: u16,
    /// The name ended with '/'.
    pub(super) is_dir: bool,
    /// Deflated, else stored (once checked).
    pub(super) deflated: bool,
}

const NO_MODE: u16 = u16::MAX;
const _: () = assert!(std::mem::size_of::<Entry>() == 40);

impl Entry {
    pub(super) fn mode(&self) -> Option<u32> {
        (self.mode != NO_MODE).then_some(u32::from(self.mode))
    }
}

/// An entry with its name.
pub(super) type Named<'a> = (&'a Entry, &'a str);

/// The entries in archive order, their names in one arena.
pub(super) struct Entries {
    pub(super) list: Vec<Entry>,
    names: String,
}

impl Entries {
    /// Room for `entries` entries and `names_bound` bytes of raw names. (Raw bytes: CP437
    /// names grow when decoded, and the arena then grows once.)
    pub(super) fn with_capacity(entries: usize, names_bound: u64) -> Self {
        Self { list: Vec::with_capacity(entries), names: String::with_capacity(names_bound.min(1 << 28) as usize) }
    }

    /// Appends the entry of `record`, with the permission bits its checks found.
    pub(super) fn push(&mut self, record: &Record, mode: Option<u16>) -> Result<&Entry, ArchiveError> {
        let is_dir = record.name.ends_with('/');
        let name = record.name.strip_suffix('/').unwrap_or(record.name);
        let name_start = u32::try_from(self.names.len() + name.len())
            .map(|end| end - name.len() as u32)
            .map_err(|_| ArchiveError::NotZip("entry names exceed 4 GiB".into()))?;
        self.names.push_str(name);
        self.list.push(Entry {
            size: record.size,
            compressed_size: record.compressed_size,
            header_start: record.header_start,
            crc32: record.crc32,
            name_start,
            name_len: name.len() as u32,
            mode: mode.unwrap_or(NO_MODE),
            is_dir,
            deflated: record.method == METHOD_DEFLATED,
        });
        Ok(self.list.last().expect("just pushed"))
    }

    pub(super) fn clear(&mut self) {
        self.list.clear();
        self.names.clear();
    }

    pub(super) fn name(&self, entry: &Entry) -> &str {
        let start = entry.name_start as usize;
        &self.names[start..start + entry.name_len as usize]
    }
}

pub(super) struct CheckedArchive {
    pub(super) summary: ArchiveSummary,
    pub(super) entries: Entries,
    /// Entry positions in [`name_order`]: what extraction walks to make the folders.
    pub(super) order: Vec<u32>,
    /// Position of the top-level `data.db` file.
    pub(super) data_db: Option<usize>,
}

/// Reads the central directory and checks every entry: names are safe, no links or
/// special entries, no duplicates, sizes and ratios within `limits`.
///
/// Every record is read (a malformed one makes the archive NotZip) and every name kept,
/// even past a refused entry: an exact duplicate anywhere is reported first. Otherwise the
/// error is that of the first bad entry in archive order, a name repeated once normalised
/// (trailing '/' dropped) counting as bad where it repeats.
pub(super) fn check_entries(file: &File, limits: &ArchiveLimits) -> Result<CheckedArchive, ArchiveError> {
    let directory = central::open(file, limits.max_entries)?;
    let mut records = directory.records(file)?;
    // Only the pages really written count: the names' bound is cheap when it is loose.
    let mut entries = Entries::with_capacity(directory.capacity(), directory.names_bound());
    let mut total_size = 0u64;
    // The first refused entry: its position and why.
    let mut refused: Option<(usize, ArchiveError)> = None;
    while let Some(record) = records.next_record()? {
        let position = entries.list.len();
        let mut mode = None;
        if refused.is_none() {
            match check_entry(&record, limits, &mut total_size) {
                Ok(checked_mode) => mode = checked_mode,
                Err(err) => refused = Some((position, err)),
            }
        }
        entries.push(&record, mode)?;
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
            in_walk_order: false,
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
pub(super) fn check_entry(
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
