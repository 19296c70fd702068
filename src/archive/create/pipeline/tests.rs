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

/// Text that deflates to about a fifth at level 2, different in every block.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        i += 1;
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        out.extend_from_slice(format!("{{\"id\":{i},\"name\":\"user{x}\",\"score\":{}}}\n", x % 1000).as_bytes());
    }
    out.truncate(len);
    out
}

/// The pace may change the level from one block to the next: one stream mixing levels 0
/// (stored blocks) to 9, each block primed with the one before, decodes to the input.
#[test]
fn blocks_of_one_stream_may_differ_in_level() {
    let input = text(5 * 100_000 + 123);
    let blocks: Vec<&[u8]> = input.chunks(100_000).collect();
    let mut stream = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let start = i * 100_000;
        let dictionary = &input[start.saturating_sub(WINDOW)..start];
        let last = i + 1 == blocks.len();
        let level = Compression::new([0, 2, 0, 9, 1, 0][i]);
        stream.extend(deflate_block(block, dictionary, last, level).unwrap());
    }
    let mut decoded = Vec::new();
    flate2::read::DeflateDecoder::new(&stream[..]).read_to_end(&mut decoded).unwrap();
    assert!(decoded == input);
}

/// An output slower than compression keeps the configured level: the pace steps down only
/// when the workers are the ones behind.
#[test]
fn a_slow_output_keeps_the_configured_level() {
    struct Slow(Vec<u8>);
    impl Write for Slow {
        // About 20 MB/s: far slower than deflate.
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_micros(50 * (buf.len() as u64 / 1024 + 1)));
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    fs::create_dir_all(&data).unwrap();
    let content = text(24 * BLOCK_SIZE);
    fs::write(data.join("records.jsonl"), &content).unwrap();
    let plan = Plan::new(&data, &[]);
    let mut out = Slow(Vec::new());
    let opts = CreateOptions::default();
    run(&plan, plan.walk(), tmp.path(), &mut out, &opts, Zip64Limits::default(), &ProgressCounter::default()).unwrap();
    let mut zip = ZipArchive::new(Cursor::new(out.0)).unwrap();
    let entry = zip.by_name("records.jsonl").unwrap();
    assert_eq!(entry.compression(), CompressionMethod::Deflated);
    // Level 2 makes this text 0.22 of its size; level 0 and 1 blocks make it larger (0.47
    // with the pace reversed).
    let ratio = entry.compressed_size() as f64 / entry.size() as f64;
    assert!(ratio < 0.3, "compressed to {ratio:.2} of its size: the level dropped");
}

/// The writer tells the pace who was behind: blocks it had to wait for (handed over before
/// a worker finished them) step the level down; blocks already done step it back up; not
/// before PACE_AFTER.
#[test]
fn the_writer_steps_the_level_by_who_was_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(tmp.path(), &[]);
    let blocks = 12;
    // Writes `blocks` blocks of one deflated file; `late`: each result comes 20 ms after its
    // handle, so the writer waits for it. All handles are queued first: it never waits for
    // the reader. Returns the level the writer left for the workers.
    let level_after = |late: bool, start: u32, grace: Duration| {
        let (part_tx, part_rx) = mpsc::sync_channel::<Part>(blocks + 2);
        let start_part = Part::FileStart { name: "f".into(), mode: 0o644, modified: None, deflated: true, large: false };
        part_tx.send(start_part).unwrap();
        let mut replies = Vec::new();
        for _ in 0..blocks {
            let (reply, result) = mpsc::sync_channel(1);
            part_tx.send(Part::Block(result)).unwrap();
            replies.push(reply);
        }
        part_tx.send(Part::FileEnd).unwrap();
        drop(part_tx);
        let done = || {
            let mut crc = Crc::new();
            crc.update(b"x");
            Ok(DoneBlock { bytes: b"x".to_vec(), input_len: 1, crc, level: 0, compress: Duration::ZERO })
        };
        if !late {
            replies.iter().for_each(|reply| reply.send(done()).unwrap());
        }
        let block_level = AtomicU32::new(start);
        let mut pace = Pace::new(0, 2, 1);
        let nothing = BlockCost { level: 0, input: 0, output: 0, compress: Duration::ZERO, write: Duration::ZERO };
        while pace.level() > start {
            pace.observe(Behind::Workers, nothing);
        }
        std::thread::scope(|scope| {
            if late {
                scope.spawn(move || {
                    for reply in replies {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        let _ = reply.send(done());
                    }
                });
            }
            let zip = ZipOut::new(BufWriter::new(Cursor::new(Vec::new())), Zip64Limits::default(), tmp.path());
            let paced = Paced::new(pace, &block_level, grace);
            write_all(&plan, part_rx, zip, &ArchiveLimits::default(), &ProgressCounter::default(), paced).unwrap();
        });
        block_level.load(Ordering::Relaxed)
    };
    assert_eq!(level_after(true, 2, Duration::ZERO), 0, "compression behind: down to stored blocks");
    // Levels 1 and 2 not measured yet: tried.
    assert_eq!(level_after(false, 0, Duration::ZERO), 2, "output behind: back up to the configured level");
    // A create shorter than its grace keeps the level it started at.
    assert_eq!(level_after(true, 2, Duration::from_secs(3600)), 2, "the level moved within the grace");
}
