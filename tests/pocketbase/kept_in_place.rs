//! The data dir's own names, side by side with PocketBase: `.pb_temp_to_delete`, `.notify`,
//! `.autocert_cache` (TLS private keys) and `lost+found` are left out of a backup by both,
//! and left in place by our restore whoever made the archive. PocketBase's restore keeps
//! three of them; `.notify` it takes from the archive (measured on 0.40.6, asserted below so
//! that a change there shows).

use std::collections::BTreeSet;
use std::io::{Cursor, Write};
use std::path::Path;

use super::*;

const KEPT: [&str; 4] = [".pb_temp_to_delete", ".notify", ".autocert_cache", "lost+found"];

/// Each kept name holds a file of the data dir's own; `extra/` is plain data.
fn add_own_files(dir: &Path) {
    for name in KEPT {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("own"), format!("the data dir's own {name}")).unwrap();
    }
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    std::fs::write(dir.join("extra/kept.txt"), "plain data").unwrap();
}

/// The first component of every entry name.
fn top_level(zip: &[u8]) -> BTreeSet<String> {
    let archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    archive.file_names().map(|n| n.unwrap().split('/').next().unwrap().to_string()).collect()
}

/// `zip` with a file of the archive's own under each kept name.
fn with_foreign_copies(zip: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new_append(Cursor::new(zip.to_vec())).unwrap();
    for name in KEPT {
        writer.start_file(format!("{name}/from-archive"), zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(b"the archive's copy").unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// What a restore left under the kept names: each one's files.
fn kept_files(dir: &Path) -> BTreeMap<String, Vec<String>> {
    KEPT.iter()
        .map(|name| {
            let mut files: Vec<String> = std::fs::read_dir(dir.join(name))
                .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            files.sort();
            (name.to_string(), files)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_s_own_names_stay_out_of_backups_and_in_place_as_pocketbase_keeps_them() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    PocketBase::superuser_upsert(&bin, &dir, PB_SUPERUSER);
    add_own_files(&dir);

    // Backups: PocketBase's and ours, of one data dir, leave out the same names.
    let pb = PocketBase::start(&bin, &dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    create_backup(&pb.base, &su, "theirs.zip").await;
    let theirs = download(&pb.base, &su, "theirs.zip").await;
    pb.stop();
    let ours = BinaryServer::start(&dir);
    let su = login(&ours.base, "_superusers", PB_SUPERUSER).await;
    create_backup(&ours.base, &su, "ours.zip").await;
    let mine = download(&ours.base, &su, "ours.zip").await;
    let (theirs_top, mine_top) = (top_level(&theirs), top_level(&mine));
    for name in KEPT {
        assert!(!theirs_top.contains(name), "PocketBase archived {name}: {theirs_top:?}");
    }
    assert!(theirs_top.contains("extra") && theirs_top.contains("data.db"), "{theirs_top:?}");
    let side_file = |n: &String| is_sqlite_side_file(n);
    let theirs_top: BTreeSet<_> = theirs_top.into_iter().filter(|n| !side_file(n)).collect();
    assert_eq!(mine_top, theirs_top, "ours leaves out what PocketBase leaves out, and only that");

    // Restores: an archive carrying its own copies of those names (as a hand-made or foreign
    // one may) restores here and there; both keep the data dir's and drop the archive's.
    // (PocketBase empties `.pb_temp_to_delete`, its trash, whenever it starts.)
    assert_eq!(kept_files(&dir)[".pb_temp_to_delete"], Vec::<String>::new());
    std::fs::write(dir.join(".pb_temp_to_delete/own"), "the data dir's own").unwrap();
    let own = kept_files(&dir);
    assert!(own.values().all(|files| files == &["own"]), "{own:?}");
    let crafted = with_foreign_copies(&theirs);
    std::fs::write(dir.join("extra/later.txt"), "made after the backup").unwrap();
    upload_and_restore(&ours.base, &su, "crafted.zip", crafted.clone()).await;
    // The same accounts log in before and after the restart: wait for the data instead.
    eventually(Duration::from_secs(60), "our restore replacing the data", || async {
        (!dir.join("extra/later.txt").exists()).then_some(())
    })
    .await;
    login_eventually(&ours.base, "_superusers", PB_SUPERUSER).await;
    assert_eq!(kept_files(&dir), own, "ours");
    drop(ours);

    let pb = PocketBase::start(&bin, &dir).await;
    let pb_su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let own = kept_files(&dir);
    std::fs::write(dir.join("extra/later.txt"), "made after the backup").unwrap();
    upload_and_restore(&pb.base, &pb_su, "crafted_there.zip", crafted).await;
    eventually(Duration::from_secs(60), "PocketBase's restore", || async {
        (!dir.join("extra/later.txt").exists()).then_some(())
    })
    .await;
    login_eventually(&pb.base, "_superusers", PB_SUPERUSER).await;
    let mut expected = own;
    expected.insert(".notify".to_string(), vec!["from-archive".to_string()]);
    assert_eq!(kept_files(&dir), expected, "PocketBase");
}
