//! The command line: `serve`, account management, `backups` tools (`check-s3`, `verify`, and
//! `list`/`create`/`restore`/`delete` with the server stopped) and `openapi`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::accounts::{Accounts, Collection};
use crate::lock::DataDirLock;
use crate::offline::Offline;
use crate::server::{self, RestartMode, ServeConfig, StorageChoice};
use crate::storage::s3::{S3Config, S3Storage};
use crate::{http, listener};

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

/// Backups in an S3-compatible bucket instead of `<dir>/backups`. Access keys are read from
/// the environment only (PB_BACKUPS_S3_ACCESS_KEY, PB_BACKUPS_S3_SECRET_KEY) and never shown.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Backups in S3")]
pub struct S3Args {
    /// Keep backups in this S3 bucket (which must exist) instead of <dir>/backups. Keys are
    /// read from PB_BACKUPS_S3_ACCESS_KEY and PB_BACKUPS_S3_SECRET_KEY (environment only).
    #[arg(long = "backups-s3-bucket", env = "PB_BACKUPS_S3_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Base URL of an S3-compatible service (MinIO, R2, …); AWS S3 when absent.
    #[arg(long = "backups-s3-endpoint", env = "PB_BACKUPS_S3_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[arg(long = "backups-s3-region", env = "PB_BACKUPS_S3_REGION", default_value = "us-east-1", value_name = "REGION")]
    pub region: String,
    /// Folder inside the bucket for the backups (and their lease objects).
    #[arg(long = "backups-s3-prefix", env = "PB_BACKUPS_S3_PREFIX", default_value = "", value_name = "PREFIX")]
    pub prefix: String,
    /// Path-style requests (URL/BUCKET/KEY) instead of virtual-hosted (BUCKET.HOST/KEY):
    /// needed for IP-address endpoints and most self-hosted stores.
    #[arg(long = "backups-s3-path-style", env = "PB_BACKUPS_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub path_style: bool,
}

impl S3Args {
    /// The S3 configuration, keys from the environment; `None` without a bucket.
    pub fn config(&self) -> Result<Option<S3Config>, Box<dyn std::error::Error>> {
        let Some(bucket) = self.bucket.clone().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let key = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = S3Config::new(bucket);
        config.endpoint = self.endpoint.clone().filter(|e| !e.is_empty());
        config.region = self.region.clone();
        config.prefix = self.prefix.clone();
        config.path_style = self.path_style;
        config.access_key = key("PB_BACKUPS_S3_ACCESS_KEY");
        config.secret_key = key("PB_BACKUPS_S3_SECRET_KEY");
        if config.access_key.is_some() != config.secret_key.is_some() {
            return Err("set both PB_BACKUPS_S3_ACCESS_KEY and PB_BACKUPS_S3_SECRET_KEY, or neither".into());
        }
        Ok(Some(config))
    }
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
        /// Largest total size (bytes) a restore may extract. Always capped by the free space
        /// of the data dir's disk less 64 MiB, so a restore that cannot fit is refused up front.
        #[arg(long, env = "PB_RESTORE_MAX_SIZE", value_name = "BYTES")]
        restore_max_size: Option<u64>,
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
    /// Check an S3 configuration (the same flags and environment as `serve`): endpoint
    /// reachable, bucket present, keys accepted, writes and conditional writes working.
    /// Writes and removes a few small test objects under the prefix.
    CheckS3 {
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
    },
    /// Restore a backup into the data dir (checked, then swapped in with the journaled swap
    /// a server uses). Server stopped.
    Restore {
        key: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        s3: S3Args,
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
    },
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

/// Runs a parsed command; errors are reported by `main`.
pub async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Openapi => print!("{}", http::openapi::document_yaml()),
        Command::Superuser(cmd) => account(Collection::Superusers, cmd)?,
        Command::User(cmd) => account(Collection::Users, cmd)?,
        Command::Serve { http, dir, lang, restore_max_size, s3, schedule, metrics } => {
            if metrics {
                crate::metrics::enable();
            }
            let mut config = ServeConfig::new(dir.dir);
            config.default_lang = lang.parse()?;
            config.storage = s3.config()?.map_or(StorageChoice::Local, StorageChoice::S3);
            if let Some(max) = restore_max_size {
                config.limits.max_total_size = max;
            }
            serve(&http, config, schedule.patch()).await?
        }
        Command::Backups(BackupsCommand::CheckS3 { s3 }) => check_s3(&s3).await?,
        Command::Backups(BackupsCommand::List { dir, s3 }) => crate::offline::run(&dir.dir, s3.config()?, Offline::List).await?,
        Command::Backups(BackupsCommand::Create { name, dir, s3 }) => {
            crate::offline::run(&dir.dir, s3.config()?, Offline::Create(name)).await?
        }
        Command::Backups(BackupsCommand::Restore { key, dir, s3 }) => {
            crate::offline::run(&dir.dir, s3.config()?, Offline::Restore(key)).await?
        }
        Command::Backups(BackupsCommand::Delete { key, dir, s3 }) => {
            crate::offline::run(&dir.dir, s3.config()?, Offline::Delete(key)).await?
        }
        Command::Backups(BackupsCommand::Verify { key, all, dir, s3 }) => {
            let storage = crate::offline::open_storage(&dir.dir, s3.config()?)?;
            crate::offline::verify(storage.as_ref(), key.as_deref(), all).await?
        }
    }
    Ok(())
}

fn account(collection: Collection, cmd: AccountCommand) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        AccountCommand::Upsert { email, password, dir } => {
            std::fs::create_dir_all(&dir.dir)?;
            let _lock = DataDirLock::acquire(&dir.dir)?;
            let accounts = server::open_data_dir(&dir.dir)?;
            let record = accounts.upsert(collection, &email, &password)?;
            println!("{} {} saved (id {})", collection.name(), record.email, record.id);
        }
        AccountCommand::Delete { email, dir } => {
            let _lock = DataDirLock::acquire(&dir.dir)?;
            let accounts = server::open_data_dir(&dir.dir)?;
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

async fn check_s3(args: &S3Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.config()?.ok_or("no bucket: set --backups-s3-bucket or PB_BACKUPS_S3_BUCKET")?;
    let keys = if config.access_key.is_some() { "from PB_BACKUPS_S3_ACCESS_KEY/SECRET_KEY" } else { "none (default AWS chain)" };
    println!(
        "checking bucket {:?} at {} (region {}, prefix {:?}, {} requests, keys {keys})",
        config.bucket,
        config.endpoint.as_deref().unwrap_or("AWS S3"),
        config.region,
        config.normalized_prefix(),
        if config.path_style { "path-style" } else { "virtual-hosted" },
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

async fn serve(addr: &str, mut config: ServeConfig, schedule: crate::settings::BackupsPatch) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let dir = config.data_dir.canonicalize()?;
    // Refuse at once, before touching anything, when another server holds the data dir;
    // the lock is handed to `server::run` and held for as long as it serves.
    config.lock = Some(DataDirLock::acquire(&dir)?);
    ensure_superuser(&server::open_data_dir(&dir)?)?;
    if schedule != Default::default() {
        let s = crate::settings::update_backups(&dir, &schedule)?;
        tracing::info!(cron = %s.backups.cron, cron_max_keep = s.backups.cron_max_keep, "backups schedule set from the command line");
    }
    let listener = listener::bind_or_inherit(addr)?;
    let local = listener.local_addr()?;
    // Not println!: a closed stdout must not stop a (re-executed) server.
    let banner = format!(
        "pb-backups serving {}\n  REST API:     http://{local}/api/\n  Swagger UI:   http://{local}{}\n  OpenAPI:      http://{local}{}\n",
        dir.display(),
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
    server::run(listener, config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
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
