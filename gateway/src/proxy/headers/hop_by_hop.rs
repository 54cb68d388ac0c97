//! Step 1 of the rewrite, and the `Connection` / `Upgrade` token parsing the proxy's upgrade
//! decision shares with it: what describes one connection and must not cross the gateway.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// proxy-auth pair and the non-standard `Proxy-Connection` / `Keep-Alive`.
/// `TE` and `Upgrade` are handled separately: `TE: trailers` and a permitted upgrade survive.
pub(super) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Tokens of every `Connection` value, lower-cased.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| std::str::from_utf8(t).ok())
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether the `Connection` header(s) carry `token`.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).iter().any(|t| t == token)
}

/// Upgrade protocols named in an `Upgrade` value, lower-cased, without versions (`websocket`,
/// `h2c`, ...).
pub(crate) fn upgrade_protocols(value: &HeaderValue) -> Vec<String> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .filter_map(|t| std::str::from_utf8(t).ok())
        .map(|t| {
            t.trim()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Removes hop-by-hop headers and every header nominated by `Connection`. `TE` is removed too,
/// and reported back when it asked for trailers (that one value is end-to-end in effect: gRPC
/// needs it). `Upgrade` is removed; callers re-add it for an upgrade they allow.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let nominated = connection_tokens(headers);
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| {
            let t = String::from_utf8_lossy(t);
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("trailers")
        });
    for name in nominated {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TE);
    headers.remove(header::UPGRADE);
    te_trailers
}
