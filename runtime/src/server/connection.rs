//! One accepted connection: TLS handshake (bounded), then HTTP served until the client leaves,
//! the server shuts down, or the connection has carried no request for too long.
//!
//! hyper bounds an HTTP/1 request head itself (`header_read_timeout`), but nothing bounds a
//! connection that has not yet sent its first request (an HTTP/2 client that never opens a
//! stream, a client that sends too little to tell the protocol) nor an HTTP/2 connection that
//! keeps answering PINGs and asks for nothing. So every connection counts its requests in
//! flight, and a watchdog closes it gracefully once it has had none for the header-read
//! timeout before its first request, or the idle timeout after one.

use super::{
    fragment::{FragmentWatch, Marked},
    limits::{Closed, ConnectionLimits, OnClose, Slot},
};
use crate::shutdown::Signal;
use axum::{Router, body::Body};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{net::TcpStream, sync::watch, time::Instant};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::debug;

/// Requests on one connection, counted without waking anyone: the watchdog ([`idle`]) reads
/// the counts when its own deadline comes. Waking it at every request's start and end (as a
/// watch channel would) cost two wake-ups and a timer re-registration per request, on the
/// hottest path; a connection that stays busy now costs the watchdog one look per idle period.
#[derive(Debug)]
struct Activity {
    /// Requests in flight.
    in_flight: AtomicUsize,
    /// Requests begun.
    started: AtomicU64,
    /// When the last request in flight ended: milliseconds since `opened`, rounded up.
    last_end_ms: AtomicU64,
    opened: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }

    /// When the last request ended, as the watchdog counts time.
    fn last_end(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire))
    }
}

/// A request in flight, until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The end is stored before the count drops: a watchdog that sees no request in flight
        // also sees when the last one ended.
        let ended = self.0.opened.elapsed().as_millis().saturating_add(1);
        self.0
            .last_end_ms
            .fetch_max(u64::try_from(ended).unwrap_or(u64::MAX), Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a served connection needs besides its socket.
pub(super) struct Connection<E> {
    pub builder: auto::Builder<TokioExecutor>,
    pub limits: Arc<ConnectionLimits>,
    pub peer: SocketAddr,
    pub peer_extension: fn(SocketAddr) -> E,
    pub router: Router,
    pub shutdown: Signal,
    pub on_close: OnClose,
    /// The client's place under the per-client limit, held as long as the connection.
    pub slot: Option<Slot>,
    /// Held while the connection is open; the server waits for every copy to be dropped.
    pub alive: watch::Receiver<()>,
}

impl<E: Clone + Send + Sync + 'static> Connection<E> {
    /// Serves `stream` (after a TLS handshake when `acceptor` is given) on a task of its own.
    pub(super) fn spawn(self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let marked = Marked::default();
            match acceptor {
                None => {
                    let io = FragmentWatch::new(stream, marked.clone());
                    self.serve(TokioIo::new(io), marked).await;
                }
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(self.limits.tls_handshake_timeout, handshake).await {
                        Ok(Ok(tls)) => {
                            let io = FragmentWatch::new(tls, marked.clone());
                            self.serve(TokioIo::new(io), marked).await;
                        }
                        Ok(Err(error)) => debug!(peer = %self.peer, %error, "TLS handshake failed"),
                        Err(_) => {
                            debug!(peer = %self.peer, "TLS handshake timed out");
                            (self.on_close)(Closed::HandshakeTimeout);
                        }
                    }
                }
            }
        });
    }

    /// Serves HTTP on `io` until it ends; closes it gracefully at shutdown or when idle.
    /// A request on a connection `marked` for a fragment in a request target is refused.
    async fn serve<I>(self, io: I, marked: Marked)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Self {
            builder,
            limits,
            peer,
            peer_extension,
            router,
            mut shutdown,
            on_close,
            slot,
            alive: _alive,
        } = self;
        // The socket carries its place with it, also into an upgraded connection (a
        // WebSocket), which outlives this function. The drain waits for HTTP only, as before.
        let io = Held { io, _slot: slot };
        let activity = Arc::new(Activity::new());
        let watched = activity.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(peer_extension(peer));
            let in_flight = InFlight::begin(&activity);
            let router = router.clone();
            let refused = marked.is_set();
            async move {
                if refused {
                    debug!(%peer, "refusing a request: a request target on this connection held a fragment");
                    return Ok(fragment_refused());
                }
                let response = router.oneshot(req).await?;
                // The request stays in flight until its response body is done with.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _held = &in_flight;
                        frame
                    }))
                }))
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        let mut conn = std::pin::pin!(conn);
        let closing = tokio::select! {
            result = conn.as_mut() => return log_end(peer, result, Some(&on_close)),
            () = shutdown.wait() => None,
            reason = idle(watched, limits.header_read_timeout, limits.idle_timeout) => Some(reason),
        };
        if let Some(reason) = closing {
            debug!(%peer, reason = reason.label(), "closing the connection");
            on_close(reason);
        }
        conn.as_mut().graceful_shutdown();
        // A close already counted is not counted again when hyper's own timeout ends it.
        let count = closing.is_none().then_some(&on_close);
        log_end(peer, conn.await, count);
    }
}

/// The answer to every request on a connection that sent a request target with a fragment:
/// 400, and the connection closed after it.
fn fragment_refused() -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(
        "Bad request: a request target must not contain a fragment ('#').\n",
    ));
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// A connection's socket with its place under the per-client limit, held while it is open.
struct Held<I> {
    io: I,
    _slot: Option<Slot>,
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Held<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Held<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Resolves once the connection has had no request in flight for `first` before its first
/// request, or for `idle` after one. It sleeps until the earliest moment that could be true and
/// looks then, so requests never wake it.
async fn idle(activity: Arc<Activity>, first: Duration, idle: Duration) -> Closed {
    let mut deadline = activity.opened + first;
    loop {
        tokio::time::sleep_until(deadline).await;
        if activity.started.load(Ordering::Acquire) == 0 {
            return Closed::HeaderTimeout;
        }
        let now = Instant::now();
        deadline = if activity.in_flight.load(Ordering::Acquire) > 0 {
            now + idle
        } else {
            let due = activity.last_end() + idle;
            if due <= now {
                return Closed::Idle;
            }
            due
        };
    }
}

/// Logs how a served connection ended, and counts hyper's own header-read timeout (to
/// `on_close`, when given).
fn log_end(
    peer: SocketAddr,
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    on_close: Option<&OnClose>,
) {
    let Err(error) = result else {
        return;
    };
    if error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
    {
        debug!(%peer, "request head not received in time");
        if let Some(on_close) = on_close {
            on_close(Closed::HeaderTimeout);
        }
    } else {
        debug!(%peer, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_connection_without_a_request_is_cut_at_the_first_deadline() {
        let started = std::time::Instant::now();
        let activity = Arc::new(Activity::new());
        assert_eq!(idle(activity, FIRST, IDLE).await, Closed::HeaderTimeout);
        assert!(started.elapsed() < IDLE);
    }

    #[tokio::test]
    async fn a_request_in_flight_is_never_idle_and_idleness_counts_from_its_end() {
        let activity = Arc::new(Activity::new());
        let request = InFlight::begin(&activity);
        let watchdog = tokio::spawn(idle(activity.clone(), FIRST, IDLE));
        tokio::time::sleep(IDLE * 2).await;
        assert!(!watchdog.is_finished(), "cut while a request was in flight");
        let ended = std::time::Instant::now();
        drop(request);
        assert_eq!(watchdog.await.expect("watchdog"), Closed::Idle);
        assert!(ended.elapsed() >= IDLE - Duration::from_millis(20));
    }

    #[tokio::test]
    async fn each_new_request_restarts_the_idle_clock() {
        let activity = Arc::new(Activity::new());
        let watchdog = tokio::spawn(idle(activity.clone(), FIRST, IDLE));
        for _ in 0..5 {
            drop(InFlight::begin(&activity));
            tokio::time::sleep(IDLE / 3).await;
        }
        assert!(!watchdog.is_finished(), "cut although requests kept coming");
        assert_eq!(watchdog.await.expect("watchdog"), Closed::Idle);
    }
}
