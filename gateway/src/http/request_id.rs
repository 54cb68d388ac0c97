//! Request ids: one per request on the HTTPS listener, written to the access log, passed to the
//! upstream and returned to the client as `X-Request-Id`, so a user's report, the gateway's log
//! line and the app's log line can be joined.
//!
//! An id sent by a configured trusted proxy (an ingress controller that made one) is kept, so
//! the chain keeps one id end to end; from anyone else it is replaced: a client must not be able
//! to plant an id that collides with, or forges, another request's log lines.

use crate::settings::Settings;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::{
    net::IpAddr,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// The header carrying the id, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept from a trusted proxy (UUIDs are 36, W3C trace ids 32).
const MAX_LEN: usize = 128;

/// The id of the request whose headers are `headers`, arriving from `peer`: the trusted proxy's
/// when it sent a well-formed one, else a new one. Written into `headers` (so the upstream gets
/// it), and returned for the log and the response.
pub fn assign(settings: &Settings, peer: IpAddr, headers: &mut HeaderMap) -> HeaderValue {
    if settings.is_trusted_proxy(peer) {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(value), None) = (sent.next(), sent.next())
            && well_formed(value.as_bytes())
        {
            return value.clone();
        }
    }
    let id = generate();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// ASCII letters, digits and `-_.:`, 1 to 128 of them: nothing that could split a log line or
/// a header.
fn well_formed(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new id: this process's random 64-bit prefix and a counter, 32 hex digits. Unique without a
/// random draw per request; not a secret (it is shown to the client).
fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix:016x}{n:016x}");
    // 32 hex digits are always a valid header value.
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::AccessLogSettings;
    use portcullis_core::Host;

    fn settings() -> Settings {
        Settings {
            auth_host: Host::parse("auth.example.test").expect("host"),
            public_port: 443,
            sso_lifetime: std::time::Duration::from_secs(60),
            trusted_proxies: vec!["10.0.0.0/8".parse().expect("cidr")],
            login_rate: crate::rate_limit::Rate {
                per_second: 5.0,
                burst: 50,
                clients: 1000,
            },
            access_log: AccessLogSettings::default(),
        }
    }

    #[test]
    fn a_trusted_proxys_id_is_kept_anyone_elses_replaced() {
        let s = settings();
        let mut from_proxy = HeaderMap::new();
        from_proxy.insert(X_REQUEST_ID, HeaderValue::from_static("ingress-42"));
        let id = assign(&s, "10.1.2.3".parse().expect("ip"), &mut from_proxy);
        assert_eq!(id, "ingress-42");

        let mut from_client = HeaderMap::new();
        from_client.insert(X_REQUEST_ID, HeaderValue::from_static("ingress-42"));
        let id = assign(&s, "192.0.2.1".parse().expect("ip"), &mut from_client);
        assert_ne!(id, "ingress-42");
        assert_eq!(from_client.get(X_REQUEST_ID), Some(&id));
        assert_eq!(from_client.get_all(X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn malformed_or_repeated_ids_from_a_proxy_are_replaced() {
        let s = settings();
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        for bad in ["", "a b", "a\"b", "é", &"x".repeat(MAX_LEN + 1)] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                h.insert(X_REQUEST_ID, v);
            }
            let id = assign(&s, proxy, &mut h);
            assert_eq!(id.len(), 32, "{bad:?}");
        }
        let mut twice = HeaderMap::new();
        twice.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        twice.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        let id = assign(&s, proxy, &mut twice);
        assert_eq!(id.len(), 32);
        assert_eq!(twice.get_all(X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn generated_ids_are_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(well_formed(a.as_bytes()));
    }
}
