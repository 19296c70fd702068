//! Unit tests of the journaled swap, its rollback and its recovery at start.

use super::*;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};

/// Every path under the data dir except the temp folder: `None` for a folder, else contents.
type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

fn snapshot(dir: &DataDir) -> Tree {
    fn walk(base: &Path, folder: &Path, skip: &Path, tree: &mut Tree) {
        for entry in fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let rel = path.strip_prefix(base).unwrap().to_path_buf();
            if path.is_dir() {
                tree.insert(rel, None);
                walk(base, &path, skip, tree);
            } else {
                tree.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut tree = Tree::new();
    walk(&dir.root, &dir.root, &dir.temp(), &mut tree);
    tree
}

fn write(path: &Path, contents: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// Old data: 4 non-reserved entries (plus backups/ and a stale upload in the temp folder).
/// Backup: 3 entries, one name shared with the old data, one new, one folder merged by name.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: DataDir,
    extracted: PathBuf,
    old_tree: Tree,
    new_tree: Tree,
}

const OLD_ENTRIES: usize = 4;
const NEW_ENTRIES: usize = 3;

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("pb_data"));
    let root = dir.root.clone();
    write(&root.join("data.db"), b"old db");
    write(&root.join("auxiliary.db"), b"old aux");
    write(&root.join("only-old.txt"), b"gone after restore");
    write(&root.join("storage/a/1.bin"), b"old file 1");
    write(&root.join("storage/b.bin"), b"old file b");
    write(&root.join("backups/kept.zip"), b"PK backup");
    write(&dir.temp().join("upload-123.part"), b"partial upload");
    let old_tree = snapshot(&dir);

    let extracted = dir.temp().join("extract-1");
    write(&extracted.join("data.db"), b"new db");
    write(&extracted.join("storage/c.bin"), b"new file c");
    write(&extracted.join("only-new/x.txt"), b"new only");
    let mut new_tree = Tree::new();
    for (path, contents) in [
        ("data.db", Some(&b"new db"[..])),
        ("storage", None),
        ("storage/c.bin", Some(b"new file c")),
        ("only-new", None),
        ("only-new/x.txt", Some(b"new only")),
        ("backups", None),
        ("backups/kept.zip", Some(b"PK backup")),
    ] {
        new_tree.insert(path.into(), contents.map(<[u8]>::to_vec));
    }
    Fixture {
        _tmp: tmp,
        dir,
        extracted,
        old_tree,
        new_tree,
    }
}

/// The temp folder's entries, except garbage being deleted in the background.
fn temp_names(dir: &DataDir) -> Vec<OsString> {
    let mut names: Vec<_> = fs::read_dir(dir.temp())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with(TRASH_PREFIX))
        .collect();
    names.sort();
    names
}

/// Runs `f`, treating a panic as the process dying at that point.
fn crash_in(f: impl FnOnce()) {
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    assert!(result.is_err(), "the simulated crash did not happen");
}

#[test]
fn happy_path_swaps_then_commits() {
    let fx = fixture();
    let pending = swap_in(&fx.dir, &fx.extracted).unwrap();
    assert_eq!(
        pending,
        PendingRestore {
            old_entries: OLD_ENTRIES,
            new_entries: NEW_ENTRIES
        }
    );
    assert_eq!(snapshot(&fx.dir), fx.new_tree);
    assert!(!fx.extracted.exists());

    // The restarted server finds the swap done and the stale upload gone.
    assert_eq!(recover_at_start(&fx.dir).unwrap(), Recovery::PendingCommit);
    assert_eq!(temp_names(&fx.dir), vec![OsString::from(JOURNAL_DIR)]);
    commit(&fx.dir).unwrap();
    assert_eq!(snapshot(&fx.dir), fx.new_tree);
    assert!(temp_names(&fx.dir).is_empty());
    assert_eq!(recover_at_start(&fx.dir).unwrap(), Recovery::None);
    assert!(matches!(commit(&fx.dir), Err(RestoreError::NotPending(_))));
}

#[test]
fn failed_start_of_new_data_rolls_back() {
    let fx = fixture();
    let _ = swap_in(&fx.dir, &fx.extracted).unwrap();
    // The new server ran a little: it left files of its own beside the restored ones.
    write(&fx.dir.root.join("data.db-wal"), b"new wal");
    write(&fx.dir.root.join("auxiliary.db"), b"new aux");
    assert_eq!(recover_at_start(&fx.dir).unwrap(), Recovery::PendingCommit);
    rollback(&fx.dir).unwrap();
    assert_eq!(snapshot(&fx.dir), fx.old_tree);
    assert!(temp_names(&fx.dir).is_empty());
}

#[test]
fn failure_after_every_rename_rolls_back_at_once() {
    for k in 0..=OLD_ENTRIES + NEW_ENTRIES {
        let fx = fixture();
        let result = swap_in_with(&fx.dir, &fx.extracted, &mut |done| {
            if done == k {
                Err(RestoreError::Injected)
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(RestoreError::Injected)), "k = {k}");
        assert_eq!(snapshot(&fx.dir), fx.old_tree, "k = {k}");
        assert!(!fx.dir.journal_dir().exists(), "k = {k}");
    }
}

#[test]
fn crash_after_every_rename_rolls_back_at_start() {
    for k in 0..=OLD_ENTRIES + NEW_ENTRIES {
        let fx = fixture();
        crash_in(|| {
            let _ = swap_in_with(&fx.dir, &fx.extracted, &mut |done| {
                assert_ne!(done, k, "simulated crash");
                Ok(())
            });
        });
        assert_eq!(
            recover_at_start(&fx.dir).unwrap(),
            Recovery::RolledBack,
            "k = {k}"
        );
        assert_eq!(snapshot(&fx.dir), fx.old_tree, "k = {k}");
        assert!(temp_names(&fx.dir).is_empty(), "k = {k}");
    }
}

#[test]
fn crash_during_rollback_is_finished_at_start() {
    // Crash mid-swap after the first new entry, then crash again at every step of rollback.
    let crash_at = OLD_ENTRIES + 1;
    // Rollback moves 1 backup entry to discard/, then the 4 old entries back.
    for j in 1..=1 + OLD_ENTRIES {
        let fx = fixture();
        crash_in(|| {
            let _ = swap_in_with(&fx.dir, &fx.extracted, &mut |done| {
                assert_ne!(done, crash_at, "simulated crash");
                Ok(())
            });
        });
        crash_in(|| {
            let _ = rollback_with(&fx.dir, &mut |done| {
                assert_ne!(done, j, "simulated crash");
                Ok(())
            });
        });
        assert_eq!(
            recover_at_start(&fx.dir).unwrap(),
            Recovery::RolledBack,
            "j = {j}"
        );
        assert_eq!(snapshot(&fx.dir), fx.old_tree, "j = {j}");
    }
}

#[test]
fn crash_during_rollback_of_a_finished_swap_resumes_the_rollback() {
    // The swap finished, then the new data failed to open: rollback moves the 3 backup
    // entries to discard/, then the 4 old ones back. Killed after any of those renames, the
    // data dir is part old, part new: the next start must roll back, never commit.
    for j in 1..=NEW_ENTRIES + OLD_ENTRIES {
        let fx = fixture();
        let _ = swap_in(&fx.dir, &fx.extracted).unwrap();
        crash_in(|| {
            let _ = rollback_with(&fx.dir, &mut |done| {
                assert_ne!(done, j, "simulated crash");
                Ok(())
            });
        });
        assert!(
            matches!(commit(&fx.dir), Err(RestoreError::NotSwapped(_))),
            "j = {j}"
        );
        assert_eq!(
            recover_at_start(&fx.dir).unwrap(),
            Recovery::RolledBack,
            "j = {j}"
        );
        assert_eq!(snapshot(&fx.dir), fx.old_tree, "j = {j}");
        assert!(temp_names(&fx.dir).is_empty(), "j = {j}");
    }
}

#[test]
fn crash_before_journal_leaves_data_alone() {
    let fx = fixture();
    // What a crash between moving the extracted tree and writing the journal leaves.
    fs::create_dir_all(fx.dir.journal_dir()).unwrap();
    fs::rename(&fx.extracted, fx.dir.journal_dir().join(NEW_DIR)).unwrap();
    assert_eq!(recover_at_start(&fx.dir).unwrap(), Recovery::None);
    assert_eq!(snapshot(&fx.dir), fx.old_tree);
    assert!(temp_names(&fx.dir).is_empty());
}

#[test]
fn second_swap_is_refused_while_one_is_pending() {
    let fx = fixture();
    let _ = swap_in(&fx.dir, &fx.extracted).unwrap();
    let other = fx.dir.temp().join("extract-2");
    write(&other.join("data.db"), b"other db");
    assert!(matches!(
        swap_in(&fx.dir, &other),
        Err(RestoreError::AlreadyPending(_))
    ));
    assert_eq!(snapshot(&fx.dir), fx.new_tree);
}

#[test]
fn commit_is_refused_mid_swap() {
    let fx = fixture();
    crash_in(|| {
        let _ = swap_in_with(&fx.dir, &fx.extracted, &mut |done| {
            assert_ne!(done, 2, "simulated crash");
            Ok(())
        });
    });
    assert!(matches!(commit(&fx.dir), Err(RestoreError::NotSwapped(_))));
    rollback(&fx.dir).unwrap();
    assert_eq!(snapshot(&fx.dir), fx.old_tree);
}

#[test]
fn reserved_names_in_the_backup_are_not_swapped_in() {
    let fx = fixture();
    write(&fx.extracted.join("backups/evil.zip"), b"from archive");
    write(&fx.extracted.join(TEMP_DIR).join("x"), b"from archive");
    let pending = swap_in(&fx.dir, &fx.extracted).unwrap();
    assert_eq!(pending.new_entries, NEW_ENTRIES);
    assert_eq!(snapshot(&fx.dir), fx.new_tree);
    commit(&fx.dir).unwrap();
    assert_eq!(snapshot(&fx.dir), fx.new_tree);
}

#[test]
fn non_utf8_names_survive_the_journal() {
    let fx = fixture();
    let odd = OsString::from_vec(vec![b'f', 0xff, b'.', b'b']);
    write(&fx.dir.root.join(&odd), b"odd");
    let old_tree = snapshot(&fx.dir);
    crash_in(|| {
        let _ = swap_in_with(&fx.dir, &fx.extracted, &mut |done| {
            // One more old entry than usual, then one new entry.
            assert_ne!(done, OLD_ENTRIES + 1 + 1, "simulated crash");
            Ok(())
        });
    });
    assert_eq!(recover_at_start(&fx.dir).unwrap(), Recovery::RolledBack);
    assert_eq!(snapshot(&fx.dir), old_tree);
}

#[test]
fn corrupt_journal_is_an_error_not_a_guess() {
    let fx = fixture();
    let _ = swap_in(&fx.dir, &fx.extracted).unwrap();
    fs::write(fx.dir.journal_file(), b"{\"phase\":").unwrap();
    assert!(matches!(
        recover_at_start(&fx.dir),
        Err(RestoreError::BadJournal { .. })
    ));
}

#[test]
fn reserved_names_must_be_plain() {
    for (backups, temp) in [("", ".t"), ("b", ".."), ("a/b", ".t"), ("same", "same")] {
        assert!(
            DataDir::with_reserved("/x", backups, temp).is_err(),
            "{backups:?} {temp:?}"
        );
    }
    let dir = DataDir::with_reserved("/x", "bk", "tmp").unwrap();
    assert!(dir.is_reserved(OsStr::new("bk")) && dir.is_reserved(OsStr::new("tmp")));
    assert!(!dir.is_reserved(OsStr::new(BACKUPS_DIR)));
}

/// PocketBase's own names (and our lock) stay where they are through a swap, a commit and a
/// rollback, and an archive's copies of them never come in.
#[test]
fn names_kept_in_place_are_never_moved() {
    let fx = fixture();
    for name in KEPT_IN_PLACE {
        write(&fx.dir.root.join(name).join("own"), name.as_bytes());
        write(&fx.extracted.join(name).join("from-archive"), b"from archive");
    }
    let kept = |tree: &Tree| -> Tree {
        tree.iter().filter(|(path, _)| KEPT_IN_PLACE.iter().any(|k| path.starts_with(k))).map(|(p, c)| (p.clone(), c.clone())).collect()
    };
    let own = kept(&snapshot(&fx.dir));
    assert_eq!(own.len(), 2 * KEPT_IN_PLACE.len(), "{own:?}");
    let pending = swap_in(&fx.dir, &fx.extracted).unwrap();
    assert_eq!(pending.new_entries, NEW_ENTRIES);
    assert_eq!(kept(&snapshot(&fx.dir)), own);
    rollback(&fx.dir).unwrap();
    assert_eq!(kept(&snapshot(&fx.dir)), own);

    let fx = fixture();
    for name in KEPT_IN_PLACE {
        write(&fx.dir.root.join(name).join("own"), name.as_bytes());
        write(&fx.extracted.join(name).join("from-archive"), b"from archive");
    }
    let _ = swap_in(&fx.dir, &fx.extracted).unwrap();
    commit(&fx.dir).unwrap();
    let after = snapshot(&fx.dir);
    assert_eq!(kept(&after), own);
    let data: Tree = after.into_iter().filter(|(path, _)| !KEPT_IN_PLACE.iter().any(|k| path.starts_with(k))).collect();
    assert_eq!(data, fx.new_tree);
}
