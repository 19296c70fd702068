//! The upload request body: `multipart/form-data` with one `file` part, streamed straight
//! to a file in the data dir's temp folder (never held in memory, never copied through
//! `$TMPDIR`), so that publishing it is a link on the same filesystem.

use poem::web::Multipart;
use poem::{Body, FromRequest, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use crate::i18n::Message;
use crate::service::{Service, UploadedFile};
use crate::util::TempPath;

/// The parsed form: the `file` part, if one was sent.
pub struct UploadForm(pub Option<UploadedFile>);

impl Payload for UploadForm {
    const CONTENT_TYPE: &'static str = "multipart/form-data";

    fn check_content_type(content_type: &str) -> bool {
        content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data")
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut file = MetaSchema::new_with_format("string", "binary");
        file.description = Some("The backup archive: a zip file. Its file name becomes the key.");
        let mut form = MetaSchema::new("object");
        form.required = vec!["file"];
        form.properties = vec![("file", MetaSchemaRef::Inline(Box::new(file)))];
        MetaSchemaRef::Inline(Box::new(form))
    }
}

/// An upload that could not be stored where it was being written (disk full, I/O error).
fn write_failed(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "upload could not be written");
    ApiError::new(400, Message::UploadFailed)
}

/// Only the documentation side of a payload is used: [`receive`] does the reading.
impl ParsePayload for UploadForm {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, _body: &mut RequestBody) -> poem::Result<Self> {
        Ok(UploadForm(None))
    }
}

/// Streams the `file` part of the multipart `body` into the temp folder. `Ok(None)` when the
/// form has no `file` part; a body that is not multipart at all is the same missing file.
pub async fn receive(request: &Request, body: Body, service: &Service) -> Result<Option<UploadedFile>, ApiError> {
    let missing = || ApiError::new(400, Message::UploadFailed).field("file", "validation_required", Message::Required);
    let mut body = RequestBody::new(body);
    let mut multipart = Multipart::from_request(request, &mut body).await.map_err(|_| missing())?;
    let mut file = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "malformed multipart body");
                return Err(ApiError::new(400, Message::UploadFailed));
            }
        };
        // Only the first `file` part counts; the rest of the form is skipped unread.
        if field.name() != Some("file") || file.is_some() {
            continue;
        }
        let file_name = field.file_name().unwrap_or_default().to_string();
        let temp = TempPath::new_in(service.temp_dir(), "upload", ".zip");
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp.path())
            .await
            .map_err(write_failed)?;
        let mut reader = field.into_async_read();
        tokio::io::copy(&mut reader, &mut out).await.map_err(|e| {
            // A broken multipart stream is the client's; a failed write is ours.
            if e.kind() == std::io::ErrorKind::Other {
                ApiError::new(400, Message::UploadFailed)
            } else {
                write_failed(e)
            }
        })?;
        out.flush().await.map_err(write_failed)?;
        out.sync_all().await.map_err(write_failed)?;
        file = Some(UploadedFile { file_name, temp });
    }
    Ok(file)
}
