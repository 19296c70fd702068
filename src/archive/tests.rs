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
        Err(ArchiveError::TooManyEntries)
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
            has_data_db: false
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
    assert!(matches!(err, ArchiveError::TooManyEntries), "{err:?}");
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
        assert!(matches!(scene.extract(&fewer), Err(ArchiveError::TooManyEntries)));
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
