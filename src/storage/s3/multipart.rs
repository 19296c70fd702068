//! Publishing without overwriting: a file of one part is a conditional `PUT`, a larger one a
//! multipart upload completed with `If-None-Match: *` (a request of our own, presigned by
//! object_store), and a create streams its archive as a multipart upload while it is made.
//! An upload not completed is aborted, in the background when it is dropped half-way.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::client::HttpRequestBody;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{ObjectStore, PutMode, PutOptions};

use super::{unavailable, S3Storage};
use crate::model::names::BackupKey;
use crate::storage::buffers::BufferPool;
use crate::storage::{StorageError, StorageResult, Upload};

/// S3 allows 10,000 parts; a little less leaves room for rounding.
const MAX_PARTS: u64 = 9_000;

impl S3Storage {
    fn part_size_for(&self, size: u64) -> usize {
        self.part_size.max(size.div_ceil(MAX_PARTS) as usize)
    }

    /// Publishes the file at `local` (of `size` bytes) under `path` unless something is there.
    pub(super) async fn publish(&self, key: &BackupKey, path: &Path, local: &FsPath, size: u64) -> StorageResult<()> {
        let part = self.part_size_for(size);
        if size <= part as u64 {
            let bytes = tokio::fs::read(local).await?;
            self.hook(key).await;
            return match self.store.put_opts(path, bytes.into(), PutOptions::from(PutMode::Create)).await {
                Ok(_) => Ok(()),
                Err(e) => Err(self.map_err(e).await),
            };
        }
        let upload_id = self.store.create_multipart(path).await.map_err(unavailable)?;
        let mut unfinished = Unfinished::new(self, path.clone(), upload_id.clone());
        let result = async {
            let parts = self.upload_parts(path, &upload_id, local, size, part).await?;
            self.hook(key).await;
            self.complete_if_absent(path, &upload_id, &parts).await
        }
        .await;
        match result {
            Ok(()) => unfinished.disarm(),
            Err(_) => unfinished.abort().await,
        }
        result
    }

    pub(super) async fn hook(&self, key: &BackupKey) {
        if let Some(hook) = &self.before_publish {
            hook(key.clone()).await;
        }
    }

    /// Streams the file in parts, two in flight: memory holds at most two parts.
    async fn upload_parts(
        &self,
        path: &Path,
        upload_id: &str,
        local: &FsPath,
        size: u64,
        part: usize,
    ) -> StorageResult<Vec<PartId>> {
        let file = Arc::new(std::fs::File::open(local)?);
        let count = size.div_ceil(part as u64) as usize;
        let buffers = BufferPool::default();
        futures_util::stream::iter(0..count)
            .map(|i| {
                let (file, buffers) = (file.clone(), buffers.clone());
                let id = upload_id.to_string();
                async move {
                    let offset = i as u64 * part as u64;
                    let len = (size - offset).min(part as u64) as usize;
                    let bytes = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
                        let mut buf = buffers.take(part);
                        buf.resize(len, 0);
                        file.read_exact_at(&mut buf, offset)?;
                        Ok(buffers.lend(buf, len))
                    })
                    .await
                    .map_err(io::Error::other)??;
                    self.store.put_part(path, &id, i, bytes.into()).await.map_err(unavailable)
                }
            })
            .buffered(2)
            .try_collect()
            .await
    }

    /// CompleteMultipartUpload with `If-None-Match: *`: creates the object only if absent.
    pub(super) async fn complete_if_absent(&self, path: &Path, upload_id: &str, parts: &[PartId]) -> StorageResult<()> {
        let if_none_match = http::header::IF_NONE_MATCH;
        let options = SignedUrlOptions::new()
            .with_query([("uploadId", upload_id)])
            .with_signed_header(if_none_match.clone(), HeaderValue::from_static("*"));
        let url = self
            .store
            .signed_url_opts(Method::POST, path, Duration::from_secs(600), &options)
            .await
            .map_err(unavailable)?;
        let body = complete_body(parts);
        let request = http::Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(if_none_match, "*")
            .header(http::header::CONTENT_TYPE, "application/xml")
            .body(HttpRequestBody::from(body))
            .map_err(|e| unavailable(format!("complete request: {e}")))?;
        // Errors here must not quote the URL: it carries the access key id and a signature.
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| unavailable(format!("completing the upload of {path}: {e}")))?;
        let status = response.status();
        let text = response.into_body().bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned());
        match status.as_u16() {
            // S3 may answer 200 and still report an error in the body.
            200 if text.as_deref().is_ok_and(|t| !t.contains("<Error>")) => Ok(()),
            412 | 409 => Err(StorageError::AlreadyExists),
            _ => Err(unavailable(format!(
                "completing the upload of {path}: HTTP {status}: {}",
                text.as_deref().map(s3_error_code).unwrap_or("no body")
            ))),
        }
    }
}

/// Parts being sent while the next one fills: the archive is made and uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Parts of one size before the size doubles: an archive of unknown size must fit in
/// 10,000 parts (1,000 parts of 5 MiB, then 1,000 of 10 MiB, ... covers 5 TiB in 10).
const PARTS_PER_SIZE: usize = 1_000;

/// A multipart upload fed by a blocking writer: each full part is sent on the runtime while
/// the writer goes on; completed with `If-None-Match: *` like `publish`.
pub(super) struct S3Upload {
    storage: S3Storage,
    key: BackupKey,
    path: Path,
    upload_id: String,
    runtime: tokio::runtime::Handle,
    /// The part being filled; parts sent come back to `buffers` once the store has them.
    part: Vec<u8>,
    buffers: BufferPool,
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    parts: Vec<PartId>,
    /// Why writing stopped, if the store failed.
    failed: Option<StorageError>,
    /// Aborts the upload if this is dropped neither finished nor aborted.
    unfinished: Unfinished,
}

impl S3Upload {
    pub(super) async fn start(storage: S3Storage, key: BackupKey) -> StorageResult<S3Upload> {
        let path = storage.object(&key);
        let upload_id = storage.store.create_multipart(&path).await.map_err(unavailable)?;
        let unfinished = Unfinished::new(&storage, path.clone(), upload_id.clone());
        Ok(S3Upload {
            part: Vec::with_capacity(storage.part_size),
            buffers: BufferPool::default(),
            storage,
            key,
            path,
            upload_id,
            runtime: tokio::runtime::Handle::current(),
            in_flight: Default::default(),
            parts: Vec::new(),
            failed: None,
            unfinished,
        })
    }

    fn part_size(&self) -> usize {
        let sent = self.parts.len() + self.in_flight.len();
        self.storage.part_size << (sent / PARTS_PER_SIZE).min(10)
    }

    /// Sends the current part, after waiting for the oldest one if enough are in flight.
    fn send_part(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("a part in flight");
            match self.runtime.block_on(oldest).map_err(io::Error::other)? {
                Ok(part) => self.parts.push(part),
                Err(e) => {
                    self.failed = Some(unavailable(e));
                    return Err(io::Error::other("uploading a part of the backup failed"));
                }
            }
        }
        let index = self.parts.len() + self.in_flight.len();
        let mut next = self.buffers.take(self.part_size());
        next.clear();
        let full = std::mem::replace(&mut self.part, next);
        let len = full.len();
        let bytes = self.buffers.lend(full, len);
        let (store, path, id) = (self.storage.store.clone(), self.path.clone(), self.upload_id.clone());
        self.in_flight
            .push_back(self.runtime.spawn(async move { store.put_part(&path, &id, index, bytes.into()).await }));
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> StorageResult<()> {
        while let Some(part) = self.in_flight.pop_front() {
            self.parts.push(part.await.map_err(unavailable)?.map_err(unavailable)?);
        }
        Ok(())
    }

    async fn abort_upload(&mut self) {
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        self.unfinished.abort().await;
    }
}

impl io::Write for S3Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("uploading a part of the backup failed"));
        }
        let n = buf.len().min(self.part_size() - self.part.len());
        self.part.extend_from_slice(&buf[..n]);
        if self.part.len() == self.part_size() {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn finish(mut self: Box<Self>) -> BoxFuture<'static, StorageResult<()>> {
        async move {
            let result = async {
                if let Some(e) = self.failed.take() {
                    return Err(e);
                }
                // Waiting first leaves room, so `send_part` does not block this task.
                self.wait_in_flight().await?;
                if !self.part.is_empty() || self.parts.is_empty() {
                    self.send_part()?;
                }
                self.wait_in_flight().await?;
                self.storage.hook(&self.key).await;
                self.storage.complete_if_absent(&self.path, &self.upload_id, &self.parts).await
            }
            .await;
            match result {
                Ok(()) => self.unfinished.disarm(),
                Err(_) => self.abort_upload().await,
            }
            result
        }
        .boxed()
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Option<StorageError>> {
        async move {
            self.abort_upload().await;
            self.failed.take()
        }
        .boxed()
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Parts still being sent; `unfinished` aborts the upload itself.
        for part in self.in_flight.drain(..) {
            part.abort();
        }
    }
}

/// A multipart upload until it is completed or aborted; aborted in the background if dropped
/// before. A publish runs inside its request, which is dropped at an await (past any code
/// that would abort the upload) when the server's shutdown grace runs out; a streamed create
/// may be dropped too.
struct Unfinished {
    store: Arc<AmazonS3>,
    path: Path,
    upload_id: String,
    runtime: Option<tokio::runtime::Handle>,
    aborting: Aborting,
    open: bool,
}

impl Unfinished {
    fn new(storage: &S3Storage, path: Path, upload_id: String) -> Unfinished {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (store, aborting) = (storage.store.clone(), storage.aborting.clone());
        Unfinished { store, path, upload_id, runtime, aborting, open: true }
    }

    /// Completed: nothing to abort.
    fn disarm(&mut self) {
        self.open = false;
    }

    async fn abort(&mut self) {
        self.open = false;
        abort_multipart(self.store.clone(), self.path.clone(), self.upload_id.clone()).await;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let (store, path, id) = (self.store.clone(), self.path.clone(), self.upload_id.clone());
        // A runtime shutting down runs no new task: the bucket's lifecycle rule is left.
        if let Some(runtime) = &self.runtime {
            let aborting = self.aborting.clone();
            aborting.0.send_modify(|n| *n += 1);
            runtime.spawn(async move {
                abort_multipart(store, path, id).await;
                aborting.0.send_modify(|n| *n -= 1);
            });
        }
    }
}

/// How many aborts [`Unfinished`] has started in the background and not seen end.
#[derive(Clone)]
pub(super) struct Aborting(Arc<tokio::sync::watch::Sender<usize>>);

impl Default for Aborting {
    fn default() -> Aborting {
        Aborting(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl Aborting {
    /// Returns once every abort started has ended; each gives up after 10 s on its own.
    pub(super) async fn settled(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// Best effort: an unfinished upload is invisible anyway, and a lifecycle rule on the bucket
/// (AbortIncompleteMultipartUpload) reclaims what a dead server leaves.
async fn abort_multipart(store: Arc<AmazonS3>, path: Path, upload_id: String) {
    match tokio::time::timeout(Duration::from_secs(10), store.abort_multipart(&path, &upload_id)).await {
        Ok(Ok(())) => tracing::info!(path = %path, "unfinished multipart upload aborted"),
        Ok(Err(e)) => tracing::warn!(path = %path, error = %e, "could not abort an unfinished multipart upload"),
        Err(_) => tracing::warn!(path = %path, "aborting an unfinished multipart upload timed out"),
    }
}

/// The CompleteMultipartUpload document. A part's `content_id` is its ETag, or, with
/// checksums on, object_store's `<PartMetadata>` XML holding the ETag and the part's SHA-256,
/// which the store requires back at completion. Its values are already XML-escaped.
fn complete_body(parts: &[PartId]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (i, part) in parts.iter().enumerate() {
        let id = &part.content_id;
        let (etag, sha256) = match xml_text(id, "e_tag") {
            Some(etag) if id.starts_with("<PartMetadata>") => (etag.to_string(), xml_text(id, "checksum_sha256")),
            _ => (xml_escape(id), None),
        };
        body.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag>", i + 1));
        if let Some(sha256) = sha256 {
            body.push_str(&format!("<ChecksumSHA256>{sha256}</ChecksumSHA256>"));
        }
        body.push_str("</Part>");
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

/// The text of the first `<tag>` element in `xml`, as written (still escaped).
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let (_, rest) = xml.split_once(&format!("<{tag}>"))?;
    rest.split_once(&format!("</{tag}>")).map(|(text, _)| text)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The `<Code>` of an S3 error body, which names the problem without quoting the request.
pub(super) fn s3_error_code(body: &str) -> &str {
    xml_text(body, "Code").unwrap_or("(no error code)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_extracted() {
        assert_eq!(s3_error_code("<Error><Code>NoSuchUpload</Code><Message>x</Message></Error>"), "NoSuchUpload");
        assert_eq!(s3_error_code("garbage"), "(no error code)");
    }

    #[test]
    fn the_completion_lists_each_part_with_its_etag_and_checksum() {
        let part = |id: &str| PartId { content_id: id.to_string() };
        // As object_store 0.14 writes content ids: a bare ETag with checksums off, its
        // PartMetadata XML with them on (the checksum only when the store answered one).
        let parts = [
            part("\"e1&\""),
            part("<PartMetadata><e_tag>\"e2\"</e_tag><checksum_sha256>c2+/=</checksum_sha256></PartMetadata>"),
            part("<PartMetadata><e_tag>\"e&amp;3\"</e_tag></PartMetadata>"),
        ];
        assert_eq!(
            complete_body(&parts),
            "<CompleteMultipartUpload>\
             <Part><PartNumber>1</PartNumber><ETag>&quot;e1&amp;&quot;</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>\"e2\"</ETag><ChecksumSHA256>c2+/=</ChecksumSHA256></Part>\
             <Part><PartNumber>3</PartNumber><ETag>\"e&amp;3\"</ETag></Part>\
             </CompleteMultipartUpload>"
        );
    }
}
