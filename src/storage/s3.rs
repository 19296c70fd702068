//! Backups in an S3-compatible object store (AWS S3, MinIO, R2, …), through object_store.
//!
//! Layout under the configured prefix `P` (empty: the bucket's root):
//!
//! - `P/<key>`: a finished backup. Listing pages through everything under `P/` and keeps
//!   only the names that are valid backup keys, so anything else stored there is ignored.
//! - `P/.leases/<key>/<activity>.<id>`: a lease, marking work in progress on `<key>` by one
//!   server (never listed as a backup: the name holds a `/`).
//!
//! **Publishing** never shows a partial object and never overwrites: a file of one part is a
//! single `PUT` with `If-None-Match: *`; a larger one is a multipart upload (parts streamed from
//! the local file, two in flight, so memory stays at a few parts whatever the size) completed
//! with `If-None-Match: *`, and aborted on any failure, or when the work is dropped half-way
//! (a request cut off by the server's stop; a stopping server waits for those aborts). An
//! incomplete multipart upload is never visible as an object. object_store only sends that header on a multipart completion
//! for copies, so the completion is a request of our own, presigned by object_store.
//! With checksums on (the default), every write and each part carries its SHA-256 for the
//! store to verify, and a multipart completion lists each part's checksum back.
//! Between two servers sharing a bucket and prefix, the conditional write is the arbiter: the
//! one that completes second gets the name-exists error. No lease is needed for that.
//!
//! **Leases** keep a delete on one server from removing a backup that another is reading for
//! a restore. Each lease is its own object, written with a create-if-absent `PUT`, rewritten
//! (conditionally on its ETag) every `ttl / 3` while the work runs, and deleted when it ends.
//! A lease is live while `last_modified + ttl` is in the future: a crashed holder's lease
//! expires on its own, measured against the store's clock, so only the reader's clock has to
//! be roughly right (within `ttl`). Expired leases are removed by whoever sees them.
//! A restore and a delete of one key each write their lease first, then list the key's
//! leases: with both writes before both reads (S3 lists are strongly consistent), at least one
//! of them sees the other and backs off with `Busy`. A restore holds its lease while it
//! downloads the archive; afterwards it works on its local copy and the object may go.
//!
//! Failures reaching the store (connection, credentials, missing bucket) are
//! `StorageError::Unavailable`, which the API answers with the documented storage 400.
//! Access keys are never printed: `S3Config`'s `Debug` hides them, and no error carries a
//! presigned URL.

use std::fmt;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum, S3ConditionalPut};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, UpdateVersion,
};
use tokio::io::AsyncWriteExt;

use super::{BackupMeta, BackupReader, BackupStorage, StorageError, StorageResult, Upload};
use crate::model::names::BackupKey;
use crate::storage::buffers::BufferPool;

/// Called with the key just before the conditional write that publishes it (tests use it to
/// create the same key meanwhile).
pub type PublishHook = Arc<dyn Fn(BackupKey) -> BoxFuture<'static, ()> + Send + Sync>;

const LEASES: &str = ".leases";
/// Listings give `last_modified` in whole seconds (AWS): a lease may look up to that much older.
const LISTING_PRECISION: Duration = Duration::from_secs(1);
/// Part size of uploads: S3's minimum, so that memory (a part filling, two being sent) stays small.
const DEFAULT_PART: usize = 5 << 20;
/// S3 allows 10,000 parts; a little less leaves room for rounding.
const MAX_PARTS: u64 = 9_000;

/// Where and how to reach the bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Base URL of an S3-compatible service; AWS S3 when `None`.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Folder inside the bucket; leading and trailing `/` are ignored.
    pub prefix: String,
    /// `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key` (MinIO, IP
    /// addresses and most self-hosted stores need it).
    pub path_style: bool,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Temporary credentials' session token, sent with the keys.
    pub session_token: Option<String>,
    /// How long a lease lives without renewal.
    pub lease_ttl: Duration,
    /// Size of an upload part (at least 5 MiB); grown for files that would need too many.
    pub part_size: usize,
    /// Sends the SHA-256 of every write, each part of a multipart upload included
    /// (`x-amz-checksum-sha256`), for the store to verify; off for stores that reject it.
    pub checksums: bool,
    pub before_publish: Option<PublishHook>,
}

impl S3Config {
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            endpoint: None,
            bucket: bucket.into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: false,
            access_key: None,
            secret_key: None,
            session_token: None,
            lease_ttl: Duration::from_secs(30),
            part_size: DEFAULT_PART,
            checksums: true,
            before_publish: None,
        }
    }

    /// The prefix without surrounding slashes; `""` for the bucket's root.
    pub fn normalized_prefix(&self) -> &str {
        self.prefix.trim_matches('/')
    }

    /// `endpoint`, with the bucket as a subdomain when requests are virtual-hosted style.
    fn bucket_endpoint(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?.trim_end_matches('/');
        if self.path_style {
            return Some(endpoint.to_string());
        }
        Some(match endpoint.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}.{host}", self.bucket),
            None => format!("{}.{endpoint}", self.bucket),
        })
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |k: &Option<String>| if k.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key", &hidden(&self.access_key))
            .field("secret_key", &hidden(&self.secret_key))
            .field("lease_ttl", &self.lease_ttl)
            .field("checksums", &self.checksums)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("S3 configuration: {0}")]
pub struct S3ConfigError(String);

/// What a lease is for. A delete conflicts with any other live lease on its key; any other
/// activity conflicts with a live delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Create,
    Restore,
    Delete,
}

impl Activity {
    fn as_str(self) -> &'static str {
        match self {
            Activity::Create => "create",
            Activity::Restore => "restore",
            Activity::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Activity> {
        [Activity::Create, Activity::Restore, Activity::Delete].into_iter().find(|a| a.as_str() == s)
    }

    fn conflicts_with(self, other: Activity) -> bool {
        (self == Activity::Delete) != (other == Activity::Delete)
    }
}

/// Cheap to clone (shared client and store): an upload in progress keeps its own clone.
#[derive(Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    http: HttpClient,
    prefix: String,
    /// Identifies this instance in its lease names.
    holder: String,
    /// Aborts of cut-off uploads running in the background.
    aborting: Aborting,
    ttl: Duration,
    part_size: usize,
    checksums: bool,
    before_publish: Option<PublishHook>,
}

impl S3Storage {
    /// Builds the client; nothing is sent until the first operation.
    pub fn new(config: S3Config) -> Result<S3Storage, S3ConfigError> {
        let prefix = config.normalized_prefix().to_string();
        if !prefix.is_empty() {
            Path::parse(&prefix).map_err(|e| S3ConfigError(format!("prefix {prefix:?}: {e}")))?;
        }
        if config.bucket.is_empty() {
            return Err(S3ConfigError("the bucket name is empty".into()));
        }
        if config.part_size < 5 << 20 {
            return Err(S3ConfigError("part size below the 5 MiB S3 minimum".into()));
        }
        let allow_http = config.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        // Fail fast: an unreachable store must answer the API's storage error within seconds,
        // not after object_store's default three minutes of retries.
        let options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(options.clone())
            .with_retry(retry);
        if let Some(endpoint) = config.bucket_endpoint() {
            builder = builder.with_endpoint(endpoint);
        }
        if config.checksums {
            // The digest is the one that signs the payload, so this costs no extra hashing;
            // it also spares stores that would otherwise checksum the whole object when
            // completing (moto's CRC64NVME default is a serial pass over every byte).
            builder = builder.with_checksum_algorithm(Checksum::SHA256);
        }
        match (&config.access_key, &config.secret_key) {
            (Some(id), Some(secret)) => {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = &config.session_token {
                    builder = builder.with_token(token);
                }
            }
            (None, None) => {} // object_store's default chain (instance metadata, …)
            _ => return Err(S3ConfigError("set both the access key and the secret key, or neither".into())),
        }
        let store = builder.build().map_err(|e| S3ConfigError(e.to_string()))?;
        let http = ReqwestConnector::default().connect(&options).map_err(|e| S3ConfigError(e.to_string()))?;
        Ok(S3Storage {
            store: Arc::new(store),
            http,
            prefix,
            holder: crate::util::random_suffix(),
            aborting: Aborting::default(),
            ttl: config.lease_ttl,
            part_size: config.part_size,
            checksums: config.checksums,
            before_publish: config.before_publish,
        })
    }

    fn join(&self, rest: &str) -> Path {
        let full = if self.prefix.is_empty() { rest.to_string() } else { format!("{}/{rest}", self.prefix) };
        // BackupKey has no '/', no control characters and is never "." or "..": always valid.
        Path::parse(full).expect("valid object path")
    }

    fn object(&self, key: &BackupKey) -> Path {
        self.join(key.as_str())
    }

    fn leases_of(&self, key: &BackupKey) -> Path {
        self.join(&format!("{LEASES}/{}", key.as_str()))
    }

    /// Turns a `NotFound` into `Unavailable` when it is the bucket, not the object, that is
    /// missing (a HEAD answers both with a bare 404).
    async fn not_found(&self) -> StorageError {
        let probe = self.join(&format!("{LEASES}/.probe"));
        match self.store.list_with_delimiter(Some(&probe)).await {
            Ok(_) => StorageError::NotFound,
            Err(e) => unavailable(e),
        }
    }

    async fn map_err(&self, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => self.not_found().await,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                StorageError::AlreadyExists
            }
            e => unavailable(e),
        }
    }

    async fn head_meta(&self, key: &BackupKey) -> StorageResult<ObjectMeta> {
        match self.store.head(&self.object(key)).await {
            Ok(meta) => Ok(meta),
            Err(e) => Err(self.map_err(e).await),
        }
    }

    // ---- leases ----

    /// Takes a lease on `key` for `activity`, or `Busy` when a conflicting one is live.
    /// The lease is renewed until released (or dropped).
    pub async fn hold(&self, key: &BackupKey, activity: Activity) -> StorageResult<Lease> {
        let id = format!("{}.{}{}", activity.as_str(), self.holder, crate::util::random_suffix());
        let path = Path::parse(format!("{}/{id}", self.leases_of(key))).expect("valid lease path");
        let put = self
            .store
            .put_opts(&path, PutPayload::from_static(b"lease"), PutOptions::from(PutMode::Create))
            .await
            .map_err(unavailable)?;
        let lease = Lease::start(self.store.clone(), path.clone(), put.into(), self.ttl);
        match self.conflicting(key, activity, &path).await {
            Ok(false) => Ok(lease),
            Ok(true) => {
                lease.release().await;
                Err(StorageError::Busy)
            }
            Err(e) => {
                lease.release().await;
                Err(e)
            }
        }
    }

    /// Whether another live lease on `key` conflicts with `activity`; removes expired ones.
    async fn conflicting(&self, key: &BackupKey, activity: Activity, own: &Path) -> StorageResult<bool> {
        let leases: Vec<ObjectMeta> =
            self.store.list(Some(&self.leases_of(key))).try_collect().await.map_err(unavailable)?;
        let now = SystemTime::now();
        let mut conflict = false;
        for lease in leases {
            if &lease.location == own {
                continue;
            }
            if SystemTime::from(lease.last_modified) + self.ttl + LISTING_PRECISION <= now {
                tracing::info!(lease = %lease.location, "removing an expired lease");
                let _ = self.store.delete(&lease.location).await;
                continue;
            }
            let other = lease.location.filename().and_then(|n| n.split('.').next()).and_then(Activity::parse);
            // An unknown lease name is from a newer version: respect it.
            conflict |= other.is_none_or(|other| activity.conflicts_with(other));
        }
        Ok(conflict)
    }

    // ---- publishing ----

    fn part_size_for(&self, size: u64) -> usize {
        self.part_size.max(size.div_ceil(MAX_PARTS) as usize)
    }

    /// Publishes the file at `local` (of `size` bytes) under `path` unless something is there.
    async fn publish(&self, key: &BackupKey, path: &Path, local: &FsPath, size: u64) -> StorageResult<()> {
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

    async fn hook(&self, key: &BackupKey) {
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
    async fn complete_if_absent(&self, path: &Path, upload_id: &str, parts: &[PartId]) -> StorageResult<()> {
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

    /// Writes a small object under a fresh `pb_settings_test_<random>/` folder and deletes it,
    /// as PocketBase's settings test does; the store's failure is logged, its kind returned.
    pub async fn write_test_object(&self) -> Result<(), Problem> {
        use rand::distr::{Alphanumeric, SampleString};
        let folder = format!("pb_settings_test_{}", Alphanumeric.sample_string(&mut rand::rng(), 5));
        let probe = self.join(&format!("{folder}/test.txt"));
        let logged = |step: &str, e: object_store::Error| {
            tracing::warn!(problem = %explain(step, &e), "S3 test failed");
            Problem::of(&e)
        };
        self.store
            .put(&probe, PutPayload::from_static(b"test"))
            .await
            .map_err(|e| logged("writing a test object", e))?;
        self.store.delete(&probe).await.map_err(|e| logged("deleting the test object", e))
    }

    /// Checks a configuration step by step: reachable, bucket there, allowed to list and
    /// write, conditional writes honoured. Returns what was checked, or what is wrong.
    pub async fn check(&self) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        let prefix = (!self.prefix.is_empty()).then(|| Path::parse(&self.prefix).expect("checked in new"));
        self.store.list_with_delimiter(prefix.as_ref()).await.map_err(|e| explain("listing the prefix", &e))?;
        done.push("reached the endpoint; the bucket exists; listing is allowed".to_string());

        // Writes carry a SHA-256 checksum header when checksums are on: a store that rejects
        // it fails from here on, and the message says how to turn them off.
        let hint = |e: String| match self.checksums {
            true => format!("{e} (checksums are on: a store without x-amz-checksum-sha256 support needs --backups-s3-checksums=false)"),
            false => e,
        };
        let probe = self.join(&format!("{LEASES}/.check-{}", self.holder));
        let create = || PutOptions::from(PutMode::Create);
        self.store
            .put_opts(&probe, PutPayload::from_static(b"check"), create())
            .await
            .map_err(|e| hint(explain("writing a test object", &e)))?;
        let second = self.store.put_opts(&probe, PutPayload::from_static(b"again"), create()).await;
        let _ = self.store.delete(&probe).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
            Ok(_) => {
                return Err("the store ignores If-None-Match on PUT: two servers sharing this bucket could \
                            overwrite each other's backups; use a store with conditional writes"
                    .into())
            }
            Err(e) => return Err(hint(explain("testing a conditional write", &e))),
        }
        done.push("writes allowed; conditional PUT (If-None-Match) honoured".to_string());

        let upload_id = self
            .store
            .create_multipart(&probe)
            .await
            .map_err(|e| hint(explain("starting a multipart upload", &e)))?;
        let result = async {
            let part = self
                .store
                .put_part(&probe, &upload_id, 0, PutPayload::from_static(b"check"))
                .await
                .map_err(|e| explain("uploading a part", &e))?;
            self.complete_if_absent(&probe, &upload_id, &[part])
                .await
                .map_err(|e| format!("completing a multipart upload with If-None-Match: {e}"))
        }
        .await;
        if result.is_err() {
            let _ = self.store.abort_multipart(&probe, &upload_id).await;
        }
        let _ = self.store.delete(&probe).await;
        result.map_err(hint)?;
        done.push(match self.checksums {
            true => "conditional multipart upload with SHA-256 part checksums works; test objects removed".to_string(),
            false => "conditional multipart upload works (part checksums off); test objects removed".to_string(),
        });
        Ok(done)
    }
}

/// Parts being sent while the next one fills: the archive is made and uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Parts of one size before the size doubles: an archive of unknown size must fit in
/// 10,000 parts (1,000 parts of 5 MiB, then 1,000 of 10 MiB, ... covers 5 TiB in 10).
const PARTS_PER_SIZE: usize = 1_000;

/// A multipart upload fed by a blocking writer: each full part is sent on the runtime while
/// the writer goes on; completed with `If-None-Match: *` like `publish`.
struct S3Upload {
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
    async fn start(storage: S3Storage, key: BackupKey) -> StorageResult<S3Upload> {
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
struct Aborting(Arc<tokio::sync::watch::Sender<usize>>);

impl Default for Aborting {
    fn default() -> Aborting {
        Aborting(Arc::new(tokio::sync::watch::channel(0).0))
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

fn unavailable(e: impl fmt::Display) -> StorageError {
    StorageError::Unavailable(io::Error::other(e.to_string()))
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
fn s3_error_code(body: &str) -> &str {
    xml_text(body, "Code").unwrap_or("(no error code)")
}

/// What kind of failure a request to the store met, told from object_store's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No keys were given and the default chain found none.
    NoCredentials,
    NoBucket,
    /// Keys refused, or not allowed to do this.
    Refused,
    /// Connection refused, no such host, timed out.
    Unreachable,
    /// The store lacks a feature this server needs.
    Unsupported,
    Unexpected,
}

impl Problem {
    fn of(e: &object_store::Error) -> Problem {
        // object_store's messages already repeat their sources; the innermost says the most.
        let chain = format!("{e}: {}", root_cause(e));
        if chain.contains("169.254.169.254") || chain.contains("credential") {
            Problem::NoCredentials
        } else if chain.contains("NoSuchBucket") || matches!(e, object_store::Error::NotFound { .. }) {
            Problem::NoBucket
        } else if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "401"]
            .iter()
            .any(|s| chain.contains(s))
        {
            Problem::Refused
        } else if ["connect", "Connection refused", "dns", "timed out", "tcp"].iter().any(|s| chain.contains(s)) {
            Problem::Unreachable
        } else if matches!(e, object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) {
            Problem::Unsupported
        } else {
            Problem::Unexpected
        }
    }
}

fn root_cause(e: &object_store::Error) -> &dyn std::error::Error {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    root
}

/// An operator-facing description of a failed step, with the likely cause first.
fn explain(step: &str, e: &object_store::Error) -> String {
    let hint = match Problem::of(e) {
        Problem::NoCredentials => {
            "no usable credentials: set PB_BACKUPS_S3_ACCESS_KEY and PB_BACKUPS_S3_SECRET_KEY \
             (without them only instance-metadata credentials are tried)"
        }
        Problem::NoBucket => "the bucket does not exist (buckets are never created by pb-backups)",
        Problem::Refused => {
            "access denied: check the access key and secret (PB_BACKUPS_S3_ACCESS_KEY / PB_BACKUPS_S3_SECRET_KEY, \
             or the settings' backups.s3) and the bucket's permissions"
        }
        Problem::Unreachable => {
            "cannot reach the endpoint: check it (and path-style requests for IP addresses or MinIO)"
        }
        Problem::Unsupported => "the store lacks a feature pb-backups needs",
        Problem::Unexpected => "unexpected answer from the store",
    };
    let detail: String = root_cause(e).to_string().chars().take(400).collect();
    format!("{step}: {hint}\n  cause: {detail}")
}

fn meta_of(key: BackupKey, meta: &ObjectMeta) -> BackupMeta {
    BackupMeta { key, size: meta.size, modified: SystemTime::from(meta.last_modified) }
}

/// A lease object, renewed in the background until released.
pub struct Lease {
    store: Arc<AmazonS3>,
    path: Path,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    fn start(store: Arc<AmazonS3>, path: Path, mut version: UpdateVersion, ttl: Duration) -> Lease {
        let (s, p) = (store.clone(), path.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let mode = PutMode::Update(version.clone());
                match s.put_opts(&p, PutPayload::from_static(b"lease"), PutOptions::from(mode)).await {
                    Ok(put) => version = put.into(),
                    Err(e) => {
                        // Taken as expired by another server (or the store is gone): the work
                        // goes on, but no longer protected.
                        tracing::warn!(lease = %p, error = %e, "lease lost");
                        return;
                    }
                }
            }
        });
        Lease { store, path, renewal, released: false }
    }

    pub async fn release(mut self) {
        self.released = true;
        self.renewal.abort();
        if let Err(e) = self.store.delete(&self.path).await {
            tracing::warn!(lease = %self.path, error = %e, "could not remove a lease; it will expire");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        if !self.released {
            let (store, path) = (self.store.clone(), self.path.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.delete(&path).await;
                });
            }
        }
    }
}

impl BackupStorage for S3Storage {
    fn list(&self) -> BoxFuture<'_, StorageResult<Vec<BackupMeta>>> {
        async move {
            let root = (!self.prefix.is_empty()).then(|| Path::parse(&self.prefix).expect("checked in new"));
            let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
            // object_store pages through the listing; only metadata is held.
            let mut stream = self.store.list(root.as_ref());
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(unavailable)?;
                let name = meta.location.as_ref().strip_prefix(strip.as_str());
                if let Some(key) = name.and_then(BackupKey::parse) {
                    out.push(meta_of(key, &meta));
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn head<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<BackupMeta>> {
        async move { Ok(meta_of(key.clone(), &self.head_meta(key).await?)) }.boxed()
    }

    fn open<'a>(
        &'a self,
        key: &'a BackupKey,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, StorageResult<BackupReader>> {
        async move {
            if let Some(r) = range.as_ref().filter(|r| r.is_empty()) {
                // S3 has no empty range: nothing to fetch.
                let meta = meta_of(key.clone(), &self.head_meta(key).await?);
                return Ok(BackupReader { meta, range: r.clone(), body: futures_util::stream::empty().boxed() });
            }
            let options = GetOptions::new().with_range(range);
            let result = match self.store.get_opts(&self.object(key), options).await {
                Ok(r) => r,
                Err(e) => return Err(self.map_err(e).await),
            };
            let meta = meta_of(key.clone(), &result.meta);
            let range = result.range.clone();
            let body = result.into_stream().map_err(io::Error::other).boxed();
            Ok(BackupReader { meta, range, body })
        }
        .boxed()
    }

    fn put_file<'a>(&'a self, key: &'a BackupKey, local: &'a FsPath) -> BoxFuture<'a, StorageResult<()>> {
        async move {
            let size = tokio::fs::metadata(local).await?.len();
            // Cheap early answer; the conditional write below is what guarantees it.
            match self.head_meta(key).await {
                Ok(_) => return Err(StorageError::AlreadyExists),
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
            self.publish(key, &self.object(key), local, size).await?;
            tokio::fs::remove_file(local).await?;
            Ok(())
        }
        .boxed()
    }

    fn start_upload<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<Option<Box<dyn Upload>>>> {
        async move {
            // Cheap early answer; the conditional completion is what guarantees it.
            match self.head_meta(key).await {
                Ok(_) => return Err(StorageError::AlreadyExists),
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
            let upload: Box<dyn Upload> = Box::new(S3Upload::start(self.clone(), key.clone()).await?);
            Ok(Some(upload))
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a BackupKey) -> BoxFuture<'a, StorageResult<()>> {
        async move {
            // S3 deletes of missing objects succeed: look first, for the 404.
            self.head_meta(key).await?;
            let lease = self.hold(key, Activity::Delete).await?;
            let result = self.store.delete(&self.object(key)).await.map_err(unavailable);
            lease.release().await;
            result
        }
        .boxed()
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        async move {
            // Each abort gives up after 10 s on its own.
            let _ = self.aborting.0.subscribe().wait_for(|n| *n == 0).await;
        }
        .boxed()
    }

    fn fetch_to_file<'a>(&'a self, key: &'a BackupKey, dest: &'a FsPath) -> BoxFuture<'a, StorageResult<()>> {
        async move {
            let lease = self.hold(key, Activity::Restore).await?;
            let result = async {
                let got = match self.store.get(&self.object(key)).await {
                    Ok(r) => r,
                    Err(e) => return Err(self.map_err(e).await),
                };
                let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(dest).await?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    file.write_all(&chunk.map_err(unavailable)?).await?;
                }
                file.sync_all().await?;
                Ok(())
            }
            .await;
            lease.release().await;
            result
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_keys() {
        let mut c = S3Config::new("b");
        c.access_key = Some("AKIDSECRETID".into());
        c.secret_key = Some("verysecret".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("AKIDSECRETID") && !shown.contains("verysecret"), "{shown}");
        assert!(shown.contains("<set>"));
    }

    #[test]
    fn endpoints_and_prefixes() {
        let mut c = S3Config::new("bk");
        c.endpoint = Some("http://127.0.0.1:9000/".into());
        c.path_style = true;
        assert_eq!(c.bucket_endpoint().unwrap(), "http://127.0.0.1:9000");
        c.path_style = false;
        assert_eq!(c.bucket_endpoint().unwrap(), "http://bk.127.0.0.1:9000");
        c.prefix = "/a/b/".into();
        assert_eq!(c.normalized_prefix(), "a/b");
        c.prefix = "a//b".into();
        assert!(S3Storage::new(c).is_err(), "an empty segment in the prefix is refused");
    }

    #[test]
    fn leases_conflict_only_across_delete() {
        use Activity::*;
        assert!(Delete.conflicts_with(Restore) && Restore.conflicts_with(Delete) && Create.conflicts_with(Delete));
        assert!(!Restore.conflicts_with(Restore) && !Delete.conflicts_with(Delete));
    }

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
