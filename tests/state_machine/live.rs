//! The live in-process server the exclusivity tests drive.
//!
//! Accounts are seeded (and tokens issued) once, in a template data dir; every server
//! starts on a copy of it, so starting one costs no password hashing. A backup of any
//! copy restores the same accounts, so tokens stay valid across restores.
#![allow(dead_code)] // shared by two test binaries; each uses a part

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use pb_backups::accounts::{Accounts, Collection};
use pb_backups::auth::{self, TokenKind};
use pb_backups::schedule::ManualClock;
use pb_backups::server::{self, RestartMode, ServeConfig};
use pb_backups::service::Gate as ServerGate;
use tokio::sync::oneshot;

use crate::support::{seed_accounts, zip_with, SUPERUSER, USER};

pub struct Template {
    /// The seeded data dir's files, kept in memory.
    files: Vec<(std::ffi::OsString, Vec<u8>)>,
    /// Auth tokens of the superuser and of the regular user.
    pub superuser: String,
    pub user: String,
    /// A small archive that is a valid, restorable backup of the template.
    pub backup_zip: Vec<u8>,
}

pub fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        seed_accounts(dir.path());
        let accounts = Accounts::open(dir.path()).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let token = |c: &str, (email, password): (&str, &str)| {
            let record = accounts.authenticate(c, email, None, password).unwrap().expect("seeded account");
            auth::issue(&accounts, &record, TokenKind::Auth, now).unwrap()
        };
        let (superuser, user) = (token(Collection::Superusers.name(), SUPERUSER), token(Collection::Users.name(), USER));
        drop(accounts);
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(Result::unwrap)
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| (e.file_name(), std::fs::read(e.path()).unwrap()))
            .collect();
        let data_db = &files.iter().find(|(name, _)| name == "data.db").expect("data.db seeded").1;
        let backup_zip = zip_with(&[("data.db", data_db)]);
        Template { files, superuser, user, backup_zip }
    })
}

/// A server on a copy of the template, restarting in-process after a restore.
pub struct Live {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The backup schedule's minutes: a scheduled run happens only when the test ticks.
    pub clock: ManualClock,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Must be called inside a tokio runtime.
    pub fn start(create_gate: Option<ServerGate>, restore_gate: Option<ServerGate>) -> Live {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &template().files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ServeConfig::new(dir.path());
        config.restart = RestartMode::InProcess;
        config.create_gate = create_gate;
        config.restore_gate = restore_gate;
        let (clock, source) = ManualClock::new();
        config.schedule_clock = source;
        // Long enough never to cut off a request the test is still waiting for.
        config.shutdown_grace = Duration::from_secs(30);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        Live { addr, dir, clock, shutdown: Some(tx), task: Some(task) }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Identity of the `data.db` file now in place: a restore swaps in another file.
    pub fn data_db_id(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.dir.path().join("data.db")).ok().map(|m| (m.dev(), m.ino()))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
