//! `ref-proxy`: the reference of `hack/bench-peers.sh`, the physical limit of "TLS in, proxy
//! out" in Rust on the machine. No authentication, no policy, no header rewriting: it accepts
//! TLS with the gateway's settings (rustls with the aws-lc-rs provider, the safe default
//! protocol versions, ALPN h2 and http/1.1, the same certificate) and forwards every request
//! to one plain-HTTP upstream through a pooled hyper-util client, streaming both bodies.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use clap::Parser;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(about = "Minimal TLS reverse proxy (no auth), the reference of hack/bench-peers.sh")]
struct Cli {
    /// Address to listen on (port 0: a free one, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The plain-HTTP upstream every request goes to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Serving certificate (PEM chain).
    #[arg(long)]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let certs = CertificateDer::pem_file_iter(&cli.tls_cert)
        .context("reading the certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the certificate")?;
    let key = PrivateKeyDer::from_pem_file(&cli.tls_key).context("reading the key")?;
    // As runtime/src/server.rs configures the gateway's listener.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let upstream = cli.upstream;

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    // The only line on stdout: scripts read the address from it.
    println!("{}", listener.local_addr()?);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    *req.uri_mut() = format!("http://{upstream}{path}")
                        .parse()
                        .expect("an address and a path make a URI");
                    // h2 requests carry no Host header: the upstream gets HTTP/1.1.
                    *req.version_mut() = hyper::Version::HTTP_11;
                    match client.request(req).await {
                        Ok(resp) => Ok::<_, std::convert::Infallible>(resp.map(Body::Upstream)),
                        Err(_) => Ok(Response::builder()
                            .status(502)
                            .body(Body::Empty)
                            .expect("a static response")),
                    }
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// The upstream's body, or nothing (a 502).
enum Body {
    Upstream(Incoming),
    Empty,
}

impl hyper::body::Body for Body {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            Body::Upstream(body) => std::pin::Pin::new(body).poll_frame(cx),
            Body::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(body) => body.is_end_stream(),
            Body::Empty => true,
        }
    }
}
