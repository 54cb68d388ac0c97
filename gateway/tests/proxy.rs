//! The reverse proxy against real servers on 127.0.0.1: a gateway front (axum, HTTP/1.1 + h2)
//! that calls `Proxy::forward`, and real upstreams (axum over plain TCP or rustls, and raw TCP
//! upstreams where exact wire bytes matter).

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body as AxumBody,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header, uri::Authority, uri::Scheme};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_gateway::proxy::{
    ForwardContext, GatewayCookies, Proxy, ProxyConfig, ProxyError, Upstream, UpstreamScheme,
    headers::Vouched,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
};

const STEP: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;
const TOTAL: usize = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A request or response body fed from a channel: the test decides when each chunk exists.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn pattern(offset: usize, len: usize) -> Bytes {
    (offset..offset + len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn proxy() -> Proxy {
    Proxy::new(ProxyConfig {
        native_roots: false,
        ..ProxyConfig::default()
    })
    .expect("proxy")
}

fn upstream_at(addr: SocketAddr, timeout: Duration) -> Upstream {
    Upstream::new(UpstreamScheme::Http, &addr.to_string(), timeout).expect("upstream")
}

fn gateway_cookies() -> GatewayCookies {
    GatewayCookies::new(["__Host-portcullis"], ["__Host-portcullis-login-"])
}

fn identity() -> Vouched {
    let headers = [
        ("x-auth-request-user", "alice"),
        ("x-auth-request-email", "alice@example.com"),
        ("x-auth-request-groups", "admins,devs"),
        ("portcullis-jwt-assertion", "signed.jwt.value"),
    ]
    .into_iter()
    .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
    .collect();
    Vouched::new(headers).expect("vouched")
}

fn ctx(peer: SocketAddr, host: Authority, trusted: bool) -> ForwardContext {
    ForwardContext {
        client_addr: peer,
        trusted_forwarded_for: trusted,
        scheme: Scheme::HTTP,
        host,
        identity_headers: identity(),
        gateway_cookies: gateway_cookies(),
    }
}

#[derive(Clone)]
struct FrontState {
    proxy: Proxy,
    upstream: Arc<Upstream>,
    trusted: bool,
}

/// The gateway's place in the tests: takes the host from `:authority` or `Host`, forwards,
/// maps errors the way the server layer is expected to.
async fn front_handler(
    State(st): State<FrontState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let host = req.uri().authority().cloned().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
    });
    let Some(host) = host else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let ctx = ctx(peer, host, st.trusted);
    match st.proxy.forward(req, &st.upstream, &ctx).await {
        Ok(resp) => resp.map(AxumBody::new),
        Err(e) => (e.status(), e.public_message()).into_response(),
    }
}

async fn start_front_with(proxy: Proxy, upstream: Upstream, trusted: bool) -> SocketAddr {
    let st = FrontState {
        proxy,
        upstream: Arc::new(upstream),
        trusted,
    };
    let app = Router::new().fallback(front_handler).with_state(st);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("front");
    });
    addr
}

async fn start_front(upstream: Upstream) -> SocketAddr {
    start_front_with(proxy(), upstream, false).await
}

/// Shared signals between a test and its echo upstream.
#[derive(Default)]
struct Signals {
    upstream_got_first: Notify,
    client_got_first: Notify,
}

/// `METHOD URI VERSION` then one `name: value` line per header received.
async fn echo(req: Request) -> String {
    let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for (n, v) in req.headers() {
        out.push_str(&format!(
            "{}: {}\n",
            n,
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    out
}

async fn stream_echo(State(s): State<Arc<Signals>>, req: Request) -> Response {
    let chunked = req
        .headers()
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v == "chunked");
    let mut body = req.into_body();
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut first = true;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if first {
                    s.upstream_got_first.notify_one();
                    first = false;
                }
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut resp = Response::new(AxumBody::new(ChanBody(rx)));
    resp.headers_mut().insert(
        "x-request-was-chunked",
        HeaderValue::from_static(if chunked { "yes" } else { "no" }),
    );
    resp
}

async fn download(State(s): State<Arc<Signals>>) -> Response {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        if tx.send(pattern(0, CHUNK)).await.is_err() {
            return;
        }
        // The rest only exists once the client has seen the first chunk through the proxy.
        if tokio::time::timeout(STEP, s.client_got_first.notified())
            .await
            .is_err()
        {
            return;
        }
        let mut off = CHUNK;
        while off < TOTAL {
            if tx.send(pattern(off, CHUNK)).await.is_err() {
                return;
            }
            off += CHUNK;
        }
    });
    Response::new(AxumBody::new(ChanBody(rx)))
}

/// Reads the whole body after a delay-free upload and answers with its length.
async fn count(req: Request) -> String {
    let body = req.into_body().collect().await.expect("body").to_bytes();
    format!("{}", body.len())
}

async fn set_cookie() -> Response {
    let mut r = "ok".into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("__Host-portcullis=evil; Path=/"),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("__Host-portcullis-login-1=x"),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("app=1; Path=/"),
    );
    r
}

fn upstream_app(signals: Arc<Signals>) -> Router {
    Router::new()
        .route("/stream-echo", post(stream_echo))
        .route("/download", get(download))
        .route("/count", post(count))
        .route("/set-cookie", get(set_cookie))
        .fallback(any(echo))
        .with_state(signals)
}

async fn start_echo_upstream() -> (SocketAddr, Arc<Signals>) {
    let signals = Arc::new(Signals::default());
    let app = upstream_app(signals.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream") });
    (addr, signals)
}

/// Values of `name` in an echo.
fn values(echo: &str, name: &str) -> Vec<String> {
    echo.lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// HTTP/1.1 client connection (hyper, low level: exact headers, no pool).
async fn h1_send<B>(
    addr: SocketAddr,
    req: http::Request<B>,
) -> http::Response<hyper::body::Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send.send_request(req).await.expect("response")
}

/// HTTP/2 (prior knowledge) client connection.
async fn h2_send<B>(
    addr: SocketAddr,
    req: http::Request<B>,
) -> http::Response<hyper::body::Incoming>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    send.send_request(req).await.expect("response")
}

async fn text(resp: http::Response<hyper::body::Incoming>) -> String {
    let b = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

fn get_req(path: &str, host: &str) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header(header::HOST, host)
        .body(Empty::new())
        .expect("request")
}

/// Raw HTTP/1.1 exchange with exact request bytes; the request must ask to close.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn body_of(raw: &str) -> &str {
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn head_of(raw: &str) -> String {
    raw.split_once("\r\n\r\n")
        .map(|(h, _)| h)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Reads one request head (up to the blank line) from a raw connection.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.expect("read");
        assert_ne!(n, 0, "eof inside head");
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A raw upstream answering each connection with `response` and reporting the request head.
async fn start_raw_upstream(
    response: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let head = read_head(&mut tcp).await;
                let _ = tx.send(head);
                let _ = tcp.write_all(response.as_bytes()).await;
                // Echo whatever follows (used after a 101).
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

/// 8 MiB up and back, chunked: the upstream must see the first chunk while the client still
/// holds the rest (a buffering proxy deadlocks here), and the echo must come back intact.
#[tokio::test]
async fn streams_large_upload_without_buffering() {
    let (up, signals) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;

    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let req = http::Request::post("/stream-echo")
        .header(header::HOST, "app.example")
        .body(ChanBody(rx))
        .expect("request");
    let response = tokio::spawn(h1_send(front, req));

    tx.send(pattern(0, CHUNK)).await.expect("first chunk");
    tokio::time::timeout(STEP, signals.upstream_got_first.notified())
        .await
        .expect("upstream saw the first chunk before the upload finished");
    let sender = tokio::spawn(async move {
        let mut off = CHUNK;
        while off < TOTAL {
            tx.send(pattern(off, CHUNK)).await.expect("chunk");
            off += CHUNK;
        }
    });

    let resp = tokio::time::timeout(STEP, response)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["x-request-was-chunked"],
        "yes",
        "no Content-Length was invented"
    );
    let mut body = resp.into_body();
    let mut received = 0usize;
    while let Some(frame) = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("in time")
    {
        if let Ok(data) = frame.expect("frame").into_data() {
            assert_eq!(
                data,
                pattern(received, data.len()),
                "bytes at offset {received}"
            );
            received += data.len();
        }
    }
    sender.await.expect("sender");
    assert_eq!(received, TOTAL);
}

/// 8 MiB download: the client sees the first chunk before the upstream has produced the rest.
#[tokio::test]
async fn streams_large_download_without_buffering() {
    let (up, signals) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;

    let resp = h1_send(front, get_req("/download", "app.example")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
    let mut body = resp.into_body();
    let mut received = 0usize;
    while let Some(frame) = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("in time")
    {
        if let Ok(data) = frame.expect("frame").into_data() {
            if received == 0 {
                signals.client_got_first.notify_one();
            }
            assert_eq!(data, pattern(received, data.len()));
            received += data.len();
        }
    }
    assert_eq!(received, TOTAL);
}

/// An upload that takes longer than the response-head timeout is not cut off: the timer is
/// suspended while the body streams and restarts once it is complete.
#[tokio::test]
async fn slow_upload_is_not_a_head_timeout() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, Duration::from_millis(200))).await;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let req = http::Request::post("/count")
        .header(header::HOST, "app.example")
        .body(ChanBody(rx))
        .expect("request");
    let response = tokio::spawn(h1_send(front, req));
    for i in 0..6 {
        tx.send(pattern(i * 10, 10)).await.expect("chunk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let resp = response.await.expect("task");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "60");
}

// ---------------------------------------------------------------------------------------------
// Header rewriting
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn inbound_identity_headers_stripped_in_every_spelling() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let (status, resp) = raw(
        front,
        "GET /id HTTP/1.1\r\n\
         Host: app.example\r\n\
         X-Auth-Request-Email: mallory@evil\r\n\
         x-auth-request-email: m2@evil\r\n\
         X_Auth_Request_Email: m3@evil\r\n\
         x.auth.request.email: m4@evil\r\n\
         X-AUTH-REQUEST-GROUPS: admins\r\n\
         Portcullis-Jwt-Assertion: forged\r\n\
         PORTCULLIS_JWT_ASSERTION: forged\r\n\
         X-Forwarded-User: mallory\r\n\
         X_Forwarded_Email: mallory@evil\r\n\
         X-Forwarded-Groups: admins\r\n\
         X-Forwarded-Preferred-Username: mallory\r\n\
         X-Remote-User: mallory\r\n\
         Remote-User: mallory\r\n\
         X-Original-URL: /admin\r\n\
         X-App-Header: kept\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let echo = body_of(&resp);
    assert_eq!(values(echo, "x-auth-request-user"), ["alice"]);
    assert_eq!(values(echo, "x-auth-request-email"), ["alice@example.com"]);
    assert_eq!(values(echo, "x-auth-request-groups"), ["admins,devs"]);
    assert_eq!(
        values(echo, "portcullis-jwt-assertion"),
        ["signed.jwt.value"]
    );
    for gone in [
        "x_auth_request_email",
        "x.auth.request.email",
        "portcullis_jwt_assertion",
        "x-forwarded-user",
        "x_forwarded_email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-remote-user",
        "remote-user",
        "x-original-url",
    ] {
        assert!(
            values(echo, gone).is_empty(),
            "{gone} reached the upstream:\n{echo}"
        );
    }
    assert_eq!(values(echo, "x-app-header"), ["kept"]);
    assert!(
        !echo.contains("mallory") && !echo.contains("forged"),
        "{echo}"
    );
}

/// `Connection: x-auth-request-user` must not remove the header the gateway adds, nor let the
/// client's copy through.
#[tokio::test]
async fn connection_nomination_cannot_remove_added_identity() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let (status, resp) = raw(
        front,
        "GET /id HTTP/1.1\r\n\
         Host: app.example\r\n\
         X-Auth-Request-User: mallory\r\n\
         Connection: close, x-auth-request-user, Portcullis-Jwt-Assertion, X-Forwarded-For\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let echo = body_of(&resp);
    assert_eq!(values(echo, "x-auth-request-user"), ["alice"]);
    assert_eq!(
        values(echo, "portcullis-jwt-assertion"),
        ["signed.jwt.value"]
    );
    assert_eq!(values(echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert!(values(echo, "connection").is_empty());
}

#[tokio::test]
async fn hop_by_hop_removed_both_ways() {
    let (up, mut heads) = start_raw_upstream(
        "HTTP/1.1 200 OK\r\n\
         Connection: x-internal, keep-alive\r\n\
         Keep-Alive: timeout=5\r\n\
         X-Internal: secret\r\n\
         Proxy-Authenticate: Basic\r\n\
         Trailer: x-checksum\r\n\
         Set-Cookie: __Host-portcullis=evil\r\n\
         Set-Cookie: app=1\r\n\
         X-App: yes\r\n\
         Content-Length: 2\r\n\r\nok",
    )
    .await;
    let front = start_front(upstream_at(up, STEP)).await;
    let (status, resp) = raw(
        front,
        "GET /hop HTTP/1.1\r\n\
         Host: app.example\r\n\
         Connection: close, X-Secret-Hop\r\n\
         X-Secret-Hop: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         TE: trailers, deflate\r\n\
         Upgrade: h2c\r\n\
         Expect: 100-continue\r\n\
         X-App: kept\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(body_of(&resp), "ok");

    let req_head = heads
        .recv()
        .await
        .expect("request head")
        .to_ascii_lowercase();
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
        "expect",
        "deflate",
    ] {
        assert!(
            !req_head.contains(gone),
            "{gone} reached the upstream:\n{req_head}"
        );
    }
    assert!(req_head.contains("\r\nte: trailers\r\n"), "{req_head}");
    assert!(req_head.contains("\r\nx-app: kept\r\n"), "{req_head}");

    let resp_head = head_of(&resp);
    for gone in [
        "x-internal",
        "keep-alive",
        "proxy-authenticate",
        "trailer:",
        "__host-portcullis",
    ] {
        assert!(
            !resp_head.contains(gone),
            "{gone} reached the client:\n{resp_head}"
        );
    }
    assert!(resp_head.contains("\r\nx-app: yes"), "{resp_head}");
    assert!(resp_head.contains("\r\nset-cookie: app=1"), "{resp_head}");
}

#[tokio::test]
async fn forwarded_headers_untrusted_peer() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let req = http::Request::get("/xff")
        .header(header::HOST, "app.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-port", "1")
        .header("x_forwarded_for", "198.51.100.1")
        .header("forwarded", "for=198.51.100.1;proto=https")
        .header("x-real-ip", "198.51.100.1")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let echo = text(h1_send(front, req).await).await;
    assert_eq!(
        values(&echo, "x-forwarded-for"),
        ["127.0.0.1"],
        "untrusted XFF replaced"
    );
    assert_eq!(values(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&echo, "x-forwarded-host"), ["app.example"]);
    assert_eq!(values(&echo, "x-forwarded-port"), ["80"]);
    assert_eq!(
        values(&echo, "host"),
        ["app.example"],
        "Host is the original host"
    );
    for gone in ["x_forwarded_for", "forwarded", "x-real-ip"] {
        assert!(values(&echo, gone).is_empty(), "{gone}:\n{echo}");
    }
    assert!(echo.starts_with("GET /xff HTTP/1.1"), "{echo}");
}

#[tokio::test]
async fn forwarded_headers_trusted_peer_appends() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front_with(proxy(), upstream_at(up, STEP), true).await;
    let req = http::Request::get("/xff")
        .header(header::HOST, "app.example:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let echo = text(h1_send(front, req).await).await;
    assert_eq!(values(&echo, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(values(&echo, "x-forwarded-host"), ["app.example:8080"]);
    assert_eq!(values(&echo, "x-forwarded-port"), ["8080"]);
}

#[tokio::test]
async fn gateway_cookies_stripped_app_cookies_kept() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let req = http::Request::get("/cookies")
        .header(header::HOST, "app.example")
        .header(
            header::COOKIE,
            "app=1; __Host-portcullis=SESSION; theme=dark",
        )
        .header(header::COOKIE, "__Host-portcullis-login-7=STATE")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let echo = text(h1_send(front, req).await).await;
    assert_eq!(values(&echo, "cookie"), ["app=1; theme=dark"]);
    assert!(!echo.contains("SESSION") && !echo.contains("STATE"));

    let resp = h1_send(front, get_req("/set-cookie", "app.example")).await;
    let set: Vec<_> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    assert_eq!(
        set,
        [HeaderValue::from_static("app=1; Path=/")],
        "upstream may not set gateway cookies"
    );
}

// ---------------------------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_upgrade_round_trips_bytes() {
    let (up, mut heads) = start_raw_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await;
    let front = start_front(upstream_at(up, STEP)).await;
    let mut tcp = TcpStream::connect(front).await.expect("connect");
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Auth-Request-User: mallory\r\n\r\n",
    )
    .await
    .expect("write");
    let head = tokio::time::timeout(STEP, read_head(&mut tcp))
        .await
        .expect("in time");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("sec-websocket-accept"), "{head}");

    let up_head = heads
        .recv()
        .await
        .expect("upstream head")
        .to_ascii_lowercase();
    assert!(up_head.contains("\r\nupgrade: websocket\r\n"), "{up_head}");
    assert!(up_head.contains("\r\nconnection: upgrade\r\n"), "{up_head}");
    assert!(
        up_head.contains("\r\nx-auth-request-user: alice\r\n"),
        "{up_head}"
    );
    assert!(!up_head.contains("mallory"), "{up_head}");

    for msg in [
        &b"ping-1"[..],
        &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'][..],
        &[7u8; 20000][..],
    ] {
        tcp.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(STEP, tcp.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(back, msg);
    }
}

/// `Upgrade: h2c` would let the client talk h2 straight to the upstream past the gateway's
/// per-request checks; it is dropped and the request forwarded as a plain one.
#[tokio::test]
async fn h2c_upgrade_is_not_carried() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let (status, resp) = raw(
        front,
        "GET /smuggle HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let echo = body_of(&resp);
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(values(echo, gone).is_empty(), "{gone}:\n{echo}");
    }
}

#[tokio::test]
async fn unsolicited_101_is_bad_gateway() {
    let (up, _) = start_raw_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let front = start_front(upstream_at(up, STEP)).await;
    let (status, _) = raw(
        front,
        "GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502);
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let dead = closed_port().await;
    let front = start_front(upstream_at(dead, STEP)).await;
    let (status, resp) = raw(
        front,
        "GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(
        body_of(&resp),
        "Bad Gateway",
        "no internal detail in the body"
    );

    let err = proxy()
        .forward(
            get_req("/", "app.example"),
            &upstream_at(dead, STEP),
            &ctx(dead, Authority::from_static("a"), false),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.category(), "upstream_refused");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn silent_upstream_is_504_after_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let front = start_front(upstream_at(addr, Duration::from_millis(200))).await;
    let started = Instant::now();
    let (status, resp) = raw(
        front,
        "GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 504, "{resp}");
    assert_eq!(body_of(&resp), "Gateway Timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let err = proxy()
        .forward(
            get_req("/", "app.example"),
            &upstream_at(addr, Duration::from_millis(200)),
            &ctx(addr, Authority::from_static("a"), false),
        )
        .await
        .expect_err("timeout");
    assert!(matches!(err, ProxyError::Timeout(_)));
    assert_eq!(err.category(), "upstream_timeout");
}

// ---------------------------------------------------------------------------------------------
// TLS and HTTP/2
// ---------------------------------------------------------------------------------------------

struct TestPki {
    ca_pem: String,
    leaf_der: rustls::pki_types::CertificateDer<'static>,
    leaf_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "portcullis test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::from_params(&ca, &ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    TestPki {
        ca_pem: ca_cert.pem(),
        leaf_der: leaf.der().clone(),
        leaf_key: rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    }
}

/// The echo app behind rustls, speaking h2 or HTTP/1.1 as ALPN decides.
async fn start_tls_upstream(pki: &TestPki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf_der.clone()], pki.leaf_key.clone_key())
        .expect("server cert");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let app = upstream_app(Arc::new(Signals::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstream_with_test_ca_speaks_h2() {
    let pki = pki();
    let up = start_tls_upstream(&pki).await;
    let proxy = Proxy::new(ProxyConfig {
        native_roots: false,
        extra_roots_pem: Some(pki.ca_pem.clone().into_bytes()),
        ..ProxyConfig::default()
    })
    .expect("proxy");
    let upstream =
        Upstream::from_url(&format!("https://localhost:{}", up.port()), STEP).expect("upstream");
    let front = start_front_with(proxy, upstream, false).await;

    let req = http::Request::get("/tls?x=1")
        .header(header::HOST, "app.example")
        .header("x-auth-request-user", "mallory")
        .header(header::COOKIE, "__Host-portcullis=S; app=1")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = h1_send(front, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = text(resp).await;
    let first = echo.lines().next().unwrap_or_default();
    assert!(first.ends_with("HTTP/2.0"), "ALPN picked h2: {first}");
    assert!(
        first.contains(&format!("https://localhost:{}/tls?x=1", up.port())),
        "{first}"
    );
    assert_eq!(values(&echo, "x-auth-request-user"), ["alice"]);
    assert_eq!(values(&echo, "x-forwarded-host"), ["app.example"]);
    assert_eq!(values(&echo, "cookie"), ["app=1"]);
}

#[tokio::test]
async fn https_upstream_with_unknown_ca_is_tls_error() {
    let pki = pki();
    let up = start_tls_upstream(&pki).await;
    let upstream =
        Upstream::from_url(&format!("https://localhost:{}", up.port()), STEP).expect("upstream");
    let err = proxy()
        .forward(
            get_req("/", "app.example"),
            &upstream,
            &ctx(up, Authority::from_static("a"), false),
        )
        .await
        .expect_err("untrusted");
    assert_eq!(err.category(), "upstream_tls", "{}", err.chain());
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

/// An h2 client (`:authority`, no `Host`, cookies split over several headers) reaching an
/// HTTP/1.1 upstream: origin-form target, `Host` from `:authority`, one `Cookie` line.
#[tokio::test]
async fn h2_inbound_to_h1_upstream() {
    let (up, _) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let req = http::Request::get("http://app.example/h2/path?q=1")
        .version(http::Version::HTTP_2)
        .header(header::COOKIE, "app=1")
        .header(header::COOKIE, "__Host-portcullis=S")
        .header(header::COOKIE, "theme=dark")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = h2_send(front, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let echo = text(resp).await;
    assert!(echo.starts_with("GET /h2/path?q=1 HTTP/1.1\n"), "{echo}");
    assert_eq!(values(&echo, "host"), ["app.example"]);
    assert_eq!(values(&echo, "x-forwarded-host"), ["app.example"]);
    assert_eq!(values(&echo, "cookie"), ["app=1; theme=dark"]);
    assert_eq!(values(&echo, "x-auth-request-user"), ["alice"]);
}

/// Large upload from an h2 client through to an h1 upstream streams too.
#[tokio::test]
async fn h2_inbound_upload_streams() {
    let (up, signals) = start_echo_upstream().await;
    let front = start_front(upstream_at(up, STEP)).await;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let req = http::Request::post("http://app.example/stream-echo")
        .version(http::Version::HTTP_2)
        .body(ChanBody(rx))
        .expect("request");
    let response = tokio::spawn(h2_send(front, req));
    tx.send(pattern(0, CHUNK)).await.expect("first");
    tokio::time::timeout(STEP, signals.upstream_got_first.notified())
        .await
        .expect("streamed");
    let sender = tokio::spawn(async move {
        let mut off = CHUNK;
        while off < TOTAL {
            tx.send(pattern(off, CHUNK)).await.expect("chunk");
            off += CHUNK;
        }
    });
    let resp = tokio::time::timeout(STEP, response)
        .await
        .expect("in time")
        .expect("task");
    let body = tokio::time::timeout(STEP, resp.into_body().collect())
        .await
        .expect("in time")
        .expect("body");
    sender.await.expect("sender");
    let bytes = body.to_bytes();
    assert_eq!(bytes.len(), TOTAL);
    assert_eq!(bytes, pattern(0, TOTAL));
}
