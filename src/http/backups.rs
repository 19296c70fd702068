//! The six backup operations, exactly as the spec documents them.
//!
//! Each handler: check the caller, call the service, map the result to one of the
//! operation's documented responses. Nothing else happens here.

use std::marker::PhantomData;
use std::sync::Arc;

use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::auth::{AuthToken, FileToken};
use super::download::{content_disposition, parse_range};
use super::error::{response_errors, ApiError, ErrorBody};
use super::body::DeferredBody;
use super::fields;
use super::upload::{self as upload_body, UploadForm};
use crate::i18n::Message;
use crate::model::names::NameError;
use crate::service::{ArchiveProblem, BackupError, Listing, Service};
use crate::storage::BackupMeta;

#[derive(Tags)]
pub(super) enum ApiTags {
    /// Backups of the server's data dir: list, create, upload, download, delete, restore.
    /// Superusers only.
    Backups,
}

/// One stored backup: `key`, `modified` and `size`, or the part of them that `fields` selects.
#[derive(Object, Clone, Debug)]
pub struct BackupInfo {
    /// The backup's file name, which is its key.
    pub key: String,
    /// Last modification time, UTC, like `2023-05-19 16:25:57.542Z`.
    pub modified: String,
    /// Size in bytes.
    pub size: u64,
}

const MODIFIED_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z"
);

impl From<&BackupMeta> for BackupInfo {
    fn from(m: &BackupMeta) -> Self {
        let modified = time::OffsetDateTime::from(m.modified);
        BackupInfo {
            key: m.key.to_string(),
            modified: modified.format(MODIFIED_FORMAT).unwrap_or_default(),
            size: m.size,
        }
    }
}

/// JSON already shaped by `?fields=`, documented with the schema of the full value `T`.
pub struct ProjectedJson<T>(Projected, PhantomData<T>);

/// A projected value, or the full value already serialized.
pub enum Projected {
    Value(serde_json::Value),
    Bytes(bytes::Bytes),
}

impl<T: Type> Payload for ProjectedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> poem::IntoResponse for ProjectedJson<T> {
    fn into_response(self) -> poem::Response {
        match self.0 {
            Projected::Value(v) => poem::web::Json(v).into_response(),
            Projected::Bytes(b) => poem::Response::builder().content_type("application/json; charset=utf-8").body(b),
        }
    }
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "ListResponse::from_poem_error")]
pub enum ListResponse {
    /// The backups, newest first.
    #[oai(status = 200)]
    Ok(ProjectedJson<Vec<BackupInfo>>),
    /// The backups storage cannot be opened or listed.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's; or it is, from an address outside the settings'
    /// `superuserIPs` (PocketBase's `You are not allowed to perform this request.`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}
response_errors!(ListResponse, parse_error: || ApiError::new(400, Message::BadRequest), {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden,
});

/// The optional name of a backup to create.
#[derive(Object, Debug, Default)]
pub struct CreateBackupBody {
    /// Base name of the backup file, matching `[a-z0-9_-]+\.zip`, at most 150 characters.
    /// Generated (`pb_backup_YYYYMMDDHHMMSS.zip`, UTC) when absent or empty.
    pub name: Option<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "CreateResponse::from_poem_error")]
pub enum CreateResponse {
    /// The backup is complete and stored.
    #[oai(status = 204)]
    Created,
    /// Another backup or restore is in progress, the name is invalid or taken, or the data
    /// dir is past what a restore accepts (more entries than `--max-archive-entries`, or
    /// larger than `--max-archive-size`): no backup is made that would not restore.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's; or it is, from an address outside the settings'
    /// `superuserIPs` (PocketBase's `You are not allowed to perform this request.`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}
response_errors!(CreateResponse, parse_error: || ApiError::new(400, Message::InvalidJson), {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden,
});

fn upload_parse_error() -> ApiError {
    ApiError::new(400, Message::UploadFailed).field("file", "validation_required", Message::Required)
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "UploadResponse::from_poem_error")]
pub enum UploadResponse {
    /// The archive is stored under the base name of its file name.
    #[oai(status = 204)]
    Uploaded,
    /// The file is missing, not a zip archive, unsafe or past the limits (size, entries), or
    /// its name is invalid or taken.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's; or it is, from an address outside the settings'
    /// `superuserIPs` (PocketBase's `You are not allowed to perform this request.`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}
response_errors!(UploadResponse, parse_error: upload_parse_error, {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden,
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "DeleteResponse::from_poem_error")]
pub enum DeleteResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
    /// This backup is being created or restored right now.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's; or it is, from an address outside the settings'
    /// `superuserIPs` (PocketBase's `You are not allowed to perform this request.`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such backup.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}
// The only parsed input is the path key: one that does not even decode is no backup.
response_errors!(DeleteResponse, parse_error: ApiError::not_found, {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 404 => NotFound,
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "RestoreResponse::from_poem_error")]
pub enum RestoreResponse {
    /// Accepted: the archive passed validation and the server is now busy restoring it;
    /// it restarts on the same socket once the data is swapped in.
    #[oai(status = 204)]
    Accepted,
    /// Another backup or restore is in progress, or the archive cannot be restored.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token is not a superuser's; or it is, from an address outside the settings'
    /// `superuserIPs` (PocketBase's `You are not allowed to perform this request.`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such backup.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}
// The only parsed input is the path key: one that does not even decode is no backup.
response_errors!(RestoreResponse, parse_error: ApiError::not_found, {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 404 => NotFound,
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "DownloadResponse::from_poem_error")]
pub enum DownloadResponse {
    /// The backup archive, streamed.
    #[oai(status = 200, content_type = "application/zip")]
    Ok(
        Binary<Body>,
        #[oai(header = "Content-Disposition")] String,
        #[oai(header = "Accept-Ranges")] String,
        #[oai(header = "Last-Modified")] String,
        #[oai(header = "Content-Length")] u64,
    ),
    /// The byte range asked for with a single-range `Range` header.
    #[oai(status = 206, content_type = "application/zip")]
    Partial(
        Binary<Body>,
        #[oai(header = "Content-Disposition")] String,
        #[oai(header = "Accept-Ranges")] String,
        #[oai(header = "Last-Modified")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
    ),
    /// The backups storage cannot be opened.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid file token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The file token is not a superuser's; or it is, from an address outside the settings'
    /// `superuserIPs` (PocketBase's `You are not allowed to perform this request.`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such backup.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}
// The only parsed input is the path key: one that does not even decode is no backup.
response_errors!(DownloadResponse, parse_error: ApiError::not_found, {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 404 => NotFound,
});

/// How each operation reports a service error; `busy` is the operation's busy text (the
/// spec words create's differently from delete's and restore's).
fn api_error(e: BackupError, busy: Message, failed: Message) -> ApiError {
    match e {
        // R15, R20, R21.
        BackupError::Busy => ApiError::busy(busy),
        // R9, R20, R21, R25.
        BackupError::NotFound => ApiError::not_found(),
        BackupError::InvalidName(n) => {
            let (code, msg) = match n {
                NameError::Invalid => ("validation_match_invalid", Message::InvalidFormat),
                NameError::TooLong => ("validation_length_out_of_range", Message::LengthOutOfRange),
            };
            ApiError::new(400, failed).field(field_of(failed), code, msg)
        }
        BackupError::NameExists => ApiError::new(400, failed).field(
            field_of(failed),
            "validation_backup_name_exists",
            Message::NameExists,
        ),
        BackupError::FileRequired => upload_parse_error(),
        BackupError::NotZip(_) => ApiError::new(400, Message::UploadFailed).field(
            "file",
            "validation_invalid_mime_type",
            Message::NotZip,
        ),
        BackupError::BadArchive { problem, .. } | BackupError::Unrestorable { problem, .. } => {
            tracing::info!(error = %e, "archive refused");
            let msg = archive_message(problem);
            if failed == Message::UploadFailed {
                ApiError::new(400, failed).field("file", "validation_invalid_archive", msg)
            } else {
                ApiError::new(400, msg)
            }
        }
        BackupError::WouldNotRestore { problem, .. } => {
            tracing::warn!(error = %e, "backup refused");
            ApiError::new(400, match problem {
                ArchiveProblem::TooManyEntries { entries, max } => Message::BackupTooManyEntries { entries, max },
                _ => Message::BackupTooLarge,
            })
        }
        BackupError::NoUsableAccounts(_) => {
            tracing::warn!(error = %e, "archive refused");
            ApiError::new(400, Message::ArchiveNoUsableAccounts)
        }
        BackupError::Storage(_) => {
            tracing::error!(error = %e, "backups storage failed");
            ApiError::new(400, Message::StorageFailure)
        }
        BackupError::Failed(_) => {
            tracing::error!(error = %e, "operation failed");
            ApiError::new(400, failed)
        }
    }
}

/// Which request field a name error is about: `name` on create, `file` on upload.
fn field_of(failed: Message) -> &'static str {
    if failed == Message::UploadFailed {
        "file"
    } else {
        "name"
    }
}

pub(super) fn archive_message(problem: ArchiveProblem) -> Message {
    match problem {
        ArchiveProblem::NoDataDb => Message::ArchiveNoDataDb,
        ArchiveProblem::DataDbNotSqlite => Message::ArchiveDataDbNotSqlite,
        ArchiveProblem::TooLarge => Message::ArchiveTooLarge,
        ArchiveProblem::TooManyEntries { entries, max } => Message::ArchiveTooManyEntries { entries, max },
        ArchiveProblem::Unsafe => Message::ArchiveUnsafe,
        ArchiveProblem::Corrupt => Message::ArchiveCorrupt,
    }
}

/// The serialized list, made once per listing the service hands out (it hands out the same
/// `Arc` while nothing changes): the common unfiltered list is then the same bytes each time.
#[derive(Default)]
pub struct ListJsonCache(std::sync::Mutex<Option<(Arc<Listing>, bytes::Bytes)>>);

impl ListJsonCache {
    fn get(&self, listing: &Arc<Listing>) -> bytes::Bytes {
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((of, json)) = &*cached {
            if Arc::ptr_eq(of, listing) {
                return json.clone();
            }
        }
        let infos = listing.items.iter().map(BackupInfo::from).collect::<Vec<_>>();
        let json: bytes::Bytes = serde_json::to_vec(&infos.to_json()).unwrap_or_default().into();
        *cached = Some((listing.clone(), json.clone()));
        json
    }
}

pub struct BackupsApi;

#[OpenApi(tag = "ApiTags::Backups")]
impl BackupsApi {
    /// List backups
    ///
    /// Returns the list of all available backup files. Only superusers can perform this
    /// action.
    #[oai(path = "/backups", method = "get", operation_id = "listBackups")]
    async fn list(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        json_cache: Data<&Arc<ListJsonCache>>,
        /// Comma separated fields to return in the JSON response (all by default), e.g.
        /// `?fields=*,key:excerpt(10,true)`. `*` targets all keys of a level; the
        /// `:excerpt(maxLength, withEllipsis?)` modifier shortens a string value.
        fields: Query<Option<String>>,
    ) -> ListResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        let listing = match service.listing().await {
            Ok(listing) => listing,
            Err(e) => return api_error(e, Message::Busy, Message::StorageFailure).into(),
        };
        let Some(raw) = fields.0.as_deref().map(str::trim).filter(|f| !f.is_empty()) else {
            // The common case: the same bytes for every request until the list changes.
            return ListResponse::Ok(ProjectedJson(Projected::Bytes(json_cache.get(&listing)), PhantomData));
        };
        let fields = match fields::parse(raw) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "invalid fields parameter");
                return ApiError::new(400, Message::ValidationFailed)
                    .field("fields", "validation_invalid_fields", Message::InvalidFormat)
                    .into();
            }
        };
        let value = listing.items.iter().map(BackupInfo::from).collect::<Vec<_>>().to_json().unwrap_or_default();
        ListResponse::Ok(ProjectedJson(Projected::Value(fields::project(&value, &fields)), PhantomData))
    }

    /// Create backup
    ///
    /// Creates a new backup; answers once it is complete and stored. Only superusers can
    /// perform this action.
    #[oai(path = "/backups", method = "post", operation_id = "createBackup")]
    async fn create(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        body: DeferredBody<Json<CreateBackupBody>, false>,
    ) -> CreateResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        let body = match body.read_json().await {
            Ok(body) => body.unwrap_or_default(),
            Err(()) => return ApiError::new(400, Message::InvalidJson).into(),
        };
        match service.create(body.name.as_deref()).await {
            Ok(_) => CreateResponse::Created,
            Err(e) => api_error(e, Message::BusyCreate, Message::CreateFailed).into(),
        }
    }

    /// Upload backup
    ///
    /// Uploads a backup file (`multipart/form-data`, field `file`, a zip archive). Only
    /// superusers can perform this action.
    #[oai(path = "/backups/upload", method = "post", operation_id = "uploadBackup")]
    async fn upload(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        req: &Request,
        form: DeferredBody<UploadForm>,
    ) -> UploadResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        let file = match upload_body::receive(req, form.into_body(), &service).await {
            Ok(file) => file,
            Err(e) => return e.into(),
        };
        match service.upload(file).await {
            Ok(_) => UploadResponse::Uploaded,
            Err(e) => api_error(e, Message::Busy, Message::UploadFailed).into(),
        }
    }

    /// Delete backup
    ///
    /// Deletes a single backup file by its key. Fails while that backup is being created
    /// or restored. Only superusers can perform this action.
    #[oai(path = "/backups/:key", method = "delete", operation_id = "deleteBackup")]
    async fn delete(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        /// The key (file name) of the backup to delete.
        key: Path<String>,
    ) -> DeleteResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        match service.delete(&key.0).await {
            Ok(()) => DeleteResponse::Deleted,
            Err(e) => api_error(e, Message::Busy, Message::DeleteFailed).into(),
        }
    }

    /// Restore backup
    ///
    /// Restores the app from a backup file: all current data is replaced by the backup's and
    /// the server restarts (on the same socket: clients see a pause, not a refusal). Backups
    /// and restores cannot run at the same time. Only superusers can perform this action.
    #[oai(path = "/backups/:key/restore", method = "post", operation_id = "restoreBackup")]
    async fn restore(
        &self,
        auth: AuthToken,
        service: Data<&Arc<Service>>,
        /// The key (file name) of the backup to restore.
        key: Path<String>,
    ) -> RestoreResponse {
        if let Err(e) = auth.superuser() {
            return e.into();
        }
        match service.restore(&key.0).await {
            Ok(()) => RestoreResponse::Accepted,
            Err(e) => api_error(e, Message::Busy, Message::RestoreFailed).into(),
        }
    }

    /// Download backup
    ///
    /// Downloads a single backup file. Authorised by a superuser's file token in the
    /// `token` query parameter (see `POST /api/files/token`). Supports single `Range`
    /// requests.
    #[oai(path = "/backups/:key", method = "get", operation_id = "downloadBackup")]
    async fn download(
        &self,
        file_token: FileToken,
        service: Data<&Arc<Service>>,
        req: &Request,
        /// The key (file name) of the backup to download.
        key: Path<String>,
        /// A superuser's file token from `POST /api/files/token` (the `FileToken` scheme's
        /// parameter, for clients that cannot send an API key in the query).
        // Declared for the document only: `file_token` above has already checked it, and a
        // missing one fails there first, with the documented 401.
        #[oai(name = "token")]
        _token: Query<String>,
    ) -> DownloadResponse {
        if let Err(e) = file_token.superuser() {
            return e.into();
        }
        let range_header = req.headers().get(poem::http::header::RANGE).and_then(|v| v.to_str().ok());
        let range = |size| range_header.and_then(|h| parse_range(h, size));
        let reader = match service.download(&key.0, range).await {
            Ok(r) => r,
            Err(e) => return api_error(e, Message::Busy, Message::StorageFailure).into(),
        };
        let disposition = content_disposition(reader.meta.key.as_str());
        let modified = httpdate::fmt_http_date(reader.meta.modified);
        let len = reader.range.end - reader.range.start;
        let body = Binary(Body::from_bytes_stream(reader.body));
        // A satisfiable Range gets 206 even when it covers the whole file (RFC 9110).
        let partial = range_header.and_then(|h| parse_range(h, reader.meta.size)).is_some();
        if !partial {
            DownloadResponse::Ok(body, disposition, "bytes".into(), modified, len)
        } else {
            let content_range = format!(
                "bytes {}-{}/{}",
                reader.range.start,
                reader.range.end - 1,
                reader.meta.size
            );
            DownloadResponse::Partial(body, disposition, "bytes".into(), modified, len, content_range)
        }
    }
}
