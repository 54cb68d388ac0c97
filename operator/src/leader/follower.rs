//! Followers relay what their gateways enforce to the leader, so the leader's status counts every
//! gateway whichever replica it streams from.
//!
//! Versions mean nothing across replicas, so a follower sends facts about objects
//! ([`portcullis_protocol::GatewayFacts`]: policy uid → generation and epoch, ended session
//! ids) every second to `POST /v1/peer/acks` at the URL the leader published on the Lease: in
//! full at first and then only what changed ([`super::relay`]). The request carries the
//! follower's own ServiceAccount token (audience `--token-audience`); the leader accepts it
//! when a TokenReview names the same user as its own token, i.e. another replica of this
//! operator. TLS is verified against `--peer-ca-file` for `--peer-server-name` (a name the
//! serving certificate has) while connecting to the address in the advertised URL.

use super::{
    record,
    relay::{Accepted, Pending, RelayBody, Relayer},
};
use crate::{
    clock::now,
    index::SharedIndex,
    metrics::{Metrics, RelayOutcome},
    stream::{Gateways, Refusal},
};
use axum::http::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use portcullis_protocol::{ErrorBody, frame::PEER_ACKS_PATH};
use portcullis_runtime::{error_chain, shutdown::Signal};
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use url::Url;

/// How often a follower relays.
const RELAY_EVERY: Duration = Duration::from_secs(1);
/// How long a leader URL read from the Lease is used before it is read again.
const LEADER_TTL: Duration = Duration::from_secs(5);

/// Why relaying is not possible.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA file: {0}")]
    Ca(String),
    #[error("invalid TLS settings")]
    Tls(#[from] rustls::Error),
    #[error("invalid leader URL {0:?}")]
    Url(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("the request to the leader failed")]
    Http(#[from] reqwest::Error),
    #[error("the leader answered {0}")]
    Status(StatusCode),
    #[error("the leader asked for a full relay")]
    Resync,
    #[error("cannot read the Lease")]
    Lease(#[from] kube::Error),
}

/// How a follower reaches the leader.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub identity: String,
    pub lease_name: String,
    pub lease_namespace: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    pub server_name: Option<String>,
}

/// Where the follower relays to: the leader's advertised URL, a client for it, the request
/// URL, and when it was read from the Lease.
type Leader = (String, reqwest::Client, Url, Instant);

/// The follower's relay loop, until shutdown.
pub async fn relay(
    client: Client,
    config: PeerConfig,
    sources: Sources,
    leading: watch::Receiver<bool>,
    mut shutdown: Signal,
) {
    let tls = match tls_config(&config) {
        Ok(tls) => tls,
        Err(error) => {
            warn!(error = %error_chain(&error), "relaying to the leader is off");
            return;
        }
    };
    let leases: Api<Lease> = Api::namespaced(client, &config.lease_namespace);
    let mut leader: Option<Leader> = None;
    let instance = sources.index.lock().instance().to_owned();
    let mut relayer = Relayer::new(config.identity.clone(), instance);
    let mut ticker = tokio::time::interval(RELAY_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        if *leading.borrow() {
            leader = None;
            relayer.failed();
            continue;
        }
        let now = now();
        let gateways = sources.gateways.connected(now);
        if gateways.is_empty() && !relayer.leader_has_gateways() {
            // Nothing to say (the leader forgets a silent replica; start over in full later).
            relayer.failed();
            continue;
        }
        if leader
            .as_ref()
            .is_none_or(|(_, _, _, at)| at.elapsed() > LEADER_TTL)
        {
            leader = locate(&leases, &config, &tls, &sources.metrics).await;
        }
        let Some((url, client, target, _)) = &leader else {
            continue;
        };
        let (body, pending) = {
            let index = sources.index.lock();
            relayer.next(url, &gateways, &index, now)
        };
        let full = pending.is_full();
        let outcome = send(client, target, &config.token_file, &body).await;
        if !sources.outcome(outcome, full, url, &mut relayer, pending) {
            leader = None;
        }
    }
}

/// What the follower relays from.
#[derive(Clone)]
pub struct Sources {
    pub index: Arc<SharedIndex>,
    pub gateways: Arc<Gateways>,
    pub metrics: Metrics,
}

impl Sources {
    /// Takes in the outcome of a relay; false if the leader must be looked up again.
    fn outcome(
        &self,
        outcome: Result<Option<u64>, PeerError>,
        full: bool,
        url: &str,
        relayer: &mut Relayer,
        pending: Pending,
    ) -> bool {
        match outcome {
            Ok(confirmed) => {
                self.metrics.relay(if full {
                    RelayOutcome::SentFull
                } else {
                    RelayOutcome::Sent
                });
                relayer.accepted(pending, confirmed);
                true
            }
            Err(PeerError::Resync) => {
                // The leader lacks what the delta builds on (it restarted): full next time.
                self.metrics.relay(RelayOutcome::Resync);
                debug!(leader = %url, "the leader asked for a full relay");
                relayer.failed();
                true
            }
            Err(error) => {
                self.metrics.relay(RelayOutcome::Failed);
                warn!(leader = %url, error = %error_chain(&error), "relaying to the leader failed; reading the Lease again");
                relayer.failed();
                false
            }
        }
    }
}

/// The leader as published on the Lease now, if it can be reached.
async fn locate(
    leases: &Api<Lease>,
    config: &PeerConfig,
    tls: &rustls::ClientConfig,
    metrics: &Metrics,
) -> Option<Leader> {
    match find_leader(leases, config, tls).await {
        Ok(Some((url, client, target))) => Some((url, client, target, Instant::now())),
        Ok(None) => {
            metrics.relay(RelayOutcome::NoLeader);
            debug!("no leader URL on the Lease yet");
            None
        }
        Err(error) => {
            metrics.relay(RelayOutcome::Failed);
            warn!(error = %error_chain(&error), "cannot find the leader");
            None
        }
    }
}

/// Posts one relay; the relay number the leader confirmed, if it did.
async fn send(
    client: &reqwest::Client,
    target: &Url,
    token_file: &PathBuf,
    body: &RelayBody,
) -> Result<Option<u64>, PeerError> {
    // Re-read every time: the kubelet rotates the projected token.
    let token = std::fs::read_to_string(token_file).map_err(|source| PeerError::Read {
        path: token_file.display().to_string(),
        source,
    })?;
    let response = client
        .post(target.clone())
        .bearer_auth(token.trim())
        .json(body)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = response.status();
    if status == StatusCode::OK {
        // A leader that predates deltas answers without a body: no confirmation.
        return Ok(response.json::<Accepted>().await.ok().map(|a| a.accepted));
    }
    if status.is_success() {
        return Ok(None);
    }
    if status == StatusCode::CONFLICT
        && let Ok(body) = response.json::<ErrorBody>().await
        && body.error == Refusal::Resync.code()
    {
        return Err(PeerError::Resync);
    }
    Err(PeerError::Status(status))
}

/// The leader's URL, a client that connects to its address while verifying the peer server
/// name, and the request URL.
async fn find_leader(
    leases: &Api<Lease>,
    config: &PeerConfig,
    tls: &rustls::ClientConfig,
) -> Result<Option<(String, reqwest::Client, Url)>, PeerError> {
    let Some(advertised) = record::leader_url(leases, &config.lease_name, &config.identity).await?
    else {
        return Ok(None);
    };
    let parsed = Url::parse(&advertised).map_err(|_| PeerError::Url(advertised.clone()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| PeerError::Url(advertised.clone()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addr: SocketAddr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| PeerError::Resolve(host.clone()))?,
    };
    let name = config.server_name.clone().unwrap_or(host);
    let target = Url::parse(&format!("https://{name}:{port}{PEER_ACKS_PATH}"))
        .map_err(|_| PeerError::Url(name.clone()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .resolve(&name, addr)
        .build()?;
    info!(leader = %advertised, verify = %name, "relaying gateway facts to the leader");
    Ok(Some((advertised, client, target)))
}

fn tls_config(config: &PeerConfig) -> Result<rustls::ClientConfig, PeerError> {
    let pem = std::fs::read(&config.ca_file).map_err(|source| PeerError::Read {
        path: config.ca_file.display().to_string(),
        source,
    })?;
    use portcullis_runtime::client_tls::{ClientTlsError, trusting};
    trusting(&pem).map_err(|e| match e {
        ClientTlsError::Ca(reason) => PeerError::Ca(reason),
        ClientTlsError::Tls(e) => PeerError::Tls(e),
    })
}
