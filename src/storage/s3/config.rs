//! Where and how to reach a bucket: the configuration of an [`super::S3Storage`], whose
//! `Debug` hides the keys.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::model::names::BackupKey;

/// Called with the key just before the conditional write that publishes it (tests use it to
/// create the same key meanwhile).
pub type PublishHook = Arc<dyn Fn(BackupKey) -> BoxFuture<'static, ()> + Send + Sync>;

/// Part size of uploads: S3's minimum, so that memory (a part filling, two being sent) stays small.
const DEFAULT_PART: usize = 5 << 20;
/// Objects a listing reads at most. A shared bucket is foreign: its listing is paged without
/// end, so a prefix holding millions of objects must not stall every list request. A million
/// is far past any backups folder (PocketBase keeps a handful) and about 1,000 pages.
pub const MAX_LISTED_OBJECTS: usize = 1_000_000;

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
    /// A listing that meets more objects than this under the prefix fails (closed) rather
    /// than runs on: [`MAX_LISTED_OBJECTS`] unless a test lowers it.
    pub max_listed: usize,
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
            max_listed: MAX_LISTED_OBJECTS,
        }
    }

    /// The prefix without surrounding slashes; `""` for the bucket's root.
    pub fn normalized_prefix(&self) -> &str {
        self.prefix.trim_matches('/')
    }

    /// `endpoint`, with the bucket as a subdomain when requests are virtual-hosted style.
    pub(super) fn bucket_endpoint(&self) -> Option<String> {
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
pub struct S3ConfigError(pub(super) String);

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
        assert!(super::super::S3Storage::new(c).is_err(), "an empty segment in the prefix is refused");
    }
}
