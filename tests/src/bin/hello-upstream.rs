//! `hello-upstream`: the smallest useful upstream for load benchmarks. Plain HTTP/1.1 with
//! keep-alive on 127.0.0.1, answering every request with the same 13-byte body, so that what a
//! benchmark measures in front of it is the client and the gateway, not the app.
//!
//! `hack/bench-load.sh` runs it as the "direct" target and as the upstream of the gateway.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::{Router, http::header, response::IntoResponse, routing::any, serve::ListenerExt as _};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// The body of every answer.
const BODY: &str = "Hello, world!";

#[derive(Parser)]
#[command(about = "Fixed-body HTTP/1.1 upstream on loopback, for load benchmarks")]
struct Cli {
    /// Address to listen on (port 0: a free one, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads);
    }
    runtime
        .build()
        .context("building the runtime")?
        .block_on(serve(cli.listen))
}

async fn hello() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], BODY)
}

async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("local address")?;
    // The only line on stdout: scripts read the address from it.
    println!("{addr}");
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let router = Router::new().fallback(any(hello));
    // Like the gateway's listener, so neither side of the comparison waits on Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
        })
        .await
        .context("serving")
}
