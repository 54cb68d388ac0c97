//! Serving a router: HTTPS (HTTP/1.1 and h2 by ALPN) or plain HTTP, with graceful shutdown.
//! Every request carries the peer's address as an extension the caller chooses.

use crate::shutdown::Signal;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
    service::TowerToHyperService,
};
use rustls::{
    ServerConfig, pki_types::CertificateDer, pki_types::PrivateKeyDer, pki_types::pem::PemObject,
};
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// The peer's address, as a request extension, for routers that need nothing more specific.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid certificate or key: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server configuration from PEM files, offering h2 and HTTP/1.1.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    fn read(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
        move |source| TlsError::Read {
            path: path.display().to_string(),
            source,
        }
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(read(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until `shutdown` fires; then
/// stops accepting and gives open connections `drain` to finish. Each request gets
/// `peer(address)` as an extension.
pub async fn serve<E>(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    mut shutdown: Signal,
    drain: Duration,
    peer_extension: fn(SocketAddr) -> E,
) where
    E: Clone + Send + Sync + 'static,
{
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let connection = Connection {
            builder: builder.clone(),
            watcher: graceful.watcher(),
            peer,
        };
        connection.spawn(stream, acceptor.clone(), &router, peer_extension);
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the drain period; closing them");
    }
}

/// One accepted connection, served on a task of its own and watched for graceful shutdown.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    peer: SocketAddr,
}

impl Connection {
    /// Serves `router` on `stream` (after a TLS handshake when `acceptor` is given), every
    /// request carrying `peer_extension(peer)`.
    fn spawn<E>(
        self,
        stream: TcpStream,
        acceptor: Option<TlsAcceptor>,
        router: &Router,
        peer_extension: fn(SocketAddr) -> E,
    ) where
        E: Clone + Send + Sync + 'static,
    {
        let _ = stream.set_nodelay(true);
        let Self {
            builder,
            watcher,
            peer,
        } = self;
        let service =
            router
                .clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer_extension(peer));
                    req
                });
        let service = TowerToHyperService::new(service);
        match acceptor {
            Some(acceptor) => {
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => return debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    log_end(peer, watcher.watch(conn.into_owned())).await;
                });
            }
            None => {
                tokio::spawn(async move {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    log_end(peer, watcher.watch(conn.into_owned())).await;
                });
            }
        }
    }
}

/// Awaits a served connection and logs it when it ended with an error.
async fn log_end<Error: std::fmt::Display>(
    peer: SocketAddr,
    connection: impl Future<Output = Result<(), Error>>,
) {
    if let Err(error) = connection.await {
        debug!(%peer, %error, "connection ended with an error");
    }
}
