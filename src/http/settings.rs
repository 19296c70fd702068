//! `GET` / `PATCH /api/settings`, as PocketBase serves them, for the part this server uses:
//! the `backups` section (`cron`, `cronMaxKeep`) and the mail settings (`smtp`,
//! `meta.senderName`, `meta.senderAddress`) read and written, `meta.appName` and `meta.appURL`
//! read only. The SMTP password is never served (the key is left out, as PocketBase does).
//! Superusers only. Validation errors nest per section, as PocketBase's do:
//! `data.backups.cron.code`.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::Value;

use super::auth::AuthToken;
use super::body::{DeferredBody, JSON_BODY_LIMIT, JSON_BODY_TIMEOUT};
use super::error::{response_errors, ApiError, ErrorBody, FieldError};
use crate::i18n::Message;
use crate::service::Service;
use crate::settings::{BackupsPatch, FieldProblem, MetaPatch, Settings, SettingsError, SettingsPatch, SmtpPatch};

#[derive(Tags)]
enum ApiTags {
    /// The app settings this server uses: the automatic backups schedule and mail. Superusers only.
    Settings,
}

/// The settings served: the others PocketBase keeps in the same row are left as they are.
#[derive(Object, Debug)]
#[oai(rename = "Settings")]
pub struct SettingsBody {
    pub meta: MetaSettings,
    pub backups: BackupsSettingsBody,
    pub smtp: SmtpSettingsBody,
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
}

/// A change to the settings: absent fields keep their value.
#[derive(Object, Debug)]
#[oai(rename = "SettingsPatch")]
pub struct SettingsPatchBody {
    pub backups: Option<BackupsPatchBody>,
    pub smtp: Option<SmtpPatchBody>,
    pub meta: Option<MetaPatchBody>,
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
}

/// A validation error, with the refused fields under their section:
/// `{"data": {"backups": {"cron": {"code", "message"}}}}` (sections `backups`, `smtp`, `meta`).
#[derive(Object, Debug)]
#[oai(rename = "SettingsValidationError")]
pub struct SettingsError400 {
    pub status: u16,
    pub message: String,
    pub data: BTreeMap<String, BTreeMap<String, FieldError>>,
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
            backups: BackupsSettingsBody { cron: s.backups.cron, cron_max_keep: s.backups.cron_max_keep },
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
    /// The token is not a superuser's.
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
    /// The token is not a superuser's.
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

/// Refused fields: section, name, code, message.
type FieldErrors = Vec<(&'static str, &'static str, &'static str, Message)>;

/// A 400 with the refused fields under their sections.
fn validation(message: Message, fields: FieldErrors) -> UpdateSettingsResponse {
    let mut data: BTreeMap<String, BTreeMap<String, FieldError>> = BTreeMap::new();
    for (section, name, code, msg) in fields {
        let error = FieldError { code: code.into(), message: msg.current().into() };
        data.entry(section.to_string()).or_default().insert(name.to_string(), error);
    }
    UpdateSettingsResponse::BadRequest(Json(SettingsError400 { status: 400, message: message.current().into(), data }))
}

/// Reads the sections of a PATCH body one field at a time: an absent field keeps its value,
/// a value of the wrong type (an explicit null too, but for the SMTP password, which null
/// clears as in PocketBase) is a per-field error.
struct PatchReader<'a> {
    section: &'static str,
    fields: &'a serde_json::Map<String, Value>,
    wrong: &'a mut FieldErrors,
}

impl PatchReader<'_> {
    fn refuse(&mut self, name: &'static str) {
        self.wrong.push((self.section, name, "validation_invalid_type", Message::InvalidType));
    }

    fn text(&mut self, name: &'static str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.refuse(name);
                None
            }
        }
    }

    fn flag(&mut self, name: &'static str) -> Option<bool> {
        match self.fields.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.refuse(name);
                None
            }
        }
    }

    /// An integer that fits 32 bits.
    fn int(&mut self, name: &'static str) -> Option<i64> {
        let v = self.fields.get(name)?;
        match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
            Some(n) => Some(n),
            None => {
                self.refuse(name);
                None
            }
        }
    }
}

/// The patch in a PATCH body. A body that is not a JSON object (or a section that is not
/// one) is `Err(None)`; values of the wrong type are per-field errors.
fn parse_patch(bytes: &[u8]) -> Result<SettingsPatch, Option<FieldErrors>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(SettingsPatch::default());
    }
    let body: Value = serde_json::from_slice(bytes).map_err(|_| None)?;
    let body = body.as_object().ok_or(None)?;
    let empty = serde_json::Map::new();
    let section = |name: &str| match body.get(name) {
        None => Ok(&empty),
        Some(Value::Object(fields)) => Ok(fields),
        Some(_) => Err(None),
    };
    let (backups, smtp, meta) = (section("backups")?, section("smtp")?, section("meta")?);
    let mut wrong = FieldErrors::new();
    let mut r = PatchReader { section: "backups", fields: backups, wrong: &mut wrong };
    let backups = BackupsPatch { cron: r.text("cron"), cron_max_keep: r.int("cronMaxKeep") };
    let mut r = PatchReader { section: "smtp", fields: smtp, wrong: &mut wrong };
    let password = match smtp.get("password") {
        Some(Value::Null) => Some(String::new()),
        _ => r.text("password"),
    };
    let smtp = SmtpPatch {
        enabled: r.flag("enabled"),
        host: r.text("host"),
        port: r.int("port"),
        username: r.text("username"),
        password,
        auth_method: r.text("authMethod"),
        tls: r.flag("tls"),
        local_name: r.text("localName"),
    };
    let mut r = PatchReader { section: "meta", fields: meta, wrong: &mut wrong };
    let meta = MetaPatch { sender_name: r.text("senderName"), sender_address: r.text("senderAddress") };
    if wrong.is_empty() {
        Ok(SettingsPatch { backups, smtp, meta })
    } else {
        Err(Some(wrong))
    }
}

fn field_message(p: &FieldProblem) -> Message {
    match p {
        FieldProblem::InvalidCron(_) => Message::InvalidCron,
        FieldProblem::Required => Message::Required,
        FieldProblem::BelowOne => Message::MinOne,
        FieldProblem::BelowZero => Message::MinZero,
        FieldProblem::AbovePortRange => Message::MaxPort,
        FieldProblem::NotAHost => Message::NotAHost,
        FieldProblem::NotAllowed => Message::NotAllowed,
        FieldProblem::NotAnEmail => Message::InvalidEmail,
    }
}

pub struct SettingsApi;

#[OpenApi(tag = "ApiTags::Settings")]
impl SettingsApi {
    /// Get settings
    ///
    /// The app settings this server uses: the automatic backups schedule (`backups`), mail
    /// (`smtp` without its password, `meta.senderName`, `meta.senderAddress`) and
    /// `meta.appName`, `meta.appURL`. Only superusers can perform this action.
    #[oai(path = "/settings", method = "get", operation_id = "getSettings")]
    async fn get(&self, auth: AuthToken, service: Data<&Arc<Service>>) -> GetSettingsResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        match service.settings().await {
            Ok(s) => GetSettingsResponse::Ok(Json(s.into())),
            Err(e) => {
                tracing::error!(error = %e, "settings unreadable");
                ApiError::new(400, Message::BadRequest).into()
            }
        }
    }

    /// Update settings
    ///
    /// Changes the automatic backups schedule (`backups.cron`, empty turns it off, and
    /// `backups.cronMaxKeep`) and mail (`smtp`, whose password is kept when left out, and
    /// `meta.senderName`, `meta.senderAddress`). Other keys are ignored here and kept as
    /// stored. Invalid values are refused with nothing stored. Only superusers can perform
    /// this action.
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
            Ok(s) => UpdateSettingsResponse::Ok(Json(s.into())),
            Err(SettingsError::Invalid(invalid)) => {
                let fields =
                    invalid.fields.iter().map(|(section, name, p)| (*section, *name, p.code(), field_message(p))).collect();
                validation(Message::ValidationFailed, fields)
            }
            Err(e) => {
                tracing::error!(error = %e, "settings not stored");
                validation(Message::BadRequest, Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backups(cron: Option<&str>, keep: Option<i64>) -> SettingsPatch {
        SettingsPatch { backups: BackupsPatch { cron: cron.map(Into::into), cron_max_keep: keep }, ..Default::default() }
    }

    fn codes(bytes: &[u8]) -> Vec<(&'static str, &'static str, &'static str)> {
        parse_patch(bytes).unwrap_err().unwrap().iter().map(|(s, f, c, _)| (*s, *f, *c)).collect()
    }

    #[test]
    fn patch_bodies() {
        assert_eq!(parse_patch(b"  "), Ok(SettingsPatch::default()));
        assert_eq!(parse_patch(br#"{"meta": {"appName": "x"}}"#), Ok(SettingsPatch::default()));
        assert_eq!(parse_patch(br#"{"backups": {"cron": "@daily", "cronMaxKeep": 2}}"#), Ok(backups(Some("@daily"), Some(2))));
        assert_eq!(parse_patch(b"[1]"), Err(None));
        assert_eq!(parse_patch(b"{\"backups\": 3}"), Err(None));
        assert_eq!(parse_patch(b"{\"smtp\": []}"), Err(None));
        assert_eq!(parse_patch(b"{"), Err(None));
        assert_eq!(codes(br#"{"backups": {"cron": 5, "cronMaxKeep": "3"}}"#), [
            ("backups", "cron", "validation_invalid_type"),
            ("backups", "cronMaxKeep", "validation_invalid_type")
        ]);
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 2.5}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cron": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": null}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 99999999999}}"#).is_err());
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
        assert_eq!(codes(br#"{"smtp": {"enabled": "yes", "port": "25", "host": 1}, "meta": {"senderName": false}}"#), [
            ("smtp", "enabled", "validation_invalid_type"),
            ("smtp", "host", "validation_invalid_type"),
            ("smtp", "port", "validation_invalid_type"),
            ("meta", "senderName", "validation_invalid_type"),
        ]);
    }
}
