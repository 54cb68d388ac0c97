//! Followers relay what their gateways enforce to the leader, so the leader's status counts every
//! gateway whichever replica it streams from.
//!
//! Versions mean nothing across replicas, so a follower sends facts about objects
//! ([`portcullis_protocol::GatewayFacts`]: policy uid → generation and epoch, ended session
//! ids) every second to `POST /v1/peer/acks` at the URL the leader published on the Lease: in
//! full at first and then only what changed ([`crate::relay`]). The request carries the
//! follower's own ServiceAccount token (audience `--token-audience`); the leader accepts it
//! when a TokenReview names the same user as its own token, i.e. another replica of this
//! operator. TLS is verified against `--peer-ca-file` for `--peer-server-name` (a name the
//! serving certificate has) while connecting to the address in the advertised URL.

use crate::relay::{Accepted, Connected, RelayBody, Relayer};
use crate::{
    auth::AuthError,
    lease,
    shared::{Shared, now},
    shutdown::Signal,
};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use portcullis_protocol::{ErrorBody, frame::PEER_ACKS_PATH};
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
/// The error code of a `409` asking the follower for a full relay.
const RESYNC: &str = "resync";
/// How long a leader URL read from the Lease is used before it is read again.
const LEADER_TTL: Duration = Duration::from_secs(5);

/// Why relaying is not possible.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA file: {0}")]
    Ca(String),
    #[error("invalid TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid leader URL {0:?}")]
    Url(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the leader answered {0}")]
    Status(StatusCode),
    #[error("the leader asked for a full relay")]
    Resync,
    #[error("reading the Lease: {0}")]
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

/// Learns which user this operator's peer token belongs to (a TokenReview of its own token),
/// and from then on accepts relays from that user only. Retries until it succeeds.
pub async fn learn_peer_identity(shared: Arc<Shared>, token_file: PathBuf, mut shutdown: Signal) {
    loop {
        match std::fs::read_to_string(&token_file) {
            Ok(token) => match shared.auth.user_of(token.trim()).await {
                Ok(user) => {
                    info!(%user, "accepting relays from replicas of this operator");
                    shared.set_peer_user(user);
                    return;
                }
                Err(error) => warn!(%error, "cannot review this operator's own token; retrying"),
            },
            Err(error) => {
                warn!(file = %token_file.display(), %error, "cannot read the peer token; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// `POST /v1/peer/acks` on the leader.
pub async fn receive(
    State((shared, _)): State<(Arc<Shared>, Signal)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let error = |status: StatusCode, error: &str, message: String| {
        (
            status,
            Json(ErrorBody {
                error: error.to_owned(),
                message,
            }),
        )
            .into_response()
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match shared.check_peer(authorization).await {
        Ok(()) => {}
        Err(AuthError::Review(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "review_failed",
                format!("the token could not be reviewed: {e}"),
            );
        }
        Err(AuthError::Forbidden(user)) => {
            shared.metrics.refused("peer_forbidden");
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{user} is not a replica of this operator"),
            );
        }
        Err(e) => {
            shared.metrics.refused("peer_unauthenticated");
            return error(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string());
        }
    }
    if !shared.is_leading() {
        return error(
            StatusCode::CONFLICT,
            "not_leader",
            "this replica does not hold the Lease; read the Lease again".into(),
        );
    }
    let Ok(relay) = serde_json::from_slice::<RelayBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "expected {\"replica\":..,\"gateways\":[..]}".into(),
        );
    };
    match shared.relayed(relay, now()) {
        Ok(Some(accepted)) => {
            shared.metrics.relay("received");
            (StatusCode::OK, Json(Accepted { accepted })).into_response()
        }
        Ok(None) => {
            shared.metrics.relay("received");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resync) => {
            shared.metrics.relay("resync");
            debug!(%resync, "asked a follower for a full relay");
            error(StatusCode::CONFLICT, RESYNC, resync.to_string())
        }
    }
}

/// The follower's relay loop, until shutdown.
pub async fn relay(
    client: Client,
    config: PeerConfig,
    shared: Arc<Shared>,
    leading: watch::Receiver<bool>,
    mut shutdown: Signal,
) {
    let tls = match tls_config(&config) {
        Ok(tls) => tls,
        Err(error) => {
            warn!(%error, "relaying to the leader is off");
            return;
        }
    };
    let leases: Api<Lease> = Api::namespaced(client, &config.lease_namespace);
    let mut leader: Option<(String, reqwest::Client, Url, Instant)> = None;
    let instance = shared.lock_index().instance().to_owned();
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
        let gateways: Vec<Connected> = shared
            .lock_fleet()
            .connected(now)
            .map(|(id, acked, last_seen)| Connected {
                id: id.to_owned(),
                acked: acked.unwrap_or(0),
                last_seen,
            })
            .collect();
        if gateways.is_empty() && !relayer.leader_has_gateways() {
            // Nothing to say (the leader forgets a silent replica; start over in full later).
            relayer.failed();
            continue;
        }
        if leader
            .as_ref()
            .is_none_or(|(_, _, _, at)| at.elapsed() > LEADER_TTL)
        {
            leader = match find_leader(&leases, &config, &tls).await {
                Ok(Some((url, client, target))) => Some((url, client, target, Instant::now())),
                Ok(None) => {
                    shared.metrics.relay("no_leader");
                    debug!("no leader URL on the Lease yet");
                    None
                }
                Err(error) => {
                    shared.metrics.relay("failed");
                    warn!(%error, "cannot find the leader");
                    None
                }
            };
        }
        let Some((url, client, target, _)) = &leader else {
            continue;
        };
        let (body, pending) = {
            let index = shared.lock_index();
            relayer.next(url, &gateways, &index, now)
        };
        match send(client, target, &config.token_file, &body).await {
            Ok(confirmed) => {
                shared.metrics.relay(if pending.is_full() {
                    "sent_full"
                } else {
                    "sent"
                });
                relayer.accepted(pending, confirmed);
            }
            Err(PeerError::Resync) => {
                // The leader lacks what the delta builds on (it restarted): full next time.
                shared.metrics.relay("resync");
                debug!(leader = %url, "the leader asked for a full relay");
                relayer.failed();
            }
            Err(error) => {
                shared.metrics.relay("failed");
                warn!(leader = %url, %error, "relaying to the leader failed; reading the Lease again");
                relayer.failed();
                leader = None;
            }
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
        && body.error == RESYNC
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
    let Some(advertised) = lease::leader_url(leases, &config.lease_name, &config.identity).await?
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
