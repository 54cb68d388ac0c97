//! Cluster mode's source of access state: the operator's push stream.
//!
//! The gateway connects to one operator replica at a time (`GET /v1/state`, TLS verified against
//! the operator CA, a projected ServiceAccount token re-read on every connect, no redirects),
//! merges every frame monotonically ([`portcullis_protocol::FleetState`]), publishes the same
//! [`Snapshot`] and [`SessionIndex`] the request path reads in the other modes, and acknowledges
//! each version it applied. On any failure it moves to the next endpoint with backoff and
//! resumes from its version.
//!
//! Until the first snapshot the gateway is not ready and admits nobody; when no frame
//! (heartbeats included) arrived for `--state-stale-after` it reports NotReady again, while
//! still enforcing the last state it has.

use crate::{
    shutdown::Signal,
    state::{self, Metadata, SecretManifest, Snapshot, session_index::SessionIndex},
};
use portcullis_core::token::CLOCK_SKEW_SECS;
use portcullis_crds::AccessPolicy;
use portcullis_protocol::{
    Ack, Applied, FleetState, MergeError,
    frame::{ACK_PATH, GATEWAY_ID_HEADER, STATE_PATH, parse_line},
};
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

/// No frame for this long (three heartbeats) means the connection is dead.
const SILENCE: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How to reach the operator.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub urls: Vec<Url>,
    pub ca_pem: Vec<u8>,
    pub token_file: PathBuf,
    pub gateway_id: String,
    pub stale_after: Duration,
}

/// Why the stream could not be set up at all.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("--operator-ca-file holds no usable certificate: {0}")]
    Ca(String),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Freshness of the state, shared with readiness and metrics.
#[derive(Debug)]
pub struct Feed {
    /// Milliseconds since the Unix epoch of the last frame; 0 before the first.
    last_frame_ms: AtomicU64,
    stream_version: AtomicU64,
    pub stale_after: Duration,
}

impl Feed {
    fn touch(&self, version: u64) {
        self.last_frame_ms.store(now_ms(), Ordering::SeqCst);
        self.stream_version.store(version, Ordering::SeqCst);
    }

    /// Age of the state: time since the last frame (None before the first).
    pub fn age(&self) -> Option<Duration> {
        match self.last_frame_ms.load(Ordering::SeqCst) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    /// The version of the operator stream last applied.
    pub fn stream_version(&self) -> u64 {
        self.stream_version.load(Ordering::SeqCst)
    }

    /// Why the gateway should not receive traffic, if it should not.
    pub fn not_ready(&self) -> Option<String> {
        match self.age() {
            None => Some("no state from the operator yet".into()),
            Some(age) if age > self.stale_after => Some(format!(
                "state is {}s old (stale after {}s)",
                age.as_secs(),
                self.stale_after.as_secs()
            )),
            Some(_) => None,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the request path reads: the snapshot and the session index.
pub type Receivers = (
    watch::Receiver<Arc<Snapshot>>,
    watch::Receiver<Arc<SessionIndex>>,
);

/// Starts following the operator. Returns at once; both receivers hold "not ready" values until
/// the first snapshot is applied.
pub fn spawn(
    config: StreamConfig,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    shutdown: Signal,
) -> Result<Receivers, StreamError> {
    let tls = tls_config(&config.ca_pem)?;
    let feed = Arc::new(Feed {
        last_frame_ms: AtomicU64::new(0),
        stream_version: AtomicU64::new(0),
        stale_after: config.stale_after,
    });
    let (state_tx, state_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (index_tx, index_rx) = watch::channel(Arc::new(SessionIndex {
        synced: false,
        entries: Default::default(),
        feed: Some(feed.clone()),
    }));
    let follower = Follower {
        config,
        tls,
        known_idps,
        feed,
        state_tx,
        index_tx,
        fleet: FleetState::new(CLOCK_SKEW_SECS),
        published: 0,
        previous: None,
    };
    tokio::spawn(follower.run(shutdown));
    Ok((state_rx, index_rx))
}

fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, StreamError> {
    use portcullis_runtime::client_tls::{ClientTlsError, trusting};
    trusting(ca_pem).map_err(|e| match e {
        ClientTlsError::Ca(reason) => StreamError::Ca(reason),
        ClientTlsError::Tls(e) => StreamError::Tls(e),
    })
}

/// How a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("cannot read the token file: {0}")]
    Token(std::io::Error),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("operator answered {0}")]
    Status(reqwest::StatusCode),
    #[error("no frame for {0:?}")]
    Silent(Duration),
    #[error("{0}")]
    Merge(#[from] MergeError),
    #[error("stream ended")]
    Ended,
    #[error("shutting down")]
    Shutdown,
}

struct Follower {
    config: StreamConfig,
    tls: rustls::ClientConfig,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    feed: Arc<Feed>,
    state_tx: watch::Sender<Arc<Snapshot>>,
    index_tx: watch::Sender<Arc<SessionIndex>>,
    fleet: FleetState,
    /// Snapshots published so far: the gateway's own state version.
    published: u64,
    previous: Option<Arc<Snapshot>>,
}

impl Follower {
    async fn run(mut self, mut shutdown: Signal) {
        let mut backoff = BACKOFF_MIN;
        let mut next = 0usize;
        loop {
            let endpoints = self.endpoints().await;
            if endpoints.is_empty() {
                warn!("no operator endpoint resolves; retrying");
            }
            for _ in 0..endpoints.len() {
                let (url, addr) = &endpoints[next % endpoints.len()];
                next = next.wrapping_add(1);
                let started = Instant::now();
                match self.follow(url, *addr, &mut shutdown).await {
                    Err(ConnectionError::Shutdown) => return,
                    Err(error) => {
                        warn!(operator = %url, %addr, %error, "operator stream interrupted; trying the next endpoint");
                        if let ConnectionError::Merge(_) = error {
                            self.fleet.forget_position();
                        }
                    }
                    Ok(()) => {}
                }
                // A connection that lasted a while resets the backoff.
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = BACKOFF_MIN;
                }
                let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
                tokio::select! {
                    () = tokio::time::sleep(backoff + jitter) => {}
                    () = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            if endpoints.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Every address of every configured URL.
    async fn endpoints(&self) -> Vec<(Url, SocketAddr)> {
        let mut endpoints = Vec::new();
        for url in &self.config.urls {
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => endpoints.extend(addrs.map(|a| (url.clone(), a))),
                Err(error) => warn!(operator = %url, %error, "cannot resolve the operator"),
            }
        }
        endpoints
    }

    fn client(&self, url: &Url, addr: SocketAddr) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(self.tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5));
        if let Some(host) = url.host_str() {
            builder = builder.resolve(host, addr);
        }
        builder.build()
    }

    /// One connection: until it fails, ends or shutdown.
    async fn follow(
        &mut self,
        url: &Url,
        addr: SocketAddr,
        shutdown: &mut Signal,
    ) -> Result<(), ConnectionError> {
        // Re-read on every connect: the kubelet rotates the projected token.
        let token = std::fs::read_to_string(&self.config.token_file)
            .map_err(ConnectionError::Token)?
            .trim()
            .to_owned();
        let client = self.client(url, addr)?;
        let mut request = client
            .get(url.join(STATE_PATH).unwrap_or_else(|_| url.clone()))
            .bearer_auth(&token)
            .header(GATEWAY_ID_HEADER, &self.config.gateway_id);
        if let Some((instance, version)) = self.fleet.position() {
            request = request.query(&[("instance", instance), ("version", &version.to_string())]);
        }
        let mut response = tokio::select! {
            r = tokio::time::timeout(SILENCE, request.send()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(ConnectionError::Silent(SILENCE)),
            },
            () = shutdown.wait() => return Err(ConnectionError::Shutdown),
        };
        if !response.status().is_success() {
            return Err(ConnectionError::Status(response.status()));
        }
        info!(operator = %url, %addr, "following the operator");
        let acker = Acker::spawn(
            client,
            url.join(ACK_PATH).unwrap_or_else(|_| url.clone()),
            token,
            self.config.gateway_id.clone(),
        );
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(SILENCE, response.chunk()) => match c {
                    Ok(c) => c?,
                    Err(_) => return Err(ConnectionError::Silent(SILENCE)),
                },
                () = shutdown.wait() => return Err(ConnectionError::Shutdown),
            };
            let Some(chunk) = chunk else {
                return Err(ConnectionError::Ended);
            };
            buffer.extend_from_slice(&chunk);
            let mut changed = Applied::Unchanged;
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let frame = match parse_line(line) {
                    Ok(frame) => frame,
                    Err(error) => {
                        // An unreadable frame may be a revocation: never skip it, start over.
                        warn!(%error, "unreadable frame; reconnecting for a snapshot");
                        self.fleet.forget_position();
                        self.publish(changed);
                        return Err(ConnectionError::Ended);
                    }
                };
                match self.fleet.apply(frame, crate::clock::now()) {
                    Ok(applied) => changed = changed.and(applied),
                    Err(error) => {
                        // What the earlier frames of this read merged (a revocation, perhaps)
                        // is enforced now, not after the reconnect.
                        self.publish(changed);
                        return Err(error.into());
                    }
                }
            }
            self.publish(changed);
            if let Some((instance, version)) = self.fleet.position() {
                if self.fleet.has_snapshot() {
                    self.feed.touch(version);
                }
                acker.ack(instance, version);
            }
            // Don't let a peer that never sends a newline grow the buffer without bound.
            if buffer.len() > 64 * 1024 * 1024 {
                return Err(ConnectionError::Ended);
            }
        }
    }

    /// Publishes what `changed` says changed.
    fn publish(&mut self, changed: Applied) {
        match changed {
            Applied::Policies => self.publish_policies(),
            Applied::Sessions => self.publish_sessions(),
            Applied::Unchanged => {}
        }
    }

    /// Publishes the session index: the merged map itself, cloned in O(1). A revocation costs
    /// no more with 100k sessions than with ten.
    fn publish_sessions(&self) {
        self.index_tx.send_replace(Arc::new(SessionIndex {
            synced: true,
            entries: self.fleet.sessions().clone(),
            feed: Some(self.feed.clone()),
        }));
    }

    /// Builds and publishes the access snapshot (policies compiled into the route table) and
    /// the session index from the merged state.
    fn publish_policies(&mut self) {
        self.published += 1;
        let policies: Vec<AccessPolicy> = self
            .fleet
            .policies()
            .map(|entry| {
                let mut policy = AccessPolicy::new(&entry.name, entry.spec);
                policy.metadata.namespace = Some(entry.namespace);
                policy.metadata.uid = Some(entry.uid);
                policy.metadata.generation = Some(entry.generation);
                policy
            })
            .collect();
        let raised: HashMap<(String, String), u64> = self
            .fleet
            .policies()
            .map(|p| ((p.namespace, p.name), p.epoch_raised_at))
            .collect();
        let secrets: HashMap<(String, String), SecretManifest> = self
            .fleet
            .secrets()
            .map(|s| {
                (
                    (s.namespace.clone(), s.name.clone()),
                    SecretManifest {
                        metadata: Metadata {
                            name: Some(s.name.clone()),
                            namespace: Some(s.namespace.clone()),
                        },
                        data: s.data.clone().into_iter().collect(),
                        string_data: HashMap::new(),
                    },
                )
            })
            .collect();
        let mut snapshot = state::build(
            self.published,
            &policies,
            &secrets,
            self.known_idps.as_ref(),
        );
        // The raise time the operator recorded, the same at every gateway; rounded up, so a
        // login in the same second as the raise counts as before it.
        snapshot.epoch_since = snapshot
            .policies
            .values()
            .map(|policy| {
                let at = raised
                    .get(&(policy.id.namespace.clone(), policy.id.name.clone()))
                    .copied()
                    .unwrap_or(0);
                let since = if policy.epoch == 0 { 0 } else { at + 1 };
                (policy.id.clone(), since)
            })
            .collect();
        for problem in &snapshot.problems {
            if self
                .previous
                .as_ref()
                .is_none_or(|p| !p.problems.contains(problem))
            {
                warn!(problem = %problem, "policy not applied as written");
            }
        }
        let snapshot = Arc::new(snapshot);
        // Sessions first: a request that sees the new policies also sees the new sessions.
        self.publish_sessions();
        self.state_tx.send_replace(snapshot.clone());
        self.previous = Some(snapshot);
    }
}

/// Acknowledges versions in the background, coalescing to the latest.
struct Acker {
    latest: watch::Sender<Option<(String, u64)>>,
}

impl Acker {
    fn spawn(client: reqwest::Client, url: Url, token: String, gateway_id: String) -> Self {
        let (latest, mut rx) = watch::channel::<Option<(String, u64)>>(None);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some((instance, version)) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let ack = Ack { instance, version };
                let sent = client
                    .post(url.clone())
                    .bearer_auth(&token)
                    .header(GATEWAY_ID_HEADER, &gateway_id)
                    .json(&ack)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => warn!(status = %r.status(), "ack refused"),
                    Err(error) => warn!(%error, "ack failed"),
                }
            }
        });
        Self { latest }
    }

    /// Queues an ack of `version` (heartbeats included: they prove the gateway is alive).
    fn ack(&self, instance: &str, version: u64) {
        self.latest
            .send_replace(Some((instance.to_owned(), version)));
    }
}
