//! The upload request body: `multipart/form-data` with one `file` part, streamed straight
//! to a file in the data dir's temp folder (never held in memory, never copied through
//! `$TMPDIR`), so that publishing it is a link on the same filesystem.

use poem::web::Multipart;
use poem::{Body, FromRequest, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use std::io::Write;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};

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
        let out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp.path())
            .await
            .map_err(write_failed)?
            .into_std()
            .await;
        copy_to_file(field.into_async_read(), out).await?;
        file = Some(UploadedFile { file_name, temp });
    }
    Ok(file)
}

/// Size of the writes of an upload to disk.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Copies the part into `out` and syncs it. Each 1 MiB chunk is written on the blocking pool
/// while the next one is received, and its writeback to disk starts at once
/// (`sync_file_range`), so the final `fsync` has little left to wait for.
async fn copy_to_file(mut reader: impl AsyncRead + Unpin, out: std::fs::File) -> Result<(), ApiError> {
    let out = Arc::new(out);
    let mut pending: Option<tokio::task::JoinHandle<std::io::Result<Vec<u8>>>> = None;
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    let mut offset = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            // A broken multipart stream is the client's fault; a failed write is ours.
            let n = reader.read(&mut buf[filled..]).await.map_err(|_| ApiError::new(400, Message::UploadFailed))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let spare = match pending.take() {
            Some(write) => Some(write.await.map_err(write_failed)?.map_err(write_failed)?),
            None => None,
        };
        if filled == 0 {
            break;
        }
        let mut chunk = std::mem::replace(&mut buf, spare.unwrap_or_else(|| vec![0u8; UPLOAD_CHUNK]));
        let file = out.clone();
        let at = offset;
        offset += filled as u64;
        pending = Some(tokio::task::spawn_blocking(move || {
            (&*file).write_all(&chunk[..filled])?;
            crate::util::start_writeback(&file, at, filled as u64);
            chunk.resize(UPLOAD_CHUNK, 0);
            Ok(chunk)
        }));
    }
    tokio::task::spawn_blocking(move || out.sync_all()).await.map_err(write_failed)?.map_err(write_failed)
}
