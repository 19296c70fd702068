//! `GET` / `PATCH /api/settings`, as PocketBase serves them, for the part this server uses:
//! the `backups` section (`cron`, `cronMaxKeep`) read and written, `meta.appName` read only.
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
use crate::settings::{BackupsPatch, FieldProblem, Settings, SettingsError};

#[derive(Tags)]
enum ApiTags {
    /// The app settings this server uses: the automatic backups schedule. Superusers only.
    Settings,
}

/// The settings served: the others PocketBase keeps in the same row are left as they are.
#[derive(Object, Debug)]
#[oai(rename = "Settings")]
pub struct SettingsBody {
    /// Read only here.
    pub meta: MetaSettings,
    pub backups: BackupsSettingsBody,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", read_only_all)]
pub struct MetaSettings {
    /// Part of the names of scheduled backups (snake_case, at most 50 bytes).
    pub app_name: String,
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
/// `{"data": {"backups": {"cron": {"code", "message"}}}}`.
#[derive(Object, Debug)]
#[oai(rename = "SettingsValidationError")]
pub struct SettingsError400 {
    pub status: u16,
    pub message: String,
    pub data: BTreeMap<String, BTreeMap<String, FieldError>>,
}

impl From<Settings> for SettingsBody {
    fn from(s: Settings) -> Self {
        SettingsBody {
            meta: MetaSettings { app_name: s.app_name },
            backups: BackupsSettingsBody { cron: s.backups.cron, cron_max_keep: s.backups.cron_max_keep },
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

/// Refused fields of the `backups` section: name, code, message.
type FieldErrors = Vec<(&'static str, &'static str, Message)>;

/// A 400 whose refused fields all belong to the `backups` section.
fn validation(message: Message, fields: FieldErrors) -> UpdateSettingsResponse {
    let backups: BTreeMap<String, FieldError> = fields
        .into_iter()
        .map(|(name, code, msg)| (name.to_string(), FieldError { code: code.into(), message: msg.current().into() }))
        .collect();
    let mut data = BTreeMap::new();
    if !backups.is_empty() {
        data.insert("backups".to_string(), backups);
    }
    UpdateSettingsResponse::BadRequest(Json(SettingsError400 { status: 400, message: message.current().into(), data }))
}

/// The `backups` patch in a PATCH body. A body that is not a JSON object (or whose `backups`
/// is not one) is `Err(None)`; values of the wrong type are per-field errors.
fn parse_patch(bytes: &[u8]) -> Result<BackupsPatch, Option<FieldErrors>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(BackupsPatch::default());
    }
    let body: Value = serde_json::from_slice(bytes).map_err(|_| None)?;
    let body = body.as_object().ok_or(None)?;
    // An absent field keeps its value; an explicit null is not a value of its type.
    let backups = match body.get("backups") {
        None => return Ok(BackupsPatch::default()),
        Some(Value::Object(b)) => b,
        Some(_) => return Err(None),
    };
    let mut wrong = Vec::new();
    let cron = match backups.get("cron") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            wrong.push(("cron", "validation_invalid_type", Message::InvalidType));
            None
        }
    };
    let cron_max_keep = match backups.get("cronMaxKeep") {
        None => None,
        Some(v) => match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
            Some(n) => Some(n),
            None => {
                wrong.push(("cronMaxKeep", "validation_invalid_type", Message::InvalidType));
                None
            }
        },
    };
    if wrong.is_empty() {
        Ok(BackupsPatch { cron, cron_max_keep })
    } else {
        Err(Some(wrong))
    }
}

fn field_message(p: &FieldProblem) -> Message {
    match p {
        FieldProblem::InvalidCron(_) => Message::InvalidCron,
        FieldProblem::Required => Message::Required,
        FieldProblem::BelowOne => Message::MinOne,
    }
}

pub struct SettingsApi;

#[OpenApi(tag = "ApiTags::Settings")]
impl SettingsApi {
    /// Get settings
    ///
    /// The app settings this server uses: the automatic backups schedule (`backups`) and
    /// `meta.appName`. Only superusers can perform this action.
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
    /// Changes the automatic backups schedule: `backups.cron` (empty turns it off) and
    /// `backups.cronMaxKeep`. Other sections are ignored here and kept as stored. Invalid
    /// values are refused with nothing stored. Only superusers can perform this action.
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
        match service.update_backups_settings(patch).await {
            Ok(s) => UpdateSettingsResponse::Ok(Json(s.into())),
            Err(SettingsError::Invalid(invalid)) => {
                let fields = invalid.fields.iter().map(|(name, p)| (*name, p.code(), field_message(p))).collect();
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

    #[test]
    fn patch_bodies() {
        assert_eq!(parse_patch(b"  "), Ok(BackupsPatch::default()));
        assert_eq!(parse_patch(br#"{"meta": {"appName": "x"}}"#), Ok(BackupsPatch::default()));
        assert_eq!(
            parse_patch(br#"{"backups": {"cron": "@daily", "cronMaxKeep": 2}}"#),
            Ok(BackupsPatch { cron: Some("@daily".into()), cron_max_keep: Some(2) })
        );
        assert_eq!(parse_patch(b"[1]"), Err(None));
        assert_eq!(parse_patch(b"{\"backups\": 3}"), Err(None));
        assert_eq!(parse_patch(b"{"), Err(None));
        let wrong = parse_patch(br#"{"backups": {"cron": 5, "cronMaxKeep": "3"}}"#).unwrap_err().unwrap();
        assert_eq!(wrong.iter().map(|(f, c, _)| (*f, *c)).collect::<Vec<_>>(), [
            ("cron", "validation_invalid_type"),
            ("cronMaxKeep", "validation_invalid_type")
        ]);
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 2.5}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cron": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": null}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 99999999999}}"#).is_err());
    }
}
