//! Archive validation and extraction on arbitrary bytes: `validate`, `check_restorable`,
//! `extract`, the check that writes only data.db and `read_declared` (the central
//! directory alone) never panic, agree with each other, and extraction never creates
//! anything outside its destination (no file beside it, no link inside it).
//!
//! Each input gets a fresh folder (under /dev/shm when present, to keep fsyncs cheap):
//! `in.zip`, `outer/dest/` and `outer/db/`; afterwards the folder must hold exactly those.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pb_backups::archive::{check_restorable, extract, extract_restorable, read_declared, validate, ArchiveLimits, Output};
use pb_backups::progress::ProgressCounter;

fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap()
    })
    .path()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every path under `dir`, checking that each is a plain file or a real directory.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let md = path.symlink_metadata().unwrap();
        assert!(md.is_file() || md.is_dir(), "{} is neither file nor directory", path.display());
        out.push(path.clone());
        if md.is_dir() {
            walk(&path, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Small limits: a few KiB of input must not be able to fill the disk.
    let limits = ArchiveLimits { max_total_size: 16 << 20, max_entries: 10_000, ..ArchiveLimits::default() };
    let run = tempfile::tempdir_in(base()).unwrap();
    let archive = run.path().join("in.zip");
    std::fs::write(&archive, data).unwrap();
    let outer = run.path().join("outer");
    let dest = outer.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let db_only = outer.join("db");
    std::fs::create_dir_all(&db_only).unwrap();

    let validated = validate(&archive, &limits);
    let restorable = check_restorable(&archive, &limits);
    let extracted = extract(&archive, &dest, &limits);
    let checked = extract_restorable(&archive, &db_only, &limits, Output::DataDbOnly, &ProgressCounter::default());
    let declared = read_declared(&std::fs::File::open(&archive).unwrap(), &limits);

    if let Ok(summary) = &validated {
        let declared = declared.as_ref().expect("a valid archive's directory reads alone");
        assert_eq!((declared.entries, declared.total_size), (summary.entries as u64, summary.total_size));
    }
    // Both decode every entry: the one that writes only data.db agrees with the other.
    if checked.is_ok() {
        assert!(restorable.is_ok() && extracted.is_ok(), "only the data.db check passed");
        assert_eq!(names(&db_only), ["data.db"]);
    } else if restorable.is_ok() {
        assert!(extracted.is_err(), "the data.db check failed alone: {:?}", checked);
    }

    if let Ok(summary) = &restorable {
        assert!(summary.has_data_db);
        assert_eq!(validated.as_ref().ok(), Some(summary));
    }
    if extracted.is_ok() {
        assert!(validated.is_ok(), "extracted what validation refuses");
    }
    if validated.is_err() {
        assert!(extracted.is_err() && restorable.is_err());
    }

    assert_eq!(names(run.path()), ["in.zip", "outer"], "something was written beside the archive");
    assert_eq!(names(&outer), ["db", "dest"], "something was written beside the destinations");
    let mut inside = Vec::new();
    walk(&dest, &mut inside);
    for path in &inside {
        assert!(path.starts_with(&dest), "{} outside the destination", path.display());
    }
});
