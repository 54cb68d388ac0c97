//! One shutdown signal, cloned into every server, watcher and background task.

use tokio::sync::watch;

/// Waits for shutdown.
#[derive(Clone, Debug)]
pub struct Signal(watch::Receiver<bool>);

/// Triggers shutdown.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A new trigger and its signal.
pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    /// Starts shutdown everywhere.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Signal {
    /// Resolves once shutdown was triggered (or the trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends a pod it stops).
pub async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
