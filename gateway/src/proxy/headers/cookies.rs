//! Step 3 of the rewrite and its counterpart on responses: the gateway's own cookies never
//! reach an upstream, and an upstream may not set them.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, header};

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

    pub(super) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Drops gateway-owned cookies from all `Cookie` headers and folds the rest into one header
/// (HTTP/2 clients send one header per cookie; HTTP/1.1 upstreams expect one line, RFC 9113
/// §8.2.3).
pub(super) fn strip_cookies(headers: &mut HeaderMap, owned: &GatewayCookies) {
    if headers.get(header::COOKIE).is_none() {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in pairs(value.as_bytes()) {
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

/// The `;`-separated parts of a `Cookie` value. Found with `memchr`: the value carries the
/// app token (hundreds of bytes) on every signed-in request, and a byte-by-byte split of it
/// was the largest cost of the whole header rewrite.
fn pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b';', value)
        .chain(std::iter::once(value.len()))
        .map(move |end| {
            let pair = &value[start..end];
            start = end + 1;
            pair
        })
}

/// Drops every `Set-Cookie` for a gateway-owned name: an upstream may neither fixate nor clear
/// a gateway session.
pub(super) fn strip_set_cookies(headers: &mut HeaderMap, owned: &GatewayCookies) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
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
