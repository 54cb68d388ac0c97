//! `demo-lb`: a round-robin TCP load balancer for the local demo.
//!
//! The demo runs two gateway replicas behind one public port, the way a Kubernetes Service puts
//! pods behind one address, so that a login started on one replica and finished on the other
//! proves the replicas share their configuration (signing keys, policies). It forwards bytes
//! only: TLS is terminated by the gateways, so browsers see the gateways' certificate.
//!
//! Each new connection goes to the next backend; a backend that refuses the connection is
//! skipped for that connection, so the demo keeps working while one replica is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How long connecting to one backend may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long open connections may finish after SIGINT/SIGTERM (browsers keep idle connections
/// open for minutes; they reconnect).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(about = "Round-robin TCP load balancer on loopback (Portcullis demo)")]
struct Args {
    /// Address to accept connections on.
    #[arg(long, env = "DEMO_LB_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// A backend (repeatable or comma-separated); connections rotate through them in order.
    #[arg(
        long = "backend",
        env = "DEMO_LB_BACKENDS",
        value_delimiter = ',',
        required = true
    )]
    backends: Vec<SocketAddr>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // The demo sends this log to a file: colour codes only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-lb: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    info!(listen = %args.listen, backends = ?args.backends, "load balancing");
    let backends: Arc<[SocketAddr]> = args.backends.into();
    let next = AtomicUsize::new(0);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (client, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let first = next.fetch_add(1, Ordering::Relaxed);
                connections.spawn(proxy(client, peer, backends.clone(), first));
            }
        }
    }
    drop(listener);
    info!(open = connections.len(), "stopping");
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}

/// Connects `client` to the first backend that answers, starting at `first`, and copies bytes
/// both ways until either side closes.
async fn proxy(mut client: TcpStream, peer: SocketAddr, backends: Arc<[SocketAddr]>, first: usize) {
    let _ = client.set_nodelay(true);
    for i in 0..backends.len() {
        let backend = backends[(first + i) % backends.len()];
        let mut upstream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(error)) => {
                    warn!(%backend, %error, "backend refused; trying the next");
                    continue;
                }
                Err(_) => {
                    warn!(%backend, "backend did not answer; trying the next");
                    continue;
                }
            };
        let _ = upstream.set_nodelay(true);
        // Info: the demo's log shows the rotation (one line per connection; browsers
        // open few).
        info!(%peer, %backend, "connected");
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => debug!(%peer, %backend, up, down, "closed"),
            Err(error) => debug!(%peer, %backend, %error, "connection ended"),
        }
        return;
    }
    warn!(%peer, "no backend reachable; closing the connection");
}
