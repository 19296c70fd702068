//! What this server offers beyond the spec, for the console at `/_/` and other tools: the
//! verify of a stored backup (`POST /api/backups/{key}/verify`), and the progress of the
//! running create or restore in `/api/health`'s `data` for superusers. The six documented
//! operations are untouched by either.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::AuthToken;
use super::error::{response_errors, ApiError, ErrorBody};
use crate::i18n::Message;
use crate::service::{BackupError, Service};

/// The operation ids of this module, which the document marks as extensions
/// (`x-pb-backups-extension`).
pub const EXTENSION_OPERATIONS: &[&str] = &["verifyBackup"];

/// Whether a backup would restore.
#[derive(Object, Debug, PartialEq)]
pub struct VerifyResult {
    /// True when the restore's checks all pass.
    pub ok: bool,
    /// Why it would not restore, in the request's language (absent when `ok`).
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "VerifyResponse::from_poem_error")]
pub enum VerifyResponse {
    /// The verdict: `{"ok": true}`, or `{"ok": false, "reason": "..."}`.
    #[oai(status = 200)]
    Ok(Json<VerifyResult>),
    /// A restore runs or was accepted meanwhile, or the backups storage cannot be read.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such backup.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}
// The only parsed input is the path key: one that does not even decode is no backup.
response_errors!(VerifyResponse, parse_error: ApiError::not_found, {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 404 => NotFound,
});

/// `data` of `/api/health`: empty for anyone but a superuser.
#[derive(Object, Debug, Default)]
#[oai(rename_all = "camelCase")]
pub struct HealthData {
    /// Superusers only: false while a create or restore runs (as PocketBase answers).
    #[oai(skip_serializing_if_is_none)]
    pub can_backup: Option<bool>,
    /// Superusers only, while a create or restore runs: how far it is (an extension beyond
    /// PocketBase).
    #[oai(skip_serializing_if_is_none)]
    pub progress: Option<ProgressBody>,
}

/// How far the running create or restore is, in bytes: for a create, of the planned files
/// read into the archive; for a restore, of the archive's entries extracted (its fetch from
/// the storage comes first and is not counted; `total` is 0 until then).
#[derive(Object, Debug, PartialEq, Eq)]
pub struct ProgressBody {
    /// `create` or `restore`.
    pub action: String,
    /// The backup being created or restored.
    pub key: String,
    pub done: u64,
    pub total: u64,
}

impl HealthData {
    /// What health tells `superuser` (or anyone else, when false).
    pub fn of(service: &Service, superuser: bool) -> HealthData {
        if !superuser {
            return HealthData::default();
        }
        let progress = service.progress().map(|r| ProgressBody {
            action: r.what.to_string(),
            key: r.backup,
            done: r.done,
            total: r.total,
        });
        HealthData { can_backup: Some(!service.is_busy()), progress }
    }
}

/// The reason a refused archive is given, as a refused restore words it.
fn reason(e: &BackupError) -> Option<Message> {
    Some(match e {
        BackupError::Unrestorable { problem, .. } => super::backups::archive_message(*problem),
        BackupError::NoUsableAccounts(_) => Message::ArchiveNoUsableAccounts,
        _ => return None,
    })
}

pub struct ExtensionsApi;

#[OpenApi]
impl ExtensionsApi {
    /// Verify backup
    ///
    /// **An extension beyond the spec** (pb-backups only). Tells whether a stored backup would
    /// restore, making exactly the checks a restore makes before its 204 (those of
    /// `pb-backups backups verify`): every entry decoded against its checksum and sizes, safe
    /// names, sizes within the limits, `data.db` passes SQLite's integrity check and holds a
    /// usable superuser account. Changes nothing. It is not a create or restore: it runs
    /// beside them, but is refused (400, busy) while a restore runs, and given up when one is
    /// accepted meanwhile. Only superusers can perform this action.
    #[oai(
        path = "/backups/:key/verify",
        method = "post",
        operation_id = "verifyBackup",
        tag = "super::backups::ApiTags::Backups"
    )]
    async fn verify(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        /// The key (file name) of the backup to verify.
        key: Path<String>,
    ) -> VerifyResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        match service.verify(&key.0).await {
            Ok(()) => VerifyResponse::Ok(Json(VerifyResult { ok: true, reason: None })),
            Err(e) => match reason(&e) {
                Some(why) => {
                    tracing::info!(key = %key.0, error = %e, "verify: would not restore");
                    VerifyResponse::Ok(Json(VerifyResult { ok: false, reason: Some(why.current().to_string()) }))
                }
                None => match e {
                    BackupError::Busy => ApiError::busy(Message::Busy).into(),
                    BackupError::NotFound => ApiError::not_found().into(),
                    BackupError::Storage(_) => {
                        tracing::error!(error = %e, "backups storage failed");
                        ApiError::new(400, Message::StorageFailure).into()
                    }
                    e => {
                        tracing::error!(key = %key.0, error = %e, "verify failed");
                        ApiError::new(400, Message::BadRequest).into()
                    }
                },
            },
        }
    }
}
