//! `portcullis-operator`: see the crate documentation.

use anyhow::Context as _;
use clap::Parser as _;
use portcullis_operator::{
    api,
    auth::Authenticator,
    config::Args,
    gc,
    index::Index,
    lease::{self, LeaseConfig},
    metrics::Metrics,
    ops, peer, server,
    shared::{Shared, now},
    shutdown, validate, watch,
    writer::Writer,
};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tracing::info;

/// How long open connections may finish after shutdown starts (streams end at once, so only
/// requests under way, such as acks, are waited for).
const DRAIN: Duration = Duration::from_secs(3);
/// How long a status pass under way may go on writing after shutdown starts.
const FLUSH: Duration = Duration::from_secs(2);
/// How long releasing the Lease may take.
const RELEASE: Duration = Duration::from_secs(2);

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
    let identity_providers = match &args.idp_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                validate::identity_provider_names(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
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

    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| args.session_namespace.clone());
    let (leading, mut election) = lease::start(
        client.clone(),
        LeaseConfig {
            name: args.lease_name.clone(),
            namespace: lease_namespace.clone(),
            identity: identity.clone(),
            advertise_url: args.advertise_url.clone(),
        },
        shared.metrics.clone(),
    );
    {
        // Ends when the election does (its sender drops).
        let shared = shared.clone();
        let mut leading = leading.clone();
        tokio::spawn(async move {
            loop {
                shared.set_leading(*leading.borrow_and_update());
                if leading.changed().await.is_err() {
                    shared.set_leading(false);
                    return;
                }
            }
        });
    }
    let writer = tokio::spawn(
        Writer::new(
            client.clone(),
            shared.clone(),
            &identity,
            identity_providers,
            args.session_namespace.clone(),
        )
        .run(leading.clone(), signal.clone()),
    );
    let collector = tokio::spawn(gc::run(
        client.clone(),
        args.session_namespace.clone(),
        args.session_gc_grace,
        shared.clone(),
        leading.clone(),
        signal.clone(),
    ));
    tokio::spawn(peer::learn_peer_identity(
        shared.clone(),
        args.peer_token_file.clone(),
        signal.clone(),
    ));
    let relay = match &args.peer_ca_file {
        Some(ca_file) => Some(tokio::spawn(peer::relay(
            client.clone(),
            peer::PeerConfig {
                identity: identity.clone(),
                lease_name: args.lease_name.clone(),
                lease_namespace,
                token_file: args.peer_token_file.clone(),
                ca_file: ca_file.clone(),
                server_name: args.peer_server_name.clone(),
            },
            shared.clone(),
            leading.clone(),
            signal.clone(),
        ))),
        None => {
            tracing::warn!(
                "no --peer-ca-file: as a follower this replica cannot relay its gateways' acknowledgements to the leader"
            );
            None
        }
    };

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

    // The election is this replica's right to write: if it ends, exit and let the Deployment
    // restart it rather than run on as a writer nobody renews.
    let lost = tokio::select! {
        () = portcullis_runtime::shutdown::os_signal() => false,
        () = election.ended() => true,
    };
    let stopping = std::time::Instant::now();
    info!("shutting down");
    // Stop accepting, end every gateway stream (the gateways move to another replica), stop the
    // watches, the relay and the writers.
    trigger.fire();
    drop(leading);
    // A status pass under way finishes its writes, within FLUSH; nothing writes after that, so
    // the Lease can go.
    tokio::join!(
        finish("status writer", writer, FLUSH),
        finish("session collector", collector, FLUSH),
    );
    if let Some(relay) = relay {
        // Relaying is pointless now; a request under way is cut.
        relay.abort();
    }
    if lost {
        anyhow::bail!("the leader-election task ended");
    }
    // Released, a standby takes the Lease within a second instead of after the lease duration.
    election.release(RELEASE).await;
    tokio::join!(
        finish("stream API", main, DRAIN),
        finish("ops endpoint", ops, DRAIN),
    );
    info!(took = ?stopping.elapsed(), "stopped");
    Ok(())
}

/// Waits for `task` within `limit`, then cuts it off.
async fn finish(name: &str, mut task: tokio::task::JoinHandle<()>, limit: Duration) {
    if tokio::time::timeout(limit, &mut task).await.is_err() {
        tracing::warn!(task = name, ?limit, "did not stop in time; cut off");
        task.abort();
    }
}
