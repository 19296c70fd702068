//! The app settings PocketBase keeps in `data.db` (`_params` row `settings`), as far as this
//! server uses them: `backups.cron` / `backups.cronMaxKeep`, `backups.s3` and `s3` (see
//! [`s3`]), `superuserIPs`, `trustedProxy` and the mail settings (`smtp`, `meta.senderName` /
//! `meta.senderAddress`) read and written, `meta.appName` and `meta.appURL` read. Every other
//! key of the row is kept exactly as it is on update, so a data dir's settings are shared with
//! PocketBase in both directions. The access checks read theirs through [`AccessCache`].

pub mod cron;
pub mod s3;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};

use crate::layout::DATA_DB;
use crate::mail::{self, AuthMethod, MailConfig, SmtpConfig};
use crate::sqlite::{self, Access, ObjectKind};
pub use s3::{S3Patch, S3Settings};

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

/// One refused field, PocketBase's validation code first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// `validation_invalid_cron`.
    InvalidCron(cron::CronError),
    /// `validation_required`: `cronMaxKeep` is needed while a cron is set; a `superuserIPs`
    /// entry is blank; `smtp.host`/`port` while SMTP is on; the sender always.
    Required,
    /// `validation_min_greater_equal_than_required`.
    BelowOne,
    /// A `superuserIPs` entry that is neither an address nor a CIDR range.
    InvalidIpOrSubnet,
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
    /// `validation_is_url`: an S3 endpoint that is not a URL.
    NotAUrl,
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
            FieldProblem::NotAUrl => "validation_is_url",
            // PocketBase's code, misspelling included: clients match on it.
            FieldProblem::InvalidIpOrSubnet => "validation_invlaid_ip_or_subnet",
        }
    }
}

/// A refused field: its section (`backups`, `superuserIPs`) and its name there (for a list,
/// the entry's index; `s3.bucket` for a field of `backups.s3`: each `.` one level deeper),
/// as PocketBase nests them in the error's `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    pub section: &'static str,
    pub field: String,
    pub problem: FieldProblem,
}

/// Why a change was refused: every refused field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid {
    pub fields: Vec<InvalidField>,
}

impl Invalid {
    fn push(&mut self, section: &'static str, field: impl Into<String>, problem: FieldProblem) {
        self.fields.push(InvalidField { section, field: field.into(), problem });
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> =
            self.fields.iter().map(|i| format!("{}.{}: {}", i.section, i.field, i.problem.code())).collect();
        f.write_str(&parts.join(", "))
    }
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

/// Checks the section as PocketBase does: a cron that parses, and with it a `cronMaxKeep`
/// of at least 1 (0 counts as missing). Without a cron only a negative keep is refused.
pub fn validate(b: &BackupsSettings) -> Result<(), Invalid> {
    let mut invalid = Invalid::default();
    validate_backups(b, &mut invalid);
    if invalid.fields.is_empty() {
        Ok(())
    } else {
        Err(invalid)
    }
}

fn validate_backups(b: &BackupsSettings, invalid: &mut Invalid) {
    if !b.cron.is_empty() {
        if let Err(e) = cron::parse_cron(&b.cron) {
            invalid.push("backups", "cron", FieldProblem::InvalidCron(e));
        }
        if b.cron_max_keep == 0 {
            invalid.push("backups", "cronMaxKeep", FieldProblem::Required);
        }
    }
    if b.cron_max_keep < 0 {
        invalid.push("backups", "cronMaxKeep", FieldProblem::BelowOne);
    }
}

/// Each entry must be an address or a CIDR range, written exactly (no blanks around it).
fn validate_superuser_ips(ips: &[String], invalid: &mut Invalid) {
    for (i, ip) in ips.iter().enumerate() {
        if ip.is_empty() {
            invalid.push("superuserIPs", i.to_string(), FieldProblem::Required);
        } else if parse_ip_or_net(ip).is_none() {
            invalid.push("superuserIPs", i.to_string(), FieldProblem::InvalidIpOrSubnet);
        }
    }
}

/// An address (as its single-address range) or a CIDR range.
fn parse_ip_or_net(s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(net) => Some(net),
        Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

/// The `smtp` section as PocketBase checks it: host and port needed while it is on; a host,
/// a local name and an auth method, when given, well formed whether it is on or not.
fn validate_smtp(smtp: &SmtpSettings, invalid: &mut Invalid) {
    let mut refuse = |field: &'static str, problem| invalid.push("smtp", field, problem);
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
fn validate_sender(name: &str, address: &str, invalid: &mut Invalid) {
    if name.trim().is_empty() {
        invalid.push("meta", "senderName", FieldProblem::Required);
    }
    if address.is_empty() {
        invalid.push("meta", "senderAddress", FieldProblem::Required);
    } else if !mail::is_address(address) {
        invalid.push("meta", "senderAddress", FieldProblem::NotAnEmail);
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

/// What the access checks need from the settings, parsed once per reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessSettings {
    /// The readable `superuserIPs` entries.
    superuser_nets: Vec<IpNet>,
    /// Whether `superuserIPs` restricts at all: set when it has entries, readable or not.
    restricted: bool,
    pub trusted_proxy: TrustedProxy,
}

impl AccessSettings {
    pub fn from_settings(s: &Settings) -> AccessSettings {
        let superuser_nets: Vec<IpNet> = s.superuser_ips.iter().filter_map(|ip| parse_ip_or_net(ip)).collect();
        if superuser_nets.len() < s.superuser_ips.len() {
            tracing::warn!(entries = ?s.superuser_ips, "superuserIPs has unreadable entries: they allow no address");
        }
        AccessSettings { superuser_nets, restricted: !s.superuser_ips.is_empty(), trusted_proxy: s.trusted_proxy.clone() }
    }

    /// Nothing readable: superusers are refused everywhere until the settings can be read.
    fn refusing_superusers() -> AccessSettings {
        AccessSettings { superuser_nets: Vec::new(), restricted: true, trusted_proxy: TrustedProxy::default() }
    }

    /// Whether a superuser may log in or call from `client` (`None`: an address not known).
    pub fn allows_superuser(&self, client: Option<IpAddr>) -> bool {
        if !self.restricted {
            return true;
        }
        let Some(ip) = client else { return false };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.superuser_nets.iter().any(|net| net.contains(&ip))
    }
}

/// How long the access settings are used before being read again. Our own changes replace
/// them at once; this bounds how long a change made to `data.db` some other way goes unseen.
const ACCESS_MAX_AGE: Duration = Duration::from_secs(5);

/// The access settings as last read, shared by every request: a login or a superuser's
/// request reads them from memory, not from SQLite.
#[derive(Debug, Default)]
pub struct AccessCache {
    current: Mutex<Option<(Instant, Arc<AccessSettings>)>>,
}

impl AccessCache {
    pub(crate) fn fresh(&self) -> Option<Arc<AccessSettings>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|(at, _)| at.elapsed() < ACCESS_MAX_AGE).map(|(_, s)| s.clone())
    }

    /// The last reading, however old; with none, superusers are refused (fail closed).
    pub(crate) fn last_or_refusing(&self) -> Arc<AccessSettings> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map_or_else(|| Arc::new(AccessSettings::refusing_superusers()), |(_, s)| s.clone())
    }

    pub(crate) fn set(&self, settings: &Settings) -> Arc<AccessSettings> {
        let access = Arc::new(AccessSettings::from_settings(settings));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), access.clone()));
        access
    }
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
}
