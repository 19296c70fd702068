//! Which backups storage an operation uses, chosen as PocketBase chooses it: the bucket of the
//! settings row's `backups.s3` while it is enabled, `<data dir>/backups` otherwise; the
//! `--backups-s3-*` flags (and `PB_BACKUPS_S3_*` environment), when they name a bucket, win
//! over the row. The service asks once per operation and keeps what it got until the
//! operation ends. S3 clients are built once per configuration and reused.
//!
//! Below `service`, beside `settings` and `storage`: it turns a settings section into a
//! storage configuration and never reads the row itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::settings::S3Settings;
use crate::storage::s3::{Problem, S3Config, S3Storage};
use crate::storage::{BackupStorage, LocalStorage};

/// Most S3 clients kept for configurations the settings named; the oldest unused one goes.
const MAX_CLIENTS: usize = 8;
/// How long an S3 test may take in all (object_store retries within it).
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A storage an operation holds: the same one from its start to its end.
#[derive(Clone)]
pub struct Backend {
    /// Unique per storage (and per S3 configuration) for the server's life: a listing cached
    /// for one is never served for another.
    pub id: u64,
    pub storage: Arc<dyn BackupStorage>,
}

impl std::ops::Deref for Backend {
    type Target = dyn BackupStorage;
    fn deref(&self) -> &Self::Target {
        &*self.storage
    }
}

/// Why the settings' section cannot be used as a storage (the section is foreign data: a
/// row written by hand or by another version is refused, never half-used).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("backups.s3 is enabled without a {0}")]
    Missing(&'static str),
    #[error("the S3 endpoint is not an http:// or https:// URL")]
    BadEndpoint,
    #[error(transparent)]
    Client(#[from] crate::storage::s3::S3ConfigError),
    #[error("the backups folder: {0}")]
    Local(#[source] std::io::Error),
}

/// What the `--backups-s3-*` flags chose, for `GET /api/settings` to say that they win.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    pub prefix: String,
}

/// The storage of a settings section, or the local folder: what a `BackupStorage` is built
/// from, compared whole (keys included) to find a client already built.
#[derive(Clone, PartialEq, Eq)]
struct ClientKey {
    endpoint: String,
    bucket: String,
    region: String,
    access_key: String,
    secret: String,
    path_style: bool,
}

enum Mode {
    /// The flags' bucket, whatever the settings say (the local folder is then never made).
    Flags(Backend, Override),
    /// As the settings say: the local folder, or the buckets they name.
    Settings { local: Backend },
}

/// The storages of one server (or one offline command).
pub struct Backends {
    mode: Mode,
    /// Part checksums for buckets the settings name (`--backups-s3-checksums`).
    checksums: bool,
    clients: Mutex<Vec<(ClientKey, Backend)>>,
    next_id: AtomicU64,
}

impl Backends {
    /// `local_root` is the data dir's backups folder (created if missing); `flags`, the
    /// bucket the command line names, if any, which then wins over the settings.
    pub fn new(local_root: PathBuf, flags: Option<S3Config>, checksums: bool) -> Result<Backends, ConfigError> {
        let mode = match flags {
            Some(config) => {
                let summary = Override {
                    bucket: config.bucket.clone(),
                    endpoint: config.endpoint.clone().unwrap_or_default(),
                    region: config.region.clone(),
                    prefix: config.normalized_prefix().to_string(),
                };
                Mode::Flags(Backend { id: 1, storage: Arc::new(S3Storage::new(config)?) }, summary)
            }
            None => {
                let local = LocalStorage::open(&local_root).map_err(ConfigError::Local)?;
                Mode::Settings { local: Backend { id: 0, storage: Arc::new(local) } }
            }
        };
        Ok(Backends { mode, checksums, clients: Mutex::default(), next_id: AtomicU64::new(2) })
    }

    /// What the flags chose, when they win over the settings.
    pub fn overridden(&self) -> Option<&Override> {
        match &self.mode {
            Mode::Flags(_, o) => Some(o),
            Mode::Settings { .. } => None,
        }
    }

    /// The storage the flags fix, if they do: then the settings are not read at all.
    pub fn fixed(&self) -> Option<Backend> {
        match &self.mode {
            Mode::Flags(b, _) => Some(b.clone()),
            Mode::Settings { .. } => None,
        }
    }

    /// The storage for the settings' `backups.s3` (the flags' when they win): its bucket
    /// while enabled, else the local folder.
    pub fn for_settings(&self, s3: &S3Settings) -> Result<Backend, ConfigError> {
        let local = match &self.mode {
            Mode::Flags(fixed, _) => return Ok(fixed.clone()),
            Mode::Settings { local } => local,
        };
        if !s3.enabled {
            return Ok(local.clone());
        }
        let key = client_key(s3)?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, backend)) = clients.iter().find(|(k, _)| *k == key) {
            return Ok(backend.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let backend = Backend { id, storage: Arc::new(S3Storage::new(s3_config(&key, self.checksums))?) };
        tracing::info!(bucket = %key.bucket, endpoint = %key.endpoint, "backups storage: an S3 bucket from the settings");
        if clients.len() >= MAX_CLIENTS {
            // An operation still holding the one dropped keeps its own reference; aborts it
            // left running are no longer waited for at stop (they are best effort anyway).
            clients.remove(0);
        }
        clients.push((key, backend.clone()));
        Ok(backend)
    }

    /// Until the S3 clients' background clean-up has ended (see `BackupStorage::settle`).
    pub async fn settle(&self) {
        let mut all: Vec<Backend> = self.fixed().into_iter().collect();
        all.extend(self.clients.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, b)| b.clone()));
        for backend in all {
            backend.settle().await;
        }
    }
}

/// The section's client configuration, checked: every field PocketBase requires is there,
/// and the endpoint is one an S3 client can use.
fn client_key(s3: &S3Settings) -> Result<ClientKey, ConfigError> {
    for (name, value) in [
        ("bucket", &s3.bucket),
        ("region", &s3.region),
        ("endpoint", &s3.endpoint),
        ("accessKey", &s3.access_key),
        ("secret", &s3.secret),
    ] {
        if value.is_empty() {
            return Err(ConfigError::Missing(name));
        }
    }
    Ok(ClientKey {
        endpoint: endpoint_url(&s3.endpoint).ok_or(ConfigError::BadEndpoint)?,
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret: s3.secret.clone(),
        path_style: s3.force_path_style,
    })
}

/// The endpoint as a base URL: `https://` when it names no scheme (PocketBase's validation
/// takes `example.com`); `http://` and `https://` only.
fn endpoint_url(endpoint: &str) -> Option<String> {
    if !crate::settings::s3::is_url(endpoint) {
        return None;
    }
    match endpoint.split_once("://") {
        Some(("http" | "https", _)) => Some(endpoint.to_string()),
        Some(_) => None,
        None => Some(format!("https://{endpoint}")),
    }
}

/// Backups at the bucket's root, where PocketBase keeps them, so that each server lists the
/// other's.
fn s3_config(key: &ClientKey, checksums: bool) -> S3Config {
    let mut config = S3Config::new(key.bucket.clone());
    config.endpoint = Some(key.endpoint.clone());
    config.region = key.region.clone();
    config.path_style = key.path_style;
    config.access_key = Some(key.access_key.clone());
    config.secret_key = Some(key.secret.clone());
    config.checksums = checksums;
    config
}

/// The S3 configuration a settings section describes (`backups check-s3` checks it).
pub fn config_of(s3: &S3Settings, checksums: bool) -> Result<S3Config, ConfigError> {
    Ok(s3_config(&client_key(s3)?, checksums))
}

/// Why `POST /api/settings/test/s3` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TestError {
    #[error("S3 storage filesystem is not enabled")]
    NotEnabled,
    #[error("the settings cannot be read")]
    SettingsUnreadable,
    /// Enabled with settings no client can use (a row PocketBase accepted: `ftp://`, …).
    #[error("the settings cannot be used")]
    Unusable,
    #[error("the store could not be reached")]
    Unreachable,
    #[error("the store refused the keys or the write")]
    Refused,
    #[error("the bucket does not exist")]
    NoBucket,
    #[error("the store gave an unexpected answer")]
    Unexpected,
}

/// Tests the saved section as PocketBase does: writes a small object and deletes it.
pub async fn test(s3: &S3Settings) -> Result<(), TestError> {
    if !s3.enabled {
        return Err(TestError::NotEnabled);
    }
    let config = config_of(s3, true).map_err(|e| {
        tracing::warn!(error = %e, "S3 test: the settings cannot be used");
        TestError::Unusable
    })?;
    let storage = S3Storage::new(config).map_err(|e| {
        tracing::warn!(error = %e, "S3 test: the settings cannot be used");
        TestError::Unusable
    })?;
    match tokio::time::timeout(TEST_TIMEOUT, storage.write_test_object()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(problem)) => Err(match problem {
            Problem::NoBucket => TestError::NoBucket,
            Problem::Refused | Problem::NoCredentials => TestError::Refused,
            Problem::Unreachable => TestError::Unreachable,
            Problem::Unsupported | Problem::Unexpected => TestError::Unexpected,
        }),
        Err(_) => Err(TestError::Unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(bucket: &str) -> S3Settings {
        S3Settings {
            enabled: true,
            bucket: bucket.into(),
            region: "us-east-1".into(),
            endpoint: "http://127.0.0.1:9".into(),
            access_key: "a".into(),
            secret: "s".into(),
            force_path_style: true,
        }
    }

    #[tokio::test]
    async fn one_client_per_configuration_and_the_local_folder_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let backends = Backends::new(dir.path().join("backups"), None, true).unwrap();
        let local = backends.for_settings(&S3Settings::default()).unwrap();
        assert_eq!(local.id, 0);
        let a = backends.for_settings(&on("a")).unwrap();
        assert_eq!(backends.for_settings(&on("a")).unwrap().id, a.id, "reused");
        let b = backends.for_settings(&on("b")).unwrap();
        assert_ne!(a.id, b.id);
        let other_secret = S3Settings { secret: "t".into(), ..on("a") };
        assert_ne!(backends.for_settings(&other_secret).unwrap().id, a.id, "a new secret is a new client");
        // Settings a client cannot use are refused, never half-used.
        assert!(matches!(backends.for_settings(&S3Settings { bucket: String::new(), ..on("a") }), Err(ConfigError::Missing("bucket"))));
        let ftp = S3Settings { endpoint: "ftp://x".into(), ..on("a") };
        assert!(matches!(backends.for_settings(&ftp), Err(ConfigError::BadEndpoint)));
        assert_eq!(endpoint_url("s3.example.com").as_deref(), Some("https://s3.example.com"));
    }

    #[tokio::test]
    async fn the_flags_win_over_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = S3Config::new("flagged");
        flags.endpoint = Some("http://127.0.0.1:9".into());
        let backends = Backends::new(dir.path().join("backups"), Some(flags), true).unwrap();
        let fixed = backends.fixed().unwrap().id;
        assert_eq!(backends.for_settings(&S3Settings::default()).unwrap().id, fixed);
        assert_eq!(backends.for_settings(&on("a")).unwrap().id, fixed);
        assert_eq!(backends.overridden().unwrap().bucket, "flagged");
    }

    #[tokio::test]
    async fn a_test_of_a_section_that_is_off_says_so() {
        assert_eq!(test(&S3Settings::default()).await, Err(TestError::NotEnabled));
        let ftp = S3Settings { endpoint: "ftp://x".into(), ..on("a") };
        assert_eq!(test(&ftp).await, Err(TestError::Unusable));
    }
}
