//! Serving a router: HTTPS (HTTP/1.1 and h2 by ALPN) or plain HTTP, with graceful shutdown,
//! and every connection bounded ([`limits`]): handshake, request-head and idle timeouts, a
//! request-head size and a per-client connection limit. Every request carries the peer's
//! address as an extension the caller chooses.

pub mod certificate;
mod connection;
mod fragment;
pub mod limits;

pub use certificate::CertificateError;
pub use limits::{Closed, ConnectionLimits, OnClose, client_key};

use crate::shutdown::Signal;
use axum::Router;
use certificate::{ExpiryObserver, ReloadingCertificate};
use connection::Connection;
use rustls::ServerConfig;
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// The peer's address, as a request extension, for routers that need nothing more specific.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("TLS versions: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server configuration offering h2 and HTTP/1.1, its certificate read from the PEM
/// files and read again when they change ([`certificate`]).
/// `expiry` is told when the presented certificate expires, at start and after each reload.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    expiry: ExpiryObserver,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificate = ReloadingCertificate::open(cert, key, provider.clone(), expiry)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a listener serves its connections.
pub struct Serving<E> {
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<Arc<ServerConfig>>,
    pub limits: ConnectionLimits,
    /// How long open connections may finish their requests after shutdown starts.
    pub drain: Duration,
    /// The extension every request gets, made from the peer's address.
    pub peer_extension: fn(SocketAddr) -> E,
    /// Peers not held to the per-client connection limit (proxies that carry many clients).
    pub unlimited: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    /// Told of each connection the server closes itself.
    pub on_close: OnClose,
}

impl<E> Serving<E> {
    /// Plain HTTP with `limits`, every peer limited, closes not counted.
    pub fn plain(
        limits: ConnectionLimits,
        drain: Duration,
        peer_extension: fn(SocketAddr) -> E,
    ) -> Self {
        Self {
            tls: None,
            limits,
            drain,
            peer_extension,
            unlimited: Arc::new(|_| false),
            on_close: Arc::new(|_| {}),
        }
    }
}

/// Serves `router` on `listener` as `serving` says until `shutdown` fires; then stops
/// accepting and gives open connections `serving.drain` to finish.
pub async fn serve<E>(
    listener: TcpListener,
    router: Router,
    mut shutdown: Signal,
    serving: Serving<E>,
) where
    E: Clone + Send + Sync + 'static,
{
    let acceptor = serving.tls.clone().map(TlsAcceptor::from);
    let builder = serving.limits.builder();
    let per_client = limits::PerClient::new(serving.limits.max_connections_per_client);
    let limits = Arc::new(serving.limits.clone());
    let (alive, watching) = watch::channel(());
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, tls = acceptor.is_some(), "listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let Some(slot) = admit(&serving, &per_client, peer) else {
            // Dropped unanswered: the client already holds all it may.
            continue;
        };
        let connection = Connection {
            builder: builder.clone(),
            limits: limits.clone(),
            peer,
            peer_extension: serving.peer_extension,
            router: router.clone(),
            shutdown: shutdown.clone(),
            on_close: serving.on_close.clone(),
            slot,
            alive: watching.clone(),
        };
        connection.spawn(stream, acceptor.clone());
    }
    drop(watching);
    if tokio::time::timeout(serving.drain, alive.closed())
        .await
        .is_err()
    {
        warn!("connections still open after the drain period; closing them");
    }
}

/// The place of a new connection from `peer` under the per-client limit (`Some(None)`: not
/// limited), or `None` (counted) when its client already holds the most it may.
fn admit<E>(
    serving: &Serving<E>,
    per_client: &Arc<limits::PerClient>,
    peer: SocketAddr,
) -> Option<Option<limits::Slot>> {
    if (serving.unlimited)(peer.ip()) {
        return Some(None);
    }
    let slot = per_client.admit(peer.ip());
    if slot.is_none() {
        debug!(%peer, "connection refused: per-client limit");
        (serving.on_close)(Closed::ClientLimit);
    }
    slot
}
