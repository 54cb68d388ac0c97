//! The real `portcullis-operator`'s stream API listener is bounded like the gateway's (the
//! shared `runtime/src/server`): a request head that stalls and a TLS handshake that never
//! starts are cut, and one client holds at most N connections while another is still served.

use anyhow::{Context as _, Result, bail, ensure};
use kube::Client;
use portcullis_tests::{cluster::TestCluster, operator::OperatorProcess, pki::Pki};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

async fn tcp(to: SocketAddr, source: &str) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse::<IpAddr>()?, 0))?;
    Ok(socket.connect(to).await?)
}

async fn tls(pki: &Pki, to: SocketAddr, source: &str) -> Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(name, tcp(to, source).await?)
        .await?)
}

/// Reads until the server closes `stream`; fails when it is still open after `max`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    max: Duration,
) -> Result<()> {
    let deadline = Instant::now() + max;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => bail!("still open after {max:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn metric(operator: &OperatorProcess, sample: &str) -> Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", operator.ops_addr))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test]
async fn the_stream_listener_cuts_slow_clients_and_limits_connections_per_client() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-limits", |_client: Client, ns: String| async move {
            portcullis_tests::install_crypto_provider();
            let dir = portcullis_tests::fsutil::scratch_dir("op-limits", "listener")?;
            let pki = Pki::generate(&dir.join("pki"))?;
            let env = [
                ("PORTCULLIS_HEADER_READ_TIMEOUT", "1s"),
                ("PORTCULLIS_TLS_HANDSHAKE_TIMEOUT", "1s"),
                ("PORTCULLIS_MAX_CONNECTIONS_PER_CLIENT", "3"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec();
            let operator = OperatorProcess::start_with(
                env!("CARGO_BIN_EXE_portcullis-operator").as_ref(),
                &dir.join("operator"),
                &pki,
                &kubeconfig,
                &ns,
                &[format!("{ns}:gateway")],
                env,
            )
            .await?;
            let bound = Duration::from_secs(4);

            let mut stalled = tls(&pki, operator.addr, "127.0.0.1").await?;
            stalled
                .write_all(b"GET /v1/state HTTP/1.1\r\nHost: localhost\r\n")
                .await?;
            closed_within(&mut stalled, bound)
                .await
                .context("a stalled head")?;
            let mut no_hello = tcp(operator.addr, "127.0.0.1").await?;
            closed_within(&mut no_hello, bound)
                .await
                .context("no TLS hello")?;

            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(tls(&pki, operator.addr, "127.0.0.1").await?);
            }
            let fourth = tokio::time::timeout(
                Duration::from_secs(2),
                tls(&pki, operator.addr, "127.0.0.1"),
            )
            .await
            .context("the fourth connection hung")?;
            ensure!(fourth.is_err(), "the fourth connection got through");
            tls(&pki, operator.addr, "127.0.0.2")
                .await
                .context("another client was refused")?;

            for kind in ["header_timeout", "handshake_timeout", "client_limit"] {
                let sample =
                    format!(r#"portcullis_operator_connections_closed_total{{kind="{kind}"}}"#);
                ensure!(
                    metric(&operator, &sample).await? >= 1.0,
                    "{kind} not counted"
                );
            }
            drop(held);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .await
}
