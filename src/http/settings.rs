//! `GET` / `PATCH /api/settings`, as PocketBase serves them, for the part this server uses:
//! the `backups` section (`cron`, `cronMaxKeep`, `s3`), the file storage's `s3`,
//! `superuserIPs`, `trustedProxy` and the mail settings (`smtp`, `meta.senderName`,
//! `meta.senderAddress`) read and written, `meta.appName` and `meta.appURL` read only; and
//! `POST /api/settings/test/s3`. The SMTP password and the S3 secrets are never served (the
//! keys are left out, as PocketBase does). Superusers only. Validation errors nest per
//! section, as PocketBase's do: `data.backups.cron.code`, `data.backups.s3.bucket.code`,
//! `data.superuserIPs.0.code`.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::{Map, Value};

use super::auth::AuthToken;
use super::body::{DeferredBody, JSON_BODY_LIMIT, JSON_BODY_TIMEOUT};
use super::error::{response_errors, ApiError, ErrorBody, FieldError};
use crate::backends::{Override, TestError};
use crate::i18n::Message;
use crate::service::Service;
use crate::settings::{
    BackupsPatch, FieldProblem, MetaPatch, S3Patch, S3Settings, Settings, SettingsError, SettingsPatch, SmtpPatch,
    TrustedProxyPatch,
};

#[derive(Tags)]
enum ApiTags {
    /// The app settings this server uses: the automatic backups schedule, where backups are
    /// kept (S3), who may act as a superuser from where, and mail. Superusers only.
    Settings,
}

/// The settings served: the others PocketBase keeps in the same row are left as they are.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "Settings")]
pub struct SettingsBody {
    pub meta: MetaSettings,
    pub backups: BackupsSettingsBody,
    /// Addresses (`10.1.2.3`, `::1`) and CIDR ranges (`10.0.0.0/8`) superusers may log in and
    /// send requests from; empty: anywhere. Others get 403.
    #[oai(rename = "superuserIPs")]
    pub superuser_ips: Vec<String>,
    pub trusted_proxy: TrustedProxyBody,
    pub smtp: SmtpSettingsBody,
    /// PocketBase's file storage in S3: stored and tested here (`POST /api/settings/test/s3`
    /// with `storage`), not used, as this server serves no files.
    pub s3: S3SettingsBody,
}

/// An S3-compatible bucket. The secret is never served.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "S3Settings")]
pub struct S3SettingsBody {
    pub enabled: bool,
    pub bucket: String,
    pub region: String,
    /// Base URL of the store, e.g. `https://s3.amazonaws.com` or `http://127.0.0.1:9000`
    /// (`https://` when no scheme is given).
    pub endpoint: String,
    pub access_key: String,
    /// `ENDPOINT/BUCKET/KEY` requests instead of `BUCKET.ENDPOINT/KEY` (IP addresses, MinIO).
    pub force_path_style: bool,
}

/// The bucket the server's `--backups-s3-*` flags (or `PB_BACKUPS_S3_*` environment) name:
/// while they do, backups go there, whatever `backups.s3` says.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "S3Override")]
pub struct S3OverrideBody {
    pub bucket: String,
    /// Empty: AWS S3.
    pub endpoint: String,
    pub region: String,
    /// The folder inside the bucket; empty: its root.
    pub prefix: String,
}

impl From<&Override> for S3OverrideBody {
    fn from(o: &Override) -> Self {
        S3OverrideBody { bucket: o.bucket.clone(), endpoint: o.endpoint.clone(), region: o.region.clone(), prefix: o.prefix.clone() }
    }
}

impl From<S3Settings> for S3SettingsBody {
    fn from(s: S3Settings) -> Self {
        // No secret: it is write only.
        S3SettingsBody {
            enabled: s.enabled,
            bucket: s.bucket,
            region: s.region,
            endpoint: s.endpoint,
            access_key: s.access_key,
            force_path_style: s.force_path_style,
        }
    }
}

/// Which request headers name the client, for the peers listed with `--trusted-proxy`.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "TrustedProxySettings")]
pub struct TrustedProxyBody {
    /// Header names (e.g. `X-Forwarded-For`), tried in order; empty: the client is the
    /// connection's peer. The last instance of a header counts.
    pub headers: Vec<String>,
    /// Take the leftmost address of the header's list instead of the rightmost (the one the
    /// nearest proxy wrote). The leftmost is whatever the client sent: only for proxies that
    /// replace the header.
    #[oai(rename = "useLeftmostIP")]
    pub use_leftmost_ip: bool,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct MetaSettings {
    /// Part of the names of scheduled backups (snake_case, at most 50 bytes); `{APP_NAME}`
    /// in mail. Read only here.
    #[oai(read_only)]
    pub app_name: String,
    /// `{APP_URL}` in mail. Read only here.
    #[oai(rename = "appURL", read_only)]
    pub app_url: String,
    /// The name mail is sent from.
    pub sender_name: String,
    /// The address mail is sent from.
    pub sender_address: String,
}

/// How mail leaves: this SMTP server when `enabled`, else the local `sendmail`. The password
/// is never served.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "SmtpSettings")]
pub struct SmtpSettingsBody {
    pub enabled: bool,
    pub host: String,
    pub port: i64,
    /// Empty: no login.
    pub username: String,
    /// `PLAIN` (also when empty) or `LOGIN`.
    pub auth_method: String,
    /// TLS from the first byte (SMTPS, usually port 465); otherwise STARTTLS when offered.
    pub tls: bool,
    /// The name given in EHLO (empty: `localhost`).
    pub local_name: String,
}


/// Automatic backups.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "BackupsSettings")]
pub struct BackupsSettingsBody {
    /// Five-field cron expression (minute hour day-of-month month day-of-week; `*`, ranges,
    /// steps, lists) or `@yearly @annually @monthly @weekly @daily @midnight @hourly`,
    /// in UTC; empty: no scheduled backups.
    pub cron: String,
    /// How many scheduled backups (`@auto_pb_backup_*`) to keep; at least 1 with a cron.
    pub cron_max_keep: i64,
    /// Where backups are kept: this bucket (at its root, as PocketBase keeps them) while
    /// `enabled`, else the data dir's `backups` folder. Read for every operation: a change
    /// applies to the next one; one running keeps the storage it started with.
    pub s3: S3SettingsBody,
    /// Present only when the server's `--backups-s3-*` flags name a bucket: backups then go
    /// there, and `s3` is stored but not used.
    #[oai(read_only, skip_serializing_if_is_none)]
    pub s3_override: Option<S3OverrideBody>,
}

/// A change to the settings: absent fields keep their value.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "SettingsPatch")]
pub struct SettingsPatchBody {
    pub backups: Option<BackupsPatchBody>,
    /// Replaces the whole list; each entry an address or a CIDR range.
    #[oai(rename = "superuserIPs")]
    pub superuser_ips: Option<Vec<String>>,
    pub trusted_proxy: Option<TrustedProxyPatchBody>,
    pub smtp: Option<SmtpPatchBody>,
    pub meta: Option<MetaPatchBody>,
    pub s3: Option<S3PatchBody>,
}

/// A change to an S3 section: absent fields keep their value. With `enabled`, `endpoint`,
/// `bucket`, `region`, `accessKey` and `secret` are required (a stored secret counts).
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "S3SettingsPatch")]
pub struct S3PatchBody {
    pub enabled: Option<bool>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// A URL.
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    /// Write only: absent keeps the stored one, empty (or null) clears it.
    #[oai(write_only)]
    pub secret: Option<String>,
    pub force_path_style: Option<bool>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "TrustedProxySettingsPatch")]
pub struct TrustedProxyPatchBody {
    pub headers: Option<Vec<String>>,
    #[oai(rename = "useLeftmostIP")]
    pub use_leftmost_ip: Option<bool>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "SmtpSettingsPatch")]
pub struct SmtpPatchBody {
    pub enabled: Option<bool>,
    /// An IP address or DNS name; required while `enabled`.
    pub host: Option<String>,
    /// Required while `enabled`.
    #[oai(validator(minimum(value = "0"), maximum(value = "65535")))]
    pub port: Option<i64>,
    pub username: Option<String>,
    /// Write only: absent keeps the stored one, empty (or null) clears it.
    #[oai(write_only)]
    pub password: Option<String>,
    /// `PLAIN`, `LOGIN` or empty.
    pub auth_method: Option<String>,
    pub tls: Option<bool>,
    pub local_name: Option<String>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "MetaSettingsPatch")]
pub struct MetaPatchBody {
    pub sender_name: Option<String>,
    /// An email address.
    pub sender_address: Option<String>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "BackupsSettingsPatch")]
pub struct BackupsPatchBody {
    pub cron: Option<String>,
    /// 0 or more (at least 1 with a cron), as a 32-bit integer.
    #[oai(validator(minimum(value = "0"), maximum(value = "2147483647")))]
    pub cron_max_keep: Option<i64>,
    pub s3: Option<S3PatchBody>,
}

/// A validation error, with the refused fields under their section:
/// `{"data": {"backups": {"cron": {"code", "message"}}}}`; a list's entries by index:
/// `{"data": {"superuserIPs": {"0": {"code", "message"}}}}`; a field of `backups.s3` one level
/// deeper: `{"data": {"backups": {"s3": {"bucket": {"code", "message"}}}}}`; sections
/// `backups`, `s3`, `superuserIPs`, `trustedProxy`, `smtp`, `meta`.
#[derive(Object, Debug)]
#[oai(rename = "SettingsValidationError")]
pub struct SettingsError400 {
    pub status: u16,
    pub message: String,
    /// Section → field → `{"code", "message"}` (or, for `backups.s3`, field → `{"code",
    /// "message"}` once more).
    pub data: BTreeMap<String, BTreeMap<String, Value>>,
}

impl SettingsBody {
    /// The settings served, with the flags' bucket when it wins over `backups.s3`.
    fn served(s: Settings, s3_override: Option<&Override>) -> Self {
        let mut body = SettingsBody::from(s);
        body.backups.s3_override = s3_override.map(S3OverrideBody::from);
        body
    }
}

impl From<Settings> for SettingsBody {
    fn from(s: Settings) -> Self {
        let smtp = s.smtp;
        SettingsBody {
            meta: MetaSettings {
                app_name: s.app_name,
                app_url: s.app_url,
                sender_name: s.sender_name,
                sender_address: s.sender_address,
            },
            // No password: it is write only.
            smtp: SmtpSettingsBody {
                enabled: smtp.enabled,
                host: smtp.host,
                port: smtp.port,
                username: smtp.username,
                auth_method: smtp.auth_method,
                tls: smtp.tls,
                local_name: smtp.local_name,
            },
            backups: BackupsSettingsBody {
                cron: s.backups.cron,
                cron_max_keep: s.backups.cron_max_keep,
                s3: s.backups_s3.into(),
                s3_override: None,
            },
            superuser_ips: s.superuser_ips,
            trusted_proxy: TrustedProxyBody {
                headers: s.trusted_proxy.headers,
                use_leftmost_ip: s.trusted_proxy.use_leftmost_ip,
            },
            s3: s.storage_s3.into(),
        }
    }
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "GetSettingsResponse::from_poem_error")]
pub enum GetSettingsResponse {
    /// The settings.
    #[oai(status = 200)]
    Ok(Json<SettingsBody>),
    /// The settings cannot be read.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's, or it is but the client's address is not among the
    /// settings' `superuserIPs`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}
response_errors!(GetSettingsResponse, parse_error: || ApiError::new(400, Message::BadRequest), {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden,
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "UpdateSettingsResponse::from_poem_error")]
pub enum UpdateSettingsResponse {
    /// Stored; the settings as they are now.
    #[oai(status = 200)]
    Ok(Json<SettingsBody>),
    /// The body is not JSON or a value is refused: nothing is stored.
    #[oai(status = 400)]
    BadRequest(Json<SettingsError400>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's, or it is but the client's address is not among the
    /// settings' `superuserIPs`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}

impl From<ApiError> for UpdateSettingsResponse {
    fn from(e: ApiError) -> Self {
        let body = e.body();
        match e.status {
            401 => UpdateSettingsResponse::Unauthorized(Json(body)),
            403 => UpdateSettingsResponse::Forbidden(Json(body)),
            _ => validation(if e.status == 400 { e.message } else { Message::BadRequest }, Vec::new()),
        }
    }
}

impl UpdateSettingsResponse {
    fn from_poem_error(err: poem::Error) -> Self {
        super::error::from_poem_error(err, || ApiError::new(400, Message::InvalidJson)).into()
    }
}

/// Refused fields: section, field (a list entry's index), code, message.
type FieldErrors = Vec<(&'static str, String, &'static str, Message)>;

/// A 400 with the refused fields under their sections (`s3.bucket`: `bucket` under `s3`).
fn validation(message: Message, fields: FieldErrors) -> UpdateSettingsResponse {
    let mut data: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (section, field, code, msg) in fields {
        let error = FieldError { code: code.into(), message: msg.current().into() };
        let error = poem_openapi::types::ToJSON::to_json(&error).unwrap_or_default();
        let fields = data.entry(section.to_string()).or_default();
        match field.split_once('.') {
            None => {
                fields.insert(field, error);
            }
            Some((group, name)) => {
                let group = fields.entry(group.to_string()).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(group) = group {
                    group.insert(name.to_string(), error);
                }
            }
        }
    }
    UpdateSettingsResponse::BadRequest(Json(SettingsError400 { status: 400, message: message.current().into(), data }))
}

/// The patch in a PATCH body. A body that is not a JSON object (or a section that is not of
/// its type: `backups` and `trustedProxy` objects, `superuserIPs` a list) is `Err(None)`;
/// values of the wrong type are per-field errors.
fn parse_patch(bytes: &[u8]) -> Result<SettingsPatch, Option<FieldErrors>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(SettingsPatch::default());
    }
    let body: Value = serde_json::from_slice(bytes).map_err(|_| None)?;
    let body = body.as_object().ok_or(None)?;
    let mut wrong = Vec::new();
    let invalid_type = |section, field: &str| (section, field.to_string(), "validation_invalid_type", Message::InvalidType);
    // An absent field keeps its value; an explicit null is not a value of its type.
    let backups = match body.get("backups") {
        None => BackupsPatch::default(),
        Some(Value::Object(b)) => {
            let cron = match b.get("cron") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    wrong.push(invalid_type("backups", "cron"));
                    None
                }
            };
            let cron_max_keep = match b.get("cronMaxKeep") {
                None => None,
                Some(v) => match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
                    Some(n) => Some(n),
                    None => {
                        wrong.push(invalid_type("backups", "cronMaxKeep"));
                        None
                    }
                },
            };
            BackupsPatch { cron, cron_max_keep }
        }
        Some(_) => return Err(None),
    };
    let backups_s3 = match body.get("backups").and_then(|b| b.get("s3")) {
        None => S3Patch::default(),
        Some(Value::Object(fields)) => parse_s3_patch(fields, "backups", "s3.", &mut wrong),
        Some(_) => return Err(None),
    };
    let storage_s3 = match body.get("s3") {
        None => S3Patch::default(),
        Some(Value::Object(fields)) => parse_s3_patch(fields, "s3", "", &mut wrong),
        Some(_) => return Err(None),
    };
    let superuser_ips = match body.get("superuserIPs") {
        None => None,
        Some(Value::Array(items)) => {
            let mut ips = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(ip) => ips.push(ip.to_string()),
                    None => wrong.push(invalid_type("superuserIPs", &i.to_string())),
                }
            }
            Some(ips)
        }
        Some(_) => return Err(None),
    };
    let trusted_proxy = match body.get("trustedProxy") {
        None => TrustedProxyPatch::default(),
        Some(Value::Object(p)) => {
            let headers = match p.get("headers") {
                None => None,
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                    Some(items.iter().filter_map(Value::as_str).map(str::to_string).collect())
                }
                Some(_) => {
                    wrong.push(invalid_type("trustedProxy", "headers"));
                    None
                }
            };
            let use_leftmost_ip = match p.get("useLeftmostIP") {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    wrong.push(invalid_type("trustedProxy", "useLeftmostIP"));
                    None
                }
            };
            TrustedProxyPatch { headers, use_leftmost_ip }
        }
        Some(_) => return Err(None),
    };
    let (smtp, meta) = parse_mail_patch(body, &mut wrong)?;
    if wrong.is_empty() {
        Ok(SettingsPatch { backups, superuser_ips, trusted_proxy, smtp, meta, backups_s3, storage_s3 })
    } else {
        Err(Some(wrong))
    }
}

/// An S3 section of a PATCH body. An absent field keeps its value; another type, an explicit
/// null too, is a per-field error, but for the secret, which null clears as in PocketBase.
fn parse_s3_patch(
    fields: &Map<String, Value>,
    section: &'static str,
    prefix: &str,
    wrong: &mut FieldErrors,
) -> S3Patch {
    let mut refuse = |name: &str| {
        wrong.push((section, format!("{prefix}{name}"), "validation_invalid_type", Message::InvalidType));
    };
    let mut text = |name: &str| match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            refuse(name);
            None
        }
    };
    let (bucket, region, endpoint, access_key) = (text("bucket"), text("region"), text("endpoint"), text("accessKey"));
    let secret = match fields.get("secret") {
        Some(Value::Null) => Some(String::new()),
        _ => text("secret"),
    };
    let mut flag = |name: &str| match fields.get(name)? {
        Value::Bool(b) => Some(*b),
        _ => {
            wrong.push((section, format!("{prefix}{name}"), "validation_invalid_type", Message::InvalidType));
            None
        }
    };
    let (enabled, force_path_style) = (flag("enabled"), flag("forcePathStyle"));
    S3Patch { enabled, bucket, region, endpoint, access_key, secret, force_path_style }
}

/// The `smtp` and `meta` sections of a PATCH body (a section that is not an object is
/// `Err(None)`). An absent field keeps its value; another type, an explicit null too, is a
/// per-field error, but for the SMTP password, which null clears as in PocketBase.
fn parse_mail_patch(
    body: &serde_json::Map<String, Value>,
    wrong: &mut FieldErrors,
) -> Result<(SmtpPatch, MetaPatch), Option<FieldErrors>> {
    let empty = serde_json::Map::new();
    let section = |name: &str| match body.get(name) {
        None => Ok(&empty),
        Some(Value::Object(fields)) => Ok(fields),
        Some(_) => Err(None),
    };
    let (smtp, meta) = (section("smtp")?, section("meta")?);
    let mut refuse = |section: &'static str, name: &str| {
        wrong.push((section, name.to_string(), "validation_invalid_type", Message::InvalidType));
    };
    let mut text = |section: &'static str, fields: &serde_json::Map<String, Value>, name: &str| match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            refuse(section, name);
            None
        }
    };
    let host = text("smtp", smtp, "host");
    let username = text("smtp", smtp, "username");
    let password = match smtp.get("password") {
        Some(Value::Null) => Some(String::new()),
        _ => text("smtp", smtp, "password"),
    };
    let auth_method = text("smtp", smtp, "authMethod");
    let local_name = text("smtp", smtp, "localName");
    let sender_name = text("meta", meta, "senderName");
    let sender_address = text("meta", meta, "senderAddress");
    let mut flag = |name: &str| match smtp.get(name)? {
        Value::Bool(b) => Some(*b),
        _ => {
            wrong.push(("smtp", name.to_string(), "validation_invalid_type", Message::InvalidType));
            None
        }
    };
    let (enabled, tls) = (flag("enabled"), flag("tls"));
    let port = match smtp.get("port") {
        None => None,
        Some(v) => match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
            Some(n) => Some(n),
            None => {
                wrong.push(("smtp", "port".to_string(), "validation_invalid_type", Message::InvalidType));
                None
            }
        },
    };
    Ok((
        SmtpPatch { enabled, host, port, username, password, auth_method, tls, local_name },
        MetaPatch { sender_name, sender_address },
    ))
}

fn field_message(p: &FieldProblem) -> Message {
    match p {
        FieldProblem::InvalidCron(_) => Message::InvalidCron,
        FieldProblem::Required => Message::Required,
        FieldProblem::BelowOne => Message::MinOne,
        FieldProblem::InvalidIpOrSubnet => Message::InvalidIpOrSubnet,
        FieldProblem::BelowZero => Message::MinZero,
        FieldProblem::AbovePortRange => Message::MaxPort,
        FieldProblem::NotAHost => Message::NotAHost,
        FieldProblem::NotAllowed => Message::InvalidValue,
        FieldProblem::NotAnEmail => Message::InvalidEmail,
        FieldProblem::NotAUrl => Message::NotAUrl,
    }
}

pub struct SettingsApi;

#[OpenApi(tag = "ApiTags::Settings")]
impl SettingsApi {
    /// Get settings
    ///
    /// The app settings this server uses: the automatic backups schedule and storage
    /// (`backups`, with `backups.s3` and, when the server's flags name a bucket, the read-only
    /// `backups.s3Override`), the file storage's `s3`, `superuserIPs`, `trustedProxy`, mail
    /// (`smtp`) and `meta.appName`, `meta.appURL`, `meta.senderName`, `meta.senderAddress`.
    /// No password or secret is served. Only superusers can perform this action.
    #[oai(path = "/settings", method = "get", operation_id = "getSettings")]
    async fn get(&self, auth: AuthToken, service: Data<&Arc<Service>>) -> GetSettingsResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        match service.settings().await {
            Ok(s) => GetSettingsResponse::Ok(Json(SettingsBody::served(s, service.s3_override()))),
            Err(e) => {
                tracing::error!(error = %e, "settings unreadable");
                ApiError::new(400, Message::BadRequest).into()
            }
        }
    }

    /// Update settings
    ///
    /// Changes the automatic backups schedule (`backups.cron`, empty turns it off, and
    /// `backups.cronMaxKeep`), where backups are kept (`backups.s3`), the file storage's `s3`,
    /// `superuserIPs`, `trustedProxy` and mail (`smtp`, `meta.senderName`,
    /// `meta.senderAddress`). A password or secret left out is kept. Other keys are ignored
    /// here and kept as stored. Invalid values are refused with nothing stored. A change to
    /// `superuserIPs` or `backups.s3` applies to the next request, this client's too. Only
    /// superusers can perform this action.
    #[oai(path = "/settings", method = "patch", operation_id = "updateSettings")]
    async fn update(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        body: DeferredBody<Json<SettingsPatchBody>, false>,
    ) -> UpdateSettingsResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        let read = body.into_body().into_bytes_limit(JSON_BODY_LIMIT);
        let bytes = match tokio::time::timeout(JSON_BODY_TIMEOUT, read).await {
            Ok(Ok(bytes)) => bytes,
            _ => return validation(Message::InvalidJson, Vec::new()),
        };
        let patch = match parse_patch(&bytes) {
            Ok(patch) => patch,
            Err(None) => return validation(Message::InvalidJson, Vec::new()),
            Err(Some(fields)) => return validation(Message::ValidationFailed, fields),
        };
        match service.update_settings(patch).await {
            Ok(s) => UpdateSettingsResponse::Ok(Json(SettingsBody::served(s, service.s3_override()))),
            Err(SettingsError::Invalid(invalid)) => {
                let fields = invalid
                    .fields
                    .into_iter()
                    .map(|f| (f.section, f.field, f.problem.code(), field_message(&f.problem)))
                    .collect();
                validation(Message::ValidationFailed, fields)
            }
            Err(e) => {
                tracing::error!(error = %e, "settings not stored");
                validation(Message::BadRequest, Vec::new())
            }
        }
    }

    /// Test S3
    ///
    /// Tests the saved S3 settings of `backups` (`backups.s3`) or `storage` (the file
    /// storage's `s3`) as PocketBase does: writes a small object under a new
    /// `pb_settings_test_*` folder of the bucket, then deletes it. 204 when both worked;
    /// otherwise 400 with the reason (not enabled, unreachable, refused, no such bucket).
    /// The saved settings are tested whatever the server's `--backups-s3-*` flags say. Only
    /// superusers can perform this action.
    #[oai(path = "/settings/test/s3", method = "post", operation_id = "testS3")]
    async fn test_s3(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        body: DeferredBody<Json<TestS3Body>, false>,
    ) -> TestS3Response {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        let backups = match body.read_json_value().await {
            Err(()) => return ApiError::new(400, Message::InvalidJson).into(),
            Ok(value) => match filesystem(value) {
                Ok(backups) => backups,
                Err(e) => return e.into(),
            },
        };
        match service.test_s3(backups).await {
            Ok(()) => TestS3Response::NoContent,
            Err(e) => {
                tracing::warn!(filesystem = if backups { "backups" } else { "storage" }, error = %e, "S3 test failed");
                ApiError::new(400, test_message(e)).into()
            }
        }
    }
}

/// Which S3 section to test.
#[derive(Object, Debug)]
#[oai(rename = "TestS3Body")]
pub struct TestS3Body {
    pub filesystem: S3Filesystem,
}

/// `backups` (`backups.s3`) or `storage` (the file storage's `s3`). Read by the handler, so
/// that any other value gets PocketBase's field code rather than a parse error.
#[derive(poem_openapi::Enum, Debug)]
#[oai(rename_all = "lowercase")]
pub enum S3Filesystem {
    Backups,
    Storage,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "TestS3Response::from_poem_error")]
pub enum TestS3Response {
    /// The test object was written and deleted.
    #[oai(status = 204)]
    NoContent,
    /// `filesystem` is missing or neither `backups` nor `storage`
    /// (`data.filesystem.code`: `validation_required`, `validation_in_invalid`), or the test
    /// failed: the message says why (not enabled, unreachable, refused, no such bucket).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's, or it is but the client's address is not among the
    /// settings' `superuserIPs`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}
response_errors!(TestS3Response, parse_error: || ApiError::new(400, Message::InvalidJson), {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden,
});

/// Whether a test body names `backups` (else `storage`), with PocketBase's codes: an empty
/// body or name is `validation_required`, another name `validation_in_invalid`, another
/// type the unreadable body's 400.
fn filesystem(body: Option<Value>) -> Result<bool, ApiError> {
    let name = match body {
        None => None,
        Some(Value::Object(fields)) => match fields.get("filesystem") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => return Err(ApiError::new(400, Message::InvalidJson)),
        },
        Some(_) => return Err(ApiError::new(400, Message::InvalidJson)),
    };
    let refused = |code, message| ApiError::new(400, Message::S3TestFailed).field("filesystem", code, message);
    match name.as_deref() {
        None | Some("") => Err(refused("validation_required", Message::Required)),
        Some("backups") => Ok(true),
        Some("storage") => Ok(false),
        Some(_) => Err(refused("validation_in_invalid", Message::InvalidValue)),
    }
}

fn test_message(e: TestError) -> Message {
    match e {
        TestError::NotEnabled => Message::S3NotEnabled,
        TestError::SettingsUnreadable => Message::BadRequest,
        TestError::Unusable => Message::S3Unusable,
        TestError::Unreachable => Message::S3Unreachable,
        TestError::Refused => Message::S3Refused,
        TestError::NoBucket => Message::S3NoBucket,
        TestError::Unexpected => Message::S3Unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backups(cron: Option<&str>, keep: Option<i64>) -> SettingsPatch {
        SettingsPatch { backups: BackupsPatch { cron: cron.map(Into::into), cron_max_keep: keep }, ..Default::default() }
    }

    fn wrong(body: &[u8]) -> Vec<(&'static str, String, &'static str)> {
        parse_patch(body).unwrap_err().unwrap().into_iter().map(|(s, f, c, _)| (s, f, c)).collect()
    }

    #[test]
    fn patch_bodies() {
        assert_eq!(parse_patch(b"  "), Ok(SettingsPatch::default()));
        assert_eq!(parse_patch(br#"{"meta": {"appName": "x"}}"#), Ok(SettingsPatch::default()));
        assert_eq!(parse_patch(br#"{"backups": {"cron": "@daily", "cronMaxKeep": 2}}"#), Ok(backups(Some("@daily"), Some(2))));
        assert_eq!(parse_patch(b"[1]"), Err(None));
        assert_eq!(parse_patch(b"{\"backups\": 3}"), Err(None));
        assert_eq!(parse_patch(b"{"), Err(None));
        assert_eq!(wrong(br#"{"backups": {"cron": 5, "cronMaxKeep": "3"}}"#), [
            ("backups", "cron".to_string(), "validation_invalid_type"),
            ("backups", "cronMaxKeep".to_string(), "validation_invalid_type")
        ]);
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 2.5}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cron": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": null}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 99999999999}}"#).is_err());
    }

    #[test]
    fn access_patch_bodies() {
        let patch = parse_patch(br#"{"superuserIPs": ["10.0.0.0/8", ""], "trustedProxy": {"headers": ["X-Real-IP"]}}"#);
        assert_eq!(
            patch,
            Ok(SettingsPatch {
                superuser_ips: Some(vec!["10.0.0.0/8".into(), "".into()]),
                trusted_proxy: TrustedProxyPatch { headers: Some(vec!["X-Real-IP".into()]), use_leftmost_ip: None },
                ..Default::default()
            })
        );
        let patch = parse_patch(br#"{"superuserIPs": [], "trustedProxy": {"useLeftmostIP": true}}"#).unwrap();
        assert_eq!((patch.superuser_ips, patch.trusted_proxy.use_leftmost_ip), (Some(vec![]), Some(true)));
        // Not a list, not an object: the body is unreadable, as PocketBase finds it.
        assert_eq!(parse_patch(br#"{"superuserIPs": "10.0.0.1"}"#), Err(None));
        assert_eq!(parse_patch(br#"{"superuserIPs": null}"#), Err(None));
        assert_eq!(parse_patch(br#"{"trustedProxy": ["x"]}"#), Err(None));
        assert_eq!(wrong(br#"{"superuserIPs": ["10.0.0.1", 5], "trustedProxy": {"headers": [1], "useLeftmostIP": "yes"}}"#), [
            ("superuserIPs", "1".to_string(), "validation_invalid_type"),
            ("trustedProxy", "headers".to_string(), "validation_invalid_type"),
            ("trustedProxy", "useLeftmostIP".to_string(), "validation_invalid_type"),
        ]);
    }

    #[test]
    fn s3_patch_bodies() {
        let patch = parse_patch(
            br#"{"backups": {"s3": {"enabled": true, "bucket": "b", "region": "r", "endpoint": "http://e",
                                    "accessKey": "a", "secret": "s", "forcePathStyle": true}},
                 "s3": {"bucket": "files", "secret": null}}"#,
        )
        .unwrap();
        assert_eq!(patch.backups_s3, S3Patch {
            enabled: Some(true),
            bucket: Some("b".into()),
            region: Some("r".into()),
            endpoint: Some("http://e".into()),
            access_key: Some("a".into()),
            secret: Some("s".into()),
            force_path_style: Some(true),
        });
        // Absent keeps the secret, null clears it; other fields stay unset.
        assert_eq!(patch.storage_s3, S3Patch { bucket: Some("files".into()), secret: Some(String::new()), ..Default::default() });
        assert_eq!(parse_patch(br#"{"backups": {"s3": {"bucket": "b"}}}"#).unwrap().backups_s3.secret, None);
        assert_eq!(parse_patch(br#"{"backups": {"s3": 5}}"#), Err(None));
        assert_eq!(parse_patch(br#"{"s3": null}"#), Err(None));
        let mut got = wrong(br#"{"backups": {"s3": {"enabled": "yes", "bucket": 5}}, "s3": {"forcePathStyle": 1}}"#);
        got.sort();
        assert_eq!(got, [
            ("backups", "s3.bucket".to_string(), "validation_invalid_type"),
            ("backups", "s3.enabled".to_string(), "validation_invalid_type"),
            ("s3", "forcePathStyle".to_string(), "validation_invalid_type"),
        ]);
    }

    #[test]
    fn test_bodies_name_a_filesystem_as_pocketbase_s_do() {
        let code = |body: Option<Value>| match filesystem(body) {
            Ok(backups) => Ok(backups),
            Err(e) => Err((e.message, e.fields.first().map(|f| (f.0, f.1)))),
        };
        assert_eq!(code(Some(json!({"filesystem": "backups"}))), Ok(true));
        assert_eq!(code(Some(json!({"filesystem": "storage"}))), Ok(false));
        let required = Err((Message::S3TestFailed, Some(("filesystem", "validation_required"))));
        assert_eq!(code(None), required);
        assert_eq!(code(Some(json!({}))), required);
        assert_eq!(code(Some(json!({"filesystem": ""}))), required);
        assert_eq!(code(Some(json!({"filesystem": "other"}))), Err((Message::S3TestFailed, Some(("filesystem", "validation_in_invalid")))));
        assert_eq!(code(Some(json!({"filesystem": 5}))), Err((Message::InvalidJson, None)));
        assert_eq!(code(Some(json!([1]))), Err((Message::InvalidJson, None)));
    }

    #[test]
    fn mail_patch_bodies() {
        let patch = parse_patch(
            br#"{"smtp": {"enabled": true, "host": "127.0.0.1", "port": 2525, "username": "u", "password": "p",
                          "authMethod": "LOGIN", "tls": false, "localName": "me.example"},
                 "meta": {"senderName": "Ops", "senderAddress": "ops@example.com", "appName": "ignored"}}"#,
        )
        .unwrap();
        assert_eq!(patch.smtp, SmtpPatch {
            enabled: Some(true),
            host: Some("127.0.0.1".into()),
            port: Some(2525),
            username: Some("u".into()),
            password: Some("p".into()),
            auth_method: Some("LOGIN".into()),
            tls: Some(false),
            local_name: Some("me.example".into()),
        });
        assert_eq!(patch.meta, MetaPatch { sender_name: Some("Ops".into()), sender_address: Some("ops@example.com".into()) });
        // Absent keeps the password, null and empty clear it.
        assert_eq!(parse_patch(br#"{"smtp": {"host": "h"}}"#).unwrap().smtp.password, None);
        assert_eq!(parse_patch(br#"{"smtp": {"password": null}}"#).unwrap().smtp.password, Some(String::new()));
        assert_eq!(parse_patch(b"{\"smtp\": []}"), Err(None));
        let mut got = wrong(br#"{"smtp": {"enabled": "yes", "port": "25", "host": 1}, "meta": {"senderName": false}}"#);
        got.sort();
        assert_eq!(got, [
            ("meta", "senderName".to_string(), "validation_invalid_type"),
            ("smtp", "enabled".to_string(), "validation_invalid_type"),
            ("smtp", "host".to_string(), "validation_invalid_type"),
            ("smtp", "port".to_string(), "validation_invalid_type"),
        ]);
    }
}
