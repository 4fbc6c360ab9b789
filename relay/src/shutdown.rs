//! Graceful shutdown signal shared by listeners and sessions.

use tokio::sync::watch;

/// Fires once; every holder of a [`Shutdown`] sees it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Waits for the trigger. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new trigger and its first receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been triggered (at once if it already was, or if the trigger
    /// is gone). Cancel-safe.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|&down| down).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}
