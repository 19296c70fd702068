//! Archive validation and extraction on arbitrary bytes: `validate`, `check_restorable`
//! and `extract` never panic, agree with each other, and extraction never creates anything
//! outside its destination (no file beside it, no link inside it).
//!
//! Each input gets a fresh folder (under /dev/shm when present, to keep fsyncs cheap):
//! `in.zip` and `outer/dest/`; afterwards the folder must hold exactly those.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pb_backups::archive::{check_restorable, extract, validate, ArchiveLimits};

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
    let limits = ArchiveLimits { max_total_size: 16 << 20, max_entries: 10_000, max_ratio: 1100 };
    let run = tempfile::tempdir_in(base()).unwrap();
    let archive = run.path().join("in.zip");
    std::fs::write(&archive, data).unwrap();
    let outer = run.path().join("outer");
    let dest = outer.join("dest");
    std::fs::create_dir_all(&dest).unwrap();

    let validated = validate(&archive, &limits);
    let restorable = check_restorable(&archive, &limits);
    let extracted = extract(&archive, &dest, &limits);

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
    assert_eq!(names(&outer), ["dest"], "something was written beside the destination");
    let mut inside = Vec::new();
    walk(&dest, &mut inside);
    for path in &inside {
        assert!(path.starts_with(&dest), "{} outside the destination", path.display());
    }
});
