//! The hand-off from an accepted restore to the server loop, which swaps the data in and
//! restarts; and the draining meanwhile.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::model::names::BackupKey;

/// The way from a restore to the server loop. Once a restart is requested the server is
/// *draining*: every response says `Connection: close`, so that clients come back on a new
/// connection, which the restarted server will take from the socket's backlog.
#[derive(Clone, Debug)]
pub struct RestartHandle {
    tx: mpsc::UnboundedSender<RestartRequest>,
    draining: Arc<AtomicBool>,
    /// Woken when draining starts.
    drain_started: Arc<tokio::sync::Notify>,
}

impl RestartHandle {
    pub fn new() -> (RestartHandle, mpsc::UnboundedReceiver<RestartRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (RestartHandle { tx, draining: Arc::default(), drain_started: Arc::default() }, rx)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the server is draining.
    pub async fn drained(&self) {
        loop {
            let started = self.drain_started.notified();
            tokio::pin!(started);
            // Registered before the check, so a start in between still wakes us.
            started.as_mut().enable();
            if self.is_draining() {
                return;
            }
            started.await;
        }
    }

    /// Hands `request` to the server loop; gives it back if the loop is gone.
    pub(super) fn request(&self, request: RestartRequest) -> Result<(), RestartRequest> {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_started.notify_waiters();
        self.tx.send(request).map_err(|e| {
            self.draining.store(false, Ordering::SeqCst);
            e.0
        })
    }
}

/// Sent to the server loop once a restore is extracted and ready to be swapped in.
#[derive(Debug)]
pub struct RestartRequest {
    pub key: BackupKey,
    /// The extracted archive, inside the temp folder.
    pub extracted: PathBuf,
}
