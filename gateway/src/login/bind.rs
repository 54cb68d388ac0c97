//! Binding a login to the browser that started it.
//!
//! The hand-off ticket that carries a session from the auth host to an app host is a bearer
//! URL. Without a binding, an attacker could start a login in their own browser, stop before the
//! hand-off, and send the link to a victim, who would be signed in to the app as the attacker
//! (login CSRF). So every login starts on the app host, which gives the browser a random nonce
//! in a host-only cookie and passes only its digest along; the ticket carries the digest, and the
//! app host redeems it only for the browser holding the nonce.

use crate::{
    cookies,
    gateway::Gateway,
    http::{Problem, redirect},
};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// The nonce cookie on the app host.
pub const COOKIE: &str = "__Host-portcullis-bind";
/// How long a login may take from the app host back to it.
const LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Longest return address (`rd`: the deep link a browser comes back to after logging in)
/// accepted, in bytes once decoded from the query string. It travels in the login URL, the
/// login cookie and the hand-off ticket; this keeps the login cookie well under its 4000 bytes.
pub const MAX_RETURN_ADDRESS_LEN: usize = 2048;

/// Refuses a return address that could not make the round trip through a login: longer than
/// [`MAX_RETURN_ADDRESS_LEN`] (414), or holding a byte a URL never carries raw (400). Every
/// place a login starts or a return address arrives checks it, so an overlong deep link is
/// told apart at once instead of failing later as a cookie too large.
pub fn check_return_address(rd: &str) -> Result<(), Problem> {
    if rd.len() > MAX_RETURN_ADDRESS_LEN {
        return Err(Problem::new(
            StatusCode::URI_TOO_LONG,
            "return_address_too_long",
            format!(
                "The address to return to is longer than {MAX_RETURN_ADDRESS_LEN} bytes. \
                 Please open the application from a shorter link."
            ),
        ));
    }
    if rd
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'"' || b == b'\\')
    {
        return Err(Problem::bad_request(
            "invalid_redirect",
            "The address to return to is not a valid URL.",
        ));
    }
    Ok(())
}

/// The browser's nonce, if it has a well-formed one.
fn nonce(headers: &HeaderMap) -> Option<String> {
    let jar = cookies::parse(headers);
    cookies::get(&jar, COOKIE)
        .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The digest of a nonce, as carried by the login and the ticket.
pub fn digest(nonce: &str) -> String {
    crate::hex::encode(&Sha256::digest(nonce.as_bytes()))
}

/// True when `bind` is a well-formed digest.
pub fn is_digest(bind: &str) -> bool {
    bind.len() == 64 && crate::hex::is_hex(bind, 64)
}

/// True when the browser holds the nonce behind `bind`.
pub fn holds(headers: &HeaderMap, bind: &str) -> bool {
    nonce(headers).is_some_and(|n| bool::from(digest(&n).as_bytes().ct_eq(bind.as_bytes())))
}

/// Where a login for `target` (a URL on an app host) starts: on that app host, so the nonce
/// cookie can be set there. For API clients and ingress sign-in hints.
pub fn begin_url(
    gateway: &Gateway,
    target_host: &str,
    target: &str,
    reauth: Option<&str>,
) -> String {
    let mut url = format!(
        "{}/.portcullis/begin?rd=",
        gateway.settings().origin(target_host)
    );
    url.extend(url::form_urlencoded::byte_serialize(target.as_bytes()));
    push_reauth(&mut url, reauth);
    url
}

/// Gives the browser a nonce (keeping the one it has, so logins in two tabs both work) and
/// sends it to the auth host's start page with the nonce's digest.
pub fn start(
    gateway: &Gateway,
    headers: &HeaderMap,
    target: &str,
    reauth: Option<&str>,
) -> Response {
    let (nonce, set) = match nonce(headers) {
        Some(nonce) => (nonce, None),
        None => {
            let nonce = crate::hex::random::<16>();
            let cookie = cookies::set(COOKIE, &nonce, LIFETIME);
            (nonce, cookie)
        }
    };
    let mut location = login_url(gateway, target);
    location.push_str("&bind=");
    location.push_str(&digest(&nonce));
    push_reauth(&mut location, reauth);
    redirect(&location, set.into_iter().collect())
}

/// Appends `&reauth=<sid>`: the session that ended, which the auth host must not hand back.
pub fn push_reauth(url: &mut String, reauth: Option<&str>) {
    if let Some(sid) = reauth.filter(|sid| is_session_id(sid)) {
        url.push_str("&reauth=");
        url.push_str(sid);
    }
}

/// A session id as the gateway makes them (hex), so it can travel in a URL as it is.
pub fn is_session_id(sid: &str) -> bool {
    crate::hex::is_hex(sid, 64)
}

/// The auth host's login URL that returns to `target`.
pub fn login_url(gateway: &Gateway, target: &str) -> String {
    let mut url = format!("{}/.portcullis/start?rd=", gateway.issuer());
    url.extend(url::form_urlencoded::byte_serialize(target.as_bytes()));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_addresses_are_capped_with_a_precise_status() {
        let base = "https://app.example.test/";
        let at_limit = format!("{base}{}", "a".repeat(MAX_RETURN_ADDRESS_LEN - base.len()));
        assert!(check_return_address(&at_limit).is_ok());
        for over in [1, 2, 6000] {
            let long = format!("{at_limit}{}", "a".repeat(over));
            let problem = check_return_address(&long).expect_err("too long");
            assert_eq!(problem.status, StatusCode::URI_TOO_LONG);
            assert_eq!(problem.code, "return_address_too_long");
        }
        for bad in [
            "https://app.example.test/a b",
            "https://app.example.test/\"x",
            "https://app.example.test/a\\b",
            "https://app.example.test/\r\n",
            "https://app.example.test/caf\u{e9}",
        ] {
            let problem = check_return_address(bad).expect_err(bad);
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
