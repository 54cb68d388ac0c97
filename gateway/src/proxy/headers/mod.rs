//! Header rewriting, as pure functions over `HeaderMap`s so each rule is unit-testable.
//!
//! Order matters and is fixed by `rewrite_request`:
//! 1. hop-by-hop removal, including every header *named* in `Connection:`;
//! 2. removal of every inbound identity / forwarding-metadata header in every spelling;
//! 3. removal of gateway-owned cookies;
//! 4. only then the headers the gateway vouches for are added.
//!
//! Because nothing is removed after step 4, a client can neither get an added header removed
//! (`Connection: x-auth-request-user`) nor smuggle its own copy past the strip (`X_Auth_Request_User`
//! for upstreams that fold `_` into `-`).

use std::{net::SocketAddr, sync::Arc};

use http::{
    HeaderMap, HeaderName, HeaderValue, header,
    uri::{Authority, Scheme},
};

use super::error::ProxyError;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// proxy-auth pair and the non-standard `Proxy-Connection` / `Keep-Alive`.
/// `TE` and `Upgrade` are handled separately: `TE: trailers` and a permitted upgrade survive.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Name prefixes (after [`normalize_name`]) that carry identity or forwarding metadata which
/// upstreams commonly trust. No client may set them; the gateway adds its own after stripping.
const RESERVED_PREFIXES: &[&str] = &[
    "x-auth-request-",            // oauth2-proxy, ingress-nginx auth-request
    "portcullis-",                // ours (Portcullis-Jwt-Assertion, ...)
    "x-forwarded-", // -User/-Email/-Groups/-Preferred-Username/-Access-Token, -Proto/-Host/-Port/-Prefix/-Uri ...
    "x-remote-",    // X-Remote-User/-Group (Kubernetes auth proxy, Apache)
    "remote-",      // Authelia: Remote-User/-Groups/-Email/-Name
    "x-webauth-",   // Grafana auth proxy default
    "x-pomerium-",  // Pomerium
    "x-authenticated-", // X-Authenticated-User/-Groups
    "x-goog-authenticated-user-", // Google IAP
    "x-amzn-oidc-", // AWS ALB
    "x-ms-client-principal", // Azure App Service
    "x-vouch-",     // vouch-proxy
    "x-ssl-client-", // mTLS identity as passed by nginx
    "ssl-client-",  //   ... and its variants
];

/// Exact names (after [`normalize_name`]) with the same role as [`RESERVED_PREFIXES`]:
/// identities, client addresses and "original URL" headers that apps honour for routing (the
/// latter would let a client reach a path other than the one the gateway authorized).
const RESERVED_NAMES: &[&str] = &[
    "x-user",
    "x-email",
    "x-auth-user",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
    "x-jwt-assertion",
    "x-goog-iap-jwt-assertion",
    "x-client-cert",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "forwarded",
    "x-original-url",
    "x-original-uri",
    "x-original-host",
    "x-original-method",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Lower-cases and folds `_` and `.` into `-`: the spellings some upstreams (CGI, PHP, WSGI,
/// several Go and Java frameworks) treat as the same header.
pub fn normalize_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether an inbound header with this name must never reach an upstream as sent by the client.
/// `X-Forwarded-For` in its canonical spelling is *not* reserved here: it is rewritten according
/// to trust (see [`ForwardContext::trusted_forwarded_for`]); every other spelling of it is.
pub fn is_reserved_inbound(name: &HeaderName) -> bool {
    if name == "x-forwarded-for" {
        return false;
    }
    let n = normalize_name(name.as_str());
    RESERVED_NAMES.contains(&n.as_str()) || RESERVED_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// The cookies the gateway owns (session, CSRF, login state). They authenticate the *gateway*;
/// an upstream that saw them could replay them, so they are removed from `Cookie` and an
/// upstream may not set them either (`Set-Cookie` with such a name is dropped, which stops an
/// upstream from fixating or clearing a gateway session).
///
/// Names compare byte-exactly, as browsers do.
#[derive(Clone, Debug, Default)]
pub struct GatewayCookies {
    exact: Arc<[String]>,
    prefixes: Arc<[String]>,
}

impl GatewayCookies {
    /// `exact` names, plus `prefixes` for families like numbered login-state cookies.
    pub fn new<I, J, S, T>(exact: I, prefixes: J) -> Self
    where
        I: IntoIterator<Item = S>,
        J: IntoIterator<Item = T>,
        S: Into<String>,
        T: Into<String>,
    {
        Self {
            exact: exact.into_iter().map(Into::into).collect(),
            prefixes: prefixes
                .into_iter()
                .map(Into::into)
                .filter(|p: &String| !p.is_empty())
                .collect(),
        }
    }

    /// Whether a cookie name belongs to the gateway.
    pub fn owns(&self, name: &[u8]) -> bool {
        self.exact.iter().any(|n| n.as_bytes() == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_bytes()))
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Everything the gateway knows about a request that the upstream should learn from it.
#[derive(Clone, Debug)]
pub struct ForwardContext {
    /// Address of the peer that connected to the gateway.
    pub client_addr: SocketAddr,
    /// Whether that peer is a configured trusted proxy, so its `X-Forwarded-For` is kept and
    /// the peer appended. Otherwise the inbound `X-Forwarded-For` is replaced by the peer alone.
    pub trusted_forwarded_for: bool,
    /// Scheme the client used to reach the gateway (`X-Forwarded-Proto`).
    pub scheme: Scheme,
    /// Host the client asked for (`Host` of HTTP/1, `:authority` of HTTP/2), as the gateway
    /// matched it. Becomes `Host` and `X-Forwarded-Host`; its port (or the scheme's default)
    /// becomes `X-Forwarded-Port`.
    pub host: Authority,
    /// Headers the gateway vouches for (`X-Auth-Request-User`, `Portcullis-Jwt-Assertion`, ...).
    /// Inbound headers with the same normalized names are stripped as well.
    pub identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// Gateway-owned cookies to keep from the upstream.
    pub gateway_cookies: GatewayCookies,
}

/// The result of the Connection/Upgrade analysis of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UpgradeRequest {
    /// The `Upgrade` value to forward.
    pub protocols: HeaderValue,
}

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
fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
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

/// Removes every header for which `pred` holds.
fn retain_headers(headers: &mut HeaderMap, mut drop: impl FnMut(&HeaderName) -> bool) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| drop(n)).cloned().collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Drops gateway-owned cookies from all `Cookie` headers and folds the rest into one header
/// (HTTP/2 clients send one header per cookie; HTTP/1.1 upstreams expect one line, RFC 9113
/// §8.2.3).
fn strip_cookies(headers: &mut HeaderMap, owned: &GatewayCookies) {
    if headers.get(header::COOKIE).is_none() {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let name = pair
                .split(|b| *b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if owned.owns(name) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        // The bytes came out of valid header values and only `; ` was added.
        if let Ok(v) = HeaderValue::from_bytes(&kept) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Rejects control characters (CR, LF, NUL, other C0 except HTAB, DEL) in a value the gateway is
/// about to add. `HeaderValue`'s checked constructors already refuse them; this guards against
/// the unchecked ones and makes the rule explicit where headers are added.
fn checked(name: &HeaderName, value: HeaderValue) -> Result<HeaderValue, ProxyError> {
    if value
        .as_bytes()
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ProxyError::InvalidAddedHeader {
            name: name.to_string(),
            reason: "control character in value",
        });
    }
    Ok(value)
}

/// Headers a caller may never supply as identity headers: framing, routing and hop-by-hop.
fn is_forbidden_identity_name(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || [
            header::HOST,
            header::CONTENT_LENGTH,
            header::TE,
            header::UPGRADE,
            header::COOKIE,
            header::EXPECT,
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("x-forwarded-proto"),
            HeaderName::from_static("x-forwarded-host"),
            HeaderName::from_static("x-forwarded-port"),
        ]
        .contains(name)
}

/// Rewrites the request headers for the upstream; see the module docs for the order.
///
/// `upgrade` is the upgrade the proxy decided to carry through (already checked against the
/// allow-list); every other `Upgrade` is dropped, turning the request into a plain one.
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    ctx: &ForwardContext,
    upgrade: Option<&UpgradeRequest>,
) -> Result<(), ProxyError> {
    // 1. Hop-by-hop, including Connection-nominated names. `Expect` is answered by the server
    //    layer (hyper sends `100 Continue` when the body is first read), so it is not passed on.
    let te_trailers = strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);

    // 2. Identity and forwarding metadata in every spelling, plus any spelling of the names
    //    the caller adds.
    let caller_names: Vec<String> = ctx
        .identity_headers
        .iter()
        .map(|(n, _)| normalize_name(n.as_str()))
        .collect();
    let xff = HeaderName::from_static("x-forwarded-for");
    retain_headers(headers, |name| {
        if is_reserved_inbound(name) {
            return true;
        }
        let n = normalize_name(name.as_str());
        // `x_forwarded_for` & co. would be a second XFF for an upstream that folds `_`.
        (n == "x-forwarded-for" && *name != xff) || caller_names.contains(&n)
    });

    // 3. Gateway cookies.
    if !ctx.gateway_cookies.is_empty() {
        strip_cookies(headers, &ctx.gateway_cookies);
    }

    // 4. What the gateway vouches for.
    let host =
        HeaderValue::from_str(ctx.host.as_str()).map_err(|_| ProxyError::InvalidAddedHeader {
            name: "host".into(),
            reason: "not a header value",
        })?;
    headers.insert(header::HOST, checked(&header::HOST, host.clone())?);

    let peer = ctx.client_addr.ip().to_canonical().to_string();
    let forwarded_for = if ctx.trusted_forwarded_for {
        let mut chain: Vec<String> = headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        chain.push(peer);
        chain.join(", ")
    } else {
        peer
    };
    insert_str(headers, xff, &forwarded_for)?;
    insert_str(
        headers,
        HeaderName::from_static("x-forwarded-proto"),
        ctx.scheme.as_str(),
    )?;
    headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    let port = ctx
        .host
        .port_u16()
        .unwrap_or(if ctx.scheme == Scheme::HTTPS { 443 } else { 80 });
    insert_str(
        headers,
        HeaderName::from_static("x-forwarded-port"),
        &port.to_string(),
    )?;

    for (name, value) in &ctx.identity_headers {
        if is_forbidden_identity_name(name) {
            return Err(ProxyError::InvalidAddedHeader {
                name: name.to_string(),
                reason: "reserved header name",
            });
        }
        // `append`: a caller may send a multi-valued header on purpose.
        headers.append(name.clone(), checked(name, value.clone())?);
    }

    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(
            header::UPGRADE,
            checked(&header::UPGRADE, up.protocols.clone())?,
        );
    }
    Ok(())
}

fn insert_str(headers: &mut HeaderMap, name: HeaderName, value: &str) -> Result<(), ProxyError> {
    let v = HeaderValue::from_str(value).map_err(|_| ProxyError::InvalidAddedHeader {
        name: name.to_string(),
        reason: "not a header value",
    })?;
    let v = checked(&name, v)?;
    headers.insert(name, v);
    Ok(())
}

/// Rewrites response headers for the client: hop-by-hop removal (keeping `Connection: upgrade`
/// and `Upgrade` on a `101` the proxy accepted) and removal of `Set-Cookie` for gateway-owned
/// cookie names.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, switching: bool, owned: &GatewayCookies) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(up) = upgrade {
            headers.insert(header::UPGRADE, up);
        }
    }
    if !owned.is_empty() && headers.contains_key(header::SET_COOKIE) {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| {
                let name = v
                    .as_bytes()
                    .split(|b| *b == b'=')
                    .next()
                    .unwrap_or_default();
                !owned.owns(name.trim_ascii())
            })
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

/// `HeaderMap::get` for any key type, used by tests.
#[cfg(test)]
fn get<K: http::header::AsHeaderName>(h: &HeaderMap, k: K) -> Option<&str> {
    h.get(k).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ForwardContext {
        ForwardContext {
            client_addr: "192.0.2.7:5555".parse().expect("addr"),
            trusted_forwarded_for: false,
            scheme: Scheme::HTTPS,
            host: Authority::from_static("app.example"),
            identity_headers: vec![
                (
                    HeaderName::from_static("x-auth-request-user"),
                    HeaderValue::from_static("alice"),
                ),
                (
                    HeaderName::from_static("portcullis-jwt-assertion"),
                    HeaderValue::from_static("jwt"),
                ),
                (
                    HeaderName::from_static("x-custom-id"),
                    HeaderValue::from_static("42"),
                ),
            ],
            gateway_cookies: GatewayCookies::new(
                ["__Host-portcullis"],
                ["__Host-portcullis-login-"],
            ),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize_name("X_Auth_Request_Email"),
            "x-auth-request-email"
        );
        assert_eq!(
            normalize_name("x.auth.request.email"),
            "x-auth-request-email"
        );
        for n in [
            "x-auth-request-email",
            "x_auth_request_email",
            "portcullis-jwt-assertion",
            "portcullis_anything",
            "x-forwarded-user",
            "x_forwarded_groups",
            "x-forwarded-preferred-username",
            "x-remote-user",
            "remote-user",
            "x-webauth-user",
            "x-real-ip",
            "x-original-url",
            "forwarded",
            "x_forwarded_for",
        ] {
            assert!(is_reserved_inbound(&HeaderName::from_static(n)), "{n}");
        }
        for n in [
            "x-forwarded-for",
            "authorization",
            "accept",
            "x-request-id",
            "cookie",
        ] {
            assert!(!is_reserved_inbound(&HeaderName::from_static(n)), "{n}");
        }
    }

    #[test]
    fn identity_headers_stripped_then_added() {
        let mut h = map(&[
            ("x-auth-request-user", "mallory"),
            ("x_auth_request_user", "mallory"),
            ("X-Auth-Request-Email", "m@evil"),
            ("portcullis-jwt-assertion", "forged"),
            ("x_custom_id", "7"),
            ("x-custom-id", "7"),
            ("connection", "x-auth-request-user, x-custom-id, keep-alive"),
            ("keep-alive", "timeout=5"),
            ("accept", "*/*"),
        ]);
        rewrite_request(&mut h, &ctx(), None).expect("rewrite");
        assert_eq!(h.get_all("x-auth-request-user").iter().count(), 1);
        assert_eq!(get(&h, "x-auth-request-user"), Some("alice"));
        assert_eq!(get(&h, "portcullis-jwt-assertion"), Some("jwt"));
        assert_eq!(get(&h, "x-custom-id"), Some("42"));
        assert!(h.get("x_auth_request_user").is_none());
        assert!(h.get("x_custom_id").is_none());
        assert!(h.get("x-auth-request-email").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(get(&h, "accept"), Some("*/*"));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil"),
            ("host", "evil"),
        ]);
        rewrite_request(&mut h, &ctx(), None).expect("rewrite");
        assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("app.example"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("443"));
        assert_eq!(get(&h, "host"), Some("app.example"));

        let mut trusted = ctx();
        trusted.trusted_forwarded_for = true;
        trusted.client_addr = "[::ffff:10.1.1.1]:1".parse().expect("addr");
        trusted.host = Authority::from_static("app.example:8443");
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        rewrite_request(&mut h, &trusted, None).expect("rewrite");
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("10.0.0.1, 10.0.0.2, 10.0.0.3, 10.1.1.1")
        );
        assert_eq!(get(&h, "x-forwarded-port"), Some("8443"));
    }

    #[test]
    fn hop_by_hop_and_te() {
        let mut h = map(&[
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAA"),
            ("connection", "Upgrade, HTTP2-Settings"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-checksum"),
            ("expect", "100-continue"),
        ]);
        rewrite_request(&mut h, &ctx(), None).expect("rewrite");
        for gone in [
            "transfer-encoding",
            "upgrade",
            "http2-settings",
            "connection",
            "proxy-authorization",
            "proxy-connection",
            "trailer",
            "expect",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(get(&h, "te"), Some("trailers"));

        let up = UpgradeRequest {
            protocols: HeaderValue::from_static("websocket"),
        };
        let mut h = map(&[("upgrade", "websocket"), ("connection", "upgrade")]);
        rewrite_request(&mut h, &ctx(), Some(&up)).expect("rewrite");
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert_eq!(get(&h, "connection"), Some("upgrade"));
    }

    #[test]
    fn cookies() {
        let mut h = map(&[
            ("cookie", "app=1; __Host-portcullis=secret; theme=dark"),
            ("cookie", "__Host-portcullis-login-3=x"),
            ("cookie", "__host-portcullis=case-differs"),
        ]);
        rewrite_request(&mut h, &ctx(), None).expect("rewrite");
        assert_eq!(
            get(&h, "cookie"),
            Some("app=1; theme=dark; __host-portcullis=case-differs")
        );

        let mut h = map(&[("cookie", "__Host-portcullis=secret")]);
        rewrite_request(&mut h, &ctx(), None).expect("rewrite");
        assert!(h.get("cookie").is_none());
    }

    #[test]
    fn refuses_bad_added_headers() {
        let mut c = ctx();
        c.identity_headers
            .push((header::HOST, HeaderValue::from_static("x")));
        assert!(matches!(
            rewrite_request(&mut HeaderMap::new(), &c, None),
            Err(ProxyError::InvalidAddedHeader { .. })
        ));
        let bad = HeaderValue::from_bytes(b"a\rb");
        assert!(bad.is_err(), "http refuses CR itself");
        assert!(checked(&header::ACCEPT, HeaderValue::from_static("ok\tvalue")).is_ok());
    }

    #[test]
    fn response_rewrite() {
        let mut h = map(&[
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "__Host-portcullis=evil; Path=/"),
            ("set-cookie", "app=1; Path=/"),
            ("content-type", "text/plain"),
        ]);
        rewrite_response(&mut h, false, &ctx().gateway_cookies);
        for gone in [
            "connection",
            "x-internal",
            "keep-alive",
            "transfer-encoding",
            "proxy-authenticate",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);

        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        rewrite_response(&mut h, true, &GatewayCookies::default());
        assert_eq!(get(&h, "connection"), Some("upgrade"));
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
    }

    #[test]
    fn upgrade_tokens() {
        assert_eq!(
            upgrade_protocols(&HeaderValue::from_static("WebSocket, h2c/2")),
            vec!["websocket", "h2c"]
        );
        let h = map(&[("connection", "keep-alive"), ("connection", " Upgrade ")]);
        assert!(connection_has(&h, "upgrade"));
    }
}
