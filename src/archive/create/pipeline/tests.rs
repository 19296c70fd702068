//! Tests of the create pipeline.

use std::fs;
use std::io::{Cursor, Read};

use zip::{CompressionMethod, ZipArchive};

use super::super::plan::Plan;
use super::*;

fn names_and_contents(bytes: Vec<u8>) -> Vec<(String, Vec<u8>, CompressionMethod)> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (entry.name().unwrap().to_string(), content, entry.compression())
        })
        .collect()
}

/// Files that change between the plan and their turn: a deleted one is left out, one
/// grown past the small-file size is archived whole (not cut at the size planned), and
/// batches keep the archive order around a large file.
#[test]
fn files_changed_after_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    fs::create_dir_all(data.join("a")).unwrap();
    for i in 0..(BATCH_ENTRIES + 10) {
        fs::write(data.join(format!("a/{i:04}.txt")), format!("small file {i}\n").repeat(i % 7)).unwrap();
    }
    fs::write(data.join("b.bin"), vec![7u8; BLOCK_SIZE + 5]).unwrap();
    fs::write(data.join("c.txt"), b"will grow").unwrap();
    fs::write(data.join("d.txt"), b"will vanish").unwrap();
    let plan = Plan::new(&data, &[]);
    // The walk done first, as if it had run ahead of the workers.
    let planned: Vec<_> = plan.walk().collect();

    let grown: Vec<u8> = (0..SMALL_FILE as usize + 4096).map(|i| (i % 251) as u8).collect();
    fs::write(data.join("c.txt"), &grown).unwrap();
    fs::remove_file(data.join("d.txt")).unwrap();

    let mut out = Cursor::new(Vec::new());
    let progress = ProgressCounter::default();
    let stats = run(&plan, planned.into_iter(), tmp.path(), &mut out, &CreateOptions::default(), Zip64Limits::default(), &progress).unwrap();
    assert_eq!(progress.get().0, stats.bytes_in, "every file counted once");
    let read = names_and_contents(out.into_inner());
    let names: Vec<&str> = read.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut expected = vec!["a/".to_owned()];
    expected.extend((0..(BATCH_ENTRIES + 10)).map(|i| format!("a/{i:04}.txt")));
    expected.extend(["b.bin".to_owned(), "c.txt".to_owned()]);
    assert_eq!(names, expected);
    assert_eq!(stats.entries, expected.len());
    let (_, content, method) = read.iter().find(|(n, _, _)| n == "c.txt").unwrap();
    assert!(*content == grown, "the grown file is archived whole");
    assert_eq!(*method, CompressionMethod::Stored);
    let (_, content, method) = read.iter().find(|(n, _, _)| n == "a/0006.txt").unwrap();
    assert_eq!(content, &"small file 6\n".repeat(6).into_bytes());
    assert_eq!(*method, CompressionMethod::Deflated);
    let (_, content, method) = read.iter().find(|(n, _, _)| n == "a/0000.txt").unwrap();
    assert!(content.is_empty());
    assert_eq!(*method, CompressionMethod::Stored, "empty files are stored");
}

/// A data dir that grows past the limits after it was counted fails the create rather
/// than making an archive a restore would refuse.
#[test]
fn growth_past_the_limits_after_the_count_fails_the_create() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    fs::create_dir_all(&data).unwrap();
    for name in ["a", "b", "c"] {
        fs::write(data.join(name), b"1234").unwrap();
    }
    let plan = Plan::new(&data, &[]);
    let planned: Vec<_> = plan.walk().collect();
    let progress = ProgressCounter::default();
    let with = |max_entries, max_total_size| CreateOptions {
        limits: ArchiveLimits { max_entries, max_total_size, ..ArchiveLimits::default() },
        ..CreateOptions::default()
    };
    let mut out = Cursor::new(Vec::new());
    let run_with = |opts: &CreateOptions, out: &mut Cursor<Vec<u8>>| {
        let planned = plan.walk().collect::<Vec<_>>();
        run(&plan, planned.into_iter(), tmp.path(), out, opts, Zip64Limits::default(), &progress)
    };
    let err = run_with(&with(2, 12), &mut out).unwrap_err();
    assert!(matches!(err, ArchiveError::TooManyEntries { entries: 3, max: 2 }), "{err:?}");
    let err = run_with(&with(3, 11), &mut out).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge), "{err:?}");
    let stats = run(&plan, planned.into_iter(), tmp.path(), &mut out, &with(3, 12), Zip64Limits::default(), &progress).unwrap();
    assert_eq!((stats.entries, stats.bytes_in), (3, 12));
}
