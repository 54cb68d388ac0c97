//! Wiring: the pieces of one replica, the tasks that run them, and the order they stop in.

use crate::{
    auth::Authenticator,
    clock::now,
    config::Args,
    index::{Index, SharedIndex, watch},
    leader::{self, Election, LeaseConfig, Peers, follower},
    metrics::Metrics,
    ops, session_gc,
    status::{self, Writer, validate},
    stream::{self, Gateways, StreamState},
};
use anyhow::Context as _;
use kube::Client;
use portcullis_runtime::{
    server,
    shutdown::{self, Signal},
};
use std::{collections::BTreeSet, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::watch as channel, task::JoinHandle};
use tracing::{info, warn};

/// How long open connections may finish after shutdown starts (streams end at once, so only
/// requests under way, such as acks, are waited for).
const DRAIN: Duration = Duration::from_secs(3);
/// How long a status pass under way may go on writing after shutdown starts.
const FLUSH: Duration = Duration::from_secs(2);
/// How long releasing the Lease may take.
const RELEASE: Duration = Duration::from_secs(2);
/// Deltas kept for gateways that reconnect.
const DELTA_LOG: usize = 100_000;

/// The pieces of one replica, shared by its tasks.
struct Replica {
    client: Client,
    identity: String,
    index: Arc<SharedIndex>,
    gateways: Arc<Gateways>,
    auth: Arc<Authenticator>,
    peers: Arc<Peers>,
    metrics: Metrics,
}

/// The tasks that write on the leader's behalf, stopped before the Lease is released.
struct Writers {
    status: JoinHandle<()>,
    sessions: JoinHandle<()>,
    relay: Option<JoinHandle<()>>,
}

/// Runs the operator until a shutdown signal, or until its election ends (an error then).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity_providers = identity_providers(&args)?;
    let replica = Replica::new(client, &args);
    let (trigger, signal) = shutdown::channel();
    let (policies, secrets) = (args.watch_namespaces(), args.secret_namespaces());
    let scope = watch::Scope {
        sessions: &args.session_namespace,
        policies: policies.as_ref(),
        secrets: secrets.as_ref(),
    };
    watch::spawn_all(
        replica.client.clone(),
        &scope,
        replica.index.clone(),
        replica.metrics.clone(),
        signal.clone(),
    );
    replica.spawn_collector(signal.clone());
    let (leading, mut election) = replica.elect(&args);
    let writers = replica.spawn_writers(&args, identity_providers, &leading, &signal);
    let (main, ops) = replica.serve(&args, &signal).await?;
    info!(identity = %replica.identity, instance = %replica.index.lock().instance(), "operator started");

    // The election is this replica's right to write: if it ends, exit and let the Deployment
    // restart it rather than run on as a writer nobody renews.
    let lost = tokio::select! {
        () = shutdown::os_signal() => false,
        () = election.ended() => true,
    };
    let stopping = std::time::Instant::now();
    info!("shutting down");
    // Stop accepting, end every gateway stream (the gateways move to another replica), stop the
    // watches, the relay and the writers.
    trigger.fire();
    drop(leading);
    writers.stop().await;
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

/// The identity-provider names of `--idp-config`, if given.
fn identity_providers(args: &Args) -> anyhow::Result<Option<BTreeSet<String>>> {
    let Some(path) = &args.idp_config else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let names = validate::identity_provider_names(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(names))
}

impl Replica {
    fn new(client: Client, args: &Args) -> Self {
        let identity = args.identity();
        // The instance names this process's version sequence: a restarted replica starts a new
        // one, so nobody resumes from versions it never issued.
        let instance = format!("{identity}-{}", now());
        let metrics = Metrics::new();
        let auth = Arc::new(Authenticator::new(
            client.clone(),
            args.token_audience.clone(),
            args.gateway_service_accounts.clone(),
        ));
        Self {
            index: Arc::new(SharedIndex::new(
                Index::new(instance, DELTA_LOG)
                    .with_unclaimed(args.unclaimed_hosts)
                    .with_secret_namespaces(args.secret_namespaces()),
                metrics.clone(),
            )),
            gateways: Arc::new(Gateways::default()),
            peers: Arc::new(Peers::new(auth.clone(), metrics.clone())),
            auth,
            client,
            identity,
            metrics,
        }
    }

    /// Forgets expired sessions and gateways gone for long, every 10 s.
    fn spawn_collector(&self, mut signal: Signal) {
        let (index, gateways) = (self.index.clone(), self.gateways.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = signal.wait() => return,
                }
                let now = now();
                index.update(|index| index.collect(now));
                gateways.collect(now);
            }
        });
    }

    /// Starts the election; whether this replica leads, as it changes.
    fn elect(&self, args: &Args) -> (channel::Receiver<bool>, Election) {
        let config = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: lease_namespace(args),
            identity: self.identity.clone(),
            advertise_url: args.advertise_url.clone(),
        };
        let (leading, election) =
            leader::election::start(self.client.clone(), config, self.metrics.clone());
        // The peer API accepts relays while this replica leads; ends when the election does.
        let peers = self.peers.clone();
        let mut follow = leading.clone();
        tokio::spawn(async move {
            loop {
                peers.set_leading(*follow.borrow_and_update());
                if follow.changed().await.is_err() {
                    peers.set_leading(false);
                    return;
                }
            }
        });
        (leading, election)
    }

    fn spawn_writers(
        &self,
        args: &Args,
        identity_providers: Option<BTreeSet<String>>,
        leading: &channel::Receiver<bool>,
        signal: &Signal,
    ) -> Writers {
        let sources = status::Sources {
            index: self.index.clone(),
            gateways: self.gateways.clone(),
            peers: self.peers.clone(),
            metrics: self.metrics.clone(),
        };
        let writer = Writer::new(
            self.client.clone(),
            sources,
            &self.identity,
            identity_providers,
            args.session_namespace.clone(),
        );
        let status = tokio::spawn(writer.run(leading.clone(), signal.clone()));
        tokio::spawn(status::session_events::run(
            status::events::Events::new(self.client.clone(), &self.identity),
            args.session_namespace.clone(),
            self.index.clone(),
            leading.clone(),
            signal.clone(),
        ));
        let sessions = tokio::spawn(session_gc::run(
            self.client.clone(),
            args.session_namespace.clone(),
            args.session_gc_grace,
            (self.index.clone(), self.metrics.clone()),
            leading.clone(),
            signal.clone(),
        ));
        tokio::spawn(leader::peer::learn_own_user(
            self.peers.clone(),
            args.peer_token_file.clone(),
            signal.clone(),
        ));
        let relay = self.spawn_relay(args, leading, signal);
        Writers {
            status,
            sessions,
            relay,
        }
    }

    /// The follower's relay to the leader, if it can verify the leader.
    fn spawn_relay(
        &self,
        args: &Args,
        leading: &channel::Receiver<bool>,
        signal: &Signal,
    ) -> Option<JoinHandle<()>> {
        let Some(ca_file) = &args.peer_ca_file else {
            warn!(
                "no --peer-ca-file: as a follower this replica cannot relay its gateways' acknowledgements to the leader"
            );
            return None;
        };
        let config = follower::PeerConfig {
            identity: self.identity.clone(),
            lease_name: args.lease_name.clone(),
            lease_namespace: lease_namespace(args),
            token_file: args.peer_token_file.clone(),
            ca_file: ca_file.clone(),
            server_name: args.peer_server_name.clone(),
        };
        let sources = follower::Sources {
            index: self.index.clone(),
            gateways: self.gateways.clone(),
            metrics: self.metrics.clone(),
        };
        Some(tokio::spawn(follower::relay(
            self.client.clone(),
            config,
            sources,
            leading.clone(),
            signal.clone(),
        )))
    }

    /// Serves the stream and peer APIs (HTTPS) and the ops endpoint (plain HTTP).
    async fn serve(
        &self,
        args: &Args,
        signal: &Signal,
    ) -> anyhow::Result<(JoinHandle<()>, JoinHandle<()>)> {
        let metrics = self.metrics.clone();
        let tls = server::tls_config(
            &args.tls_cert_file,
            &args.tls_key_file,
            Box::new(move |at| metrics.certificate_expires(at)),
        )?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let ops_listener = TcpListener::bind(args.ops_listen)
            .await
            .with_context(|| format!("binding {}", args.ops_listen))?;
        let api = stream::router(StreamState {
            index: self.index.clone(),
            gateways: self.gateways.clone(),
            auth: self.auth.clone(),
            metrics: self.metrics.clone(),
            shutdown: signal.clone(),
        })
        .merge(leader::peer::router(self.peers.clone()));
        let ops = ops::router(ops::OpsState {
            index: self.index.clone(),
            gateways: self.gateways.clone(),
            metrics: self.metrics.clone(),
        });
        let serving = |tls| {
            let metrics = self.metrics.clone();
            server::Serving {
                tls,
                on_close: Arc::new(move |reason| metrics.connection_closed(reason)),
                ..server::Serving::plain(args.connections.clone(), DRAIN, server::PeerAddr)
            }
        };
        let main = tokio::spawn(server::serve(
            listener,
            api,
            signal.clone(),
            serving(Some(tls)),
        ));
        let ops = tokio::spawn(server::serve(
            ops_listener,
            ops,
            signal.clone(),
            serving(None),
        ));
        Ok((main, ops))
    }
}

impl Writers {
    /// A status pass under way finishes its writes, within FLUSH; nothing writes after that, so
    /// the Lease can go. Relaying is pointless now: a request under way is cut.
    async fn stop(self) {
        tokio::join!(
            finish("status writer", self.status, FLUSH),
            finish("session collector", self.sessions, FLUSH),
        );
        if let Some(relay) = self.relay {
            relay.abort();
        }
    }
}

fn lease_namespace(args: &Args) -> String {
    args.lease_namespace
        .clone()
        .unwrap_or_else(|| args.session_namespace.clone())
}

/// Waits for `task` within `limit`, then cuts it off.
async fn finish(name: &str, mut task: JoinHandle<()>, limit: Duration) {
    if tokio::time::timeout(limit, &mut task).await.is_err() {
        warn!(task = name, ?limit, "did not stop in time; cut off");
        task.abort();
    }
}
