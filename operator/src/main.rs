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

/// How long open connections may finish after shutdown starts (streams end at once).
const DRAIN: Duration = Duration::from_secs(10);

/// Deltas kept for gateways that reconnect.
const DELTA_LOG: usize = 100_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    portcullis_runtime::init_tracing(&args.log_format);
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    run(args).await
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
        DRAIN,
        server::PeerAddr,
    ));
    let ops = tokio::spawn(server::serve(
        ops_listener,
        None,
        ops::router(shared.clone()),
        signal.clone(),
        DRAIN,
        server::PeerAddr,
    ));
    info!(%identity, %instance, "operator started");

    portcullis_runtime::shutdown::os_signal().await;
    info!("shutting down");
    trigger.fire();
    let _ = tokio::join!(main, ops);
    Ok(())
}
