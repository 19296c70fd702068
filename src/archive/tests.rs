//! Tests of the archive module: round trip through create and extract, and refusal of
//! hostile archives built here with the zip crate's writer (patched where it refuses).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use rand::RngCore;
use rusqlite::Connection;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::*;

const EXCLUDED: [&str; 2] = ["backups", ".pb_temp"];

/// Every file and directory under `root`, relative, with file contents and permission bits.
fn tree(root: &Path) -> BTreeMap<String, (Option<Vec<u8>>, u32)> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Option<Vec<u8>>, u32)>) {
        for child in fs::read_dir(dir).unwrap() {
            let path = child.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (None, mode));
                visit(root, &path, out);
            } else {
                out.insert(rel, (Some(fs::read(&path).unwrap()), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn open_wal_db(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
    conn
}

/// A data dir with nested folders, an empty dir, a text file, a random file, excluded
/// folders, a symlink and a stray side file. data.db is created by the caller.
fn populate(data: &Path) {
    fs::create_dir_all(data.join("storage/abc/thumbs")).unwrap();
    fs::create_dir_all(data.join("empty")).unwrap();
    fs::create_dir_all(data.join("backups")).unwrap();
    fs::create_dir_all(data.join(".pb_temp")).unwrap();
    fs::write(data.join("backups/old.zip"), b"not archived").unwrap();
    fs::write(data.join("storage/abc/thumbs/t.txt"), b"thumb").unwrap();
    let text = "{\"id\": 1, \"name\": \"some json-like text\"}\n".repeat(5000);
    fs::write(data.join("storage/notes.jsonl"), text).unwrap();
    fs::write(data.join("storage/abc/blob.bin"), random_bytes(300 * 1024)).unwrap();
    fs::write(data.join("storage/empty.txt"), b"").unwrap();
    fs::write(data.join("private.txt"), b"secret").unwrap();
    fs::set_permissions(data.join("private.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(data.join("other.db-wal"), b"side file").unwrap();
    fs::write(
        data.join("plain.db"),
        b"not sqlite, archived as a plain file",
    )
    .unwrap();
    symlink("/etc/hostname", data.join("link")).unwrap();
}

fn method_of(archive: &Path, name: &str) -> CompressionMethod {
    let mut zip = ZipArchive::new(File::open(archive).unwrap()).unwrap();
    let method = zip.by_name(name).unwrap().compression();
    method
}

#[test]
fn round_trip_with_live_sqlite_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pb_data");
    fs::create_dir(&data).unwrap();
    populate(&data);

    let db_path = data.join("data.db");
    let conn = open_wal_db(&db_path);
    for i in 1..=500 {
        conn.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            (i, format!("row {i}")),
        )
        .unwrap();
    }
    // Keep this connection open so the WAL stays in place, as under a running server.
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    let writer = {
        let stop = Arc::clone(&stop);
        let db_path = db_path.clone();
        std::thread::spawn(move || {
            let conn = open_wal_db(&db_path);
            let mut i = 501;
            while !stop.load(Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    (i, format!("row {i}")),
                )
                .unwrap();
                if i == 600 {
                    started_tx.send(()).unwrap();
                }
                i += 1;
            }
            i - 1
        })
    };
    started_rx.recv().unwrap();

    let archive_path = tmp.path().join("backup.zip");
    let scratch = data.join(".pb_temp");
    let mut out = File::create(&archive_path).unwrap();
    let stats = create_backup(
        &data,
        &EXCLUDED,
        &scratch,
        &mut out,
        &CreateOptions::default(),
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let last_written = writer.join().unwrap();
    drop(conn);

    assert_eq!(stats.bytes_out, fs::metadata(&archive_path).unwrap().len());
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "snapshot left behind"
    );
    assert_eq!(
        method_of(&archive_path, "storage/abc/blob.bin"),
        CompressionMethod::Stored
    );
    assert_eq!(
        method_of(&archive_path, "storage/notes.jsonl"),
        CompressionMethod::Deflated
    );

    let summary = check_restorable(&archive_path, &ArchiveLimits::default()).unwrap();
    assert!(summary.has_data_db);
    assert_eq!(summary.entries, stats.entries);

    let dest = tmp.path().join("restored");
    fs::create_dir(&dest).unwrap();
    extract(&archive_path, &dest, &ArchiveLimits::default()).unwrap();

    // The snapshot: intact, and exactly the first n rows for some n the writer reached.
    let restored = Connection::open(dest.join("data.db")).unwrap();
    let check: String = restored
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (count, max): (i64, i64) = restored
        .query_row("SELECT count(*), max(id) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(count, max, "rows are not a prefix");
    assert!(
        (600..=last_written).contains(&max),
        "max {max}, writer reached {last_written}"
    );
    let v: String = restored
        .query_row("SELECT v FROM t WHERE id = ?1", [max], |r| r.get(0))
        .unwrap();
    assert_eq!(v, format!("row {max}"));
    drop(restored);

    // Everything else is identical, minus what must be left out.
    let mut expected = tree(&data);
    for gone in [
        "backups",
        "backups/old.zip",
        ".pb_temp",
        "other.db-wal",
        "data.db",
        "data.db-wal",
        "data.db-shm",
        "link",
    ] {
        expected.remove(gone);
    }
    let mut actual = tree(&dest);
    actual.remove("data.db");
    assert_eq!(actual, expected);
    assert_eq!(actual["private.txt"].1, 0o640);
    assert!(actual.contains_key("empty"));
}

#[test]
fn archives_are_readable_without_a_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.txt"), b"hello").unwrap();
    let mut out = Cursor::new(Vec::new());
    let stats = create_backup(&data, &[], tmp.path(), &mut out, &CreateOptions::default()).unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.bytes_in, 5);
    let mut zip = ZipArchive::new(Cursor::new(out.into_inner())).unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("a.txt").unwrap(), &mut content).unwrap();
    assert_eq!(content, "hello");
}

#[test]
fn entry_names_are_checked() {
    for good in [
        "a", "a/b.txt", "dir/", "a/b/c/", "a/c:d", "ab:c", "..a", "a..",
    ] {
        assert!(check_entry_name(good).is_ok(), "{good:?}");
    }
    for bad in [
        "",
        "/",
        "/abs",
        "../x",
        "a/../../x",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "C:/x",
        "c:x",
        "c:",
        "a\\b",
        "a\0b",
        "a//",
    ] {
        assert!(
            matches!(check_entry_name(bad), Err(ArchiveError::UnsafePath { .. })),
            "{bad:?}"
        );
    }
    // The bounds, and one past each.
    let deepest = vec!["d"; MAX_NAME_DEPTH].join("/");
    let longest = longest_name();
    let widest = "c".repeat(MAX_COMPONENT_BYTES);
    for good in [&deepest, &format!("{deepest}/"), &longest, &format!("{longest}/"), &widest] {
        assert_eq!(check_entry_name(good).unwrap(), good.trim_end_matches('/'), "{good:?}");
    }
    for bad in [format!("{deepest}/d"), format!("{longest}b"), format!("{widest}c"), format!("x/{widest}c/y")] {
        assert!(matches!(check_entry_name(&bad), Err(ArchiveError::NameTooLong { .. })), "{bad:?}");
    }
    // A multi-byte character cut at the log's 100 bytes.
    let err = check_entry_name(&"é".repeat(600)).unwrap_err();
    assert!(matches!(&err, ArchiveError::NameTooLong { name } if name == &"é".repeat(50)), "{err:?}");
}

/// A name of exactly [`MAX_NAME_BYTES`], with components as long as allowed.
fn longest_name() -> String {
    let widest = "c".repeat(MAX_COMPONENT_BYTES);
    let used = 3 * (MAX_COMPONENT_BYTES + 1) + 2;
    let name = format!("{widest}/{widest}/{widest}/x/{}", "y".repeat(MAX_NAME_BYTES - used));
    assert_eq!(name.len(), MAX_NAME_BYTES);
    name
}

// ---- hostile archives ----

/// A scratch root holding the archive and an empty `dest`, to check nothing lands beside it.
struct Scene {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    archive: std::path::PathBuf,
    dest: std::path::PathBuf,
}

impl Scene {
    fn new(bytes: &[u8]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let dest = root.join("dest");
        fs::create_dir_all(&dest).unwrap();
        let archive = root.join("upload.zip");
        fs::write(&archive, bytes).unwrap();
        Self {
            _tmp: tmp,
            root,
            archive,
            dest,
        }
    }

    fn extract(&self, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
        let result = extract(&self.archive, &self.dest, limits);
        let mut names: Vec<_> = fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dest", "upload.zip"],
            "something was written outside dest"
        );
        assert!(!self.root.parent().unwrap().join("x").exists());
        result
    }
}

fn zip_of(entries: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content, method) in entries {
        if let Some(dir) = name.strip_suffix('/') {
            zip.add_directory(dir, SimpleFileOptions::default())
                .unwrap();
        } else {
            let options = SimpleFileOptions::default().compression_method(*method);
            zip.start_file(*name, options).unwrap();
            zip.write_all(content).unwrap();
        }
    }
    zip.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` by `to` (same length) in `bytes`; returns the count.
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            count += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    count
}

/// Overwrites the declared uncompressed size of every entry, local and central headers.
fn patch_declared_size(bytes: &mut [u8], size: u32) {
    let mut patched = 0;
    for i in 0..bytes.len().saturating_sub(4) {
        let offset = match &bytes[i..i + 4] {
            b"PK\x03\x04" => 22,
            b"PK\x01\x02" => 24,
            _ => continue,
        };
        bytes[i + offset..i + offset + 4].copy_from_slice(&size.to_le_bytes());
        patched += 1;
    }
    assert!(patched >= 2);
}

const DEFLATED: CompressionMethod = CompressionMethod::Deflated;
const STORED: CompressionMethod = CompressionMethod::Stored;

#[test]
fn zip_slip_and_absolute_paths_are_refused() {
    for name in ["../x", "/abs.txt", "a/../../x", "a\\b"] {
        let scene = Scene::new(&zip_of(&[
            ("ok.txt", b"fine", DEFLATED),
            (name, b"evil", DEFLATED),
        ]));
        let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::UnsafePath { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(
            fs::read_dir(&scene.dest).unwrap().count(),
            0,
            "{name}: extracted before validating"
        );
    }
}

#[test]
fn symlink_entries_are_refused() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    let scene = Scene::new(&zip.finish().unwrap().into_inner());
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::SpecialEntry { .. }), "{err:?}");
}

#[test]
fn fifo_entries_are_refused() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let fifo = SimpleFileOptions::default().external_attributes(0o010_644 << 16);
    zip.start_file("pipe", fifo.system(zip::System::Unix))
        .unwrap();
    let scene = Scene::new(&zip.finish().unwrap().into_inner());
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::SpecialEntry { .. }), "{err:?}");
}

#[test]
fn duplicate_names_are_refused() {
    let mut bytes = zip_of(&[("a.txt", b"one", STORED), ("b.txt", b"two", STORED)]);
    assert_eq!(patch(&mut bytes, b"b.txt", b"a.txt"), 2);
    let scene = Scene::new(&bytes);
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DuplicateEntry { .. }),
        "{err:?}"
    );

    // Same name once the trailing '/' is dropped.
    let mut bytes = zip_of(&[("samename/", b"", STORED), ("samenamX", b"file", STORED)]);
    assert_eq!(patch(&mut bytes, b"samenamX", b"samename"), 2);
    let scene = Scene::new(&bytes);
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DuplicateEntry { .. }),
        "{err:?}"
    );

    // A file that is also a parent directory.
    let scene = Scene::new(&zip_of(&[
        ("a", b"file", STORED),
        ("a/b", b"child", STORED),
    ]));
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DuplicateEntry { .. }),
        "{err:?}"
    );
}

/// Names thousands of levels deep: refused from the central directory alone, before any
/// folder is made (a restore used to create every level of every name, keeping each prefix
/// of each name in memory, so memory grew with the square of the depth).
#[test]
fn deep_names_are_refused_before_anything_is_created() {
    let deep = "a/".repeat(2000);
    let names: Vec<String> = (0..40).map(|i| format!("{deep}f{i}")).collect();
    let mut entries: Vec<(&str, &[u8], CompressionMethod)> = vec![("data.db", SQLITE_HEADER, STORED)];
    entries.extend(names.iter().map(|n| (n.as_str(), &b"x"[..], STORED)));
    let scene = Scene::new(&zip_of(&entries));
    let err = validate(&scene.archive, &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::NameTooLong { .. }), "{err:?}");
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::NameTooLong { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&scene.dest).unwrap().count(), 0);
}

/// Entries in any order, folders listed after their content or not at all, names at the
/// bounds: every folder is made once, before its content, and gets its mode after it (a
/// read-only folder listed first still receives its files).
#[test]
fn folders_are_made_whatever_the_entry_order() {
    let deepest = vec!["d"; MAX_NAME_DEPTH].join("/");
    let longest = &longest_name();
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let mode = |m| SimpleFileOptions::default().unix_permissions(m);
    for (name, m) in [
        ("a/ro/inner", 0o640),
        ("a.txt", 0o644),
        ("a-b/x", 0o644),
        ("a/y", 0o644),
        (deepest.as_str(), 0o644),
        ("a/ro/deeper/z", 0o644),
        (longest, 0o644),
        ("ab", 0o644),
    ] {
        zip.start_file(name, mode(m)).unwrap();
        zip.write_all(name.as_bytes()).unwrap();
    }
    zip.add_directory("a/ro", mode(0o550)).unwrap();
    zip.add_directory("a", mode(0o750)).unwrap();
    zip.add_directory("empty/inside", mode(0o700)).unwrap();
    let scene = Scene::new(&zip.finish().unwrap().into_inner());
    scene.extract(&ArchiveLimits::default()).unwrap();
    let got = tree(&scene.dest);
    for file in ["a/ro/inner", "a.txt", "a-b/x", "a/y", &deepest, "a/ro/deeper/z", longest, "ab"] {
        assert_eq!(got[file].0.as_deref(), Some(file.as_bytes()), "{file}");
    }
    // Recorded modes, with the owner's bits; folders only implied by names get 0755.
    for (dir, mode) in [("a", 0o750), ("a/ro", 0o750), ("a/ro/deeper", 0o755), ("empty", 0o755), ("empty/inside", 0o700), ("d", 0o755)] {
        assert_eq!(got[dir], (None, mode), "{dir}");
    }
    let folders = got.values().filter(|(content, _)| content.is_none()).count();
    // a, a/ro, a/ro/deeper, a-b, d/... (31 levels), the longest name's 4, empty, empty/inside.
    assert_eq!(folders, 3 + 1 + (MAX_NAME_DEPTH - 1) + 4 + 2, "{:?}", got.keys().collect::<Vec<_>>());
}

/// The central directory of `bytes` (no zip64, no comment): where it starts, and each
/// record whole.
fn central_records(bytes: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let eocd = bytes.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let start = u32::from_le_bytes(bytes[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let (mut at, mut records) = (start, Vec::new());
    while at < eocd {
        let len = 46 + u16_at(at + 28) + u16_at(at + 30) + u16_at(at + 32);
        records.push(bytes[at..at + len].to_vec());
        at += len;
    }
    (start, records)
}

/// `bytes`' local headers and data, then `records` as its central directory.
fn with_records(bytes: &[u8], records: &[Vec<u8>]) -> Vec<u8> {
    let (start, _) = central_records(bytes);
    let mut out = bytes[..start].to_vec();
    let directory = records.concat();
    out.extend_from_slice(&directory);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(records.len() as u16).to_le_bytes());
    out.extend_from_slice(&(records.len() as u16).to_le_bytes());
    out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
    out.extend_from_slice(&(start as u32).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A zip bomb without any lie a single entry could show: 200 central records, each within
/// the ratio limit, all pointing at one deflated run of 4 MiB of zeros. A few KiB that
/// would extract to 800 MiB; refused as a whole before anything is decoded.
#[test]
fn overlapping_entries_are_refused() {
    let zeros = vec![0u8; 4 << 20];
    let one = zip_of(&[("data.db", SQLITE_HEADER, STORED), ("zeros.bin", &zeros, DEFLATED)]);
    let (_, records) = central_records(&one);
    let mut bomb = vec![records[0].clone()];
    for i in 0..200 {
        let mut copy = records[1].clone();
        copy[46..46 + 9].copy_from_slice(format!("zeros{i:04}").as_bytes());
        bomb.push(copy);
    }
    let bytes = with_records(&one, &bomb);
    assert!(bytes.len() < 16 * 1024, "{}", bytes.len());
    let scene = Scene::new(&bytes);
    for result in [validate(&scene.archive, &ArchiveLimits::default()).map(drop), scene.extract(&ArchiveLimits::default())] {
        let err = result.unwrap_err();
        assert!(matches!(&err, ArchiveError::Overlapping { name, .. } if name == "zeros0001"), "{err:?}");
    }
    assert_eq!(fs::read_dir(&scene.dest).unwrap().count(), 0);

    // A local header whose extra field length moves its data into the next entry's.
    let mut bytes = zip_of(&[("first", &[1u8; 100], STORED), ("second", &[2u8; 100], STORED)]);
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    bytes[28..30].copy_from_slice(&60u16.to_le_bytes());
    let err = validate(&Scene::new(&bytes).archive, &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(&err, ArchiveError::Overlapping { name, .. } if name == "second"), "{err:?}");

    // Data said to run on into the central directory.
    let plain = zip_of(&[("first", &[1u8; 100], STORED), ("last", &[2u8; 100], STORED)]);
    let (_, mut records) = central_records(&plain);
    records[1][20..24].copy_from_slice(&110u32.to_le_bytes());
    let err = validate(&Scene::new(&with_records(&plain, &records)).archive, &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(&err, ArchiveError::Overlapping { name, other } if name == "last" && other.contains("central")), "{err:?}");
    // Untouched, the same archive is fine: the helpers change nothing else.
    validate(&Scene::new(&with_records(&plain, &central_records(&plain).1)).archive, &ArchiveLimits::default()).unwrap();
}

#[test]
fn entry_larger_than_declared_is_refused_while_extracting() {
    let content = b"0123456789".repeat(100);
    let mut bytes = zip_of(&[("data.txt", &content, DEFLATED)]);
    patch_declared_size(&mut bytes, 500);
    let scene = Scene::new(&bytes);
    // The central directory alone looks fine.
    validate(&scene.archive, &ArchiveLimits::default()).unwrap();
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::SizeMismatch { .. }), "{err:?}");
    let written = fs::metadata(scene.dest.join("data.txt")).unwrap().len();
    assert!(written <= 500 + CHUNK_BOUND, "kept writing: {written}");
}

/// Extraction may hold one read chunk beyond the declared size before noticing.
const CHUNK_BOUND: u64 = 256 * 1024;

#[test]
fn corrupted_content_is_refused() {
    let mut bytes = zip_of(&[("data.txt", b"the original content", STORED)]);
    assert_eq!(patch(&mut bytes, b"original", b"modified"), 1);
    let scene = Scene::new(&bytes);
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::SizeMismatch { .. }), "{err:?}");
}

#[test]
fn compression_bombs_are_refused() {
    let zeros = vec![0u8; 4 << 20];
    let bytes = zip_of(&[("zeros.bin", &zeros, DEFLATED)]);
    let scene = Scene::new(&bytes);
    let strict = ArchiveLimits {
        max_ratio: 100,
        ..ArchiveLimits::default()
    };
    let err = scene.extract(&strict).unwrap_err();
    assert!(
        matches!(err, ArchiveError::SuspiciousRatio { .. }),
        "{err:?}"
    );
    // Genuine zeros stay within the default ratio.
    scene.extract(&ArchiveLimits::default()).unwrap();

    // A declared size that deflate could never reach from that little data.
    let mut bytes = zip_of(&[("small.txt", b"tiny", DEFLATED)]);
    patch_declared_size(&mut bytes, 4_000_000_000);
    let scene = Scene::new(&bytes);
    let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::SuspiciousRatio { .. }),
        "{err:?}"
    );
}

#[test]
fn size_and_count_limits_apply() {
    let bytes = zip_of(&[
        ("a", b"12345", STORED),
        ("b", b"67890", STORED),
        ("c/", b"", STORED),
    ]);
    let scene = Scene::new(&bytes);
    let few = ArchiveLimits {
        max_entries: 2,
        ..ArchiveLimits::default()
    };
    assert!(matches!(
        scene.extract(&few),
        Err(ArchiveError::TooManyEntries { entries: 3, max: 2 })
    ));
    let small = ArchiveLimits {
        max_total_size: 9,
        ..ArchiveLimits::default()
    };
    assert!(matches!(scene.extract(&small), Err(ArchiveError::TooLarge)));
    let summary = validate(&scene.archive, &ArchiveLimits::default()).unwrap();
    assert_eq!(
        summary,
        ArchiveSummary {
            entries: 3,
            total_size: 10,
            has_data_db: false,
            in_walk_order: true,
        }
    );
}

#[test]
fn not_a_zip_is_refused() {
    for bytes in [
        Vec::new(),
        b"just some text, not a zip".to_vec(),
        random_bytes(4096),
    ] {
        let scene = Scene::new(&bytes);
        let err = validate(&scene.archive, &ArchiveLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::NotZip(_)), "{err:?}");
        assert_eq!(err.client_message(), "The archive is not a valid zip file.");
        assert!(matches!(
            scene.extract(&ArchiveLimits::default()),
            Err(ArchiveError::NotZip(_))
        ));
    }
}

#[test]
fn restorable_needs_a_sqlite_data_db_at_the_top() {
    let limits = ArchiveLimits::default();
    let check = |entries: &[(&str, &[u8], CompressionMethod)]| {
        let scene = Scene::new(&zip_of(entries));
        check_restorable(&scene.archive, &limits)
    };
    let sqlite = b"SQLite format 3\0 and then pages";
    assert!(matches!(
        check(&[("x.txt", b"x", STORED)]),
        Err(ArchiveError::MissingDataDb)
    ));
    assert!(matches!(
        check(&[("sub/data.db", sqlite, STORED)]),
        Err(ArchiveError::MissingDataDb)
    ));
    assert!(matches!(
        check(&[("data.db/", b"", STORED)]),
        Err(ArchiveError::MissingDataDb)
    ));
    assert!(matches!(
        check(&[("data.db", b"hello", DEFLATED)]),
        Err(ArchiveError::DataDbNotSqlite)
    ));
    assert!(matches!(
        check(&[("data.db", b"SQLite format 3", STORED)]),
        Err(ArchiveError::DataDbNotSqlite)
    ));
    let summary = check(&[("x/", b"", STORED), ("data.db", sqlite, DEFLATED)]).unwrap();
    assert!(summary.has_data_db);
    assert_eq!(summary.entries, 2);
}

#[test]
fn extraction_never_follows_a_symlink_in_dest() {
    let scene = Scene::new(&zip_of(&[("sub/x", b"payload", STORED)]));
    let outside = scene.root.parent().unwrap().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, scene.dest.join("sub")).unwrap();
    let err = extract(&scene.archive, &scene.dest, &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    let scene = Scene::new(&zip_of(&[("f", b"payload", STORED)]));
    symlink(outside.join("f"), scene.dest.join("f")).unwrap();
    assert!(extract(&scene.archive, &scene.dest, &ArchiveLimits::default()).is_err());
    assert!(!outside.join("f").exists());
}

#[test]
fn permissions_are_restored_without_special_bits() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let setuid = SimpleFileOptions::default()
        .system(zip::System::Unix)
        .external_attributes(0o104_755 << 16);
    zip.start_file("tool", setuid).unwrap();
    zip.write_all(b"#!/bin/sh\n").unwrap();
    let locked = SimpleFileOptions::default().unix_permissions(0o000);
    zip.start_file("locked", locked).unwrap();
    zip.add_directory("ro", SimpleFileOptions::default().unix_permissions(0o555))
        .unwrap();
    zip.start_file("ro/inner", SimpleFileOptions::default())
        .unwrap();
    let scene = Scene::new(&zip.finish().unwrap().into_inner());
    scene.extract(&ArchiveLimits::default()).unwrap();
    let mode = |name: &str| {
        fs::metadata(scene.dest.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tool"), 0o755);
    assert_eq!(mode("locked"), 0o600);
    assert_eq!(mode("ro"), 0o755);
    assert_eq!(mode("ro/inner"), 0o644);
}

#[test]
fn client_messages_hide_details() {
    let errors = [
        ArchiveError::UnsafePath {
            name: "/etc/passwd".into(),
        },
        ArchiveError::Io(std::io::Error::other("/secret/path: denied")),
        ArchiveError::NotZip("/tmp/x: bad".into()),
    ];
    for err in errors {
        let message = err.client_message();
        assert!(!message.contains('/'), "{message}");
        assert!(message.ends_with('.'), "{message}");
    }
}

#[test]
fn declared_entry_count_is_checked_before_parsing() {
    let mut bytes = zip_of(&[("a", b"1", STORED), ("b", b"2", STORED)]);
    let eocd = bytes.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    for offset in [8, 10] {
        bytes[eocd + offset..eocd + offset + 2].copy_from_slice(&60_000u16.to_le_bytes());
    }
    let scene = Scene::new(&bytes);
    let limits = ArchiveLimits {
        max_entries: 1000,
        ..ArchiveLimits::default()
    };
    let err = validate(&scene.archive, &limits).unwrap_err();
    assert!(matches!(err, ArchiveError::TooManyEntries { .. }), "{err:?}");
}

mod zip64 {
    //! `create` → `read` with the zip64 thresholds lowered, so the zip64 sizes, offsets, local
    //! headers and end records (and the entry-count form beyond 65,535 entries) run on small
    //! data; each archive's records are checked for the zip64 forms its thresholds call for
    //! (a writer that ignored them would still read back), and every archive is also read by
    //! the zip crate and by Python's `zipfile`.

    use std::process::Command;

    use proptest::prelude::*;

    use super::super::create::create_backup_with;
    use super::super::zip64_check::{check_zip64_forms, Zip64Seen};
    use super::super::zip_writer::Zip64Limits;
    use super::*;

    /// Reads `archive` with Python's zipfile (an implementation that shares nothing with
    /// ours): checks every CRC and answers each entry's name and size.
    fn python_listing(archive: &Path) -> BTreeMap<String, u64> {
        let script = "import json, sys, zipfile\n\
                      z = zipfile.ZipFile(sys.argv[1])\n\
                      bad = z.testzip()\n\
                      assert bad is None, 'bad CRC in ' + str(bad)\n\
                      print(json.dumps({i.filename: i.file_size for i in z.infolist()}))";
        let out = Command::new("python3").arg("-c").arg(script).arg(archive).output().expect("python3 runs");
        assert!(out.status.success(), "python zipfile: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Writes a data dir of `files` (size, compressible) spread over a few folders.
    fn data_dir(root: &Path, files: &[(usize, bool)], seed: u64) {
        let mut x = seed | 1;
        for (i, (size, compressible)) in files.iter().enumerate() {
            let dir = root.join(format!("d{}", i % 3));
            fs::create_dir_all(&dir).unwrap();
            let bytes: Vec<u8> = if *compressible {
                b"{\"id\": 42, \"text\": \"compressible\"}\n".iter().copied().cycle().take(*size).collect()
            } else {
                (0..*size)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            };
            fs::write(dir.join(format!("f{i}")), bytes).unwrap();
        }
    }

    fn round_trip(files: &[(usize, bool)], seed: u64, limits: Zip64Limits) -> Zip64Seen {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        data_dir(&data, files, seed);
        let archive = tmp.path().join("a.zip");
        let out = File::create(&archive).unwrap();
        let stats = create_backup_with(&data, &[], tmp.path(), out, &CreateOptions::default(), limits, &Default::default()).unwrap();
        assert_eq!(stats.bytes_out, fs::metadata(&archive).unwrap().len());
        let seen = check_zip64_forms(&fs::read(&archive).unwrap(), limits);

        // Ours.
        let summary = validate(&archive, &ArchiveLimits::default()).unwrap();
        assert_eq!(summary.entries, stats.entries);
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        extract(&archive, &dest, &ArchiveLimits::default()).unwrap();
        assert!(tree(&data) == tree(&dest), "extracted tree differs");

        // The zip crate and Python's zipfile.
        let mut zip = ZipArchive::new(File::open(&archive).unwrap()).unwrap();
        assert_eq!(zip.len(), stats.entries);
        let mut sizes = BTreeMap::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).unwrap();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            let name = entry.name().unwrap().to_string();
            if !entry.is_dir() {
                assert!(Some(content) == fs::read(data.join(&name)).ok(), "{name} differs");
            }
            sizes.insert(name, entry.size());
        }
        assert_eq!(python_listing(&archive), sizes);
        seen
    }

    fn limits() -> impl Strategy<Value = Zip64Limits> {
        (64u64..8_000, 1u64..40).prop_flat_map(|(field, entries)| {
            // Deflate may grow a small file a little: the zip64 local header threshold stays
            // well below the field threshold, as in production (3 GiB and 4 GiB).
            (0..=field / 2).prop_map(move |large_file| Zip64Limits { large_file, field, entries })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn archives_read_back_across_zip64_thresholds(
            files in prop::collection::vec((0usize..6_000, any::<bool>()), 0..30),
            seed in any::<u64>(),
            limits in limits(),
        ) {
            round_trip(&files, seed, limits);
        }
    }

    /// The real thresholds, with more entries than a classic end record can count: the
    /// zip64 end record, and nothing else in zip64 form.
    #[test]
    fn more_than_65535_entries() {
        let files = vec![(0usize, true); 66_000];
        let seen = round_trip(&files, 1, Zip64Limits::default());
        assert_eq!(seen, Zip64Seen { end_record: true, ..Zip64Seen::default() });
    }

    /// Each threshold crossed on its own, so that each form is seen to follow its own
    /// threshold: files from 1,000 bytes on in zip64 form (sizes and descriptors), offsets
    /// from 20,000 on (the directory's too, so the end record), and the end record once there
    /// are 4 entries.
    #[test]
    fn each_threshold_brings_its_own_form() {
        // About 40 KB: entries start past 20,000 whatever their order.
        let files = [(3_000, false), (500, false), (9_000, false), (200, true), (12_000, false), (8_000, false), (6_000, false)];
        let sizes_only = round_trip(&files, 2, Zip64Limits { large_file: 1_000, field: u64::from(u32::MAX), entries: 0xFFFF });
        assert_eq!((sizes_only.local_headers, sizes_only.central_offsets, sizes_only.end_record), (5, 0, false), "{sizes_only:?}");
        let offsets = round_trip(&files, 2, Zip64Limits { large_file: 3 << 30, field: 20_000, entries: 0xFFFF });
        assert!(offsets.central_offsets > 0 && offsets.local_headers == 0 && offsets.end_record, "{offsets:?}");
        let entries = round_trip(&files, 2, Zip64Limits { large_file: 3 << 30, field: u64::from(u32::MAX), entries: 4 });
        assert_eq!(entries, Zip64Seen { end_record: true, ..Zip64Seen::default() });
    }
}

/// Parallel extraction: an archive of many small files (several batches, so several
/// threads), files big enough to be units of their own, both methods, in folders.
mod parallel {
    use super::*;

    /// (name, content, method, unix mode); names ending in '/' are directories.
    type Entry = (String, Vec<u8>, CompressionMethod, u32);

    fn entries() -> Vec<Entry> {
        let lines: String = (0..100_000).map(|i| format!("{{\"id\":{i},\"name\":\"user{i}\"}}\n")).collect();
        let mut entries = vec![
            ("big/".to_owned(), vec![], STORED, 0o755),
            ("big/random.bin".to_owned(), random_bytes(3 << 20), STORED, 0o644),
            ("big/lines.jsonl".to_owned(), lines.into_bytes(), DEFLATED, 0o640),
        ];
        for i in 0..1500 {
            let content = format!("file {i} ").repeat(i % 7 + 1).into_bytes();
            let method = if i % 2 == 0 { DEFLATED } else { STORED };
            // 0o666 is not what create gives under the usual umask: it needs the chmod.
            let mode = [0o644, 0o600, 0o666][i % 3];
            entries.push((format!("small/d{:02}/f{i:04}", i / 100), content, method, mode));
        }
        entries.push(("empty".to_owned(), vec![], STORED, 0o644));
        entries.push(("last.bin".to_owned(), random_bytes(2 << 20), DEFLATED, 0o644));
        entries
    }

    fn zip_with_modes(entries: &[Entry]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content, method, mode) in entries {
            let options = SimpleFileOptions::default().compression_method(*method).unix_permissions(*mode);
            match name.strip_suffix('/') {
                Some(dir) => zip.add_directory(dir, options).unwrap(),
                None => {
                    zip.start_file(name.as_str(), options).unwrap();
                    zip.write_all(content).unwrap();
                }
            }
        }
        zip.finish().unwrap().into_inner()
    }

    /// The stored content of `name` in `bytes`, replaced by as many different bytes.
    fn corrupt(bytes: &mut [u8], entries: &[Entry], name: &str) {
        let (_, content, method, _) = entries.iter().find(|e| e.0 == name).unwrap();
        assert_eq!(*method, STORED);
        let mut other = content.clone();
        other.iter_mut().for_each(|b| *b ^= 0x20);
        assert_eq!(patch(bytes, content, &other), 1, "{name}");
    }

    #[test]
    fn round_trips_byte_identical_with_modes() {
        let entries = entries();
        let scene = Scene::new(&zip_with_modes(&entries));
        scene.extract(&ArchiveLimits::default()).unwrap();
        let mut expected = BTreeMap::new();
        for (name, content, _, mode) in &entries {
            match name.strip_suffix('/') {
                Some(dir) => expected.insert(dir.to_owned(), (None, *mode)),
                None => expected.insert(name.clone(), (Some(content.clone()), *mode)),
            };
        }
        // Folders implied by file names get the default mode.
        expected.insert("small".to_owned(), (None, 0o755));
        for d in 0..15 {
            expected.insert(format!("small/d{d:02}"), (None, 0o755));
        }
        let got = tree(&scene.dest);
        assert_eq!(got.len(), expected.len());
        for (name, want) in &expected {
            assert!(got.get(name) == Some(want), "{name} differs");
        }
    }

    #[test]
    fn a_corrupt_entry_fails_the_whole_extraction_with_the_first_in_archive_order() {
        let entries = entries();
        for names in [
            &["small/d07/f0701"][..],
            &["small/d07/f0701", "small/d12/f1201"],
            &["big/random.bin", "small/d14/f1499"],
            &["small/d14/f1499", "big/random.bin"],
        ] {
            let mut bytes = zip_with_modes(&entries);
            for name in names {
                corrupt(&mut bytes, &entries, name);
            }
            let scene = Scene::new(&bytes);
            let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
            // The first corrupt entry in archive order, as a serial extraction reports it;
            // the client sees "The archive is corrupt." (400).
            let first = entries.iter().position(|e| names.contains(&e.0.as_str())).unwrap();
            match &err {
                ArchiveError::SizeMismatch { name } => assert_eq!(name, &entries[first].0),
                other => panic!("{names:?}: {other:?}"),
            }
            assert_eq!(err.client_message(), "The archive is corrupt.");
        }
    }

    #[test]
    fn limits_still_refuse() {
        let entries = entries();
        let scene = Scene::new(&zip_with_modes(&entries));
        let total: u64 = entries.iter().map(|e| e.1.len() as u64).sum();
        let exact = ArchiveLimits {
            max_entries: entries.len(),
            max_total_size: total,
            ..ArchiveLimits::default()
        };
        let fewer = ArchiveLimits { max_entries: entries.len() - 1, ..exact };
        assert!(matches!(scene.extract(&fewer), Err(ArchiveError::TooManyEntries { .. })));
        let smaller = ArchiveLimits { max_total_size: total - 1, ..exact };
        assert!(matches!(scene.extract(&smaller), Err(ArchiveError::TooLarge)));
        assert!(fs::read_dir(&scene.dest).unwrap().next().is_none(), "refused before writing");
        scene.extract(&exact).unwrap();
    }

    /// A deflated entry with no compressed bytes at all is an empty file (as the zip crate's
    /// reader has it); cut short after some output, it is corrupt.
    #[test]
    fn deflated_entries_without_a_stream_end() {
        let mut bytes = zip_of(&[("empty", b"", STORED)]);
        for (signature, offset) in [(b"PK\x03\x04", 8), (b"PK\x01\x02", 10)] {
            let at = bytes.windows(4).position(|w| w == signature).unwrap() + offset;
            bytes[at..at + 2].copy_from_slice(&8u16.to_le_bytes());
        }
        let scene = Scene::new(&bytes);
        scene.extract(&ArchiveLimits::default()).unwrap();
        assert_eq!(fs::read(scene.dest.join("empty")).unwrap(), b"");

        let content = random_bytes(100_000);
        let mut bytes = zip_of(&[("cut", &content, DEFLATED)]);
        // Half the compressed bytes declared: the stream stops part-way.
        let compressed = ZipArchive::new(Cursor::new(&bytes)).unwrap().by_index(0).unwrap().compressed_size() as u32;
        let half = (compressed / 2).to_le_bytes();
        assert!(patch(&mut bytes, &compressed.to_le_bytes(), &half) >= 2);
        let scene = Scene::new(&bytes);
        let err = scene.extract(&ArchiveLimits::default()).unwrap_err();
        assert!(matches!(&err, ArchiveError::SizeMismatch { name } if name == "cut"), "{err:?}");
    }
}

/// `Output::DataDbOnly` decodes and checks every entry but writes `data.db` alone, and only
/// what is written counts against `max_written`.
#[test]
fn a_check_that_keeps_only_data_db() {
    let big = vec![3u8; 1 << 20];
    let bytes = zip_of(&[("data.db", SQLITE_HEADER, STORED), ("storage/", b"", STORED), ("storage/big.bin", &big, DEFLATED)]);
    let scene = Scene::new(&bytes);
    let limits = ArchiveLimits { max_written: 1000, ..ArchiveLimits::default() };
    let progress = crate::progress::ProgressCounter::default();
    let summary = extract_restorable(&scene.archive, &scene.dest, &limits, Output::DataDbOnly, &progress).unwrap();
    assert_eq!(summary.total_size, 16 + (1 << 20));
    assert_eq!(tree(&scene.dest).keys().collect::<Vec<_>>(), ["data.db"]);
    assert_eq!(fs::read(scene.dest.join("data.db")).unwrap(), SQLITE_HEADER);
    // Writing everything would not fit.
    fs::remove_file(scene.dest.join("data.db")).unwrap();
    let err = extract_restorable(&scene.archive, &scene.dest, &limits, Output::Everything, &progress).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge), "{err:?}");
    assert_eq!(fs::read_dir(&scene.dest).unwrap().count(), 0, "refused before writing");
    // Every entry is still decoded: a damaged one is found.
    let mut damaged = zip_of(&[("data.db", SQLITE_HEADER, STORED), ("other.txt", b"the original text", STORED)]);
    assert_eq!(patch(&mut damaged, b"original", b"modified"), 1);
    let scene = Scene::new(&damaged);
    let err = extract_restorable(&scene.archive, &scene.dest, &limits, Output::DataDbOnly, &progress).unwrap_err();
    assert!(matches!(&err, ArchiveError::SizeMismatch { name } if name == "other.txt"), "{err:?}");
}

/// The directory alone gives what `validate` finds, and the same refusals over the limits.
#[test]
fn declared_sizes_come_from_the_directory_alone() {
    let bytes = zip_of(&[("data.db", SQLITE_HEADER, STORED), ("a/b.txt", b"12345", DEFLATED), ("c/", b"", STORED)]);
    let scene = Scene::new(&bytes);
    let file = File::open(&scene.archive).unwrap();
    let declared = read_declared(&file, &ArchiveLimits::default()).unwrap();
    let summary = validate(&scene.archive, &ArchiveLimits::default()).unwrap();
    assert_eq!(declared, Declared { entries: 3, total_size: summary.total_size, data_db_size: Some(16) });
    assert_eq!((declared.written(Output::Everything), declared.written(Output::DataDbOnly)), (21, 16));
    let small = ArchiveLimits { max_total_size: 20, ..ArchiveLimits::default() };
    assert!(matches!(read_declared(&file, &small), Err(ArchiveError::TooLarge)));
    let few = ArchiveLimits { max_entries: 2, ..ArchiveLimits::default() };
    assert!(matches!(read_declared(&file, &few), Err(ArchiveError::TooManyEntries { .. })));
}

/// The fuzz target's seeds for the central directory reader say what each was made for:
/// the zip64 records, data before the archive and many entries read back whole; the
/// overlapping ones and the over-long names are refused for that reason.
#[test]
fn fuzz_seeds_reach_what_they_were_made_for() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/zip");
    let verdict = |seed: &str| {
        let scene = Scene::new(&fs::read(corpus.join(seed)).unwrap());
        let summary = check_restorable(&scene.archive, &ArchiveLimits::default());
        (summary, scene.extract(&ArchiveLimits::default()))
    };
    for (seed, entries) in [("zip64", 2), ("prepended", 2), ("many-entries", 41)] {
        let (summary, extracted) = verdict(seed);
        assert_eq!(summary.unwrap().entries, entries, "{seed}");
        extracted.unwrap();
    }
    for seed in ["overlapping", "overlap-by-extra"] {
        let (summary, _) = verdict(seed);
        assert!(matches!(summary, Err(ArchiveError::Overlapping { .. })), "{seed}: {summary:?}");
    }
    let (summary, _) = verdict("deep-names");
    assert!(matches!(summary, Err(ArchiveError::NameTooLong { .. })), "{summary:?}");
}

/// A data dir holding a path deeper than a restore takes: the backup leaves it out (and
/// warns) rather than being one that could never be restored.
#[test]
fn a_backup_leaves_out_names_a_restore_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let deep = data.join(vec!["d"; MAX_NAME_DEPTH + 3].join("/"));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("too-deep.txt"), b"x").unwrap();
    fs::write(data.join("kept.txt"), b"kept").unwrap();
    let archive = tmp.path().join("out.zip");
    create_backup(&data, &EXCLUDED, tmp.path(), File::create(&archive).unwrap(), &CreateOptions::default()).unwrap();
    validate(&archive, &ArchiveLimits::default()).unwrap();
    let zip = ZipArchive::new(File::open(&archive).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    assert!(names.iter().any(|n| n == "kept.txt"), "{names:?}");
    let deepest = names.iter().map(|n| n.trim_end_matches('/').split('/').count()).max().unwrap();
    assert_eq!(deepest, MAX_NAME_DEPTH, "{names:?}");
}
