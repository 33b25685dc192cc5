//! Shutdown signals shared by the server and its associations.

use tokio::sync::watch;

/// The receiving side, cloned into every association.
#[derive(Clone)]
pub struct ShutdownSignals {
    /// Becomes true when the shutdown deadline has passed and open associations must abort.
    pub abort: watch::Receiver<bool>,
}

/// The sending side, held by the server.
pub struct ShutdownController {
    abort: watch::Sender<bool>,
}

impl ShutdownController {
    pub fn new() -> (ShutdownController, ShutdownSignals) {
        let (abort, abort_rx) = watch::channel(false);
        (ShutdownController { abort }, ShutdownSignals { abort: abort_rx })
    }

    /// Tells every open association to send A-ABORT and close.
    pub fn abort_associations(&self) {
        self.abort.send_replace(true);
    }
}
