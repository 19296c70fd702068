//! Running the server: open the data dir, serve, and restart after a restore.
//!
//! `run` takes a bound listener (so tests bind port 0) and loops: recover any unfinished
//! restore, open the accounts, serve until a restore asks for a restart or `shutdown`
//! fires, then swap the restored data in and start again on the same socket. The binary
//! restarts by re-executing itself with the socket inherited; tests may restart in-process.
//! Either way connections that arrive meanwhile wait in the kernel's backlog: none is refused.
//! A stop that comes during a restart is honoured once the swap is done: the swap is
//! committed and the server stops instead of starting again.

use std::future::Future;
use std::io::IoSlice;
use std::net::TcpListener;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::datadir::{self, DataDirError};
use crate::archive::ArchiveLimits;
use crate::i18n::Lang;
use crate::restore;
use crate::layout::BACKUPS_DIR;
use crate::backends::Backends;
use crate::service::{Gate, RestartHandle, RestartRequest, Service, ServiceConfig};
use crate::storage::s3::S3Config;
use crate::{http, listener};

/// How the server comes back after a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartMode {
    /// Re-execute the binary, handing it the listening socket (the spec's "restart").
    Exec,
    /// Reopen everything inside this process (library use and tests).
    InProcess,
}

/// Where finished backups are kept.
#[derive(Clone, Debug, Default)]
pub enum StorageChoice {
    /// As the settings' `backups.s3` says, for each operation: its bucket while enabled,
    /// else `<data dir>/backups` (PocketBase's way).
    #[default]
    Settings,
    /// A bucket of an S3-compatible store, whatever the settings say (the `--backups-s3-*`
    /// flags).
    S3(Box<S3Config>),
}

pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub storage: StorageChoice,
    /// Part checksums for the buckets the settings name (`--backups-s3-checksums`).
    pub s3_checksums: bool,
    pub default_lang: Lang,
    pub restart: RestartMode,
    pub limits: ArchiveLimits,
    /// How long in-flight requests may take to finish before a restart cuts them off.
    pub shutdown_grace: Duration,
    pub create_gate: Option<Gate>,
    pub restore_gate: Option<Gate>,
    /// Password logins allowed per client (IPv4 address or IPv6 /64).
    pub login_rate: http::ratelimit::RateLimit,
    /// Peers whose `Forwarded` / `X-Forwarded-For` name the client for login throttling.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The data dir's lock when the caller took it already (so that no other server can slip
    /// in between its own start-up work and `run`); `run` takes it itself otherwise.
    pub lock: Option<crate::lock::DataDirLock>,
    /// Where the backup schedule's minutes come from (tests inject a manual clock).
    pub schedule_clock: crate::schedule::Clock,
    /// How the progress of creates and restores is shown (log lines every few seconds; tests
    /// shorten the interval).
    pub progress: crate::progress::Display,
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            storage: StorageChoice::Settings,
            s3_checksums: true,
            default_lang: Lang::Zh,
            restart: RestartMode::Exec,
            limits: ArchiveLimits::default(),
            shutdown_grace: Duration::from_secs(10),
            create_gate: None,
            restore_gate: None,
            login_rate: Default::default(),
            trusted_proxies: Vec::new(),
            lock: None,
            schedule_clock: Default::default(),
            progress: crate::progress::Display::log(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Opening(#[from] DataDirError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Storage(#[from] crate::backends::ConfigError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// How long a draining server waits, at most, for connections it has already taken to send
/// their request before it shuts them down for a restart: poem's shutdown drops a connection
/// that has not sent one yet. Clients send right after connecting, so the wait usually ends
/// at once; a silent client is not waited for past this.
const DRAIN_SETTLE: Duration = Duration::from_millis(200);
/// Time for an accept already under way when the pause comes to be counted.
const DRAIN_MIN: Duration = Duration::from_millis(5);

/// How many taken connections have not sent a byte yet.
#[derive(Clone)]
struct Silent(Arc<watch::Sender<usize>>);

impl Silent {
    fn new() -> Silent {
        Silent(Arc::new(watch::channel(0).0))
    }

    fn taken(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    fn heard(&self) {
        self.0.send_modify(|n| *n -= 1);
    }

    /// Until every taken connection has sent something (or closed), at most DRAIN_SETTLE.
    async fn settle(&self) {
        tokio::time::sleep(DRAIN_MIN).await;
        let mut count = self.0.subscribe();
        let _ = tokio::time::timeout(DRAIN_SETTLE, count.wait_for(|n| *n == 0)).await;
    }
}

/// A taken connection, counted as silent until its first read completes (data, end or error).
struct Watched {
    inner: TcpStream,
    silent: Option<Silent>,
}

impl Watched {
    fn heard(&mut self) {
        if let Some(silent) = self.silent.take() {
            silent.heard();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.heard();
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_ready() {
            self.heard();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// poem's acceptor, which stops taking connections from the socket once paused, and counts
/// the connections it took that are still silent.
struct PausableAcceptor {
    inner: poem::listener::TcpAcceptor,
    paused: watch::Receiver<bool>,
    silent: Silent,
}

impl poem::listener::Acceptor for PausableAcceptor {
    type Io = Watched;

    fn local_addr(&self) -> Vec<poem::web::LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(Self::Io, poem::web::LocalAddr, poem::web::RemoteAddr, poem::http::uri::Scheme)> {
        let mut paused = self.paused.clone();
        tokio::select! {
            biased;
            // Never resolves: poem's loop waits here until its shutdown signal fires.
            _ = async { let _ = paused.wait_for(|p| *p).await; } => std::future::pending().await,
            accepted = self.inner.accept() => {
                let (stream, local, remote, scheme) = accepted?;
                self.silent.taken();
                Ok((Watched { inner: stream, silent: Some(self.silent.clone()) }, local, remote, scheme))
            }
        }
    }
}

enum Stop {
    Shutdown,
    Restart(RestartRequest),
}

/// Says at start when `--trusted-proxy` and the settings' `trustedProxy.headers` do not go
/// together: either alone leaves every client named by its connection's peer.
async fn warn_about_proxy_settings(service: &Service, trusted_proxies: &[ipnet::IpNet]) {
    let access = service.access_settings().await;
    match (trusted_proxies.is_empty(), access.trusted_proxy.headers.is_empty()) {
        (false, true) => tracing::warn!(
            "--trusted-proxy is set but the settings' trustedProxy.headers is empty: forwarding headers are ignored"
        ),
        (true, false) => tracing::warn!(
            headers = ?access.trusted_proxy.headers,
            "the settings' trustedProxy.headers are ignored: no --trusted-proxy may set them"
        ),
        _ => {}
    }
}

/// Serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    mut config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let mut shutdown = std::pin::pin!(shutdown);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
    // Held across in-process restarts; a re-exec drops it (close-on-exec) and the new
    // process takes it again before it serves.
    let _lock = match config.lock.take() {
        Some(lock) => lock,
        None => crate::lock::DataDirLock::acquire(&config.data_dir)?,
    };
    // The storages (and their S3 clients) outlive in-process restarts; which one an
    // operation uses is read from the settings of the data served, restored ones included.
    let flags = match &config.storage {
        StorageChoice::Settings => None,
        StorageChoice::S3(s3) => Some(S3Config::clone(s3)),
    };
    let backends = Arc::new(Backends::new(config.data_dir.join(BACKUPS_DIR), flags, config.s3_checksums)?);
    if let Some(o) = backends.overridden() {
        tracing::info!(
            bucket = %o.bucket,
            prefix = %o.prefix,
            "backups storage: the S3 bucket of the --backups-s3-* flags, whatever the settings' backups.s3 says"
        );
    }
    loop {
        let accounts = Arc::new(datadir::open(&config.data_dir)?);
        // A stop taken while this round started (after the re-exec of a restore, say) is
        // honoured before anything is served.
        if shutdown.as_mut().now_or_never().is_some() {
            tracing::info!("stop requested while starting: not serving");
            return Ok(());
        }
        let (restart, mut restart_rx) = RestartHandle::new();
        let service_config = ServiceConfig {
            data_dir: config.data_dir.clone(),
            backends: backends.clone(),
            limits: config.limits,
            create_gate: config.create_gate.clone(),
            restore_gate: config.restore_gate.clone(),
            progress: config.progress,
        };
        let service = Service::new(service_config, accounts, restart)
            .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        let service = Arc::new(service);
        warn_about_proxy_settings(&service, &config.trusted_proxies).await;
        let scheduler = tokio::spawn(crate::schedule::run(service.clone(), config.schedule_clock.clone()));
        let app = http::app(service, config.default_lang, config.login_rate, config.trusted_proxies.clone());

        // poem gets a duplicate: `listener` itself stays open for the next round (or the
        // re-exec), so the socket never closes. Non-blocking is a property of the shared
        // socket, as tokio requires.
        let (pause_tx, pause_rx) = watch::channel(false);
        let silent = Silent::new();
        let acceptor = listener
            .try_clone()
            .and_then(|l| {
                l.set_nonblocking(true)?;
                poem::listener::TcpAcceptor::from_std(l)
            })
            .map(|inner| PausableAcceptor { inner, paused: pause_rx, silent: silent.clone() })
            .map_err(ServerError::Serve)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let signal = async {
            let stop = tokio::select! {
                Some(request) = restart_rx.recv() => {
                    // Stop taking connections (new ones wait in the backlog for the restarted
                    // server), and let those already taken send their request.
                    let _ = pause_tx.send(true);
                    silent.settle().await;
                    Stop::Restart(request)
                }
                () = &mut shutdown => Stop::Shutdown,
            };
            let _ = stop_tx.send(stop);
        };
        let served = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, signal, Some(config.shutdown_grace))
            .await;
        // Gone before a swap: it holds the service (and so data.db) too.
        scheduler.abort();
        let _ = scheduler.await;
        // Requests cut off when the grace ran out may have left uploads to abort.
        backends.settle().await;
        served.map_err(ServerError::Serve)?;

        let (request, stopping) = match stop_rx.await {
            Ok(Stop::Restart(request)) => (request, false),
            // A restore answered 204 while the server shut down is swapped in all the same.
            Ok(Stop::Shutdown) | Err(_) => match restart_rx.try_recv() {
                Ok(request) => (request, true),
                Err(_) => return Ok(()),
            },
        };
        // The app (and with it the service and the accounts' connection) is gone now.
        match restore::swap_in(&restore::DataDir::new(&config.data_dir), &request.extracted) {
            Ok(_) => {
                crate::metrics::restore_completed();
                tracing::info!(key = %request.key, "restore swapped in; restarting")
            }
            Err(e) => tracing::error!(key = %request.key, error = %e, "restore failed; old data kept, restarting"),
        }
        let _ = std::fs::remove_dir_all(&request.extracted);
        // Stop signals end the process from here to the exec, so that none is lost with it;
        // one taken before is in `shutdown`, looked at just below.
        let defaults = match config.restart {
            RestartMode::Exec => crate::stop::default_until_exec()
                .inspect_err(|e| tracing::warn!(error = %e, "stop signals may be lost in the restart"))
                .ok(),
            RestartMode::InProcess => None,
        };
        if stopping || shutdown.as_mut().now_or_never().is_some() {
            // The swap is done: commit it (or roll it back) as a start would, and stop.
            drop(datadir::open(&config.data_dir)?);
            tracing::info!(key = %request.key, "stop requested during the restart: restore finished, not restarting");
            return Ok(());
        }
        if config.restart == RestartMode::Exec {
            let e = listener::reexec(&listener);
            drop(defaults);
            tracing::error!(error = %e, "re-exec failed; restarting in-process instead");
        }
    }
}
