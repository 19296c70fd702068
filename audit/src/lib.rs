//! `pb-backups audit`: holds any server, by URL, to the Backups API spec and writes a
//! report people can read and CI systems can file.
//!
//! It stands on the oracle's side: it knows the spec only through `pb-backups-spec` (the
//! documented responses, our numbered rules, the reference model) and the server only
//! through HTTP (and, when given, its data dir on this machine). It shares no code with
//! the `pb-backups` server.
//!
//! - [`http`]: requests as a report shows them, responses read whole.
//! - [`judge`]: one response against its documented one.
//! - [`datadir`]: what the auditor may do to the server's data dir.
//! - `run`: the checks and probes, in order.
//! - `sequences`: `--sequences N`, random requests checked against the reference model.
//! - [`report`]: the findings as Markdown, JSON or JUnit XML.

pub mod datadir;
pub mod http;
pub mod judge;
pub mod report;
mod run;
mod sequences;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

pub use report::{Probe, Report, Row, Summary, Verdict};

/// Hold any server, by URL, to the Backups API spec and write a conformance report.
///
/// Exit status: 0 when every check that ran passed, 1 when any failed, 2 when the audit
/// could not run, 130 or 143 when stopped by SIGINT or SIGTERM (after mending what it did
/// to --data-dir). It creates, uploads and deletes backups named audit_* and removes them at
/// the end; it restores only with --allow-restore (a backup it made at the start).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The server's base URL, e.g. http://127.0.0.1:8090
    pub url: String,
    /// A superuser's credentials.
    #[arg(long, value_name = "EMAIL:PASSWORD")]
    pub superuser: String,
    /// A regular (non-superuser) account's credentials, for the 403 responses.
    #[arg(long, value_name = "EMAIL:PASSWORD")]
    pub user: String,
    /// The server's data dir on this machine: lets the auditor break and mend the backups
    /// storage (the documented 400s), slow creates down, and see what a request changed.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run the restore 204 row and the probes that restore: the server restarts, restored
    /// from a backup the auditor made at the start.
    #[arg(long)]
    pub allow_restore: bool,
    /// Languages to check the documented bodies in: zh (no Accept-Language, and zh), en, or both.
    #[arg(long, default_value = "both", value_parser = ["zh", "en", "both"])]
    pub lang: String,
    /// Report format.
    #[arg(long, default_value = "md", value_parser = ["md", "json", "junit"])]
    pub format: String,
    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also run N random sequences of requests from the spec's reference model, each
    /// response compared with the model's.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub sequences: u32,
    /// How the report names the server (default: its URL).
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
}

/// Which languages the documented bodies are checked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Langs {
    Zh,
    En,
    Both,
}

/// An audit, ready to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub url: String,
    pub superuser: (String, String),
    pub user: (String, String),
    pub data_dir: Option<PathBuf>,
    pub allow_restore: bool,
    pub langs: Langs,
    pub sequences: u32,
    pub name: Option<String>,
    /// Print a line per check on stderr.
    pub progress: bool,
    /// How long a restore may take to show (data back, server idle again).
    pub restore_wait: Duration,
}

impl Config {
    pub fn new(url: &str, superuser: (&str, &str), user: (&str, &str)) -> Config {
        Config {
            url: url.trim_end_matches('/').to_string(),
            superuser: (superuser.0.into(), superuser.1.into()),
            user: (user.0.into(), user.1.into()),
            data_dir: None,
            allow_restore: false,
            langs: Langs::Both,
            sequences: 0,
            name: None,
            progress: false,
            restore_wait: Duration::from_secs(60),
        }
    }

    /// The options as a person would type them, without secrets or paths.
    fn shown(&self) -> String {
        let mut line = "$URL --superuser EMAIL:PASSWORD --user EMAIL:PASSWORD".to_string();
        if self.data_dir.is_some() {
            line.push_str(" --data-dir DIR");
        }
        if self.allow_restore {
            line.push_str(" --allow-restore");
        }
        line.push_str(match self.langs {
            Langs::Zh => " --lang zh",
            Langs::En => " --lang en",
            Langs::Both => " --lang both",
        });
        if self.sequences > 0 {
            line.push_str(&format!(" --sequences {}", self.sequences));
        }
        line
    }
}

/// Why an audit could not run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("bad arguments: {0}")]
    Arguments(String),
    #[error("{url} is unreachable: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url} does not look like a PocketBase Backups API server: {why}")]
    NotAServer { url: String, why: String },
    #[error("the {who} login was refused ({status}): check --{who}")]
    LoginRefused { who: &'static str, status: u16 },
    #[error("--superuser is not a superuser: listing backups answered {0}")]
    NotSuperuser(u16),
    #[error("--user is a superuser: it must be a regular account, for the 403 responses")]
    UserIsSuperuser,
    #[error("the server already holds backups named audit_*, from an audit cut short? Remove them first: {0}")]
    Leftovers(String),
    #[error("--data-dir is not this server's data dir: {0}")]
    DataDir(String),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    #[error("stopped by {signal}; {mended}; backups named audit_* may remain on the server")]
    Stopped { signal: &'static str, mended: datadir::Mended },
}

fn credentials(text: &str, flag: &str) -> Result<(String, String), AuditError> {
    let (email, password) = text
        .split_once(':')
        .filter(|(e, p)| !e.is_empty() && !p.is_empty())
        .ok_or_else(|| AuditError::Arguments(format!("--{flag} takes EMAIL:PASSWORD")))?;
    Ok((email.to_string(), password.to_string()))
}

impl TryFrom<&Args> for Config {
    type Error = AuditError;

    fn try_from(args: &Args) -> Result<Config, AuditError> {
        let url = args.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('?') {
            return Err(AuditError::Arguments(format!("{url:?} is not an http:// or https:// base URL")));
        }
        if let Some(dir) = &args.data_dir {
            if !dir.is_dir() {
                return Err(AuditError::Arguments(format!("--data-dir {} is not a directory", dir.display())));
            }
        }
        let su = credentials(&args.superuser, "superuser")?;
        let user = credentials(&args.user, "user")?;
        let mut config = Config::new(url, (&su.0, &su.1), (&user.0, &user.1));
        config.data_dir = args.data_dir.clone();
        config.allow_restore = args.allow_restore;
        config.langs = match args.lang.as_str() {
            "zh" => Langs::Zh,
            "en" => Langs::En,
            _ => Langs::Both,
        };
        config.sequences = args.sequences;
        config.name = args.name.clone();
        config.progress = std::io::stderr().is_terminal();
        Ok(config)
    }
}

/// Runs an audit and returns its findings.
pub async fn audit(config: &Config) -> Result<Report, AuditError> {
    run::audit(config, std::future::pending()).await
}

/// Resolves with the name of the first SIGINT or SIGTERM (never, if they cannot be watched).
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// The `audit` command: runs, writes the report, and returns the exit status
/// (0 all passed, 1 something failed, 2 could not run).
pub async fn main(args: Args) -> u8 {
    let result = async {
        let config = Config::try_from(&args)?;
        // Stopped by a signal, it mends the data dir it may have broken, then says so.
        let report = run::audit(&config, stop_signal()).await?;
        let text = match args.format.as_str() {
            "json" => format!("{:#}\n", report.json()),
            "junit" => report.junit(),
            _ => report.markdown(),
        };
        match &args.out {
            Some(path) => std::fs::write(path, text)?,
            None => print!("{text}"),
        }
        Ok::<_, AuditError>(report.summary())
    }
    .await;
    match result {
        Ok(summary) => {
            // Quiet unless a person watches: the report and the exit status say it all.
            if std::io::stderr().is_terminal() {
                eprintln!("pb-backups audit: {} pass, {} fail, {} skipped", summary.pass, summary.fail, summary.skipped);
            }
            u8::from(summary.fail > 0)
        }
        Err(e) => {
            eprintln!("pb-backups audit: {e}");
            match e {
                // As a shell reports a process ended by the signal: 128 + its number.
                AuditError::Stopped { signal: "SIGINT", .. } => 130,
                AuditError::Stopped { .. } => 143,
                _ => 2,
            }
        }
    }
}
