//! The upload request body: `multipart/form-data` with one `file` part, streamed straight
//! to a file in the data dir's temp folder (never held in memory, never copied through
//! `$TMPDIR`), so that publishing it is a link on the same filesystem.

use std::sync::Arc;

use poem::web::Multipart;
use poem::{FromRequest, Request, RequestBody};
use poem_openapi::impl_apirequest_for_payload;
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
fn write_failed(e: impl std::fmt::Display) -> poem::Error {
    tracing::warn!(error = %e, "upload could not be written");
    ApiError::new(400, Message::UploadFailed).into()
}

impl ParsePayload for UploadForm {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let service = request
            .data::<Arc<Service>>()
            .ok_or_else(|| write_failed("no service"))?
            .clone();
        let mut multipart = Multipart::from_request(request, body).await?;
        let mut file = None;
        while let Some(field) = multipart.next_field().await? {
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
                    poem::Error::from(ApiError::new(400, Message::UploadFailed))
                } else {
                    write_failed(e)
                }
            })?;
            out.flush().await.map_err(write_failed)?;
            out.sync_all().await.map_err(write_failed)?;
            file = Some(UploadedFile { file_name, temp });
        }
        Ok(UploadForm(file))
    }
}

impl_apirequest_for_payload!(UploadForm);
