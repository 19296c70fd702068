//! Backup keys and names: `BackupKey::parse` (request paths), `create_name` (create's
//! `name`) and `upload_key` (an upload's file name). Whatever they accept must be a single
//! plain file name that cannot leave the backups folder.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use pb_backups::model::names::{create_name, upload_key, BackupKey, NameError, MAX_KEY_LEN};

fn assert_is_a_key(key: &str, from: &str) {
    let n = key.chars().count();
    assert!((5..=MAX_KEY_LEN).contains(&n), "{from:?} -> {key:?}: length");
    assert!(key.ends_with(".zip") && !key.starts_with('.'), "{from:?} -> {key:?}");
    assert!(!key.chars().any(|c| c == '/' || c == '\\' || c.is_control()), "{from:?} -> {key:?}");
    // Joined to a folder it is one more normal component, never a way out.
    let mut components = Path::new(key).components();
    assert!(matches!(components.next(), Some(Component::Normal(c)) if c == key), "{from:?} -> {key:?}");
    assert!(components.next().is_none(), "{from:?} -> {key:?}");
    assert_eq!(BackupKey::parse(key).as_ref().map(BackupKey::as_str), Some(key), "{from:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };

    if let Some(key) = BackupKey::parse(s) {
        assert_eq!(key.as_str(), s);
        assert_is_a_key(key.as_str(), s);
    }

    match create_name(s) {
        Ok(key) => {
            assert_is_a_key(key.as_str(), s);
            let stem = key.as_str().strip_suffix(".zip").unwrap();
            assert!(stem.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
        }
        Err(NameError::TooLong) => assert!(s.chars().count() > MAX_KEY_LEN, "{s:?}"),
        Err(NameError::Invalid) => assert!(s.chars().count() <= MAX_KEY_LEN, "{s:?}"),
    }

    match upload_key(s) {
        Ok(key) => {
            assert_is_a_key(key.as_str(), s);
            assert!(s.ends_with(key.as_str()), "{s:?} -> {key}");
        }
        Err(NameError::TooLong) => {
            let base = s.rsplit(['/', '\\']).next().unwrap_or_default();
            assert!(base.chars().count() > MAX_KEY_LEN, "{s:?}");
        }
        Err(NameError::Invalid) => {}
    }
});
