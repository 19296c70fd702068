//! The app settings PocketBase keeps in `data.db` (`_params` row `settings`), as far as this
//! server uses them: `backups.cron` / `backups.cronMaxKeep`, the mail settings (`smtp`,
//! `meta.senderName` / `meta.senderAddress`) read and written, `meta.appName` and
//! `meta.appURL` read. Every other key of the row is kept exactly as it is on update, so a
//! data dir's settings are shared with PocketBase in both directions.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};

use crate::layout::DATA_DB;
use crate::mail::{self, AuthMethod, MailConfig, SmtpConfig};
use crate::schedule::{self, CronError};

/// `_params.id` of the settings row.
const SETTINGS_ROW: &str = "settings";

/// PocketBase's `cronMaxKeep` when the row has none.
pub const DEFAULT_CRON_MAX_KEEP: i64 = 3;

/// The settings this server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub app_name: String,
    /// `{APP_URL}` in e-mail templates.
    pub app_url: String,
    pub sender_name: String,
    pub sender_address: String,
    pub backups: BackupsSettings,
    pub smtp: SmtpSettings,
}

impl Settings {
    /// How mail leaves: SMTP when `smtp.enabled`, else the local sendmail (PocketBase's way).
    pub fn mail(&self) -> MailConfig {
        let smtp = self.smtp.enabled.then(|| SmtpConfig {
            host: self.smtp.host.clone(),
            // Out of range only in a row written by hand: the connection then fails and says so.
            port: u16::try_from(self.smtp.port).unwrap_or(0),
            username: self.smtp.username.clone(),
            password: self.smtp.password.clone(),
            auth_method: if self.smtp.auth_method == "LOGIN" { AuthMethod::Login } else { AuthMethod::Plain },
            tls: self.smtp.tls,
            local_name: self.smtp.local_name.clone(),
        });
        MailConfig { smtp, sender_name: self.sender_name.clone(), sender_address: self.sender_address.clone() }
    }
}

/// PocketBase's `smtp` section, as stored. `auth_method` is `""`, `PLAIN` or `LOGIN`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SmtpSettings {
    pub enabled: bool,
    pub host: String,
    pub port: i64,
    pub username: String,
    pub password: String,
    pub auth_method: String,
    pub tls: bool,
    pub local_name: String,
}

// Hand-written so that the password never reaches a log line.
impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("auth_method", &self.auth_method)
            .field("tls", &self.tls)
            .field("local_name", &self.local_name)
            .finish_non_exhaustive()
    }
}

/// The automatic backups: `cron` empty means off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupsSettings {
    pub cron: String,
    pub cron_max_keep: i64,
}

/// A change to the `backups` section: absent fields keep their stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupsPatch {
    pub cron: Option<String>,
    pub cron_max_keep: Option<i64>,
}

/// A change to the `smtp` section: absent fields keep their stored value. A `password` of
/// `Some("")` clears it; `None` keeps it (it is never served, so clients send none).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SmtpPatch {
    pub enabled: Option<bool>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth_method: Option<String>,
    pub tls: Option<bool>,
    pub local_name: Option<String>,
}

// Hand-written so that the password never reaches a log line.
impl std::fmt::Debug for SmtpPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpPatch")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// A change to the mail part of `meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaPatch {
    pub sender_name: Option<String>,
    pub sender_address: Option<String>,
}

/// A change to the settings, section by section; applied whole or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub backups: BackupsPatch,
    pub smtp: SmtpPatch,
    pub meta: MetaPatch,
}

/// One refused field, PocketBase's validation code first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// `validation_invalid_cron`.
    InvalidCron(CronError),
    /// `validation_required`: `cronMaxKeep` while a cron is set, `smtp.host`/`port` while
    /// SMTP is on, the sender always.
    Required,
    /// `validation_min_greater_equal_than_required`.
    BelowOne,
    /// `validation_min_greater_equal_than_required` (a negative port).
    BelowZero,
    /// `validation_max_less_equal_than_required` (a port past 65535; PocketBase stores it).
    AbovePortRange,
    /// `validation_is_host`: not an IP address or DNS name.
    NotAHost,
    /// `validation_in_invalid`: `smtp.authMethod` other than `PLAIN`, `LOGIN` or empty.
    NotAllowed,
    /// `validation_is_email`.
    NotAnEmail,
}

impl FieldProblem {
    pub fn code(&self) -> &'static str {
        match self {
            FieldProblem::InvalidCron(_) => "validation_invalid_cron",
            FieldProblem::Required => "validation_required",
            FieldProblem::BelowOne | FieldProblem::BelowZero => "validation_min_greater_equal_than_required",
            FieldProblem::AbovePortRange => "validation_max_less_equal_than_required",
            FieldProblem::NotAHost => "validation_is_host",
            FieldProblem::NotAllowed => "validation_in_invalid",
            FieldProblem::NotAnEmail => "validation_is_email",
        }
    }
}

/// Why a change was refused: per section (`backups`, `smtp`, `meta`) and field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid {
    pub fields: Vec<(&'static str, &'static str, FieldProblem)>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> =
            self.fields.iter().map(|(section, name, p)| format!("{section}.{name}: {}", p.code())).collect();
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Invalid(Invalid),
    #[error("the settings row is not JSON (encrypted settings are not supported): {0}")]
    Unreadable(serde_json::Error),
    #[error("data.db: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("worker thread: {0}")]
    Worker(String),
}

/// Checks the section as PocketBase does: a cron that parses, and with it a `cronMaxKeep`
/// of at least 1 (0 counts as missing). Without a cron only a negative keep is refused.
pub fn validate(b: &BackupsSettings) -> Result<(), Invalid> {
    let mut invalid = Invalid::default();
    validate_backups(b, &mut invalid);
    invalid.into_result()
}

fn validate_backups(b: &BackupsSettings, invalid: &mut Invalid) {
    if !b.cron.is_empty() {
        if let Err(e) = schedule::parse_cron(&b.cron) {
            invalid.fields.push(("backups", "cron", FieldProblem::InvalidCron(e)));
        }
        if b.cron_max_keep == 0 {
            invalid.fields.push(("backups", "cronMaxKeep", FieldProblem::Required));
        }
    }
    if b.cron_max_keep < 0 {
        invalid.fields.push(("backups", "cronMaxKeep", FieldProblem::BelowOne));
    }
}

/// The `smtp` section as PocketBase checks it: host and port needed while it is on; a host,
/// a local name and an auth method, when given, well formed whether it is on or not.
fn validate_smtp(smtp: &SmtpSettings, invalid: &mut Invalid) {
    let mut refuse = |field, problem| invalid.fields.push(("smtp", field, problem));
    if smtp.enabled && smtp.host.is_empty() {
        refuse("host", FieldProblem::Required);
    } else if !smtp.host.is_empty() && !is_host(&smtp.host) {
        refuse("host", FieldProblem::NotAHost);
    }
    if smtp.port < 0 {
        refuse("port", FieldProblem::BelowZero);
    } else if smtp.port > i64::from(u16::MAX) {
        refuse("port", FieldProblem::AbovePortRange);
    } else if smtp.enabled && smtp.port == 0 {
        refuse("port", FieldProblem::Required);
    }
    if !["", "PLAIN", "LOGIN"].contains(&smtp.auth_method.as_str()) {
        refuse("authMethod", FieldProblem::NotAllowed);
    }
    if !smtp.local_name.is_empty() && !is_host(&smtp.local_name) {
        refuse("localName", FieldProblem::NotAHost);
    }
}

/// The sender, always required, as PocketBase checks it.
fn validate_sender(s: &Settings, invalid: &mut Invalid) {
    if s.sender_name.trim().is_empty() {
        invalid.fields.push(("meta", "senderName", FieldProblem::Required));
    }
    if s.sender_address.is_empty() {
        invalid.fields.push(("meta", "senderAddress", FieldProblem::Required));
    } else if !mail::is_address(&s.sender_address) {
        invalid.fields.push(("meta", "senderAddress", FieldProblem::NotAnEmail));
    }
}

impl Invalid {
    fn into_result(self) -> Result<(), Invalid> {
        if self.fields.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// An IP address (IPv6 without brackets) or a DNS name: labels of letters, digits, `_` and
/// `-` (not first), at most 63 bytes each and 253 in all, an optional final dot.
pub fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn open(data_dir: &Path) -> Result<Connection, SettingsError> {
    let conn = Connection::open(data_dir.join(DATA_DB))?;
    // Shares the file with the accounts' connection (and, for reading, with PocketBase).
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn row(conn: &Connection) -> Result<Value, SettingsError> {
    // PocketBase writes the JSON as a BLOB, we (and its first migration) as TEXT.
    let raw: Option<Option<Vec<u8>>> = conn
        .query_row("SELECT value FROM _params WHERE id = ?1", [SETTINGS_ROW], |r| {
            Ok(match r.get_ref(0)? {
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(bytes.to_vec()),
                _ => None,
            })
        })
        .optional()?;
    match raw.flatten() {
        None => Ok(json!({})),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(SettingsError::Unreadable),
    }
}

fn from_row(value: &Value) -> Settings {
    let backups = &value["backups"];
    let (meta, smtp) = (&value["meta"], &value["smtp"]);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Settings {
        app_name: text(&meta["appName"]),
        app_url: text(&meta["appURL"]),
        sender_name: text(&meta["senderName"]),
        sender_address: text(&meta["senderAddress"]),
        backups: BackupsSettings {
            cron: backups["cron"].as_str().unwrap_or_default().to_string(),
            cron_max_keep: backups["cronMaxKeep"].as_i64().unwrap_or(DEFAULT_CRON_MAX_KEEP),
        },
        smtp: SmtpSettings {
            enabled: smtp["enabled"].as_bool().unwrap_or(false),
            host: text(&smtp["host"]),
            port: smtp["port"].as_i64().unwrap_or(0),
            username: text(&smtp["username"]),
            password: text(&smtp["password"]),
            auth_method: text(&smtp["authMethod"]),
            tls: smtp["tls"].as_bool().unwrap_or(false),
            local_name: text(&smtp["localName"]),
        },
    }
}

/// The settings stored in the data dir's `data.db`.
pub fn load(data_dir: &Path) -> Result<Settings, SettingsError> {
    Ok(from_row(&row(&open(data_dir)?)?))
}

/// Applies `patch` to the stored `backups` section; see [`update`].
pub fn update_backups(data_dir: &Path, patch: &BackupsPatch) -> Result<Settings, SettingsError> {
    update(data_dir, &SettingsPatch { backups: patch.clone(), ..Default::default() })
}

/// Applies `patch` to the stored settings if the result is valid; nothing is stored
/// otherwise. A section is checked only when the patch changes it (a row PocketBase wrote
/// may hold values it would refuse today). Every other key of the row stays as it was.
/// Returns the new settings.
pub fn update(data_dir: &Path, patch: &SettingsPatch) -> Result<Settings, SettingsError> {
    let mut conn = open(data_dir)?;
    // Immediate: two updates at once must not both read the old row.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut value = row(&tx)?;
    let current = from_row(&value);
    let mut next = current.clone();
    let b = &patch.backups;
    next.backups = BackupsSettings {
        cron: b.cron.clone().unwrap_or(current.backups.cron).trim().to_string(),
        cron_max_keep: b.cron_max_keep.unwrap_or(current.backups.cron_max_keep),
    };
    let p = &patch.smtp;
    let keep = |new: &Option<String>, old: &str| new.clone().unwrap_or_else(|| old.to_string());
    next.smtp = SmtpSettings {
        enabled: p.enabled.unwrap_or(current.smtp.enabled),
        host: keep(&p.host, &current.smtp.host).trim().to_string(),
        port: p.port.unwrap_or(current.smtp.port),
        username: keep(&p.username, &current.smtp.username),
        password: keep(&p.password, &current.smtp.password),
        auth_method: keep(&p.auth_method, &current.smtp.auth_method),
        tls: p.tls.unwrap_or(current.smtp.tls),
        local_name: keep(&p.local_name, &current.smtp.local_name).trim().to_string(),
    };
    next.sender_name = keep(&patch.meta.sender_name, &current.sender_name);
    next.sender_address = keep(&patch.meta.sender_address, &current.sender_address).trim().to_string();

    let mut invalid = Invalid::default();
    validate_backups(&next.backups, &mut invalid);
    if patch.smtp != SmtpPatch::default() {
        validate_smtp(&next.smtp, &mut invalid);
    }
    if patch.meta != MetaPatch::default() {
        validate_sender(&next, &mut invalid);
    }
    invalid.into_result().map_err(SettingsError::Invalid)?;

    if !value.is_object() {
        value = json!({});
    }
    let root = value.as_object_mut().expect("an object");
    let section = object_entry(root, "backups");
    section.insert("cron".into(), json!(next.backups.cron));
    section.insert("cronMaxKeep".into(), json!(next.backups.cron_max_keep));
    if patch.smtp != SmtpPatch::default() {
        let s = &next.smtp;
        let section = object_entry(root, "smtp");
        for (key, v) in [
            ("enabled", json!(s.enabled)),
            ("host", json!(s.host)),
            ("port", json!(s.port)),
            ("username", json!(s.username)),
            ("password", json!(s.password)),
            ("authMethod", json!(s.auth_method)),
            ("tls", json!(s.tls)),
            ("localName", json!(s.local_name)),
        ] {
            section.insert(key.into(), v);
        }
    }
    if patch.meta != MetaPatch::default() {
        let section = object_entry(root, "meta");
        section.insert("senderName".into(), json!(next.sender_name));
        section.insert("senderAddress".into(), json!(next.sender_address));
    }
    // PocketBase's timestamp format, made by SQLite as in the table's defaults.
    tx.execute(
        "INSERT INTO _params (id, value) VALUES (?1, ?2)
         ON CONFLICT(id) DO UPDATE SET value = excluded.value, updated = strftime('%Y-%m-%d %H:%M:%fZ')",
        params![SETTINGS_ROW, value.to_string()],
    )?;
    tx.commit()?;
    Ok(from_row(&value))
}

/// The object under `key`, made one if it is missing or anything else.
fn object_entry<'a>(root: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let section = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !section.is_object() {
        *section = Value::Object(Map::new());
    }
    section.as_object_mut().expect("made an object above")
}

impl crate::service::Service {
    /// The served settings of this server's data dir.
    pub async fn settings(&self) -> Result<Settings, SettingsError> {
        let dir = self.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || load(&dir)).await.map_err(join_error)?
    }

    /// See [`update`]; the schedule picks a change up at its next minute, mail at its next message.
    pub async fn update_settings(&self, patch: SettingsPatch) -> Result<Settings, SettingsError> {
        let dir = self.data_dir().to_path_buf();
        let settings = tokio::task::spawn_blocking(move || update(&dir, &patch)).await.map_err(join_error)??;
        tracing::info!(
            cron = %settings.backups.cron,
            cron_max_keep = settings.backups.cron_max_keep,
            smtp = settings.smtp.enabled,
            smtp_host = %settings.smtp.host,
            "settings updated"
        );
        Ok(settings)
    }
}

fn join_error(e: tokio::task::JoinError) -> SettingsError {
    SettingsError::Worker(e.to_string())
}

#[cfg(test)]
mod tests {
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
            Err(SettingsError::Invalid(i)) => i.fields.iter().map(|(_, f, p)| (*f, p.code())).collect::<Vec<_>>(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(codes(&patch("not a cron", 5)), [("cron", "validation_invalid_cron")]);
        assert_eq!(codes(&patch("0 3 * * *", 0)), [("cronMaxKeep", "validation_required")]);
        assert_eq!(
            codes(&patch("61 * * * *", -1)),
            [("cron", "validation_invalid_cron"), ("cronMaxKeep", "validation_min_greater_equal_than_required")]
        );
        assert_eq!(load(dir.path()).unwrap().backups, BackupsSettings { cron: "@daily".into(), cron_max_keep: 5 });
        // Off needs no keep.
        update_backups(dir.path(), &patch("", 0)).unwrap();
    }

    fn smtp(f: impl FnOnce(&mut SmtpPatch)) -> SettingsPatch {
        let mut p = SmtpPatch::default();
        f(&mut p);
        SettingsPatch { smtp: p, ..Default::default() }
    }

    fn refused(dir: &Path, patch: &SettingsPatch) -> Vec<(&'static str, &'static str, &'static str)> {
        match update(dir, patch) {
            Err(SettingsError::Invalid(i)) => i.fields.iter().map(|(s, f, p)| (*s, *f, p.code())).collect(),
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
            [("smtp", "host", "validation_required"), ("smtp", "port", "validation_required")]
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
                ("smtp", "host", "validation_is_host"),
                ("smtp", "port", "validation_min_greater_equal_than_required"),
                ("smtp", "authMethod", "validation_in_invalid"),
                ("smtp", "localName", "validation_is_host"),
            ]
        );
        assert_eq!(refused(dir.path(), &smtp(|p| p.port = Some(70_000))), [("smtp", "port", "validation_max_less_equal_than_required")]);
        let sender = |name: &str, address: &str| SettingsPatch {
            meta: MetaPatch { sender_name: Some(name.into()), sender_address: Some(address.into()) },
            ..Default::default()
        };
        assert_eq!(
            refused(dir.path(), &sender("", "not-an-email")),
            [("meta", "senderName", "validation_required"), ("meta", "senderAddress", "validation_is_email")]
        );
        assert_eq!(refused(dir.path(), &sender("x", "")), [("meta", "senderAddress", "validation_required")]);
        // A refusal in one section stores nothing of the others.
        let mut both = sender("Ops", "ops@example.com");
        both.backups.cron = Some("nope".into());
        assert_eq!(refused(dir.path(), &both), [("backups", "cron", "validation_invalid_cron")]);
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
}
