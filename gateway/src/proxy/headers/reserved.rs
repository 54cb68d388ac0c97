//! Step 2 of the rewrite: which inbound header names carry identity or forwarding metadata
//! that upstreams trust, in every spelling an upstream may fold together.

use http::{HeaderMap, HeaderName};

use super::X_FORWARDED_FOR;

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

/// One byte of a header name as [`normalize_name`] spells it.
fn folded(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// Whether `name` and `other` are the same header to an upstream that folds `_` and `.` into
/// `-` and ignores case ([`normalize_name`] of both equal), without building either: this runs
/// for every header of every request.
fn same_folded(name: &[u8], other: &[u8]) -> bool {
    name.len() == other.len()
        && name
            .iter()
            .zip(other)
            .all(|(a, b)| folded(*a) == folded(*b))
}

/// Whether [`normalize_name`] of `name` starts with `prefix` (itself normalized).
fn starts_folded(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && same_folded(&name[..prefix.len()], prefix)
}

/// Whether an inbound header with this name must never reach an upstream as sent by the client.
/// `X-Forwarded-For` in its canonical spelling is *not* reserved here: it is rewritten according
/// to trust (see [`super::ForwardContext::trusted_forwarded_for`]); every other spelling of it is.
pub fn is_reserved_inbound(name: &HeaderName) -> bool {
    if *name == X_FORWARDED_FOR {
        return false;
    }
    let n = name.as_str().as_bytes();
    RESERVED_NAMES.iter().any(|r| same_folded(n, r.as_bytes()))
        || RESERVED_PREFIXES
            .iter()
            .any(|p| starts_folded(n, p.as_bytes()))
}

/// Step 2: removes every reserved inbound header, every spelling of the names the gateway is
/// about to add (`added`), and every other spelling of `X-Forwarded-For`.
pub(super) fn strip_inbound_identity<'a>(
    headers: &mut HeaderMap,
    added: impl Iterator<Item = &'a HeaderName> + Clone,
) {
    remove_where(headers, |name| {
        if is_reserved_inbound(name) {
            return true;
        }
        let n = name.as_str().as_bytes();
        // `x_forwarded_for` & co. would be a second XFF for an upstream that folds `_`.
        (*name != X_FORWARDED_FOR && same_folded(n, X_FORWARDED_FOR.as_str().as_bytes()))
            || added.clone().any(|a| same_folded(n, a.as_str().as_bytes()))
    });
}

/// Removes every header for which `doomed` holds (nothing is allocated when none does).
fn remove_where(headers: &mut HeaderMap, mut doomed: impl FnMut(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in names {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparisons that run per request agree with [`normalize_name`], the spelling rule
    /// they stand for, on names that differ only where folding matters.
    #[test]
    fn folded_comparisons_agree_with_normalize_name() {
        let names = [
            "x-auth-request-user",
            "x_auth_request_user",
            "x.auth.request.user",
            "X_Auth-Request.User",
            "x-auth-request-users",
            "x-auth-request-use",
            "xauth-request-user",
            "portcullis_jwt_assertion",
            "x-forwarded-for",
            "x_forwarded_for",
            "forwarded",
            "for_warded",
            "remote-user",
            "remote_",
            "remote",
        ];
        for a in names {
            for b in names {
                let same = normalize_name(a) == normalize_name(b);
                assert_eq!(same_folded(a.as_bytes(), b.as_bytes()), same, "{a} vs {b}");
                let prefix = normalize_name(b);
                assert_eq!(
                    starts_folded(a.as_bytes(), prefix.as_bytes()),
                    normalize_name(a).starts_with(&prefix),
                    "{a} starts with {b}"
                );
            }
        }
    }

    #[test]
    fn reserved_in_every_spelling_but_the_canonical_forwarded_for() {
        for name in [
            "x-auth-request-email",
            "x_auth_request_email",
            "x.auth.request.email",
            "x-real-ip",
            "x_real_ip",
            "portcullis-anything",
            "x-forwarded-user",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
            assert!(is_reserved_inbound(&name), "{name}");
        }
        assert!(!is_reserved_inbound(&X_FORWARDED_FOR));
        assert!(!is_reserved_inbound(&HeaderName::from_static("accept")));
        assert!(!is_reserved_inbound(&HeaderName::from_static(
            "x-real-ipv6"
        )));
    }
}
