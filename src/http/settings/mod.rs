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

pub mod bodies;
mod patch;

use super::auth::AuthToken;
use super::body::{DeferredBody, JSON_BODY_LIMIT, JSON_BODY_TIMEOUT};
use super::error::{response_errors, ApiError, ErrorBody, FieldError};
use crate::backends::TestError;
use crate::i18n::Message;
use crate::service::Service;
use crate::settings::{FieldProblem, SettingsError};
use bodies::{SettingsBody, SettingsError400, SettingsPatchBody};
use patch::{parse_patch, FieldErrors};

#[derive(Tags)]
enum ApiTags {
    /// The app settings this server uses: the automatic backups schedule, where backups are
    /// kept (S3), who may act as a superuser from where, and mail. Superusers only.
    Settings,
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
}
