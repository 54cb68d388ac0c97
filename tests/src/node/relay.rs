//! How pods reach the API server of the shared stack.
//!
//! That API server listens on 127.0.0.1 only (the process-level tests need nothing else, and it
//! starts before any node exists, when the bridge address does not exist yet). Pods reach it
//! through the `kubernetes` Service, which kube-proxy DNATs to the endpoint the node writes:
//! this relay on the bridge gateway, which passes the TCP stream through unchanged. TLS is end
//! to end between the pod and the API server (its certificate names the Service IP), so the
//! relay sees only ciphertext and cannot weaken what pods check.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Listens on `listen` and connects each accepted stream to `target`. The returned task runs
/// until aborted.
pub async fn start(listen: SocketAddr, target: SocketAddr) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API relay on {listen}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let mut inbound = inbound;
                    let _closed = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}
