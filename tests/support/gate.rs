//! The one holding gate of the tests: a server hook (create or restore gate) that holds the
//! next operation to reach it when asked, and records the key of every one that passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use pb_backups::service::Gate as ServerGate;
use tokio::sync::{Notify, Semaphore};

/// Holds the next create (or restore) that passes the coordinator, when asked to, and records
/// the key of every one that passes it (which is how a test learns generated names).
pub struct Gate {
    hold_next: AtomicBool,
    passed: Mutex<Vec<String>>,
    waiting: Notify,
    release: Semaphore,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate {
            hold_next: AtomicBool::new(false),
            passed: Mutex::default(),
            waiting: Notify::new(),
            release: Semaphore::new(0),
        })
    }

    /// The server hook (create or restore gate) this gate drives.
    pub fn hook(self: &Arc<Self>) -> ServerGate {
        let gate = self.clone();
        Arc::new(move |key| {
            let gate = gate.clone();
            async move {
                gate.passed.lock().unwrap().push(key.as_str().to_string());
                if gate.hold_next.swap(false, Ordering::SeqCst) {
                    gate.waiting.notify_one();
                    gate.release.acquire().await.unwrap().forget();
                }
            }
            .boxed()
        })
    }

    /// The next create to pass waits in the gate until [`Gate::release`].
    pub fn hold_next(&self) {
        self.hold_next.store(true, Ordering::SeqCst);
    }

    /// Stops holding a create that has not arrived (it was refused after all).
    pub fn cancel_hold(&self) {
        self.hold_next.store(false, Ordering::SeqCst);
    }

    /// Resolves once a held create waits in the gate.
    pub async fn held(&self) {
        self.waiting.notified().await;
    }

    pub fn release(&self) {
        self.release.add_permits(1);
    }

    /// The keys of the creates that passed the coordinator since the last call.
    pub fn take_passed(&self) -> Vec<String> {
        std::mem::take(&mut *self.passed.lock().unwrap())
    }
}

