//! The two ways an archive is checked and extracted, held to each other: in walk order, a
//! record at a time (`in_order`), and from the compact list (`check`). The first accepts
//! only what the second accepts, with the same summary, and extracts the same tree; every
//! good archive in walk order takes it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::check::check_entries;
use super::dirs::name_order;
use super::extract::extract_checked;
use super::{in_order, Checked, Output};
use crate::archive::create::create_backup_with;
use crate::archive::zip_writer::Zip64Limits;
use crate::archive::{ArchiveLimits, CreateOptions};
use crate::progress::ProgressCounter;

/// (name, content); a name ending in '/' is a folder.
type Spec = (String, Vec<u8>);

fn zip(entries: &[Spec]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (i, (name, content)) in entries.iter().enumerate() {
        let method = if i % 2 == 0 { CompressionMethod::Deflated } else { CompressionMethod::Stored };
        let options = SimpleFileOptions::default().compression_method(method);
        match name.strip_suffix('/') {
            Some(dir) => zip.add_directory(dir, options.unix_permissions(0o750)).unwrap(),
            None => {
                zip.start_file(name.as_str(), options.unix_permissions(0o640)).unwrap();
                zip.write_all(content).unwrap();
            }
        }
    }
    zip.finish().unwrap().into_inner()
}

/// Every file and folder under `root`: content (None for a folder) and permission bits.
fn tree(root: &Path) -> BTreeMap<String, (Option<Vec<u8>>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for child in fs::read_dir(&dir).unwrap() {
            let path = child.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                out.insert(rel, (None, mode));
                stack.push(path);
            } else {
                out.insert(rel, (Some(fs::read(&path).unwrap()), mode));
            }
        }
    }
    out
}

/// Extracts `archive` both ways (when it is in walk order) into fresh folders under `root`
/// and compares the trees; returns whether it was in walk order.
fn both_ways_alike(archive: &Path, root: &Path) -> bool {
    let limits = ArchiveLimits::default();
    let file = File::open(archive).unwrap();
    let listed = check_entries(&file, &limits);
    let Some(flat) = in_order::check(&file, &limits) else {
        return false;
    };
    let listed = listed.expect("what the walk-order path accepts, the compact list accepts");
    let mut listed_summary = listed.summary.clone();
    listed_summary.in_walk_order = true;
    assert_eq!(flat.summary, listed_summary);
    assert_eq!(flat.data_db.as_ref().map(|(p, _)| *p), listed.data_db);

    let (a, b) = (root.join("flat"), root.join("listed"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let progress = ProgressCounter::default();
    extract_checked(&file, Checked::InOrder(flat), &a, &limits, Output::Everything, &progress).unwrap();
    extract_checked(&file, Checked::Listed(listed), &b, &limits, Output::Everything, &progress).unwrap();
    assert_eq!(tree(&a), tree(&b));
    true
}

fn names() -> impl Strategy<Value = Spec> {
    let component = prop::sample::select(vec!["a", "b", "a.b", "a-b", "B", "data.db"]);
    (prop::collection::vec(component, 1..=3), any::<bool>(), prop::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(parts, dir, content)| {
            let name = parts.join("/");
            if dir {
                (name + "/", Vec::new())
            } else {
                (name, content)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Archives of a few names that often collide (a file and a folder of one name, a file
    /// inside a file, the same name twice): as generated, in walk order, or in walk order
    /// but for the top-level files, listed first as PocketBase lists its databases.
    #[test]
    fn the_walk_order_path_accepts_only_what_the_list_accepts(
        mut entries in prop::collection::vec(names(), 0..10),
        order in 0..3u8,
    ) {
        // The zip crate refuses to write one name twice.
        let mut seen = std::collections::HashSet::new();
        entries.retain(|(name, _)| seen.insert(name.clone()));
        let top_level_file = |name: &str| !name.contains('/');
        let sorted = order > 0;
        if sorted {
            entries.sort_by(|(a, _), (b, _)| {
                let key = |n: &str| (order == 2 && !top_level_file(n), n.strip_suffix('/').unwrap_or(n).to_owned());
                let ((a_late, a), (b_late, b)) = (key(a), key(b));
                a_late.cmp(&b_late).then_with(|| if order == 2 && !a_late { std::cmp::Ordering::Equal } else { name_order(&a, &b) })
            });
        }
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("a.zip");
        fs::write(&archive, zip(&entries)).unwrap();
        let in_order = both_ways_alike(&archive, tmp.path());
        let good = check_entries(&File::open(&archive).unwrap(), &ArchiveLimits::default()).is_ok();
        if sorted && good {
            prop_assert!(in_order, "a good archive in walk order took the list: {entries:?}");
        }
    }
}

/// Our own backups are in walk order: a data dir with nested and empty folders, names
/// that sort differently bytewise and by component ("a-b", "a/…", "a.b"), and a database.
#[test]
fn our_backups_are_read_in_walk_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for dir in ["a/x", "a-b", "a.b/y/z", "empty", "storage/c1/r1"] {
        fs::create_dir_all(data.join(dir)).unwrap();
    }
    for file in ["a/x/1", "a/2", "a-b/3", "a.b/y/z/4", "a0", "storage/c1/r1/f.png", "zz"] {
        fs::write(data.join(file), file.repeat(50)).unwrap();
    }
    rusqlite::Connection::open(data.join("data.db")).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    let archive = tmp.path().join("backup.zip");
    let out = File::create(&archive).unwrap();
    create_backup_with(&data, &[], tmp.path(), out, &CreateOptions::default(), Zip64Limits::default(), &Default::default())
        .unwrap();
    assert!(both_ways_alike(&archive, tmp.path()), "our backup was not in walk order");
}

/// The same entries listed out of walk order take the list, and extract alike.
#[test]
fn an_archive_out_of_walk_order_is_read_into_the_list() {
    let entries: Vec<Spec> = ["b/1", "a/2", "a/", "data.db"].iter().map(|n| (n.to_string(), n.as_bytes().to_vec())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.zip");
    fs::write(&archive, zip(&entries)).unwrap();
    assert!(!both_ways_alike(&archive, tmp.path()));
    let summary = super::validate(&archive, &ArchiveLimits::default()).unwrap();
    assert!(!summary.in_walk_order && summary.has_data_db && summary.entries == 4, "{summary:?}");
    let dest = tmp.path().join("out");
    fs::create_dir(&dest).unwrap();
    super::extract(&archive, &dest, &ArchiveLimits::default()).unwrap();
    assert_eq!(fs::read(dest.join("a/2")).unwrap(), b"a/2");
}
