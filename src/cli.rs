//! The command line: `serve`, account management, `backups` tools (`check-s3`, `verify`, and
//! `list`/`create`/`restore`/`delete` with the server stopped) and `openapi`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::accounts::{Accounts, Collection};
use crate::archive::ArchiveLimits;
use crate::lock::DataDirLock;
use crate::offline::Offline;
use crate::server::{self, RestartMode, ServeConfig, StorageChoice};
use crate::storage::s3::{S3Config, S3Storage};
use crate::http::ratelimit::RateLimit;
use crate::{datadir, http, listener};

#[derive(Parser, Debug)]
#[command(name = "pb-backups", version, about = "The PocketBase Backups API, as its specification documents it.")]
pub struct Cli {
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, global = true, env = "PB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct DataDirArg {
    /// The data directory: data.db (accounts), the files backed up, and backups/.
    #[arg(long, default_value = "pb_data", env = "PB_DATA_DIR")]
    pub dir: PathBuf,
}

/// Backups in an S3-compatible bucket named on the command line, whatever the data dir's
/// settings (`backups.s3`, PocketBase's way, used when no bucket is named here) say. Access
/// keys are read from the environment only and never shown: PB_BACKUPS_S3_ACCESS_KEY and
/// PB_BACKUPS_S3_SECRET_KEY, else the standard AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and
/// AWS_SESSION_TOKEN).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Backups in S3")]
pub struct S3Args {
    /// Keep backups in this S3 bucket (which must exist), whatever the settings' backups.s3
    /// says. Keys come from PB_BACKUPS_S3_ACCESS_KEY/SECRET_KEY, else
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
    #[arg(long = "backups-s3-bucket", env = "PB_BACKUPS_S3_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Base URL of an S3-compatible service (MinIO, R2, …); else AWS_ENDPOINT_URL_S3 or
    /// AWS_ENDPOINT_URL; AWS S3 when none is set.
    #[arg(long = "backups-s3-endpoint", env = "PB_BACKUPS_S3_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region of the bucket; else AWS_REGION or AWS_DEFAULT_REGION; else us-east-1.
    #[arg(long = "backups-s3-region", env = "PB_BACKUPS_S3_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Folder inside the bucket for the backups (and their lease objects).
    #[arg(long = "backups-s3-prefix", env = "PB_BACKUPS_S3_PREFIX", default_value = "", value_name = "PREFIX")]
    pub prefix: String,
    /// Path-style requests (URL/BUCKET/KEY) instead of virtual-hosted (BUCKET.HOST/KEY):
    /// needed for IP-address endpoints and most self-hosted stores.
    #[arg(long = "backups-s3-path-style", env = "PB_BACKUPS_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub path_style: bool,
    /// Send the SHA-256 of every write (each part of a multipart upload) for the store to
    /// verify (x-amz-checksum-sha256), to this bucket or the settings' one. Turn off for
    /// stores that reject checksum headers (`check-s3` shows it).
    #[arg(long = "backups-s3-checksums", env = "PB_BACKUPS_S3_CHECKSUMS", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "true", value_name = "BOOL")]
    pub checksums: bool,
}

/// Where the S3 access keys came from (said by `check-s3`; the keys themselves never are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Ours,
    Aws { session_token: bool },
    /// None given: object_store's default chain (instance metadata, …).
    DefaultChain,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeySource::Ours => "from PB_BACKUPS_S3_ACCESS_KEY/PB_BACKUPS_S3_SECRET_KEY",
            KeySource::Aws { session_token: false } => "from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            KeySource::Aws { session_token: true } => {
                "from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY with AWS_SESSION_TOKEN"
            }
            KeySource::DefaultChain => "none given (default AWS chain: instance metadata)",
        })
    }
}

impl S3Args {
    /// The S3 configuration, keys from the environment; `None` without a bucket.
    pub fn config(&self) -> Result<Option<(S3Config, KeySource)>, Box<dyn std::error::Error>> {
        self.config_from(|name| std::env::var(name).ok())
    }

    /// As [`S3Args::config`], with `env` for the environment. Ours win over the AWS variables,
    /// pair by pair: keys are never mixed from the two sets.
    fn config_from(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(S3Config, KeySource)>, Box<dyn std::error::Error>> {
        let Some(bucket) = self.bucket.clone().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut config = S3Config::new(bucket);
        config.endpoint = self
            .endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        if let Some(region) = self.region.clone().filter(|r| !r.is_empty()).or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION")) {
            config.region = region;
        }
        config.prefix = self.prefix.clone();
        config.path_style = self.path_style;
        config.checksums = self.checksums;
        let pair = |id: &str, secret: &str| -> Result<Option<(String, String)>, String> {
            match (env(id), env(secret)) {
                (Some(id), Some(secret)) => Ok(Some((id, secret))),
                (None, None) => Ok(None),
                _ => Err(format!("set both {id} and {secret}, or neither")),
            }
        };
        let source = if let Some((id, secret)) = pair("PB_BACKUPS_S3_ACCESS_KEY", "PB_BACKUPS_S3_SECRET_KEY")? {
            (config.access_key, config.secret_key) = (Some(id), Some(secret));
            KeySource::Ours
        } else if let Some((id, secret)) = pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")? {
            (config.access_key, config.secret_key) = (Some(id), Some(secret));
            config.session_token = env("AWS_SESSION_TOKEN");
            KeySource::Aws { session_token: config.session_token.is_some() }
        } else {
            KeySource::DefaultChain
        };
        Ok(Some((config, source)))
    }
}

/// Password-login throttling: a token bucket per client (an IPv4 address, or an IPv6 /64).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Login throttling")]
pub struct LoginArgs {
    /// Password logins a client may make at once.
    #[arg(long, env = "PB_LOGIN_BURST", default_value_t = RateLimit::default().burst, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub login_burst: u32,
    /// Milliseconds in which a client earns one more login attempt, up to the burst.
    #[arg(long, env = "PB_LOGIN_INTERVAL_MS", default_value_t = RateLimit::default().per_attempt.as_millis() as u64, value_name = "MS")]
    pub login_interval_ms: u64,
    /// Reverse proxies (addresses or CIDR ranges) that may name the client in the headers the
    /// settings' `trustedProxy.headers` list (e.g. `X-Forwarded-For`). From any other peer
    /// those headers are ignored.
    #[arg(long = "trusted-proxy", env = "PB_TRUSTED_PROXIES", value_delimiter = ',', num_args = 1.., value_parser = parse_net, value_name = "CIDR")]
    pub trusted_proxies: Vec<IpNet>,
}

impl LoginArgs {
    fn rate(&self) -> RateLimit {
        RateLimit { burst: self.login_burst, per_attempt: std::time::Duration::from_millis(self.login_interval_ms) }
    }
}

/// A CIDR range, or a single address (as its /32 or /128).
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API, Swagger UI (/docs) and the OpenAPI document (/openapi.yaml).
    ///
    /// On a first start without a superuser, one is created from PB_SUPERUSER_EMAIL and
    /// PB_SUPERUSER_PASSWORD, or with a random password printed once.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090", env = "PB_HTTP")]
        http: String,
        #[command(flatten)]
        dir: DataDirArg,
        /// Language of messages for requests whose Accept-Language names neither zh nor en.
        #[arg(long, default_value = "zh", env = "PB_LANG", value_parser = ["zh", "en"])]
        lang: String,
        #[command(flatten)]
        limits: ArchiveLimitArgs,
        #[command(flatten)]
        login: LoginArgs,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Serve Prometheus metrics at /metrics.
        #[arg(long, env = "PB_METRICS", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
        metrics: bool,
    },
    /// Backups storage tools.
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Manage superuser accounts (they may use the backups API).
    #[command(subcommand)]
    Superuser(AccountCommand),
    /// Manage regular user accounts (they may log in, but not use the backups API).
    #[command(subcommand)]
    User(AccountCommand),
    /// Print the OpenAPI document (YAML), exactly as served at /openapi.yaml.
    Openapi,
}

#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// Check the S3 configuration that applies (the same flags and environment as `serve`;
    /// without a bucket there, the data dir's settings' backups.s3): endpoint reachable,
    /// bucket present, keys accepted, writes and conditional writes working. Writes and
    /// removes a few small test objects under the prefix.
    CheckS3 {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
    },
    /// List the stored backups (key, size, modified), newest first. Server stopped.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Create a backup of the data dir, as POST /api/backups would. Server stopped.
    Create {
        /// `[a-z0-9_-]+.zip`; generated (pb_backup_<UTC time>.zip) when absent.
        name: Option<String>,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        limits: ArchiveLimitArgs,
    },
    /// Restore a backup into the data dir (checked, then swapped in with the journaled swap
    /// a server uses). Server stopped.
    Restore {
        key: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        limits: ArchiveLimitArgs,
    },
    /// Delete a stored backup. Server stopped.
    Delete {
        key: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Check that a stored backup would restore, with the restore's own checks: every entry
    /// (CRC, sizes, safe names), data.db opens and passes SQLite's integrity_check, a usable
    /// superuser account. Read-only: works beside a running server. Exit 1 on any bad one.
    Verify {
        /// The backup's key (its file name).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        key: Option<String>,
        /// Verify every stored backup.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        limits: ArchiveLimitArgs,
    },
}

/// The archive limits, the same for `serve` and the offline commands, so that what one
/// makes the other accepts.
#[derive(Args, Debug, Clone)]
pub struct ArchiveLimitArgs {
    /// Largest total uncompressed size (bytes) of an archive's entries, checked on upload
    /// and on restore. A restore is also capped by the free space of the data dir's disk
    /// less 64 MiB, so one that cannot fit is refused up front.
    #[arg(long, env = "PB_MAX_ARCHIVE_SIZE", value_name = "BYTES")]
    max_archive_size: Option<u64>,
    /// Most entries (files and folders) in an archive, checked on upload and on restore;
    /// a create of a data dir with more is refused up front, so that no backup is made
    /// that would not restore.
    #[arg(long, env = "PB_MAX_ARCHIVE_ENTRIES", value_name = "N", default_value_t = ArchiveLimits::default().max_entries)]
    max_archive_entries: usize,
}

impl ArchiveLimitArgs {
    pub fn limits(&self) -> ArchiveLimits {
        let mut limits = ArchiveLimits::default();
        if let Some(max) = self.max_archive_size {
            // The one archive limit: it applies to uploads and restores alike.
            limits.max_total_size = max;
        }
        // Creates are held to it too (see `ArchiveLimits::max_entries`).
        limits.max_entries = self.max_archive_entries;
        limits
    }
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create the account, or set its password (which invalidates its tokens).
    Upsert {
        email: String,
        password: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Delete the account (its tokens stop working).
    Delete {
        email: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// Runs a parsed command with what a previous image handed over; errors are reported by `main`.
pub async fn run(cli: Cli, inherited: listener::Inherited) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Openapi => print!("{}", http::openapi::document_yaml()),
        Command::Superuser(cmd) => account(Collection::Superusers, cmd)?,
        Command::User(cmd) => account(Collection::Users, cmd)?,
        Command::Serve { http, dir, lang, limits, login, s3, schedule, metrics } => {
            if metrics {
                crate::metrics::enable();
            }
            let config = serve_config(dir, &lang, &limits, login, &s3)?;
            serve(&http, config, inherited, schedule.patch()).await?
        }
        Command::Backups(BackupsCommand::CheckS3 { dir, s3 }) => check_s3(&s3, &dir.dir).await?,
        Command::Backups(BackupsCommand::List { dir, s3 }) => offline(&dir, &s3, ArchiveLimits::default(), Offline::List).await?,
        Command::Backups(BackupsCommand::Create { name, dir, s3, limits }) => {
            offline(&dir, &s3, limits.limits(), Offline::Create(name)).await?
        }
        Command::Backups(BackupsCommand::Restore { key, dir, s3, limits }) => {
            offline(&dir, &s3, limits.limits(), Offline::Restore(key)).await?
        }
        Command::Backups(BackupsCommand::Delete { key, dir, s3 }) => offline(&dir, &s3, ArchiveLimits::default(), Offline::Delete(key)).await?,
        Command::Backups(BackupsCommand::Verify { key, all, dir, s3, limits }) => {
            let storage = crate::offline::open_storage(&dir.dir, s3.config()?.map(|(c, _)| c), s3.checksums)?;
            crate::offline::verify(&storage, key.as_deref(), all, &limits.limits()).await?
        }
    }
    Ok(())
}

async fn offline(dir: &DataDirArg, s3: &S3Args, limits: ArchiveLimits, command: Offline) -> Result<(), Box<dyn std::error::Error>> {
    Ok(crate::offline::run(&dir.dir, s3.config()?.map(|(c, _)| c), s3.checksums, limits, command).await?)
}

/// The server's configuration from `serve`'s flags.
fn serve_config(
    dir: DataDirArg,
    lang: &str,
    limits: &ArchiveLimitArgs,
    login: LoginArgs,
    s3: &S3Args,
) -> Result<ServeConfig, Box<dyn std::error::Error>> {
    let mut config = ServeConfig::new(dir.dir);
    config.default_lang = lang.parse()?;
    config.storage = s3.config()?.map_or(StorageChoice::Settings, |(s3, _)| StorageChoice::S3(Box::new(s3)));
    config.s3_checksums = s3.checksums;
    config.limits = limits.limits();
    config.login_rate = login.rate();
    config.trusted_proxies = login.trusted_proxies;
    Ok(config)
}

fn account(collection: Collection, cmd: AccountCommand) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        AccountCommand::Upsert { email, password, dir } => {
            std::fs::create_dir_all(&dir.dir)?;
            let _lock = DataDirLock::acquire(&dir.dir)?;
            let accounts = datadir::open(&dir.dir)?;
            let record = accounts.upsert(collection, &email, &password)?;
            println!("{} {} saved (id {})", collection.name(), record.email, record.id);
        }
        AccountCommand::Delete { email, dir } => {
            let _lock = DataDirLock::acquire(&dir.dir)?;
            let accounts = datadir::open(&dir.dir)?;
            if accounts.delete(collection, &email)? {
                println!("{} {email} deleted", collection.name());
            } else {
                return Err(format!("no {} account with email {email}", collection.name()).into());
            }
        }
    }
    Ok(())
}

/// Makes sure a superuser exists, printing the credentials of one it creates.
fn ensure_superuser(accounts: &Accounts) -> Result<(), Box<dyn std::error::Error>> {
    if accounts.count(Collection::Superusers)? > 0 {
        return Ok(());
    }
    let email = std::env::var("PB_SUPERUSER_EMAIL").unwrap_or_else(|_| "admin@example.com".into());
    let (password, shown) = match std::env::var("PB_SUPERUSER_PASSWORD") {
        Ok(p) => (p, "from PB_SUPERUSER_PASSWORD".to_string()),
        Err(_) => {
            use rand::distr::{Alphanumeric, SampleString};
            let p = Alphanumeric.sample_string(&mut rand::rng(), 20);
            (p.clone(), format!("password {p} (shown only now)"))
        }
    };
    accounts.upsert(Collection::Superusers, &email, &password)?;
    println!("Created superuser {email}, {shown}");
    Ok(())
}

/// Checks the bucket that applies: the flags', else the one the data dir's settings enable.
async fn check_s3(args: &S3Args, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let (config, keys) = match args.config()? {
        Some((config, keys)) => (config, format!("{keys}, bucket from the --backups-s3-* flags")),
        None => {
            let settings = crate::settings::load_read_only(dir).map_err(|e| {
                format!("no --backups-s3-bucket, and the settings in {} cannot be read: {e}", dir.display())
            })?;
            if !settings.backups_s3.enabled {
                return Err(format!(
                    "nothing to check: backups are kept in {} (no --backups-s3-bucket, and the settings' backups.s3 is not enabled)",
                    dir.join(crate::layout::BACKUPS_DIR).display()
                )
                .into());
            }
            let config = crate::backends::config_of(&settings.backups_s3, args.checksums)
                .map_err(|e| format!("the settings' backups.s3 cannot be used: {e}"))?;
            (config, "from the settings' backups.s3".to_string())
        }
    };
    println!(
        "checking bucket {:?} at {} (region {}, prefix {:?}, {} requests, part checksums {}, keys {keys})",
        config.bucket,
        config.endpoint.as_deref().unwrap_or("AWS S3"),
        config.region,
        config.normalized_prefix(),
        if config.path_style { "path-style" } else { "virtual-hosted" },
        if config.checksums { "on" } else { "off" },
    );
    let storage = S3Storage::new(config)?;
    match storage.check().await {
        Ok(done) => {
            for line in done {
                println!("ok: {line}");
            }
            println!("the configuration works");
            Ok(())
        }
        Err(problem) => Err(format!("S3 check failed: {problem}").into()),
    }
}

async fn serve(
    addr: &str,
    mut config: ServeConfig,
    inherited: listener::Inherited,
    schedule: crate::settings::BackupsPatch,
) -> Result<(), Box<dyn std::error::Error>> {
    // First: a stop signal from here on is honoured where it is safe, not at once.
    crate::stop::watch()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let dir = config.data_dir.canonicalize()?;
    // Refuse at once, before touching anything, when another server holds the data dir;
    // the lock is handed to `server::run` and held for as long as it serves.
    config.lock = Some(DataDirLock::acquire(&dir)?);
    ensure_superuser(&datadir::open(&dir)?)?;
    if schedule != Default::default() {
        let s = crate::settings::update_backups(&dir, &schedule)?;
        tracing::info!(cron = %s.backups.cron, cron_max_keep = s.backups.cron_max_keep, "backups schedule set from the command line");
    }
    let listener = listener::bind_or_inherit(addr, inherited)?;
    let local = listener.local_addr()?;
    // Not println!: a closed stdout must not stop a (re-executed) server.
    let banner = format!(
        "pb-backups serving {}\n  REST API:     http://{local}/api/\n  Console:      http://{local}{}\n  Swagger UI:   http://{local}{}\n  OpenAPI:      http://{local}{}\n",
        dir.display(),
        http::console::CONSOLE_PATH,
        http::DOCS_PATH,
        http::OPENAPI_YAML_PATH
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    config.data_dir = dir;
    config.restart = RestartMode::Exec;
    if let StorageChoice::S3(s3) = &config.storage {
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            format!("  Backups:      S3 bucket {} prefix {:?}\n", s3.bucket, s3.normalized_prefix()).as_bytes(),
        );
    }
    let served = server::run(listener, config, crate::stop::stopped()).await;
    // A check of a foreign data.db may still run on a blocking thread, and the runtime waits
    // for those before the process can exit: end it now.
    crate::sqlite::stop_all();
    served?;
    match crate::stop::taken() {
        Some(signal) => tracing::info!(signal, "stopped"),
        None => tracing::info!("stopped"),
    }
    Ok(())
}

/// The automatic backups schedule, stored in the data dir's settings at every start (as
/// `PATCH /api/settings` would), so it also applies after a restore restarts the server.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Scheduled backups")]
pub struct ScheduleArgs {
    /// Cron expression of automatic backups, in UTC (five fields or @daily …); "" turns
    /// them off. Left as stored (`backups.cron`) when absent.
    #[arg(long = "backups-cron", env = "PB_BACKUPS_CRON", value_name = "EXPR")]
    pub cron: Option<String>,
    /// How many automatic backups to keep (`backups.cronMaxKeep`).
    #[arg(long = "backups-cron-max-keep", env = "PB_BACKUPS_CRON_MAX_KEEP", value_name = "N")]
    pub cron_max_keep: Option<i64>,
}

impl ScheduleArgs {
    pub fn patch(&self) -> crate::settings::BackupsPatch {
        crate::settings::BackupsPatch { cron: self.cron.clone(), cron_max_keep: self.cron_max_keep }
    }
}

#[cfg(test)]
mod tests;
