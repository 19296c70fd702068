//! The app settings PocketBase keeps in `data.db` (`_params` row `settings`), as far as this
//! server uses them: `backups.cron` / `backups.cronMaxKeep`, `backups.s3` and `s3` (see
//! [`s3`]), `superuserIPs`, `trustedProxy` and the mail settings (`smtp`, `meta.senderName` /
//! `meta.senderAddress`) read and written, `meta.appName` and `meta.appURL` read. Every other
//! key of the row is kept exactly as it is on update, so a data dir's settings are shared with
//! PocketBase in both directions. The access checks read theirs through [`AccessCache`].

mod access;
pub mod cron;
pub mod s3;
mod validate;

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};

use crate::layout::DATA_DB;
use crate::mail::{AuthMethod, MailConfig, SmtpConfig};
use crate::sqlite::{self, Access, ObjectKind};
pub use access::{AccessCache, AccessSettings};
pub use s3::{S3Patch, S3Settings};
pub use validate::{is_host, validate, FieldProblem, Invalid, InvalidField};
use validate::{validate_backups, validate_sender, validate_smtp, validate_superuser_ips};

/// `_params.id` of the settings row.
const SETTINGS_ROW: &str = "settings";

/// PocketBase's `cronMaxKeep` when the row has none.
pub const DEFAULT_CRON_MAX_KEEP: i64 = 3;

/// Largest settings row read (it comes from a data dir).
const MAX_ROW_BYTES: i64 = 1024 * 1024;
/// Most `superuserIPs` entries and `trustedProxy.headers` read from a stored row: a longer
/// allowlist is cut (which only allows fewer addresses), further headers are not consulted.
const MAX_SUPERUSER_IPS: usize = 1000;
const MAX_PROXY_HEADERS: usize = 32;

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
    /// Addresses and CIDR ranges superusers may log in and call from; empty: anywhere.
    pub superuser_ips: Vec<String>,
    pub trusted_proxy: TrustedProxy,
    /// `backups.s3`: where backups are kept when enabled (else `<data dir>/backups`).
    pub backups_s3: S3Settings,
    /// `s3`: PocketBase's file storage; stored and tested here, never used.
    pub storage_s3: S3Settings,
}

/// Which request headers name the client (as a reverse proxy writes them), in order of
/// preference, and whether to take the leftmost address of a header instead of the rightmost.
/// Empty: the connection's peer is the client. Which peers may set them is the server's
/// `--trusted-proxy` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxy {
    pub headers: Vec<String>,
    pub use_leftmost_ip: bool,
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

/// A change to `trustedProxy`: absent fields keep their stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxyPatch {
    pub headers: Option<Vec<String>>,
    pub use_leftmost_ip: Option<bool>,
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

/// A change to the settings: absent sections and fields keep their stored value; applied
/// whole or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub backups: BackupsPatch,
    pub superuser_ips: Option<Vec<String>>,
    pub trusted_proxy: TrustedProxyPatch,
    pub smtp: SmtpPatch,
    pub meta: MetaPatch,
    pub backups_s3: S3Patch,
    pub storage_s3: S3Patch,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Invalid(Invalid),
    #[error("the settings row is not JSON (encrypted settings are not supported): {0}")]
    Unreadable(serde_json::Error),
    #[error("the settings row is larger than {MAX_ROW_BYTES} bytes")]
    TooLarge,
    #[error("`_params` is a {0}, not a table")]
    NotATable(&'static str),
    #[error("a query on data.db did not finish within its time bound")]
    TooSlow,
    #[error("data.db: {0}")]
    Db(rusqlite::Error),
    #[error("worker thread: {0}")]
    Worker(String),
}

impl From<rusqlite::Error> for SettingsError {
    fn from(e: rusqlite::Error) -> Self {
        if sqlite::is_interrupted(&e) {
            SettingsError::TooSlow
        } else {
            SettingsError::Db(e)
        }
    }
}

/// One operation's connection: it shares the file with the accounts' connection (and, for
/// reading, with PocketBase), and like it is bounded in time ([`sqlite`]).
fn open(data_dir: &Path) -> Result<Connection, SettingsError> {
    let (conn, _deadline) = sqlite::open(&data_dir.join(DATA_DB), Access::ReadWrite, sqlite::QUERY_BUDGET)?;
    Ok(conn)
}

fn row(conn: &Connection) -> Result<Value, SettingsError> {
    if let Some(kind) = sqlite::object_kind(conn, "_params")?.filter(|k| *k != ObjectKind::Table) {
        return Err(SettingsError::NotATable(kind.as_str()));
    }
    // PocketBase writes the JSON as a BLOB, we (and its first migration) as TEXT.
    let raw: Option<(Option<i64>, Option<Vec<u8>>)> = conn
        .query_row(
            "SELECT octet_length(value), CASE WHEN octet_length(value) <= ?2 THEN value END FROM _params WHERE id = ?1",
            params![SETTINGS_ROW, MAX_ROW_BYTES],
            |r| {
                let value = match r.get_ref(1)? {
                    ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(bytes.to_vec()),
                    _ => None,
                };
                Ok((r.get(0)?, value))
            },
        )
        .optional()?;
    match raw {
        Some((Some(len), _)) if len > MAX_ROW_BYTES => Err(SettingsError::TooLarge),
        Some((_, Some(bytes))) => serde_json::from_slice(&bytes).map_err(SettingsError::Unreadable),
        _ => Ok(json!({})),
    }
}

/// The strings of a JSON array, at most `max` of them (other values skipped).
fn strings(value: &Value, max: usize) -> Vec<String> {
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(Value::as_str).take(max).map(str::to_string).collect()
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
        backups: BackupsSettings {
            cron: backups["cron"].as_str().unwrap_or_default().to_string(),
            cron_max_keep: backups["cronMaxKeep"].as_i64().unwrap_or(DEFAULT_CRON_MAX_KEEP),
        },
        superuser_ips: strings(&value["superuserIPs"], MAX_SUPERUSER_IPS),
        trusted_proxy: TrustedProxy {
            headers: strings(&value["trustedProxy"]["headers"], MAX_PROXY_HEADERS),
            use_leftmost_ip: value["trustedProxy"]["useLeftmostIP"].as_bool().unwrap_or(false),
        },
        backups_s3: s3::from_value(&backups["s3"]),
        storage_s3: s3::from_value(&value["s3"]),
    }
}

/// The settings stored in the data dir's `data.db`.
pub fn load(data_dir: &Path) -> Result<Settings, SettingsError> {
    Ok(from_row(&row(&open(data_dir)?)?))
}

/// As [`load`], for a reader beside a running server or on a data dir that may not be one:
/// opened read-only, so a missing `data.db` is an error rather than a new empty file.
pub fn load_read_only(data_dir: &Path) -> Result<Settings, SettingsError> {
    let (conn, _deadline) = sqlite::open(&data_dir.join(DATA_DB), Access::ReadOnly, sqlite::QUERY_BUDGET)?;
    Ok(from_row(&row(&conn)?))
}

/// Applies `patch` to the stored `backups` section if the result is valid; nothing is
/// stored otherwise. Every other key of the row stays as it was. Returns the new settings.
pub fn update_backups(data_dir: &Path, patch: &BackupsPatch) -> Result<Settings, SettingsError> {
    update(data_dir, &SettingsPatch { backups: patch.clone(), ..Default::default() })
}

/// The object under `key` of `parent`, made an (empty) object if it is anything else.
fn section<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let section = parent.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !section.is_object() {
        *section = Value::Object(Map::new());
    }
    section.as_object_mut().expect("an object")
}

/// Applies `patch` if the result is valid as a whole; nothing is stored otherwise. Every
/// other key of the row stays as it was. Returns the new settings.
pub fn update(data_dir: &Path, patch: &SettingsPatch) -> Result<Settings, SettingsError> {
    let mut conn = open(data_dir)?;
    // Immediate: two updates at once must not both read the old row.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut value = row(&tx)?;
    let current = from_row(&value);
    let next = BackupsSettings {
        cron: patch.backups.cron.clone().unwrap_or_else(|| current.backups.cron.clone()).trim().to_string(),
        cron_max_keep: patch.backups.cron_max_keep.unwrap_or(current.backups.cron_max_keep),
    };
    let (smtp, sender) = merged_mail(&current, patch);
    let mut invalid = Invalid::default();
    validate_backups(&next, &mut invalid);
    if let Some(ips) = &patch.superuser_ips {
        validate_superuser_ips(ips, &mut invalid);
    }
    // Mail sections are checked only when changed: a row PocketBase wrote may hold values it
    // would refuse today.
    if patch.smtp != SmtpPatch::default() {
        validate_smtp(&smtp, &mut invalid);
    }
    if patch.meta != MetaPatch::default() {
        validate_sender(&sender.0, &sender.1, &mut invalid);
    }
    // Checked when changed, as the mail sections are.
    let backups_s3 = s3::merged(&current.backups_s3, &patch.backups_s3);
    if !patch.backups_s3.is_empty() {
        s3::validate(&backups_s3, "backups", "s3.", &mut invalid);
    }
    let storage_s3 = s3::merged(&current.storage_s3, &patch.storage_s3);
    if !patch.storage_s3.is_empty() {
        s3::validate(&storage_s3, "s3", "", &mut invalid);
    }
    if !invalid.fields.is_empty() {
        return Err(SettingsError::Invalid(invalid));
    }
    if !value.is_object() {
        value = json!({});
    }
    let root = value.as_object_mut().expect("an object");
    let backups = section(root, "backups");
    backups.insert("cron".into(), json!(next.cron));
    backups.insert("cronMaxKeep".into(), json!(next.cron_max_keep));
    if !patch.backups_s3.is_empty() {
        s3::store(section(backups, "s3"), &backups_s3);
    }
    if !patch.storage_s3.is_empty() {
        s3::store(section(root, "s3"), &storage_s3);
    }
    if let Some(ips) = &patch.superuser_ips {
        root.insert("superuserIPs".into(), json!(ips));
    }
    let proxy = &patch.trusted_proxy;
    if proxy.headers.is_some() || proxy.use_leftmost_ip.is_some() {
        let stored = section(root, "trustedProxy");
        if let Some(headers) = &proxy.headers {
            stored.insert("headers".into(), json!(headers));
        }
        if let Some(leftmost) = proxy.use_leftmost_ip {
            stored.insert("useLeftmostIP".into(), json!(leftmost));
        }
    }
    if patch.smtp != SmtpPatch::default() {
        let stored = section(root, "smtp");
        for (key, v) in [
            ("enabled", json!(smtp.enabled)),
            ("host", json!(smtp.host)),
            ("port", json!(smtp.port)),
            ("username", json!(smtp.username)),
            ("password", json!(smtp.password)),
            ("authMethod", json!(smtp.auth_method)),
            ("tls", json!(smtp.tls)),
            ("localName", json!(smtp.local_name)),
        ] {
            stored.insert(key.into(), v);
        }
    }
    if patch.meta != MetaPatch::default() {
        let stored = section(root, "meta");
        stored.insert("senderName".into(), json!(sender.0));
        stored.insert("senderAddress".into(), json!(sender.1));
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

/// The `smtp` section and the sender (name, address) once `patch` is applied to `current`.
fn merged_mail(current: &Settings, patch: &SettingsPatch) -> (SmtpSettings, (String, String)) {
    let (p, old) = (&patch.smtp, &current.smtp);
    let keep = |new: &Option<String>, old: &str| new.clone().unwrap_or_else(|| old.to_string());
    let smtp = SmtpSettings {
        enabled: p.enabled.unwrap_or(old.enabled),
        host: keep(&p.host, &old.host).trim().to_string(),
        port: p.port.unwrap_or(old.port),
        username: keep(&p.username, &old.username),
        password: keep(&p.password, &old.password),
        auth_method: keep(&p.auth_method, &old.auth_method),
        tls: p.tls.unwrap_or(old.tls),
        local_name: keep(&p.local_name, &old.local_name).trim().to_string(),
    };
    let name = keep(&patch.meta.sender_name, &current.sender_name);
    let address = keep(&patch.meta.sender_address, &current.sender_address).trim().to_string();
    (smtp, (name, address))
}

#[cfg(test)]
mod tests;
