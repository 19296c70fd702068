//! `pb-backups backups list | create | restore | delete | verify` with the server stopped: a
//! create/restore round trip, the API's name rules, the archive limits a server takes, and
//! refusal while a server holds the dir.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn backups(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pb-backups"))
        .arg("backups")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .output()
        .expect("run pb-backups")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = backups(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn offline_create_and_restore_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let note = dir.join("storage").join("note.txt");
    std::fs::create_dir_all(note.parent().unwrap()).unwrap();
    std::fs::write(&note, "before").unwrap();

    assert!(ok(&dir, &["create", "first.zip"]).contains("created first.zip"));
    let generated = ok(&dir, &["create"]);
    let generated = generated.trim().strip_prefix("created ").unwrap().split(' ').next().unwrap().to_string();
    assert!(generated.starts_with("pb_backup_") && generated.ends_with(".zip"), "{generated}");
    let listed = ok(&dir, &["list"]);
    assert!(listed.contains("first.zip\t") && listed.contains(&format!("{generated}\t")), "{listed}");

    // The API's rules: bad and taken names are refused, nothing is made.
    for (args, says) in [(["create", "Bad Name.zip"], "invalid name"), (["create", "first.zip"], "exists")] {
        let out = backups(&dir, &args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }

    // Changes after the backup are undone by its restore; the backups stay.
    std::fs::write(&note, "after").unwrap();
    std::fs::write(dir.join("storage").join("new.txt"), "made later").unwrap();
    // Enough old data that deleting it takes a while: the command must not exit before.
    let later = dir.join("storage").join("later");
    std::fs::create_dir_all(&later).unwrap();
    for i in 0..3000 {
        std::fs::write(later.join(i.to_string()), "x").unwrap();
    }
    assert!(ok(&dir, &["restore", "first.zip"]).contains("restored first.zip"));
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "before");
    let temp = dir.join(pb_backups::layout::TEMP_DIR);
    let left: Vec<_> = std::fs::read_dir(&temp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the replaced data is left in {}: {left:?}", temp.display());
    assert!(!dir.join("storage").join("new.txt").exists());
    assert!(ok(&dir, &["list"]).contains("first.zip\t"));
    // The restored data serves: its superuser logs in.
    let server = BinaryServer::start(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(login(&reqwest::Client::new(), &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1));
    drop(server);

    assert!(ok(&dir, &["delete", "first.zip"]).contains("deleted first.zip"));
    for args in [["delete", "first.zip"], ["restore", "first.zip"]] {
        let out = backups(&dir, &args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("404"), "{}", text(&out));
    }
}

/// `--max-archive-entries` and `--max-archive-size` hold the offline commands as they hold a
/// server: no backup made past the entry cap, none restored or passed past either limit.
#[test]
fn offline_commands_keep_the_archive_limits() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    std::fs::create_dir_all(dir.join("storage/a")).unwrap();
    for name in ["1", "2", "3"] {
        std::fs::write(dir.join("storage/a").join(name), "x".repeat(1000)).unwrap();
    }
    let out = backups(&dir, &["create", "few.zip", "--max-archive-entries", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("entries"), "{}", text(&out));
    assert!(!ok(&dir, &["list"]).contains("few.zip"), "nothing made");

    ok(&dir, &["create", "all.zip"]);
    for (flags, says) in [
        (["--max-archive-entries", "3"], "more than the 3 allowed"),
        (["--max-archive-size", "2000"], "uncompressed size exceeds the limit"),
    ] {
        for command in ["restore", "verify"] {
            let out = backups(&dir, &[&[command, "all.zip"][..], &flags].concat());
            assert_eq!(out.status.code(), Some(1), "{command} {flags:?}: {}", text(&out));
            assert!(text(&out).contains(says), "{command} {flags:?}: {}", text(&out));
        }
    }
    assert!(ok(&dir, &["verify", "all.zip"]).contains("ok   all.zip"));
}

#[test]
fn offline_commands_are_refused_while_a_server_holds_the_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    for args in [&["list"][..], &["create", "x.zip"], &["restore", "x.zip"], &["delete", "x.zip"]] {
        let out = backups(&dir, args);
        assert!(!out.status.success(), "{args:?} ran beside a server: {}", text(&out));
        assert!(text(&out).contains(&server.pid().to_string()), "{args:?}: names the holder: {}", text(&out));
    }
    assert!(!dir.join("backups").join("x.zip").exists());
    // Verify only reads: it runs beside the server (and finds no such backup).
    let out = Command::new(env!("CARGO_BIN_EXE_pb-backups")).args(["backups", "verify", "x.zip", "--dir"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("404"), "{}", text(&out));
}
