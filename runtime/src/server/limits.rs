//! What every listener bounds, so that no client can hold the server's connections: how long a
//! TLS handshake, a request head and an idle connection may take, how large a request head may
//! be, and how many connections one client may hold at once.
//!
//! A slow client ("slowloris") opens connections and sends a request head a byte at a time, or
//! not at all; without these bounds each such connection is held for as long as the client
//! likes, and a few hundred of them starve everyone else.

use crate::parse_duration;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

/// Bounds on every connection of a listener (flags shared by the gateway and the operator).
#[derive(Clone, Debug, clap::Args)]
pub struct ConnectionLimits {
    /// A TLS handshake that takes longer is dropped.
    #[arg(long, env = "PORTCULLIS_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// A request head (request line and every header) must arrive within this time; so must
    /// the first request of a new connection (HTTP/1 and HTTP/2), and the next request of an
    /// HTTP/1 keep-alive connection once the client starts waiting.
    #[arg(long, env = "PORTCULLIS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    #[arg(long, env = "PORTCULLIS_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Largest request head accepted, in bytes (HTTP/1: the read buffer; HTTP/2: the header
    /// list). A larger one is refused (HTTP/1: 431; HTTP/2: the stream is reset).
    #[arg(long, env = "PORTCULLIS_MAX_REQUEST_HEAD_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_request_head_bytes: u32,
    /// Most connections one client address (an IPv4 address, or an IPv6 /64) may hold open at
    /// once; more are closed at once. Peers exempted by the caller (the gateway's trusted
    /// proxies, which carry many clients) are not limited. 0: no limit.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256
    )]
    pub max_connections_per_client: usize,
    /// HTTP/2: a PING is sent after this long without a frame from the client...
    #[arg(long, env = "PORTCULLIS_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// ...and the connection is closed when its answer takes longer than this.
    #[arg(long, env = "PORTCULLIS_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_request_head_bytes: 65_536,
            max_connections_per_client: 256,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionLimits {
    /// A connection builder (HTTP/1.1 and HTTP/2) enforcing these limits.
    pub(super) fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's smallest read buffer is 8 KiB; the flag's range refuses less.
        let head = usize::try_from(self.max_request_head_bytes).unwrap_or(usize::MAX);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(head.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.max_request_head_bytes)
            .keep_alive_interval(Some(self.http2_keepalive_interval))
            .keep_alive_timeout(self.http2_keepalive_timeout);
        builder
    }
}

/// Why the server closed a connection itself: the `reason` label of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Closed {
    /// The client already held as many connections as it may.
    ClientLimit,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// A request head (or the first request) did not arrive in time.
    HeaderTimeout,
    /// No request was in flight for the idle timeout.
    Idle,
}

impl Closed {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientLimit => "client_limit",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
        }
    }
}

/// Told of every connection the server closes itself (to count it).
pub type OnClose = Arc<dyn Fn(Closed) + Send + Sync>;

/// Open connections per client, for [`ConnectionLimits::max_connections_per_client`]. Holds an
/// entry only while its client has a connection open, so its size is bounded by the open
/// connections.
pub(super) struct PerClient {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; gives its place back when dropped.
pub(super) struct Slot {
    counter: Arc<PerClient>,
    key: IpAddr,
}

impl PerClient {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` when it holds the most it may.
    /// `Some(None)` when there is no limit.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<Slot>> {
        if self.max == 0 {
            return Some(None);
        }
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(Slot {
            counter: self.clone(),
            key,
        }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What connections are counted under: an IPv4 address (also when written as IPv4-mapped
/// IPv6), or the /64 an IPv6 address lies in — one host is usually given a whole /64, so
/// counting single IPv6 addresses would limit nothing.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_client_gets_at_most_max_slots_and_gets_them_back() {
        let limit = PerClient::new(2);
        let a = limit.admit(ip("192.0.2.1")).expect("first");
        let b = limit.admit(ip("192.0.2.1")).expect("second");
        assert!(limit.admit(ip("192.0.2.1")).is_none(), "third is refused");
        assert!(
            limit.admit(ip("192.0.2.2")).is_some(),
            "another client is not"
        );
        drop(a);
        assert!(
            limit.admit(ip("192.0.2.1")).is_some(),
            "a closed one frees a place"
        );
        drop(b);
    }

    #[test]
    fn entries_vanish_with_their_last_connection() {
        let limit = PerClient::new(1);
        let slot = limit.admit(ip("2001:db8::1")).expect("slot");
        assert_eq!(limit.open.lock().expect("lock").len(), 1);
        drop(slot);
        assert!(limit.open.lock().expect("lock").is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let limit = PerClient::new(1);
        let _held = limit.admit(ip("2001:db8:1:2::1")).expect("slot");
        assert!(
            limit.admit(ip("2001:db8:1:2:ffff::9")).is_none(),
            "same /64"
        );
        assert!(limit.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        let _v4 = limit.admit(ip("198.51.100.7")).expect("v4");
        assert!(limit.admit(ip("::ffff:198.51.100.7")).is_none(), "mapped");
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = PerClient::new(0);
        for _ in 0..1000 {
            assert!(matches!(limit.admit(ip("192.0.2.1")), Some(None)));
        }
    }
}
