//! Connection limits and login rate limits of the real `portcullis-gateway` binary, over real
//! TLS from several loopback source addresses (127.0.0.0/8 is all loopback on Linux, so each
//! address is a distinct client to the gateway): a request head that stalls or drips is cut at
//! the header-read timeout, as are a connection that never sends a request and a TLS handshake
//! that never starts; an idle keep-alive connection is closed while a slow response is not;
//! one client gets at most N connections while another is still served; and every login
//! endpoint answers 429 with `Retry-After` past the per-client rate, per client, refilling.

use anyhow::{Context as _, Result, bail, ensure};
use axum::{Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::{
    dex,
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    pki::Pki,
};
use reqwest::StatusCode;
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "open.portcullis.test";

struct Setup {
    gateway: GatewayProcess,
    _dex: DexServer,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An upstream whose `/slow` answers after three seconds, longer than the idle and header
/// timeouts the tests configure.
async fn slow_upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow done"
            }),
        )
        .fallback(get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// An upstream that switches every connection to a WebSocket and echoes its bytes.
async fn websocket_upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                              Upgrade: websocket\r\n\
                              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                if stream.write_all(switch.as_bytes()).await.is_ok() {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
        }
    });
    Ok(addr)
}

/// A gateway (with a real Dex as its provider) in front of the slow upstream on a Bypass
/// policy (and a WebSocket echo on `/ws`), with `env` and `trusted` proxies.
async fn setup(name: &str, env: &[(&str, &str)], trusted: &[&str]) -> Result<Setup> {
    portcullis_tests::install_crypto_provider();
    let dir = portcullis_tests::fsutil::scratch_dir("limits", name)?;
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = portcullis_tests::process::free_port()?;
    let dex = DexServer::start(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(AUTH, port)],
    )
    .await?;
    let upstream = slow_upstream().await?;
    let websocket = websocket_upstream().await?;
    let manifests = format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: open, namespace: demo }}
spec:
  hosts: [{APP}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules:
    - action: Bypass
      include: [{{ everyone: true }}]
---
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: ws, namespace: demo }}
spec:
  hosts: [{APP}]
  paths: [/ws]
  identityProviders: [dex]
  upstream: {{ url: "http://{websocket}" }}
  rules:
    - action: Bypass
      include: [{{ everyone: true }}]
"#
    );
    let mut config = GatewayConfig::new(dir.join("gateway"), AUTH, &[APP], &manifests);
    config.port = port;
    config.trusted_proxies = trusted.iter().map(|t| (*t).to_owned()).collect();
    config.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        config,
        files,
    )
    .await?;
    Ok(Setup {
        gateway,
        _dex: dex,
        dir,
    })
}

impl Setup {
    /// A TCP connection to the gateway from `source`.
    async fn tcp(&self, source: &str) -> Result<TcpStream> {
        let source: IpAddr = source.parse()?;
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        Ok(socket.connect(self.gateway.addr).await?)
    }

    /// A TLS connection to the gateway from `source`, offering `alpn`, for `host`.
    async fn tls(&self, source: &str, alpn: &[u8], host: &str) -> Result<TlsStream<TcpStream>> {
        let pem = std::fs::read(&self.gateway.files.ca_file)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
        let tcp = self.tcp(source).await?;
        Ok(TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?)
    }

    /// An HTTPS client whose connections come from `source`.
    fn client_from(&self, source: &str) -> Result<reqwest::Client> {
        let mut builder = dex::http_client_builder(&self.gateway.files.ca_file)?
            .local_address(source.parse::<IpAddr>()?);
        for host in [AUTH, APP] {
            builder = builder.resolve(host, self.gateway.addr);
        }
        Ok(builder.build()?)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("{}{path}", self.gateway.origin(host))
    }

    /// The value of one sample of the gateway's metrics (0 when absent).
    async fn metric(&self, sample: &str) -> Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.gateway.ops_addr))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(sample))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }
}

/// Reads from `stream` (discarding what comes) until the server closes it; how long that took.
/// Fails when it is still open after `max`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    max: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + max).into(), stream.read(&mut buf)).await {
            Err(_) => bail!("the connection is still open after {max:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn stalled_request_heads_and_silent_connections_are_cut() -> Result<()> {
    let s = setup(
        "stall",
        &[
            ("PORTCULLIS_HEADER_READ_TIMEOUT", "1s"),
            ("PORTCULLIS_TLS_HANDSHAKE_TIMEOUT", "1s"),
            // Far longer, so that what cuts is the header-read bound.
            ("PORTCULLIS_IDLE_TIMEOUT", "60s"),
        ],
        &[],
    )
    .await?;
    let bound = Duration::from_secs(4);

    // One header line, then nothing (HTTP/1 over TLS).
    let mut one_line = s.tls("127.0.0.1", b"http/1.1", APP).await?;
    one_line
        .write_all(format!("GET / HTTP/1.1\r\nHost: {APP}\r\n").as_bytes())
        .await?;
    let took = closed_within(&mut one_line, bound).await?;
    ensure!(
        took >= Duration::from_millis(500),
        "cut too early: {took:?}"
    );

    // A head dripped a byte every 300 ms: the bound is on the whole head, not each read.
    let mut drip = s.tls("127.0.0.1", b"http/1.1", APP).await?;
    let dripping = async {
        for byte in format!("GET / HTTP/1.1\r\nHost: {APP}\r\nX-Slow: aaaaaaaaaaaaaaa").bytes() {
            if drip.write_all(&[byte]).await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bail!("a dripped head was still accepted after 10 s")
    };
    tokio::time::timeout(bound, dripping)
        .await
        .context("the dripping client was not cut")??;

    // HTTP/2 negotiated, then no preface or request at all.
    let mut silent_h2 = s.tls("127.0.0.1", b"h2", APP).await?;
    closed_within(&mut silent_h2, bound).await?;

    // Half an HTTP/2 preface, then nothing: the protocol cannot even be told.
    let mut half_preface = s.tls("127.0.0.1", b"h2", APP).await?;
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await?;
    closed_within(&mut half_preface, bound).await?;

    // TCP, but no TLS ClientHello.
    let mut no_hello = s.tcp("127.0.0.1").await?;
    closed_within(&mut no_hello, bound).await?;

    // The ops listener (plain HTTP) is bounded the same way.
    let mut ops = TcpStream::connect(s.gateway.ops_addr).await?;
    ops.write_all(b"GET /metrics HTTP/1.1\r\n").await?;
    closed_within(&mut ops, bound)
        .await
        .context("a stalled head on the ops listener")?;

    ensure!(
        s.metric(r#"portcullis_gateway_connections_closed_total{reason="header_timeout"}"#)
            .await?
            >= 4.0,
        "header timeouts not counted"
    );
    ensure!(
        s.metric(r#"portcullis_gateway_connections_closed_total{reason="handshake_timeout"}"#)
            .await?
            >= 1.0,
        "handshake timeout not counted"
    );

    // A client that sends its request promptly is served as before.
    let ok = s
        .client_from("127.0.0.1")?
        .get(s.url(APP, "/"))
        .send()
        .await?;
    ensure!(ok.status() == StatusCode::OK, "{}", ok.status());
    Ok(())
}

/// Sends one HTTP/1.1 GET on `stream` and reads the response head and body (Content-Length).
async fn http1_get<S>(stream: &mut S, path: &str) -> Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {APP}\r\n\r\n").as_bytes())
        .await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        ensure!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .context("no content-length")?
                .parse()?;
            if body.len() >= length {
                return Ok(text);
            }
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_but_slow_responses_are_not() -> Result<()> {
    let s = setup(
        "idle",
        &[
            ("PORTCULLIS_HEADER_READ_TIMEOUT", "1s"),
            ("PORTCULLIS_IDLE_TIMEOUT", "2s"),
        ],
        &[],
    )
    .await?;

    // HTTP/1 keep-alive: a response, then the wait for the next request is bounded.
    let mut keep_alive = s.tls("127.0.0.1", b"http/1.1", APP).await?;
    let response = http1_get(&mut keep_alive, "/").await?;
    ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
    closed_within(&mut keep_alive, Duration::from_secs(4)).await?;

    // HTTP/1: a response slower than both timeouts still arrives.
    let mut slow = s.tls("127.0.0.1", b"http/1.1", APP).await?;
    let response = http1_get(&mut slow, "/slow").await?;
    ensure!(response.contains("slow done"), "{response}");

    // HTTP/2: idle after one request, closed after the idle timeout (GOAWAY), not before.
    let tls = s.tls("127.0.0.1", b"h2", APP).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    let request = |path: &str| {
        http::Request::get(format!("https://{APP}:{}{path}", s.gateway.addr.port()))
            .body(Empty::<Bytes>::new())
    };
    // A request slower than the idle timeout is in flight all along: not idle.
    let response = sender.send_request(request("/slow")?).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(body.as_ref() == b"slow done", "{body:?}");
    let answered = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), ended)
        .await
        .context("the idle HTTP/2 connection stayed open")??;
    let idle_for = ended.duration_since(answered);
    ensure!(
        idle_for >= Duration::from_millis(1500),
        "closed after only {idle_for:?} idle"
    );
    ensure!(
        s.metric(r#"portcullis_gateway_connections_closed_total{reason="idle"}"#)
            .await?
            >= 1.0,
        "idle close not counted"
    );
    Ok(())
}

#[tokio::test]
async fn one_client_holds_at_most_n_connections_while_others_are_served() -> Result<()> {
    let s = setup(
        "per-client",
        &[("PORTCULLIS_MAX_CONNECTIONS_PER_CLIENT", "4")],
        &["127.0.0.3/32"],
    )
    .await?;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(s.tls("127.0.0.1", b"http/1.1", APP).await?);
    }
    // The fifth from the same address is closed at once, before any TLS.
    let refused =
        tokio::time::timeout(Duration::from_secs(2), s.tls("127.0.0.1", b"http/1.1", APP))
            .await
            .context("the fifth connection was neither served nor closed")?;
    ensure!(refused.is_err(), "the fifth connection got through");
    ensure!(
        s.metric(r#"portcullis_gateway_connections_closed_total{reason="client_limit"}"#)
            .await?
            >= 1.0,
        "the refusal was not counted"
    );

    // Another client is served meanwhile.
    let other = s
        .client_from("127.0.0.2")?
        .get(s.url(APP, "/"))
        .send()
        .await?;
    ensure!(other.status() == StatusCode::OK, "{}", other.status());

    // A trusted proxy carries many clients: not held to the limit.
    let mut proxied = Vec::new();
    for _ in 0..6 {
        proxied.push(s.tls("127.0.0.3", b"http/1.1", APP).await?);
    }

    // Closing one gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match s.tls("127.0.0.1", b"http/1.1", APP).await {
            Ok(mut again) => {
                let response = http1_get(&mut again, "/").await?;
                ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
                break;
            }
            Err(error) if Instant::now() > deadline => {
                bail!("no place freed after a connection closed: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_upgraded_connection_keeps_its_place_under_the_per_client_limit() -> Result<()> {
    let s = setup(
        "upgraded",
        &[("PORTCULLIS_MAX_CONNECTIONS_PER_CLIENT", "2")],
        &[],
    )
    .await?;
    let mut sockets = Vec::new();
    for i in 0..2u8 {
        let mut ws = s.tls("127.0.0.5", b"http/1.1", APP).await?;
        ws.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {APP}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            ws.read_exact(&mut byte).await?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.write_all(&[i; 3]).await?;
        let mut back = [0u8; 3];
        ws.read_exact(&mut back).await?;
        ensure!(back == [i; 3], "echo {back:?}");
        sockets.push(ws);
    }
    // Both are WebSockets now, no longer HTTP connections: they still count.
    let third = tokio::time::timeout(Duration::from_secs(2), s.tls("127.0.0.5", b"http/1.1", APP))
        .await
        .context("the third connection was neither served nor closed")?;
    ensure!(
        third.is_err(),
        "a third connection got through beside two WebSockets"
    );
    drop(sockets.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.tls("127.0.0.5", b"http/1.1", APP).await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "a closed WebSocket gave no place back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Every login endpoint, by host and path (with parameters that make each answer without the
/// identity provider).
const LOGIN_ENDPOINTS: [(&str, &str); 7] = [
    (
        AUTH,
        "/.portcullis/start?rd=https%3A%2F%2Fopen.portcullis.test%2F",
    ),
    (AUTH, "/.portcullis/callback?state=forged&code=forged"),
    (AUTH, "/.portcullis/logout"),
    (AUTH, "/.portcullis/logged-out"),
    (APP, "/.portcullis/begin?rd=https%3A%2F%2Fevil.test%2F"),
    (APP, "/.portcullis/handoff?ticket=forged"),
    (APP, "/.portcullis/logout"),
];

/// `count` GETs of `url` from `client` with `headers`; their statuses, and the `Retry-After`
/// of the last.
async fn burst(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> Result<(Vec<StatusCode>, Option<String>)> {
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..count {
        let mut request = client.get(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await?;
        statuses.push(response.status());
        retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    Ok((statuses, retry_after))
}

#[tokio::test]
async fn login_endpoints_are_rate_limited_per_client() -> Result<()> {
    let s = setup(
        "rate",
        &[
            ("PORTCULLIS_LOGIN_RATE_LIMIT", "2"),
            ("PORTCULLIS_LOGIN_RATE_BURST", "5"),
        ],
        &["127.0.0.3/32"],
    )
    .await?;
    let too_many = StatusCode::TOO_MANY_REQUESTS;
    let callback = s.url(AUTH, "/.portcullis/callback?state=forged&code=forged");

    // A burst of forged callbacks: the first five are judged (400), then 429 with Retry-After.
    let attacker = s.client_from("127.0.0.1")?;
    let (statuses, retry_after) = burst(&attacker, &callback, &[], 8).await?;
    ensure!(
        statuses[..5].iter().all(|s| *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    ensure!(statuses[5..].iter().all(|s| *s == too_many), "{statuses:?}");
    let wait: u64 = retry_after.context("no Retry-After")?.parse()?;
    ensure!((1..=2).contains(&wait), "Retry-After {wait}");
    let body = attacker.get(&callback).send().await?.text().await?;
    ensure!(body.contains("rate_limited"), "{body}");

    // Another client is unaffected.
    let (statuses, _) = burst(&s.client_from("127.0.0.2")?, &callback, &[], 1).await?;
    ensure!(statuses == [StatusCode::BAD_REQUEST], "{statuses:?}");

    // The bucket refills at the rate (2/s): after a second, two more are judged (a third
    // perhaps, for the time the burst itself took), then it is empty again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (statuses, _) = burst(&attacker, &callback, &[], 5).await?;
    ensure!(
        statuses[..2].iter().all(|s| *s == StatusCode::BAD_REQUEST) && statuses[4] == too_many,
        "after refilling: {statuses:?}"
    );

    // Every login endpoint, each from a client of its own.
    for (i, (host, path)) in LOGIN_ENDPOINTS.iter().enumerate() {
        let client = s.client_from(&format!("127.0.1.{}", i + 1))?;
        let (statuses, retry_after) = burst(&client, &s.url(host, path), &[], 6).await?;
        ensure!(
            statuses[..5].iter().all(|s| *s != too_many) && statuses[5] == too_many,
            "{host}{path}: {statuses:?}"
        );
        ensure!(retry_after.is_some(), "{host}{path}: no Retry-After");
    }
    // Not login endpoints: the JWKS and the apps themselves.
    let client = s.client_from("127.0.2.1")?;
    let (statuses, _) = burst(&client, &s.url(AUTH, "/.well-known/jwks.json"), &[], 8).await?;
    ensure!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    // Behind a trusted proxy the client is its X-Forwarded-For hop…
    let proxy = s.client_from("127.0.0.3")?;
    let first = [("x-forwarded-for", "203.0.113.7")];
    let (statuses, _) = burst(&proxy, &callback, &first, 6).await?;
    ensure!(statuses[5] == too_many, "{statuses:?}");
    let second = [("x-forwarded-for", "203.0.113.8")];
    let (statuses, _) = burst(&proxy, &callback, &second, 1).await?;
    ensure!(
        statuses[0] != too_many,
        "another forwarded client: {statuses:?}"
    );
    // …while anyone else's X-Forwarded-For picks no bucket.
    let direct = s.client_from("127.0.0.4")?;
    burst(&direct, &callback, &[], 5).await?;
    let spoofed = [("x-forwarded-for", "198.51.100.99")];
    let (statuses, _) = burst(&direct, &callback, &spoofed, 1).await?;
    ensure!(
        statuses[0] == too_many,
        "a spoofed header escaped: {statuses:?}"
    );

    ensure!(
        s.metric(r#"portcullis_gateway_rate_limited_total{endpoint="callback"}"#)
            .await?
            >= 3.0,
        "429s not counted"
    );
    Ok(())
}

/// Sends `request` on a fresh TLS connection to `host` from `source` and reads the answer
/// until the gateway closes the connection.
async fn raw_exchange(s: &Setup, source: &str, host: &str, request: &str) -> Result<String> {
    let mut tls = s.tls(source, b"http/1.1", host).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .context("the connection was not closed")?
        .or_else(|e| {
            // A TLS peer may close without close_notify; what was read stands.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(0)
            } else {
                Err(e)
            }
        })?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Issue 15: a raw `#` in a request target is dropped by the HTTP stack before any handler
/// sees it, so the gateway would judge `/public` for `/public#/../admin`. Every listener
/// refuses such a request line with 400 and closes the connection, on app hosts (proxy mode)
/// and on every forward-auth endpoint alike (Envoy's contract takes the path from the request
/// target); the same requests without the fragment are served.
#[tokio::test]
async fn a_fragment_in_a_request_target_is_refused_on_every_surface() -> Result<()> {
    let s = setup("fragment", &[], &["127.0.0.9/32"]).await?;
    let cases = [
        ("127.0.0.8", APP, "/public#/../admin", "/public"),
        (
            "127.0.0.9",
            APP,
            "/.portcullis/auth/envoy/public#/../admin",
            "/.portcullis/auth/envoy/public",
        ),
        (
            "127.0.0.9",
            APP,
            "/.portcullis/auth/nginx#x",
            "/.portcullis/auth/nginx",
        ),
        (
            "127.0.0.8",
            AUTH,
            "/.portcullis/start#x",
            "/.portcullis/start",
        ),
    ];
    for (source, host, with_fragment, without) in cases {
        let request = |target: &str| {
            format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Original-URL: https://{APP}/public\r\nConnection: close\r\n\r\n"
            )
        };
        let refused = raw_exchange(&s, source, host, &request(with_fragment)).await?;
        ensure!(
            refused.starts_with("HTTP/1.1 400") && refused.contains("fragment"),
            "{with_fragment} on {host}: {refused}"
        );
        let served = raw_exchange(&s, source, host, &request(without)).await?;
        ensure!(
            !served.starts_with("HTTP/1.1 400") || !served.contains("fragment"),
            "{without} on {host} refused for a fragment: {served}"
        );
    }
    // The connection that carried the fragment serves nothing after it, even a clean request.
    let mut tls = s.tls("127.0.0.8", b"http/1.1", APP).await?;
    tls.write_all(
        format!(
            "GET /public#x HTTP/1.1\r\nHost: {APP}\r\n\r\nGET /public HTTP/1.1\r\nHost: {APP}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.matches("HTTP/1.1 ").count() == 1 && answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    Ok(())
}

/// The expiry the gateway's metrics report for the certificate it presents.
async fn certificate_expiry(s: &Setup) -> Result<i64> {
    let metrics = reqwest::get(format!("http://{}/metrics", s.gateway.ops_addr))
        .await?
        .text()
        .await?;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_gateway_tls_certificate_expiry_timestamp_seconds "))
        .context("no certificate expiry metric")?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

/// The leaf certificate the gateway presents for `host` on a new connection.
async fn presented_leaf(s: &Setup, host: &str) -> Result<Vec<u8>> {
    let tls = s.tls("127.0.0.1", b"http/1.1", host).await?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .context("no certificate presented")?;
    Ok(certs.first().context("an empty chain")?.to_vec())
}

/// Issue 17: a renewed serving certificate (cert-manager rewriting the Secret, the kubelet
/// swapping the mounted files) is presented on new connections without a restart, and an open
/// connection keeps working across the renewal.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() -> Result<()> {
    let s = setup("renewal", &[], &[]).await?;
    let before = presented_leaf(&s, APP).await?;
    let expiry_before = certificate_expiry(&s).await?;
    ensure!(
        Some(expiry_before) == portcullis_runtime::server::certificate::not_after(&before),
        "the expiry metric ({expiry_before}) is not the presented certificate's"
    );
    let mut open = s.tls("127.0.0.1", b"http/1.1", APP).await?;
    let pki = Pki::load(&s.dir.join("pki"))?;
    pki.issue_serving("gateway", &[AUTH.to_owned(), APP.to_owned()])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = presented_leaf(&s, APP).await?;
        if now != before {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the renewed certificate was not presented within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = presented_leaf(&s, APP).await?;
    let expiry_after = certificate_expiry(&s).await?;
    ensure!(
        Some(expiry_after) == portcullis_runtime::server::certificate::not_after(&after),
        "the expiry metric ({expiry_after}) did not follow the renewal"
    );
    open.write_all(
        format!("GET / HTTP/1.1\r\nHost: {APP}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}
