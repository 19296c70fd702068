//! The central directory of an untrusted zip archive, read one record at a time.
//!
//! Read here rather than by the zip crate, which keeps ~400 B per entry in memory plus a
//! name index. Only what checking and extracting need: the end records (classic and
//! zip64), then each record's sizes, offsets, flags, attributes and name, with archives
//! carrying data before them (self-extracting style) found as Go's archive/zip finds them.
//! The archive is an [`ArchiveSource`]: a local file, or a stored object read in ranges
//! (the directory alone says how much room a backup needs before it is fetched).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::format::{
    CENTRAL_LEN, CENTRAL_SIG, END_LEN, END_SIG, FLAG_ENCRYPTED, FLAG_UTF8, IN_ZIP64, LOCAL_LEN,
    SYSTEM_UNIX, ZIP64_END_LEN, ZIP64_END_SIG, ZIP64_EXTRA_ID, ZIP64_LOCATOR_LEN, ZIP64_LOCATOR_SIG,
};
use super::ArchiveError;

/// Reads of the central directory: large, as a directory of many entries is megabytes.
const RECORDS_BUFFER: usize = 256 * 1024;

/// Where an archive's bytes come from: a local file, or an object in a backups storage
/// read in ranges. Only the end of the archive and its central directory are read
/// through it.
pub trait ArchiveSource {
    /// The archive's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` with the bytes from offset `at`.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()>;
    /// The bytes of `range`, in order.
    fn read_range(&self, range: Range<u64>) -> io::Result<Box<dyn Read + '_>>;
}

impl ArchiveSource for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, at)
    }

    fn read_range(&self, range: Range<u64>) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(FileRange { file: self, range }))
    }
}

/// A range of a file read with `pread`: the file's own position is left alone.
struct FileRange<'f> {
    file: &'f File,
    range: Range<u64>,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(usize::try_from(self.range.end - self.range.start).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..len], self.range.start)?;
        self.range.start += n as u64;
        Ok(n)
    }
}


fn not_zip(detail: impl Into<String>) -> ArchiveError {
    ArchiveError::NotZip(detail.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Where the central directory lies and how many entries it declares.
#[derive(Debug)]
pub(super) struct Directory {
    /// Entries declared by the end record (zip64 when present).
    pub count: u64,
    /// File offset of the first record.
    start: u64,
    size: u64,
    /// Length of data prepended to the archive: added to every offset it records.
    shift: u64,
}

/// Finds the central directory of `file` and refuses it at once when it declares more than
/// `max_entries` entries, before anything is allocated per entry.
pub(super) fn open(file: &dyn ArchiveSource, max_entries: usize) -> Result<Directory, ArchiveError> {
    let directory = find(file)?;
    if directory.count > max_entries as u64 {
        return Err(ArchiveError::TooManyEntries { entries: directory.count, max: max_entries as u64 });
    }
    if directory.count * CENTRAL_LEN as u64 > directory.size {
        return Err(not_zip("central directory too small for its entry count"));
    }
    Ok(directory)
}

fn find(file: &dyn ArchiveSource) -> Result<Directory, ArchiveError> {
    let len = file.len()?;
    // The end record is 22 bytes plus a comment of at most 64 KiB, preceded by the zip64
    // locator.
    let tail_len = len.min((END_LEN + 0xFFFF + ZIP64_LOCATOR_LEN) as u64);
    let tail_start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, tail_start)?;
    if tail.len() < END_LEN {
        return Err(not_zip("no end of central directory record"));
    }

    let candidates = || {
        (0..=tail.len() - END_LEN)
            .rev()
            .filter(|&i| &tail[i..i + 4] == END_SIG)
    };
    // The record whose comment reaches the end of the file; failing that, the last one (a
    // comment may itself hold the signature, or the file may have trailing bytes).
    let eocd = candidates()
        .find(|&i| i + END_LEN + usize::from(u16_at(&tail, i + 20)) == tail.len())
        .or_else(|| candidates().next())
        .ok_or_else(|| not_zip("no end of central directory record"))?;
    let record = &tail[eocd..eocd + END_LEN];
    let eocd_pos = tail_start + eocd as u64;

    let locator = eocd
        .checked_sub(ZIP64_LOCATOR_LEN)
        .filter(|&l| &tail[l..l + 4] == ZIP64_LOCATOR_SIG)
        .map(|l| &tail[l..l + ZIP64_LOCATOR_LEN]);
    let (count, size, offset, end_pos) = match locator {
        None => {
            let (disk, directory_disk) = (u16_at(record, 4), u16_at(record, 6));
            let (on_disk, count) = (u16_at(record, 8), u16_at(record, 10));
            if disk != 0 || directory_disk != 0 || on_disk != count {
                return Err(not_zip("multi-disk archives are not supported"));
            }
            let size = u64::from(u32_at(record, 12));
            let offset = u64::from(u32_at(record, 16));
            (u64::from(count), size, offset, eocd_pos)
        }
        Some(locator) => {
            if u32_at(locator, 4) != 0 || u32_at(locator, 16) > 1 {
                return Err(not_zip("multi-disk archives are not supported"));
            }
            let at = u64_at(locator, 8);
            // It lies before its locator; anything else is refused before reading there.
            let locator_pos = eocd_pos - ZIP64_LOCATOR_LEN as u64;
            if at.checked_add(ZIP64_END_LEN as u64).is_none_or(|end| end > locator_pos) {
                return Err(not_zip("zip64 record not where its locator says"));
            }
            let mut record = [0u8; ZIP64_END_LEN];
            match file.read_exact_at(&mut record, at) {
                Ok(()) if &record[..4] == ZIP64_END_SIG => {}
                Ok(()) => return Err(not_zip("zip64 record not where its locator says")),
                Err(err) => return Err(err.into()),
            }
            let (disk, directory_disk) = (u32_at(&record, 16), u32_at(&record, 20));
            let (on_disk, count) = (u64_at(&record, 24), u64_at(&record, 32));
            if disk != 0 || directory_disk != 0 || on_disk != count {
                return Err(not_zip("multi-disk archives are not supported"));
            }
            (count, u64_at(&record, 40), u64_at(&record, 48), at)
        }
    };

    // As Go's archive/zip: the directory ends where its end record starts; if the recorded
    // offset says otherwise, data was prepended and every offset shifts by the difference,
    // unless a record really is at the recorded offset.
    let shift = offset
        .checked_add(size)
        .and_then(|end| end_pos.checked_sub(end))
        .ok_or_else(|| not_zip("central directory overlaps its end record"))?;
    let shift = if shift > 0 && starts_with_record(file, offset)? {
        0
    } else {
        shift
    };
    Ok(Directory {
        count,
        start: offset + shift,
        size,
        shift,
    })
}

fn starts_with_record(file: &dyn ArchiveSource, at: u64) -> io::Result<bool> {
    let mut sig = [0u8; 4];
    match file.read_exact_at(&mut sig, at) {
        Ok(()) => Ok(&sig == CENTRAL_SIG),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

impl Directory {
    /// How many entries to make room for: the declared count, which `open` checked against
    /// the limit and the directory's size.
    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    /// File offset of the central directory: every entry's data lies before it.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// An upper bound on the bytes of all raw (undecoded) names: what the directory holds beyond the
    /// fixed part of its records, and at most 64 KiB per name.
    pub fn names_bound(&self) -> u64 {
        (self.size - self.count * CENTRAL_LEN as u64).min(self.count * 0xFFFF)
    }

    /// The records, read in order through a buffer.
    pub fn records<'f>(&self, file: &'f dyn ArchiveSource) -> Result<Records<'f>, ArchiveError> {
        let reader = file.read_range(self.start..self.start + self.size)?;
        Ok(Records {
            reader: BufReader::with_capacity((self.size as usize).clamp(4, RECORDS_BUFFER), reader),
            count: self.count,
            read: 0,
            shift: self.shift,
            directory_start: self.start,
            raw_name: Vec::new(),
            extra: Vec::new(),
            name: String::new(),
        })
    }
}

/// One central directory record, as far as we use it.
#[derive(Debug)]
pub(super) struct Record<'a> {
    pub flags: u16,
    pub method: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    /// Offset of the local header in the file.
    pub header_start: u64,
    /// Written by a Unix archiver: the external attributes' upper half is a mode.
    pub unix: bool,
    pub external_attributes: u32,
    pub name: &'a str,
}

impl Record<'_> {
    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }
}

/// The records of a directory, one at a time: only the current one is held.
pub(super) struct Records<'f> {
    reader: BufReader<Box<dyn Read + 'f>>,
    count: u64,
    read: u64,
    shift: u64,
    /// Local headers lie before the directory: an offset past it is refused here, so no
    /// later arithmetic on it can overflow.
    directory_start: u64,
    raw_name: Vec<u8>,
    extra: Vec<u8>,
    name: String,
}

impl Records<'_> {
    /// The next record; None after the declared count, which must be all the directory
    /// holds.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ArchiveError> {
        if self.read == self.count {
            let mut next = Vec::with_capacity(4);
            (&mut self.reader).take(4).read_to_end(&mut next)?;
            if next == CENTRAL_SIG {
                return Err(not_zip(format!(
                    "more than the {} entries declared",
                    self.count
                )));
            }
            return Ok(None);
        }
        let index = self.read;
        let truncated = |err: io::Error| match err.kind() {
            io::ErrorKind::UnexpectedEof => {
                not_zip(format!("central directory ends within entry {index}"))
            }
            _ => ArchiveError::Io(err),
        };
        let mut fixed = [0u8; CENTRAL_LEN];
        self.reader.read_exact(&mut fixed).map_err(truncated)?;
        if &fixed[..4] != CENTRAL_SIG {
            return Err(not_zip(format!(
                "bad signature for central directory entry {index}"
            )));
        }
        let flags = u16_at(&fixed, 8);
        self.raw_name.resize(usize::from(u16_at(&fixed, 28)), 0);
        self.reader
            .read_exact(&mut self.raw_name)
            .map_err(truncated)?;
        self.extra.resize(usize::from(u16_at(&fixed, 30)), 0);
        self.reader.read_exact(&mut self.extra).map_err(truncated)?;
        let comment_len = u64::from(u16_at(&fixed, 32));
        let skipped = io::copy(&mut (&mut self.reader).take(comment_len), &mut io::sink())?;
        if skipped != comment_len {
            return Err(truncated(io::ErrorKind::UnexpectedEof.into()));
        }
        self.read += 1;

        let mut size = u64::from(u32_at(&fixed, 24));
        let mut compressed_size = u64::from(u32_at(&fixed, 20));
        let mut header_start = u64::from(u32_at(&fixed, 42));
        apply_zip64(
            &self.extra,
            &mut size,
            &mut compressed_size,
            &mut header_start,
        )
        .map_err(|detail| not_zip(format!("entry {index}: {detail}")))?;
        let header_start = header_start
            .checked_add(self.shift)
            .filter(|&at| at.saturating_add(LOCAL_LEN as u64) <= self.directory_start)
            .ok_or_else(|| not_zip(format!("entry {index}: local header not before the central directory")))?;

        self.name.clear();
        match std::str::from_utf8(&self.raw_name) {
            Ok(name) => self.name.push_str(name),
            Err(_) if flags & FLAG_UTF8 != 0 => {
                return Err(not_zip(format!("entry {index}: name flagged UTF-8 is not")))
            }
            Err(_) => self.name.extend(self.raw_name.iter().map(|&b| cp437(b))),
        }
        Ok(Some(Record {
            flags,
            method: u16_at(&fixed, 10),
            crc32: u32_at(&fixed, 16),
            compressed_size,
            size,
            header_start,
            unix: fixed[5] == SYSTEM_UNIX,
            external_attributes: u32_at(&fixed, 38),
            name: &self.name,
        }))
    }
}

/// Replaces the sizes and offset that say [`IN_ZIP64`] by their values from the zip64
/// extra field, which holds only those, in this order. As Go's archive/zip, an uncompressed
/// size of 0xFFFFFFFF without a zip64 value is taken as it is.
fn apply_zip64(
    mut extra: &[u8],
    size: &mut u64,
    compressed_size: &mut u64,
    header_start: &mut u64,
) -> Result<(), &'static str> {
    let mut missing = [
        *size == u64::from(IN_ZIP64),
        *compressed_size == u64::from(IN_ZIP64),
        *header_start == u64::from(IN_ZIP64),
    ];
    while extra.len() >= 4 && missing.contains(&true) {
        let id = u16_at(extra, 0);
        let len = usize::from(u16_at(extra, 2));
        let Some(mut field) = extra.get(4..4 + len) else {
            break;
        };
        extra = &extra[4 + len..];
        if id != ZIP64_EXTRA_ID {
            continue;
        }
        for (missing, value) in
            missing
                .iter_mut()
                .zip([&mut *size, &mut *compressed_size, &mut *header_start])
        {
            if *missing {
                if field.len() < 8 {
                    return Err("zip64 extra field too short");
                }
                *value = u64_at(field, 0);
                field = &field[8..];
                *missing = false;
            }
        }
    }
    if missing[1] || missing[2] {
        return Err("zip64 size or offset missing");
    }
    Ok(())
}

/// Names not in UTF-8 are in code page 437, as the zip format says (and the zip crate read
/// them); its lower half is ASCII. Unlike the zip crate, the Info-ZIP Unicode Path extra
/// field (0x7075) is not read, as upstream's Go archive/zip does not read it either.
fn cp437(byte: u8) -> char {
    // Bytes 0x80 to 0xFF, a row of 16 per line.
    #[rustfmt::skip]
    const HIGH: [char; 128] = [
        'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å',
        'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ',
        'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»',
        '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐',
        '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧',
        '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀',
        'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩',
        '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', '\u{a0}',
    ];
    match byte {
        0..=0x7F => char::from(byte),
        _ => HIGH[usize::from(byte - 0x80)],
    }
}

#[cfg(test)]
mod tests;
