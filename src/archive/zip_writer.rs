//! The zip container of a backup, written strictly sequentially (so it can stream to a store
//! that cannot seek): an entry written whole gets its CRC and sizes in its local header; one
//! written piece by piece gets them in a data descriptor after its data (as Go's archive/zip,
//! and so PocketBase, writes every entry). Zip64 records where sizes, offsets or the entry
//! count need them. The entries' bytes (stored or deflated) come from the caller.
//!
//! The zip64 thresholds are a parameter so that tests can drive those paths with small data.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flate2::Crc;

use super::format::{
    CENTRAL_LEN, CENTRAL_SIG, DATA_DESCRIPTOR_SIG, END_LEN, END_SIG, FLAG_DATA_DESCRIPTOR, FLAG_UTF8,
    IN_ZIP64, LOCAL_LEN, LOCAL_SIG, METHOD_DEFLATED, METHOD_STORED, S_IFDIR, S_IFREG, SYSTEM_UNIX,
    ZIP64_END_LEN, ZIP64_END_SIG, ZIP64_EXTRA_ID, ZIP64_LOCATOR_LEN, ZIP64_LOCATOR_SIG,
};

/// "Version made by": Unix (so readers honour the mode bits), spec 4.5.
const MADE_BY_UNIX: u16 = ((SYSTEM_UNIX as u16) << 8) | 45;
const VERSION_DEFAULT: u16 = 20;
const VERSION_ZIP64: u16 = 45;
const MSDOS_DIR: u32 = 0x10;

/// From which values on the zip64 forms are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Zip64Limits {
    /// Files at least this large get zip64 local headers and data descriptors: the header is
    /// written before the data, and deflate may grow an incompressible tail, so this stays
    /// well below `field`.
    pub large_file: u64,
    /// Sizes and offsets from this value on go to zip64 fields (the classic one says 0xFFFFFFFF).
    pub field: u64,
    /// Entry counts from this value on need the zip64 end record (the classic one says 0xFFFF).
    pub entries: u64,
}

impl Default for Zip64Limits {
    /// What the format requires.
    fn default() -> Self {
        Zip64Limits { large_file: 3 << 30, field: IN_ZIP64 as u64, entries: 0xFFFF }
    }
}

/// The zip container around the entries' bytes, written strictly sequentially.
pub(crate) struct ZipOut<W: Write> {
    out: BufWriter<W>,
    /// Bytes written so far: where the next header goes.
    pos: u64,
    central: CentralDirectory,
    limits: Zip64Limits,
}

/// The central directory, kept as the bytes it will be written as: a record is serialized
/// when its entry is complete, and full buffers go to an unnamed file in the scratch folder,
/// so memory stays flat however many entries the archive has (about 100 bytes each).
struct CentralDirectory {
    buf: Vec<u8>,
    scratch_dir: PathBuf,
    spilled: Option<File>,
    count: u64,
}

const CENTRAL_BUFFER: usize = 1 << 20;

impl CentralDirectory {
    fn new(scratch_dir: &Path) -> Self {
        CentralDirectory { buf: Vec::new(), scratch_dir: scratch_dir.to_path_buf(), spilled: None, count: 0 }
    }

    /// The buffer to append a record of `len` bytes to.
    fn room(&mut self, len: usize) -> io::Result<&mut Vec<u8>> {
        if self.buf.len() + len > CENTRAL_BUFFER {
            let file = match &mut self.spilled {
                Some(file) => file,
                None => self.spilled.insert(unnamed_file(&self.scratch_dir)?),
            };
            file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(&mut self.buf)
    }
}

/// A read-write file that no name points to: it disappears with its handle.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    let path = dir.join(format!(".central-{}", crate::util::random_suffix()));
    let file = File::options().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// What the central directory records about an entry.
struct CentralEntry<'a> {
    name: &'a str,
    method: u16,
    dos_time: (u16, u16),
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    external: u32,
    /// The local header has zip64 sizes: the central one must say so too.
    large: bool,
    /// CRC and sizes are in a data descriptor after the data.
    descriptor: bool,
}

/// A file read and compressed in one piece, ready to be written with its header.
pub(crate) struct WholeFile {
    /// The bytes to write: deflated, or the file itself.
    pub bytes: Vec<u8>,
    pub deflated: bool,
    pub crc: u32,
    /// Size of the file.
    pub len: u64,
}

/// CRC and sizes of an entry written whole.
struct KnownSizes {
    crc: u32,
    compressed: u64,
    uncompressed: u64,
}

/// A file entry whose data is being written.
pub(crate) struct OpenEntry {
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

impl OpenEntry {
    /// Bytes of the file written so far.
    pub fn uncompressed(&self) -> u64 {
        self.uncompressed
    }
}

impl<W: Write> ZipOut<W> {
    /// `scratch_dir` holds the central directory while the entries are written.
    pub fn new(out: BufWriter<W>, limits: Zip64Limits, scratch_dir: &Path) -> Self {
        ZipOut { out, pos: 0, central: CentralDirectory::new(scratch_dir), limits }
    }

    pub fn limits(&self) -> Zip64Limits {
        self.limits
    }

    /// A 32-bit field: the value, or 0xFFFFFFFF when it goes to a zip64 field.
    fn field32(&self, value: u64) -> u32 {
        if value >= self.limits.field {
            IN_ZIP64
        } else {
            value as u32
        }
    }

    /// Appends a piece of `entry`'s data: `bytes` as stored in the archive, made from
    /// `input_len` bytes of the file whose checksum is `crc`.
    pub fn write_data(&mut self, entry: &mut OpenEntry, bytes: &[u8], input_len: u64, crc: &Crc) -> io::Result<()> {
        self.write(bytes)?;
        entry.compressed += bytes.len() as u64;
        entry.uncompressed += input_len;
        entry.crc.combine(crc);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// A local header with `sizes`, or (`sizes` is `None`) with zeros and the data descriptor
    /// flag: `finish_file` writes them after the data.
    fn local_header(&mut self, name: &str, method: u16, dos_time: (u16, u16), large: bool, sizes: Option<&KnownSizes>) -> io::Result<()> {
        let flags = if sizes.is_some() { FLAG_UTF8 } else { FLAG_UTF8 | FLAG_DATA_DESCRIPTOR };
        let sizes = sizes.unwrap_or(&KnownSizes { crc: 0, compressed: 0, uncompressed: 0 });
        let mut h = Vec::with_capacity(LOCAL_LEN + name.len() + 20);
        h.extend_from_slice(LOCAL_SIG);
        put16(&mut h, if large { VERSION_ZIP64 } else { VERSION_DEFAULT });
        put16(&mut h, flags);
        put16(&mut h, method);
        put16(&mut h, dos_time.1);
        put16(&mut h, dos_time.0);
        put32(&mut h, sizes.crc);
        put32(&mut h, if large { IN_ZIP64 } else { sizes.compressed as u32 });
        put32(&mut h, if large { IN_ZIP64 } else { sizes.uncompressed as u32 });
        put16(&mut h, name_len(name)?);
        put16(&mut h, if large { 20 } else { 0 });
        h.extend_from_slice(name.as_bytes());
        if large {
            put16(&mut h, ZIP64_EXTRA_ID);
            put16(&mut h, 16);
            put64(&mut h, sizes.uncompressed);
            put64(&mut h, sizes.compressed);
        }
        self.write(&h)
    }

    pub fn directory(&mut self, name: &str, mode: u32, modified: Option<SystemTime>) -> io::Result<()> {
        let name = format!("{name}/");
        let dos_time = dos_time(modified);
        let offset = self.pos;
        self.local_header(&name, METHOD_STORED, dos_time, false, Some(&KnownSizes { crc: 0, compressed: 0, uncompressed: 0 }))?;
        self.push_central(CentralEntry {
            name: &name,
            method: METHOD_STORED,
            dos_time,
            crc: 0,
            compressed: 0,
            uncompressed: 0,
            offset,
            external: ((S_IFDIR | mode) << 16) | MSDOS_DIR,
            large: false,
            descriptor: false,
        })
    }

    pub fn start_file(
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
        self.local_header(&name, method, dos_time, large, None)?;
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

    /// Writes a whole file entry whose CRC and sizes are already known: no header to patch,
    /// so no seek (a seek flushes the write buffer: one write per file otherwise).
    pub fn whole_file(&mut self, name: &str, mode: u32, modified: Option<SystemTime>, file: &WholeFile) -> io::Result<()> {
        let method = if file.deflated { METHOD_DEFLATED } else { METHOD_STORED };
        let compressed = file.bytes.len() as u64;
        let large = file.len >= self.limits.large_file || compressed >= self.limits.field || file.len >= self.limits.field;
        let dos_time = dos_time(modified);
        let offset = self.pos;
        let known = KnownSizes { crc: file.crc, compressed, uncompressed: file.len };
        self.local_header(name, method, dos_time, large, Some(&known))?;
        self.write(&file.bytes)?;
        self.push_central(CentralEntry {
            name,
            method,
            dos_time,
            crc: file.crc,
            compressed,
            uncompressed: file.len,
            offset,
            external: (S_IFREG | mode) << 16,
            large,
            descriptor: false,
        })
    }

    /// Ends the entry with its data descriptor (zip64 sizes when its local header is zip64).
    pub fn finish_file(&mut self, entry: OpenEntry) -> io::Result<()> {
        let field = self.limits.field;
        if !entry.large && (entry.compressed >= field || entry.uncompressed >= field) {
            return Err(io::Error::other(format!("{} grew past 4 GiB while archived", entry.name)));
        }
        let crc = entry.crc.sum();
        let mut descriptor = Vec::with_capacity(24);
        descriptor.extend_from_slice(DATA_DESCRIPTOR_SIG);
        put32(&mut descriptor, crc);
        if entry.large {
            put64(&mut descriptor, entry.compressed);
            put64(&mut descriptor, entry.uncompressed);
        } else {
            put32(&mut descriptor, entry.compressed as u32);
            put32(&mut descriptor, entry.uncompressed as u32);
        }
        self.write(&descriptor)?;
        self.push_central(CentralEntry {
            name: &entry.name,
            method: entry.method,
            dos_time: entry.dos_time,
            crc,
            compressed: entry.compressed,
            uncompressed: entry.uncompressed,
            offset: entry.offset,
            external: entry.external,
            large: entry.large,
            descriptor: true,
        })
    }

    /// Appends the central directory record of a complete entry.
    fn push_central(&mut self, e: CentralEntry<'_>) -> io::Result<()> {
        let field = self.limits.field;
        let sizes_64 = e.large || e.compressed >= field || e.uncompressed >= field;
        let offset_64 = e.offset >= field;
        let zip64_len = if sizes_64 { 16 } else { 0 } + if offset_64 { 8 } else { 0 };
        let name_len = name_len(e.name)?;
        let offset32 = self.field32(e.offset);
        let h = self.central.room(CENTRAL_LEN + e.name.len() + 4 + zip64_len)?;
        h.extend_from_slice(CENTRAL_SIG);
        put16(h, MADE_BY_UNIX);
        put16(h, if zip64_len == 0 && !e.large { VERSION_DEFAULT } else { VERSION_ZIP64 });
        put16(h, if e.descriptor { FLAG_UTF8 | FLAG_DATA_DESCRIPTOR } else { FLAG_UTF8 });
        put16(h, e.method);
        put16(h, e.dos_time.1);
        put16(h, e.dos_time.0);
        put32(h, e.crc);
        put32(h, if sizes_64 { IN_ZIP64 } else { e.compressed as u32 });
        put32(h, if sizes_64 { IN_ZIP64 } else { e.uncompressed as u32 });
        put16(h, name_len);
        put16(h, if zip64_len == 0 { 0 } else { 4 + zip64_len as u16 });
        put16(h, 0); // comment
        put16(h, 0); // disk
        put16(h, 0); // internal attributes
        put32(h, e.external);
        put32(h, offset32);
        h.extend_from_slice(e.name.as_bytes());
        if zip64_len != 0 {
            put16(h, ZIP64_EXTRA_ID);
            put16(h, zip64_len as u16);
            if sizes_64 {
                put64(h, e.uncompressed);
                put64(h, e.compressed);
            }
            if offset_64 {
                put64(h, e.offset);
            }
        }
        self.central.count += 1;
        Ok(())
    }

    /// Writes the central directory and the end records, flushes, and returns the archive's size.
    pub fn finish(&mut self) -> io::Result<u64> {
        let central_offset = self.pos;
        if let Some(mut spilled) = self.central.spilled.take() {
            spilled.rewind()?;
            self.pos += io::copy(&mut spilled, &mut self.out)?;
        }
        let rest = std::mem::take(&mut self.central.buf);
        self.write(&rest)?;
        let central_size = self.pos - central_offset;
        let count = self.central.count;
        let mut end = Vec::with_capacity(ZIP64_END_LEN + ZIP64_LOCATOR_LEN + END_LEN);
        let many = count >= self.limits.entries;
        let field = self.limits.field;
        if many || central_offset >= field || central_size >= field {
            let zip64_end_offset = self.pos;
            end.extend_from_slice(ZIP64_END_SIG);
            put64(&mut end, 44); // size of the rest of this record
            put16(&mut end, MADE_BY_UNIX);
            put16(&mut end, VERSION_ZIP64);
            put32(&mut end, 0); // this disk
            put32(&mut end, 0); // disk of the central directory
            put64(&mut end, count);
            put64(&mut end, count);
            put64(&mut end, central_size);
            put64(&mut end, central_offset);
            end.extend_from_slice(ZIP64_LOCATOR_SIG);
            put32(&mut end, 0);
            put64(&mut end, zip64_end_offset);
            put32(&mut end, 1); // total disks
        }
        end.extend_from_slice(END_SIG);
        put16(&mut end, 0);
        put16(&mut end, 0);
        let count16 = if many { 0xFFFF } else { count as u16 };
        put16(&mut end, count16);
        put16(&mut end, count16);
        put32(&mut end, self.field32(central_size));
        put32(&mut end, self.field32(central_offset));
        put16(&mut end, 0); // comment
        self.write(&end)?;
        self.out.flush()?;
        Ok(self.pos)
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
    use std::io::{Cursor, Read};
    use std::time::Duration;

    use super::super::zip64_check::{check_zip64_forms, Zip64Seen};
    use super::*;

    #[test]
    fn dos_times() {
        let at = |s: i64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s as u64));
        // 2023-05-19 16:25:57 UTC: seconds are halved.
        assert_eq!(dos_time(at(1_684_513_557)), (dos_date(2023, 5, 19), (16 << 11) | (25 << 5) | 28));
        assert_eq!(dos_time(at(0)), (dos_date(1980, 1, 1), 0), "before 1980");
        assert_eq!(dos_time(None), (dos_date(1980, 1, 1), 0));
    }

    /// The writer alone, every zip64 form forced by thresholds of 1, found in the bytes and
    /// read back by the zip crate.
    #[test]
    fn every_field_in_zip64_form_reads_back() {
        let limits = Zip64Limits { large_file: 0, field: 1, entries: 1 };
        let mut zip = ZipOut::new(BufWriter::new(Cursor::new(Vec::new())), limits, &std::env::temp_dir());
        zip.directory("d", 0o755, None).unwrap();
        let mut entry = zip.start_file("d/a.txt".into(), 0o644, None, false, true).unwrap();
        let mut crc = Crc::new();
        crc.update(b"hello ");
        zip.write_data(&mut entry, b"hello ", 6, &crc).unwrap();
        let mut crc = Crc::new();
        crc.update(b"world");
        zip.write_data(&mut entry, b"world", 5, &crc).unwrap();
        zip.finish_file(entry).unwrap();
        let mut crc = Crc::new();
        crc.update(b"whole");
        let whole = WholeFile { bytes: b"whole".to_vec(), deflated: false, crc: crc.sum(), len: 5 };
        zip.whole_file("d/b.txt", 0o644, None, &whole).unwrap();
        let size = zip.finish().unwrap();
        let bytes = zip.out.into_inner().unwrap().into_inner();
        assert_eq!(size, bytes.len() as u64);
        // Both files in zip64 form (the directory has no sizes to move), the streamed one
        // with a 64-bit descriptor; every offset but the first (0) in the zip64 field.
        let seen = check_zip64_forms(&bytes, limits);
        let all = Zip64Seen { local_headers: 2, descriptors: 1, central_sizes: 2, central_offsets: 2, end_record: true };
        assert_eq!(seen, all);
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 3);
        let mut text = String::new();
        archive.by_name("d/a.txt").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        text.clear();
        archive.by_name("d/b.txt").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "whole");
        assert!(archive.by_name("d/").unwrap().is_dir());
    }

    /// A central directory larger than its buffer goes through the scratch file and comes
    /// back whole and in order.
    #[test]
    fn a_spilled_central_directory_reads_back() {
        let scratch = tempfile::tempdir().unwrap();
        let mut zip = ZipOut::new(BufWriter::new(Cursor::new(Vec::new())), Zip64Limits::default(), scratch.path());
        let count = 3 * CENTRAL_BUFFER / 60;
        for i in 0..count {
            zip.directory(&format!("dir-{i:06}"), 0o755, None).unwrap();
        }
        assert!(zip.central.spilled.is_some(), "the directory was spilled");
        zip.finish().unwrap();
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "the scratch file has no name");
        let bytes = zip.out.into_inner().unwrap().into_inner();
        assert_eq!(check_zip64_forms(&bytes, Zip64Limits::default()), Zip64Seen::default(), "no zip64 form below the thresholds");
        let archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), count);
        let names: Vec<String> =
            (0..count).map(|i| archive.name_for_index(i).unwrap().unwrap().into_owned()).collect();
        let expected: Vec<String> = (0..count).map(|i| format!("dir-{i:06}/")).collect();
        assert!(names == expected, "names and order kept");
    }

    #[test]
    fn a_file_outgrowing_classic_headers_is_an_error() {
        let limits = Zip64Limits { large_file: 100, field: 10, entries: 0xFFFF };
        let mut zip = ZipOut::new(BufWriter::new(Cursor::new(Vec::new())), limits, &std::env::temp_dir());
        let mut entry = zip.start_file("a".into(), 0o644, None, false, false).unwrap();
        let mut crc = Crc::new();
        crc.update(&[0; 10]);
        zip.write_data(&mut entry, &[0; 10], 10, &crc).unwrap();
        assert!(zip.finish_file(entry).is_err());
    }
}
