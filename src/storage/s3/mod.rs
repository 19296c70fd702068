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

mod check;
mod config;
mod lease;
mod multipart;

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum, S3ConditionalPut};
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

pub use check::Problem;
pub use config::{PublishHook, S3Config, S3ConfigError};
pub use lease::{Activity, Lease};

use super::{BackupMeta, BackupReader, BackupStorage, StorageError, StorageResult, Upload};
use crate::model::names::BackupKey;
use lease::LEASES;
use multipart::{Aborting, S3Upload};

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
    max_listed: usize,
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
            max_listed: config.max_listed,
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
}

fn unavailable(e: impl fmt::Display) -> StorageError {
    StorageError::Unavailable(io::Error::other(e.to_string()))
}

fn meta_of(key: BackupKey, meta: &ObjectMeta) -> BackupMeta {
    BackupMeta { key, size: meta.size, modified: SystemTime::from(meta.last_modified) }
}

impl BackupStorage for S3Storage {
    fn list(&self) -> BoxFuture<'_, StorageResult<Vec<BackupMeta>>> {
        async move {
            let root = (!self.prefix.is_empty()).then(|| Path::parse(&self.prefix).expect("checked in new"));
            let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
            // object_store pages through the listing; only metadata is held.
            let mut stream = self.store.list(root.as_ref());
            let mut out = Vec::new();
            let mut seen = 0usize;
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(unavailable)?;
                seen += 1;
                if seen > self.max_listed {
                    tracing::warn!(max = self.max_listed, "backups listing refused: more objects under the prefix than the cap");
                    return Err(unavailable(format!(
                        "more than {} objects under the backups prefix; not listed",
                        self.max_listed
                    )));
                }
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
        async move { self.aborting.settled().await }.boxed()
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
