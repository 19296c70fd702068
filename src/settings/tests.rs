//! Unit tests of the settings row: read, validated and changed on a real `data.db`.

use std::net::IpAddr;

use super::*;

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::accounts::Accounts::open(dir.path()).unwrap();
    dir
}

fn patch(cron: &str, keep: i64) -> BackupsPatch {
    BackupsPatch { cron: Some(cron.into()), cron_max_keep: Some(keep) }
}

#[test]
fn a_new_data_dir_has_backups_off() {
    let dir = data_dir();
    let s = load(dir.path()).unwrap();
    assert_eq!(s.backups, BackupsSettings { cron: String::new(), cron_max_keep: 3 });
    assert_eq!(s.app_name, "pb-backups");
}

#[test]
fn an_update_keeps_every_other_key_of_the_row() {
    let dir = data_dir();
    let conn = open(dir.path()).unwrap();
    let mut before = row(&conn).unwrap();
    before["backups"]["s3"]["bucket"] = json!("kept");
    before["custom"] = json!({"x": [1, 2]});
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [before.to_string()]).unwrap();

    let s = update_backups(dir.path(), &patch("0 3 * * *", 7)).unwrap();
    assert_eq!(s.backups, BackupsSettings { cron: "0 3 * * *".into(), cron_max_keep: 7 });
    let mut after = row(&conn).unwrap();
    assert_eq!(after["backups"]["cron"], "0 3 * * *");
    assert_eq!(after["backups"]["cronMaxKeep"], 7);
    after["backups"]["cron"] = before["backups"]["cron"].clone();
    after["backups"]["cronMaxKeep"] = before["backups"]["cronMaxKeep"].clone();
    assert_eq!(after, before);
}

#[test]
fn a_row_pocketbase_wrote_as_a_blob_is_read() {
    let dir = data_dir();
    let conn = open(dir.path()).unwrap();
    let mut value = row(&conn).unwrap();
    value["backups"]["cron"] = json!("@weekly");
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [value.to_string().into_bytes()]).unwrap();
    assert_eq!(load(dir.path()).unwrap().backups.cron, "@weekly");
    let s = update_backups(dir.path(), &BackupsPatch { cron: None, cron_max_keep: Some(4) }).unwrap();
    assert_eq!(s.backups, BackupsSettings { cron: "@weekly".into(), cron_max_keep: 4 });
}

#[test]
fn a_partial_patch_keeps_the_other_field() {
    let dir = data_dir();
    update_backups(dir.path(), &patch("@daily", 5)).unwrap();
    let s = update_backups(dir.path(), &BackupsPatch { cron: Some("@hourly".into()), cron_max_keep: None }).unwrap();
    assert_eq!(s.backups, BackupsSettings { cron: "@hourly".into(), cron_max_keep: 5 });
}

#[test]
fn invalid_sections_are_refused_and_nothing_is_stored() {
    let dir = data_dir();
    update_backups(dir.path(), &patch("@daily", 5)).unwrap();
    let codes = |p: &BackupsPatch| match update_backups(dir.path(), p) {
        Err(SettingsError::Invalid(i)) => {
            assert!(i.fields.iter().all(|f| f.section == "backups"));
            i.fields.iter().map(|f| (f.field.clone(), f.problem.code())).collect::<Vec<_>>()
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(codes(&patch("not a cron", 5)), [("cron".into(), "validation_invalid_cron")]);
    assert_eq!(codes(&patch("0 3 * * *", 0)), [("cronMaxKeep".into(), "validation_required")]);
    assert_eq!(
        codes(&patch("61 * * * *", -1)),
        [("cron".into(), "validation_invalid_cron"), ("cronMaxKeep".into(), "validation_min_greater_equal_than_required")]
    );
    assert_eq!(load(dir.path()).unwrap().backups, BackupsSettings { cron: "@daily".into(), cron_max_keep: 5 });
    // Off needs no keep.
    update_backups(dir.path(), &patch("", 0)).unwrap();
}

fn access(superuser_ips: &[&str]) -> AccessSettings {
    let mut settings = from_row(&json!({}));
    settings.superuser_ips = superuser_ips.iter().map(|ip| ip.to_string()).collect();
    AccessSettings::from_settings(&settings)
}

#[test]
fn superuser_ips_allow_their_addresses_and_ranges_only() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let open = access(&[]);
    assert!(open.allows_superuser(ip("203.0.113.9")) && open.allows_superuser(None), "empty: anywhere");
    let list = access(&["10.1.2.3", "192.168.0.0/16", "2001:db8::/32"]);
    for allowed in ["10.1.2.3", "192.168.7.7", "2001:db8::5", "::ffff:10.1.2.3"] {
        assert!(list.allows_superuser(ip(allowed)), "{allowed}");
    }
    for refused in ["10.1.2.4", "127.0.0.1", "2001:db9::1"] {
        assert!(!list.allows_superuser(ip(refused)), "{refused}");
    }
    assert!(!list.allows_superuser(None), "an unknown address is not on the list");
    // An unreadable entry (foreign data) allows nothing, and the list still restricts.
    let odd = access(&["not an address"]);
    assert!(!odd.allows_superuser(ip("127.0.0.1")));
}

#[test]
fn superuser_ips_and_trusted_proxy_are_stored_as_pocketbase_stores_them() {
    let dir = data_dir();
    let patch = SettingsPatch {
        superuser_ips: Some(vec!["10.0.0.0/8".into(), "::1".into()]),
        trusted_proxy: TrustedProxyPatch { headers: Some(vec!["X-Forwarded-For".into()]), use_leftmost_ip: None },
        ..Default::default()
    };
    let s = update(dir.path(), &patch).unwrap();
    assert_eq!(s.superuser_ips, ["10.0.0.0/8", "::1"]);
    assert_eq!(s.trusted_proxy, TrustedProxy { headers: vec!["X-Forwarded-For".into()], use_leftmost_ip: false });
    let row = row(&open(dir.path()).unwrap()).unwrap();
    assert_eq!(row["superuserIPs"], json!(["10.0.0.0/8", "::1"]));
    assert_eq!(row["trustedProxy"], json!({"headers": ["X-Forwarded-For"], "useLeftmostIP": false}));
    // A partial change keeps the rest; other sections stay as they were.
    let leftmost = TrustedProxyPatch { headers: None, use_leftmost_ip: Some(true) };
    let s = update(dir.path(), &SettingsPatch { trusted_proxy: leftmost, ..Default::default() }).unwrap();
    assert_eq!(s.trusted_proxy, TrustedProxy { headers: vec!["X-Forwarded-For".into()], use_leftmost_ip: true });
    assert_eq!(s.superuser_ips, ["10.0.0.0/8", "::1"]);
}

#[test]
fn invalid_superuser_ips_are_refused_by_index_and_nothing_is_stored() {
    let dir = data_dir();
    let ips = ["not-an-ip", "10.0.0.0/8", "::1", "1.2.3.4/33", "", " 10.1.1.1"].map(String::from).to_vec();
    let patch = SettingsPatch {
        backups: BackupsPatch { cron: Some("@daily".into()), cron_max_keep: None },
        superuser_ips: Some(ips),
        ..Default::default()
    };
    let Err(SettingsError::Invalid(invalid)) = update(dir.path(), &patch) else { panic!("refused") };
    let got: Vec<(&str, &str, &str)> =
        invalid.fields.iter().map(|f| (f.section, f.field.as_str(), f.problem.code())).collect();
    // What PocketBase 0.40.6 answered for the same list.
    assert_eq!(got, [
        ("superuserIPs", "0", "validation_invlaid_ip_or_subnet"),
        ("superuserIPs", "3", "validation_invlaid_ip_or_subnet"),
        ("superuserIPs", "4", "validation_required"),
        ("superuserIPs", "5", "validation_invlaid_ip_or_subnet"),
    ]);
    let s = load(dir.path()).unwrap();
    assert_eq!((s.superuser_ips.len(), s.backups.cron.as_str()), (0, ""), "nothing stored, backups neither");
}

#[test]
fn an_oversized_settings_row_is_refused_unread() {
    let dir = data_dir();
    let conn = open(dir.path()).unwrap();
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_ROW_BYTES as usize));
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [big]).unwrap();
    assert!(matches!(load(dir.path()), Err(SettingsError::TooLarge)));
}

fn smtp(f: impl FnOnce(&mut SmtpPatch)) -> SettingsPatch {
    let mut p = SmtpPatch::default();
    f(&mut p);
    SettingsPatch { smtp: p, ..Default::default() }
}

/// `section.field: code` of each refused field.
fn refused(dir: &Path, patch: &SettingsPatch) -> Vec<String> {
    match update(dir, patch) {
        Err(SettingsError::Invalid(i)) => i.fields.iter().map(|f| format!("{}.{}: {}", f.section, f.field, f.problem.code())).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn smtp_and_sender_are_checked_with_pocketbase_s_codes() {
    let dir = data_dir();
    let before = load(dir.path()).unwrap();
    assert_eq!(
        refused(dir.path(), &smtp(|p| {
            p.enabled = Some(true);
            p.host = Some(String::new());
            p.port = Some(0);
        })),
        ["smtp.host: validation_required", "smtp.port: validation_required"]
    );
    // Well-formedness is checked even while SMTP is off.
    assert_eq!(
        refused(dir.path(), &smtp(|p| {
            p.host = Some("bad host!".into());
            p.port = Some(-1);
            p.auth_method = Some("CRAM-MD5".into());
            p.local_name = Some("bad name!".into());
        })),
        [
            "smtp.host: validation_is_host",
            "smtp.port: validation_min_greater_equal_than_required",
            "smtp.authMethod: validation_in_invalid",
            "smtp.localName: validation_is_host",
        ]
    );
    assert_eq!(refused(dir.path(), &smtp(|p| p.port = Some(70_000))), ["smtp.port: validation_max_less_equal_than_required"]);
    let sender = |name: &str, address: &str| SettingsPatch {
        meta: MetaPatch { sender_name: Some(name.into()), sender_address: Some(address.into()) },
        ..Default::default()
    };
    assert_eq!(
        refused(dir.path(), &sender("", "not-an-email")),
        ["meta.senderName: validation_required", "meta.senderAddress: validation_is_email"]
    );
    assert_eq!(refused(dir.path(), &sender("x", "")), ["meta.senderAddress: validation_required"]);
    // A refusal in one section stores nothing of the others.
    let mut both = sender("Ops", "ops@example.com");
    both.backups.cron = Some("nope".into());
    assert_eq!(refused(dir.path(), &both), ["backups.cron: validation_invalid_cron"]);
    assert_eq!(load(dir.path()).unwrap(), before);
    for host in ["smtp.example.com", "my_host.example.", "127.0.0.1", "::1", "localhost"] {
        assert!(is_host(host), "{host}");
    }
    for host in ["[::1]", "-a.example", "a..b", "bad host", ""] {
        assert!(!is_host(host), "{host}");
    }
}

#[test]
fn the_smtp_password_is_kept_unless_sent_and_other_keys_stay() {
    let dir = data_dir();
    let conn = open(dir.path()).unwrap();
    let mut before = row(&conn).unwrap();
    before["smtp"] = json!({"enabled": false, "port": 587, "host": "smtp.example.com", "custom": 1});
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [before.to_string()]).unwrap();

    let s = update(dir.path(), &smtp(|p| {
        p.enabled = Some(true);
        p.host = Some("127.0.0.1".into());
        p.port = Some(2525);
        p.username = Some("u".into());
        p.password = Some("secret".into());
        p.auth_method = Some("LOGIN".into());
    }))
    .unwrap();
    assert_eq!(s.smtp.password, "secret");
    let mail = s.mail();
    let config = mail.smtp.as_ref().unwrap();
    assert_eq!((config.host.as_str(), config.port, config.auth_method), ("127.0.0.1", 2525, AuthMethod::Login));
    assert_eq!(mail.sender_address, "noreply@example.com");
    assert!(!format!("{s:?}").contains("secret"), "the password stays out of Debug");

    let s = update(dir.path(), &smtp(|p| p.host = Some("localhost".into()))).unwrap();
    assert_eq!((s.smtp.host.as_str(), s.smtp.password.as_str()), ("localhost", "secret"));
    let stored = row(&conn).unwrap();
    assert_eq!(stored["smtp"]["custom"], 1);
    assert_eq!(stored["meta"], before["meta"]);
    assert_eq!(stored["backups"], before["backups"]);

    let s = update(dir.path(), &smtp(|p| p.password = Some(String::new()))).unwrap();
    assert_eq!(s.smtp.password, "");
    let off = update(dir.path(), &smtp(|p| p.enabled = Some(false))).unwrap();
    assert_eq!(off.mail().smtp, None, "SMTP off: the local sendmail");
}

#[test]
fn s3_sections_are_checked_when_changed_and_stored_as_pocketbase_stores_them() {
    let dir = data_dir();
    let conn = open(dir.path()).unwrap();
    let mut before = row(&conn).unwrap();
    before["backups"]["s3"] = json!({"enabled": false, "bucket": "", "custom": 1});
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [before.to_string()]).unwrap();
    let on = |secret: Option<&str>| SettingsPatch {
        backups_s3: S3Patch {
            enabled: Some(true),
            bucket: Some("b".into()),
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key: Some("a".into()),
            secret: secret.map(Into::into),
            force_path_style: Some(true),
        },
        ..Default::default()
    };
    // What PocketBase 0.40.6 answers for an enabled section without a secret.
    assert_eq!(refused(dir.path(), &on(None)), ["backups.s3.secret: validation_required"]);
    let s = update(dir.path(), &on(Some("s"))).unwrap();
    assert_eq!((s.backups_s3.enabled, s.backups_s3.secret.as_str()), (true, "s"));
    let stored = row(&conn).unwrap();
    assert_eq!(stored["backups"]["s3"]["custom"], 1, "other keys stay");
    assert_eq!(stored["backups"]["s3"]["accessKey"], "a");
    assert_eq!(stored["backups"]["cron"], before["backups"]["cron"]);
    // Left out, the secret is kept; the file storage's section is its own.
    let s = update(dir.path(), &on(None)).unwrap();
    assert_eq!(s.backups_s3.secret, "s");
    let files = SettingsPatch { storage_s3: S3Patch { enabled: Some(true), ..Default::default() }, ..Default::default() };
    assert_eq!(refused(dir.path(), &files), [
        "s3.endpoint: validation_required",
        "s3.bucket: validation_required",
        "s3.region: validation_required",
        "s3.accessKey: validation_required",
        "s3.secret: validation_required",
    ]);
    assert_eq!(load(dir.path()).unwrap().storage_s3, S3Settings::default(), "nothing stored");
    assert!(!format!("{s:?}").contains("\"s\""), "the secret stays out of Debug");
}

#[test]
fn a_settings_row_behind_a_view_or_too_large_to_parse_is_refused() {
    // `_params` replaced by a view that never ends: refused by its kind, never run.
    let dir = data_dir();
    Connection::open(dir.path().join(DATA_DB))
        .unwrap()
        .execute_batch(
            "ALTER TABLE _params RENAME TO _params_old;
             CREATE VIEW _params AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
             SELECT p.* FROM _params_old p, n;",
        )
        .unwrap();
    assert!(matches!(load(dir.path()), Err(SettingsError::NotATable("view"))));
    assert!(matches!(update_backups(dir.path(), &patch("@daily", 2)), Err(SettingsError::NotATable("view"))));

    let dir = data_dir();
    let huge = json!({"meta": {"appName": "x".repeat(MAX_ROW_BYTES as usize)}}).to_string();
    Connection::open(dir.path().join(DATA_DB)).unwrap().execute("UPDATE _params SET value = ?1", [&huge]).unwrap();
    assert!(matches!(load(dir.path()), Err(SettingsError::TooLarge)));
    assert!(matches!(update_backups(dir.path(), &patch("@daily", 2)), Err(SettingsError::TooLarge)));
    assert_eq!(Connection::open(dir.path().join(DATA_DB)).unwrap().query_row("SELECT value FROM _params", [], |r| r.get::<_, String>(0)).unwrap(), huge);
}
