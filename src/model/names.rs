//! Backup names and keys: which strings may name a stored backup, how the `name` of a create
//! request and the file name of an upload become a key, and how a name is generated when the
//! client gives none. A `BackupKey` is the only way a name reaches the storage, so a key that
//! could escape the backups folder cannot be built.

use std::fmt;

/// Longest key, in characters.
pub const MAX_KEY_LEN: usize = 150;

const ZIP_SUFFIX: &str = ".zip";

/// A string that could name a stored backup: a plain file name ending in `.zip` (R9).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupKey(String);

impl BackupKey {
    /// Checks a key taken from a request path (delete, restore, download). `None` means it can
    /// never name a backup; callers answer 404 without touching the filesystem.
    pub fn parse(key: &str) -> Option<BackupKey> {
        match check_key(key) {
            Ok(()) => Some(BackupKey(key.to_owned())),
            Err(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BackupKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a client-given name was refused (the `data.<field>.code` of the 400 answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name does not match the allowed pattern")]
    Invalid,
    #[error("the name is longer than {MAX_KEY_LEN} characters")]
    TooLong,
}

impl NameError {
    /// The validation code PocketBase clients expect.
    pub fn code(self) -> &'static str {
        match self {
            NameError::Invalid => "validation_match_invalid",
            NameError::TooLong => "validation_length_out_of_range",
        }
    }
}

/// The rules shared by path keys and upload keys; length is checked first so that an
/// over-long name reports `TooLong` whatever else is wrong with it.
fn check_key(key: &str) -> Result<(), NameError> {
    if key.chars().count() > MAX_KEY_LEN {
        return Err(NameError::TooLong);
    }
    let has_stem = key.len() > ZIP_SUFFIX.len() && key.ends_with(ZIP_SUFFIX);
    let safe_chars = !key
        .chars()
        .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control());
    if has_stem && safe_chars && !key.starts_with('.') {
        Ok(())
    } else {
        Err(NameError::Invalid)
    }
}

/// Validates the optional `name` of `POST /api/backups`: `^[a-z0-9_-]+\.zip$`, at most
/// `MAX_KEY_LEN` characters (R11). An empty or absent name means "generate one"; that choice
/// belongs to the caller, here `""` is simply invalid.
pub fn create_name(name: &str) -> Result<BackupKey, NameError> {
    if name.chars().count() > MAX_KEY_LEN {
        return Err(NameError::TooLong);
    }
    let stem = name.strip_suffix(ZIP_SUFFIX).ok_or(NameError::Invalid)?;
    let stem_ok = !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if stem_ok {
        Ok(BackupKey(name.to_owned()))
    } else {
        Err(NameError::Invalid)
    }
}

/// The key an uploaded file is stored under: the base name of the multipart file name (the
/// part after the last `/` or `\`), which must then be a valid key (R19).
pub fn upload_key(file_name: &str) -> Result<BackupKey, NameError> {
    let base = match file_name.rfind(['/', '\\']) {
        Some(i) => &file_name[i + 1..],
        None => file_name,
    };
    check_key(base)?;
    Ok(BackupKey(base.to_owned()))
}

/// `pb_backup_YYYYMMDDHHMMSS.zip` for `now` in UTC; when `taken` reports that name as used,
/// `_2`, `_3`, … is appended to the stem until a free one is found. `taken` must eventually
/// answer `false` (R12).
pub fn generated_name(now: time::OffsetDateTime, taken: impl Fn(&str) -> bool) -> BackupKey {
    let stem = format!("pb_backup_{}", utc_stamp(now));
    let mut name = format!("{stem}{ZIP_SUFFIX}");
    let mut n: u64 = 2;
    while taken(&name) {
        name = format!("{stem}_{n}{ZIP_SUFFIX}");
        n = n.saturating_add(1);
    }
    BackupKey(name)
}

/// Prefix of the keys of scheduled backups; only these are ever pruned.
pub const AUTO_PREFIX: &str = "@auto_pb_backup_";

/// `@auto_pb_backup_<snake_case(app_name), at most 50 bytes>_<UTC YYYYMMDDHHMMSS>.zip`,
/// the name PocketBase gives a scheduled backup. The create API cannot make one (its
/// pattern has no `@`), but every other operation takes it as a key.
pub fn auto_backup_key(app_name: &str, at: time::OffsetDateTime) -> BackupKey {
    let mut app = snake_case(app_name);
    let mut end = app.len().min(50);
    while !app.is_char_boundary(end) {
        end -= 1;
    }
    app.truncate(end);
    BackupKey(format!("{AUTO_PREFIX}{app}_{}{ZIP_SUFFIX}", utc_stamp(at)))
}

/// `YYYYMMDDHHMMSS` of `at` in UTC, as backup names carry it.
fn utc_stamp(at: time::OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// PocketBase's `inflector.Snakecase`: words split at anything but letters and digits,
/// joined by `_`, a `_` before an upper-case letter that follows a lower-case one, lower-cased.
fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for word in s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push('_');
        }
        let mut prev_upper = true;
        for c in word.chars() {
            if c.is_uppercase() && !prev_upper {
                out.push('_');
            }
            prev_upper = c.is_uppercase();
            out.push(c);
        }
    }
    out.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use time::macros::datetime;

    #[test]
    fn parse_accepts_plain_zip_names() {
        for key in [
            "a.zip",
            "pb_backup_20230519162514.zip",
            "My Backup (1).zip",
            "a..zip",
            "архив.zip",
        ] {
            assert_eq!(
                BackupKey::parse(key).map(BackupKey::into_string).as_deref(),
                Some(key)
            );
        }
    }

    #[test]
    fn parse_rejects_keys_that_cannot_be_backups() {
        let long = format!("{}.zip", "a".repeat(MAX_KEY_LEN - 3));
        for key in [
            "",
            ".zip",
            "zip",
            "a.ZIP",
            "a.zip.tmp",
            "..",
            ".",
            "../a.zip",
            "a/b.zip",
            "a\\b.zip",
            "a\0.zip",
            "a\n.zip",
            "a\u{7f}.zip",
            "a\u{85}.zip",
            ".hidden.zip",
            long.as_str(),
        ] {
            assert_eq!(BackupKey::parse(key), None, "{key:?}");
        }
    }

    #[test]
    fn length_limit_counts_chars_not_bytes() {
        let at_limit = format!("{}.zip", "я".repeat(MAX_KEY_LEN - 4));
        assert!(at_limit.len() > MAX_KEY_LEN);
        assert!(BackupKey::parse(&at_limit).is_some());
        let over = format!("я{at_limit}");
        assert!(BackupKey::parse(&over).is_none());
        assert_eq!(upload_key(&over), Err(NameError::TooLong));
    }

    #[test]
    fn create_name_follows_the_pattern() {
        assert_eq!(
            create_name("my_backup-1.zip").unwrap().as_str(),
            "my_backup-1.zip"
        );
        for bad in [
            "", ".zip", "My.zip", "a b.zip", "a.zip\n", "a.b.zip", "a/b.zip", "a.tar", "é.zip",
        ] {
            assert_eq!(create_name(bad), Err(NameError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn create_name_reports_length_before_pattern() {
        let ok = format!("{}.zip", "a".repeat(MAX_KEY_LEN - 4));
        assert!(create_name(&ok).is_ok());
        assert_eq!(create_name(&format!("a{ok}")), Err(NameError::TooLong));
        assert_eq!(
            create_name(&"A".repeat(MAX_KEY_LEN + 1)),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(NameError::Invalid.code(), "validation_match_invalid");
        assert_eq!(NameError::TooLong.code(), "validation_length_out_of_range");
    }

    #[test]
    fn upload_key_takes_the_base_name() {
        assert_eq!(upload_key("a.zip").unwrap().as_str(), "a.zip");
        assert_eq!(upload_key("/tmp/x/b.zip").unwrap().as_str(), "b.zip");
        assert_eq!(
            upload_key("C:\\Users\\me\\c.zip").unwrap().as_str(),
            "c.zip"
        );
        assert_eq!(upload_key("../../d.zip").unwrap().as_str(), "d.zip");
        assert_eq!(upload_key("mixed\\dir/e.zip").unwrap().as_str(), "e.zip");
    }

    #[test]
    fn upload_key_rejects_bad_base_names() {
        for bad in [
            "",
            "dir/",
            "a.txt",
            "x/.zip",
            "x/.secret.zip",
            "a\u{1}.zip",
            "..",
            "a.zip/",
        ] {
            assert_eq!(upload_key(bad), Err(NameError::Invalid), "{bad:?}");
        }
        // Only the base name counts toward the limit.
        let base = format!("{}.zip", "a".repeat(MAX_KEY_LEN - 4));
        assert!(upload_key(&format!("{}/{base}", "d".repeat(200))).is_ok());
    }

    #[test]
    fn generated_name_uses_utc() {
        let now = datetime!(2023-05-19 18:25:14 +02:00);
        assert_eq!(
            generated_name(now, |_| false).as_str(),
            "pb_backup_20230519162514.zip"
        );
        let padded = datetime!(2024-01-02 03:04:05 UTC);
        assert_eq!(
            generated_name(padded, |_| false).as_str(),
            "pb_backup_20240102030405.zip"
        );
    }

    #[test]
    fn generated_name_skips_taken_names() {
        let now = datetime!(2023-05-19 16:25:14 UTC);
        let taken: HashSet<&str> = [
            "pb_backup_20230519162514.zip",
            "pb_backup_20230519162514_2.zip",
        ]
        .into();
        let key = generated_name(now, |name| taken.contains(name));
        assert_eq!(key.as_str(), "pb_backup_20230519162514_3.zip");
        assert_eq!(key.to_string(), key.as_str());
    }

    fn assert_key_rules(key: &str) {
        let n = key.chars().count();
        assert!((5..=MAX_KEY_LEN).contains(&n), "{key:?}");
        assert!(key.ends_with(".zip") && !key.starts_with('.'), "{key:?}");
        assert!(
            !key.chars().any(|c| c == '/' || c == '\\' || c.is_control()),
            "{key:?}"
        );
    }

    /// Strings biased toward the interesting characters, so that both outcomes occur often.
    fn key_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("a".to_owned()),
            Just(".".to_owned()),
            Just("/".to_owned()),
            Just("\\".to_owned()),
            Just("\0".to_owned()),
            Just("\n".to_owned()),
            Just(".zip".to_owned()),
            Just("я".to_owned()),
            Just("_".to_owned()),
            Just("Z".to_owned()),
            "\\PC{0,40}",
        ];
        (prop::collection::vec(piece, 0..8), any::<bool>())
            .prop_map(|(parts, zip)| parts.concat() + if zip { ".zip" } else { "" })
    }

    proptest! {
        #[test]
        fn parsed_keys_satisfy_the_rules(s in key_like()) {
            if let Some(key) = BackupKey::parse(&s) {
                assert_key_rules(key.as_str());
                prop_assert_eq!(key.as_str(), s.as_str());
            }
        }

        #[test]
        fn create_names_are_keys(s in prop_oneof!["[a-z0-9_-]{0,160}\\.zip", "[a-z0-9_.A-]{0,20}"]) {
            if let Ok(key) = create_name(&s) {
                prop_assert_eq!(BackupKey::parse(key.as_str()), Some(key.clone()));
                assert_key_rules(key.as_str());
            }
        }

        #[test]
        fn upload_keys_have_no_separator(s in key_like()) {
            match upload_key(&s) {
                Ok(key) => {
                    assert_key_rules(key.as_str());
                    prop_assert!(s.ends_with(key.as_str()));
                }
                Err(NameError::TooLong) => {
                    let base = s.rsplit(['/', '\\']).next().unwrap_or_default();
                    prop_assert!(base.chars().count() > MAX_KEY_LEN);
                }
                Err(NameError::Invalid) => {}
            }
        }

        #[test]
        fn generated_names_are_valid_create_names(secs in -200_000_000_000i64..250_000_000_000, taken in 0usize..12) {
            let now = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let asked = std::cell::Cell::new(0usize);
            let key = generated_name(now, |_| {
                asked.set(asked.get() + 1);
                asked.get() <= taken
            });
            prop_assert!(create_name(key.as_str()).is_ok(), "{}", key);
            prop_assert_eq!(asked.get(), taken + 1);
        }
    }
    #[test]
    fn auto_backup_keys_are_keys_but_never_create_names() {
        let at = time::macros::datetime!(2026-11-27 07:05:09 UTC);
        let key = auto_backup_key("My App Name", at);
        assert_eq!(key.as_str(), "@auto_pb_backup_my_app_name_20261127070509.zip");
        assert_eq!(BackupKey::parse(key.as_str()), Some(key.clone()));
        assert_eq!(create_name(key.as_str()), Err(NameError::Invalid));
        assert_eq!(upload_key(key.as_str()), Ok(key));
        assert_eq!(auto_backup_key("pb-backups", at).as_str(), "@auto_pb_backup_pb_backups_20261127070509.zip");
        assert_eq!(auto_backup_key("", at).as_str(), "@auto_pb_backup__20261127070509.zip");
    }

    #[test]
    fn auto_backup_app_names_are_snake_case_cut_at_50_bytes() {
        assert_eq!(snake_case("PocketBase"), "pocket_base");
        assert_eq!(snake_case("HTTPServer  v2!"), "httpserver_v2");
        assert_eq!(snake_case("Acme.io/Backups"), "acme_io_backups");
        let at = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let long = auto_backup_key(&"x".repeat(80), at);
        assert_eq!(long.as_str(), format!("{AUTO_PREFIX}{}_20260102030405.zip", "x".repeat(50)));
        // A cut never splits a character.
        let wide = auto_backup_key(&"é".repeat(40), at);
        assert_eq!(wide.as_str(), format!("{AUTO_PREFIX}{}_20260102030405.zip", "é".repeat(25)));
    }
}
