//! The command line: `serve`, account management and `openapi`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::accounts::{Accounts, Collection};
use crate::i18n::Lang;
use crate::server::{self, RestartMode, ServeConfig};
use crate::{http, listener};

#[derive(Parser, Debug)]
#[command(name = "pb-backups", version, about = "The PocketBase Backups API, as its specification documents it.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct DataDirArg {
    /// The data directory: data.db (accounts), the files backed up, and backups/.
    #[arg(long, default_value = "pb_data", env = "PB_DATA_DIR")]
    pub dir: PathBuf,
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
    },
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
        Command::Serve { http, dir, lang } => serve(&http, dir.dir, lang.parse()?).await?,
    }
    Ok(())
}

fn account(collection: Collection, cmd: AccountCommand) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        AccountCommand::Upsert { email, password, dir } => {
            let accounts = server::open_data_dir(&dir.dir)?;
            let record = accounts.upsert(collection, &email, &password)?;
            println!("{} {} saved (id {})", collection.name(), record.email, record.id);
        }
        AccountCommand::Delete { email, dir } => {
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

async fn serve(addr: &str, dir: PathBuf, lang: Lang) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    ensure_superuser(&server::open_data_dir(&dir)?)?;
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
    let mut config = ServeConfig::new(dir);
    config.default_lang = lang;
    config.restart = RestartMode::Exec;
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
