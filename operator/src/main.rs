//! `portcullis-operator`: see the crate documentation.

use anyhow::Context as _;
use clap::Parser as _;
use portcullis_operator::{
    api,
    auth::Authenticator,
    config::Args,
    index::Index,
    metrics::Metrics,
    ops, server,
    shared::{Shared, now},
    shutdown, watch,
};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tracing::info;

/// Deltas kept for gateways that reconnect.
const DELTA_LOG: usize = 100_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    run(args).await
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args.identity();
    // The instance names this process's version sequence: a restarted replica starts a new one,
    // so nobody resumes from versions it never issued.
    let instance = format!("{identity}-{}", now());
    let shared = Arc::new(Shared::new(
        Index::new(instance.clone(), DELTA_LOG),
        Authenticator::new(
            client.clone(),
            args.token_audience.clone(),
            args.gateway_service_accounts.clone(),
        ),
        Metrics::new(),
    ));
    let (trigger, signal) = shutdown::channel();
    watch::spawn_all(
        client.clone(),
        &args.session_namespace,
        shared.clone(),
        signal.clone(),
    );
    {
        // Forget expired sessions and gateways gone for long.
        let shared = shared.clone();
        let mut signal = signal.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = signal.wait() => return,
                }
                let now = now();
                shared.update(|index| index.collect(now));
                shared.lock_fleet().collect(now);
            }
        });
    }

    let tls = server::tls_config(&args.tls_cert_file, &args.tls_key_file)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let ops_listener = TcpListener::bind(args.ops_listen)
        .await
        .with_context(|| format!("binding {}", args.ops_listen))?;
    let main = tokio::spawn(server::serve(
        listener,
        Some(tls),
        api::router(shared.clone(), signal.clone()),
        signal.clone(),
    ));
    let ops = tokio::spawn(server::serve(
        ops_listener,
        None,
        ops::router(shared.clone()),
        signal.clone(),
    ));
    info!(%identity, %instance, "operator started");

    wait_for_signal().await;
    info!("shutting down");
    trigger.fire();
    let _ = tokio::join!(main, ops);
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
