//! Unit tests of the central directory reader: end records, zip64 fields, prepended data,
//! CP437 names and the records it refuses.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{ZipArchive, ZipWriter};

use super::*;
use crate::archive::{validate, ArchiveLimits};

/// A central record with no local header behind it (enough for the directory).
fn record(name: &[u8], flags: u16, sizes: [u32; 3], extra: &[u8]) -> Vec<u8> {
    let [compressed, size, offset] = sizes;
    let mut r = Vec::new();
    r.extend_from_slice(CENTRAL_SIG);
    r.extend_from_slice(&[20, 3, 45, 0]); // made by Unix, version needed
    r.extend_from_slice(&flags.to_le_bytes());
    r.extend_from_slice(&0u16.to_le_bytes()); // stored
    r.extend_from_slice(&[0; 4]); // time, date
    r.extend_from_slice(&0u32.to_le_bytes()); // crc
    r.extend_from_slice(&compressed.to_le_bytes());
    r.extend_from_slice(&size.to_le_bytes());
    r.extend_from_slice(&(name.len() as u16).to_le_bytes());
    r.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    r.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
    let mode: u32 = if name.ends_with(b"/") {
        0o040_755
    } else {
        0o100_644
    };
    r.extend_from_slice(&(mode << 16).to_le_bytes());
    r.extend_from_slice(&offset.to_le_bytes());
    r.extend_from_slice(name);
    r.extend_from_slice(extra);
    r
}

/// Where [`archive`] puts the directory: after room for local headers, which must come
/// before it.
const DIRECTORY_AT: usize = 64;

/// The records as a directory at [`DIRECTORY_AT`], then its end record saying `count`
/// entries.
fn archive(records: &[Vec<u8>], count: u16) -> Vec<u8> {
    let mut bytes = vec![0u8; DIRECTORY_AT];
    bytes.extend(records.concat());
    let size = (bytes.len() - DIRECTORY_AT) as u32;
    bytes.extend_from_slice(END_SIG);
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(&(DIRECTORY_AT as u32).to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes
}

fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, File) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, bytes).unwrap();
    let file = File::open(&path).unwrap();
    (dir, path, file)
}

/// (name, size, compressed size, local header offset) of every record.
fn list(bytes: &[u8]) -> Result<Vec<(String, u64, u64, u64)>, ArchiveError> {
    let (_dir, _, file) = file_of(bytes);
    let directory = open(&file, 1000)?;
    let mut records = directory.records(&file)?;
    let mut out = Vec::new();
    while let Some(r) = records.next_record()? {
        out.push((r.name.to_owned(), r.size, r.compressed_size, r.header_start));
    }
    Ok(out)
}

fn zip64_extra(values: &[u64]) -> Vec<u8> {
    let mut extra = vec![0x0a, 0, 4, 0, 1, 2, 3, 4]; // some other field first
    extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
    extra.extend_from_slice(&(8 * values.len() as u16).to_le_bytes());
    values
        .iter()
        .for_each(|v| extra.extend_from_slice(&v.to_le_bytes()));
    extra
}

#[test]
fn zip64_sizes_and_offsets_come_from_the_extra_field() {
    let big = 5u64 << 30;
    let records = [
        record(
            b"all",
            0,
            [IN_ZIP64; 3],
            &zip64_extra(&[big, big + 1, 2]),
        ),
        // Only the fields that say so, in the standard order.
        record(
            b"two",
            0,
            [IN_ZIP64, 7, IN_ZIP64],
            &zip64_extra(&[big + 3, 4]),
        ),
    ];
    assert_eq!(
        list(&archive(&records, 2)).unwrap(),
        [
            ("all".to_owned(), big, big + 1, 2),
            ("two".to_owned(), 7, big + 3, 4),
        ]
    );
    // A local header offset past the directory (local headers come first), near 2^64 or
    // not: refused here, before anything adds to it.
    for offset in [u64::MAX - 5, DIRECTORY_AT as u64 - 29] {
        let far = record(b"far", 0, [1, 1, IN_ZIP64], &zip64_extra(&[offset]));
        let result = list(&archive(&[far], 1));
        assert!(matches!(result, Err(ArchiveError::NotZip(_))), "{offset}: {result:?}");
    }
    // A size said to be in the zip64 field that is not there.
    let short = record(b"x", 0, [IN_ZIP64, 7, IN_ZIP64], &zip64_extra(&[big]));
    assert!(matches!(
        list(&archive(&[short], 1)),
        Err(ArchiveError::NotZip(_))
    ));
}

#[test]
fn zip64_archives_agree_with_the_zip_crate() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (i, large) in [false, true, true, false].into_iter().enumerate() {
        let options = SimpleFileOptions::default().large_file(large);
        zip.start_file(format!("f{i}"), options).unwrap();
        zip.write_all(&vec![b'x'; 1000 * i]).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    let mut reference = ZipArchive::new(Cursor::new(&bytes)).unwrap();
    let expected: Vec<_> = (0..reference.len())
        .map(|i| {
            let f = reference.by_index_raw(i).unwrap();
            (
                f.name().unwrap().into_owned(),
                f.size(),
                f.compressed_size(),
                f.header_start(),
            )
        })
        .collect();
    assert_eq!(list(&bytes).unwrap(), expected);
}

#[test]
fn zip64_end_records_give_the_count_and_directory() {
    let records = [
        record(b"a", 0, [1, 1, 0], &[]),
        record(b"b", 0, [1, 1, 0], &[]),
    ];
    let mut bytes: Vec<u8> = vec![b'.'; 40]; // local headers' room before the directory
    bytes.extend(records.concat());
    let size = bytes.len() as u64 - 40;
    let zip64_at = bytes.len() as u64;
    bytes.extend_from_slice(ZIP64_END_SIG);
    bytes.extend_from_slice(&44u64.to_le_bytes());
    bytes.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for value in [2, 2, size, 40] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.extend_from_slice(ZIP64_LOCATOR_SIG);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&zip64_at.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(END_SIG);
    bytes.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    bytes.extend_from_slice(&[0xFF; 8]);
    bytes.extend_from_slice(&[0, 0]);
    let names: Vec<_> = list(&bytes).unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["a", "b"]);
    // A locator pointing anywhere but before itself is not a zip (not an I/O error from
    // reading at an offset past what the file system allows).
    let locator_offset = bytes.len() - END_LEN - ZIP64_LOCATOR_LEN + 8;
    for at in [u64::MAX - 10, bytes.len() as u64] {
        let mut moved = bytes.clone();
        moved[locator_offset..locator_offset + 8].copy_from_slice(&at.to_le_bytes());
        let result = list(&moved);
        assert!(matches!(result, Err(ArchiveError::NotZip(_))), "{at}: {result:?}");
    }
}

#[test]
fn a_record_past_the_declared_count_is_refused_wherever_the_read_buffer_ends() {
    // Five declared records ending 0 to 4 bytes before the end of the first buffer of
    // directory read, then one more.
    for pad in 0..=4 {
        let big = record(&vec![b'n'; 60_000], 0, [0; 3], &[]);
        let last = RECORDS_BUFFER - pad - 4 * big.len() - CENTRAL_LEN;
        let mut records = vec![big; 4];
        records.push(record(&vec![b'm'; last], 0, [0; 3], &[]));
        records.push(record(b"extra", 0, [0; 3], &[]));
        let result = list(&archive(&records, 5));
        assert!(matches!(result, Err(ArchiveError::NotZip(_))), "{pad}: {result:?}");
    }
}

#[test]
fn a_truncated_or_miscounted_directory_is_not_a_zip() {
    let records = [
        record(b"a", 0, [1, 1, 0], &[]),
        record(b"b", 0, [1, 1, 0], &[]),
    ];
    let bytes = archive(&records, 2);
    assert_eq!(list(&bytes).unwrap().len(), 2);
    // The end record says the directory is shorter than its records.
    let mut short = bytes.clone();
    let eocd = short.len() - END_LEN;
    let size = u32_at(&short, eocd + 12);
    short[eocd + 12..eocd + 16].copy_from_slice(&(size - 10).to_le_bytes());
    assert!(
        matches!(list(&short), Err(ArchiveError::NotZip(_))),
        "{:?}",
        list(&short)
    );
    // Fewer or more records than declared.
    for count in [1, 3] {
        let result = list(&archive(&records, count));
        assert!(
            matches!(result, Err(ArchiveError::NotZip(_))),
            "{count}: {result:?}"
        );
    }
    // A record with a wrong signature; a file cut short (no end record left).
    let mut bad = bytes.clone();
    bad[DIRECTORY_AT + 46 + 1] = b'X';
    assert!(matches!(list(&bad), Err(ArchiveError::NotZip(_))));
    assert!(matches!(list(&bytes[..60]), Err(ArchiveError::NotZip(_))));
}

#[test]
fn a_declared_count_over_the_limit_is_refused_before_reading() {
    // An empty directory claiming 65535 entries.
    let bytes = archive(&[], 0xFFFF);
    assert_eq!(bytes.len(), DIRECTORY_AT + END_LEN);
    let (_dir, _, file) = file_of(&bytes);
    assert!(matches!(open(&file, 10), Err(ArchiveError::TooManyEntries { entries: 0xFFFF, max: 10 })));
    // Within the limit, the directory is too small for that many records.
    assert!(matches!(open(&file, 1 << 20), Err(ArchiveError::NotZip(_))));
}

#[test]
fn names_are_utf8_or_cp437() {
    let records = [
        record(b"caf\xc3\xa9", 0, [0; 3], &[]),
        record(b"a\x80\xff", 0, [0; 3], &[]),
    ];
    let names: Vec<_> = list(&archive(&records, 2))
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(names, ["café", "aÇ\u{a0}"]);
    // Flagged UTF-8 but not.
    let flagged = record(b"a\x80", FLAG_UTF8, [0; 3], &[]);
    assert!(matches!(
        list(&archive(&[flagged], 1)),
        Err(ArchiveError::NotZip(_))
    ));
}

#[test]
fn exact_duplicates_are_refused_first() {
    let entry = |name: &[u8]| record(name, 0, [0; 3], &[]);
    let refused = |records: &[Vec<u8>]| {
        let (_dir, path, _) = file_of(&archive(records, records.len() as u16));
        validate(&path, &ArchiveLimits::default()).unwrap_err()
    };
    let err = refused(&[entry(b"a.txt"), entry(b"b"), entry(b"a.txt")]);
    assert!(matches!(&err, ArchiveError::DuplicateEntry { name } if name == "a.txt"), "{err:?}");
    // Even after an entry refused for another reason.
    let err = refused(&[entry(b"../x"), entry(b"d"), entry(b"d")]);
    assert!(matches!(&err, ArchiveError::DuplicateEntry { name } if name == "d"), "{err:?}");
    // A name repeated once normalised counts only before the first refused entry.
    let err = refused(&[entry(b"d/"), entry(b"../x"), entry(b"d")]);
    assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err:?}");
}

#[test]
fn data_prepended_to_an_archive_shifts_its_offsets() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("data.db", SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"SQLite format 3\0 and pages").unwrap();
    let plain = zip.finish().unwrap().into_inner();
    let mut bytes = b"#!/bin/sh\nexit 0\n".to_vec();
    let shift = bytes.len() as u64;
    bytes.extend_from_slice(&plain);
    let offsets: Vec<_> = list(&bytes).unwrap().into_iter().map(|r| r.3).collect();
    assert_eq!(offsets, [shift]);
    let (dir, path, _) = file_of(&bytes);
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    crate::archive::check_restorable(&path, &ArchiveLimits::default()).unwrap();
    crate::archive::extract(&path, &dest, &ArchiveLimits::default()).unwrap();
    assert_eq!(
        std::fs::read(dest.join("data.db")).unwrap(),
        b"SQLite format 3\0 and pages"
    );
}
