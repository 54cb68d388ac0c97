//! The gateway's cookies: names, parsing, and `Set-Cookie` values.
//!
//! Every cookie is `__Host-` prefixed (host-only, `Path=/`, `Secure`: a sibling subdomain cannot
//! set or shadow it), HttpOnly, and SameSite=Lax. Names are compared byte for byte; a request
//! carrying the same gateway cookie twice is treated as carrying none, since two values cannot
//! both be believed.

use http::{HeaderMap, HeaderValue, header};
use portcullis_core::PolicyId;
use sha2::{Digest, Sha256};
use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Duration};

/// The auth host's single-sign-on cookie.
pub const SSO: &str = "__Host-portcullis-sso";
/// Prefix of pending-login cookies (one per login in flight, suffixed with part of its state).
pub const LOGIN_PREFIX: &str = "__Host-portcullis-login-";
/// Prefix of app-token cookies (suffixed with a digest of the policy id, so two policies on one
/// host keep separate tokens).
pub const APP_PREFIX: &str = "__Host-portcullis-app-";
/// Most pending logins one browser may have in flight; older ones are dropped.
pub const MAX_PENDING_LOGINS: usize = 4;
/// Largest cookie value the gateway sets or reads.
pub const MAX_COOKIE_LEN: usize = 4000;

/// The app-token cookie name of a policy.
pub fn app_cookie(policy: &PolicyId) -> String {
    let digest = Sha256::digest(policy.to_string().as_bytes());
    format!("{APP_PREFIX}{}", crate::hex::encode(&digest[..8]))
}

/// What a signed-in request to a policy is looked up by: its app-token cookie's name and the
/// audience its tokens carry (`namespace/name`).
#[derive(Debug)]
pub struct AppNames {
    pub cookie: String,
    pub audience: String,
}

/// The [`AppNames`] of `policy`, made once per policy and thread: they are needed on every
/// signed-in request, and the cookie name costs a SHA-256 and a few allocations to derive.
/// Per thread rather than per process, so a request touches no lock or reference count that
/// the other worker threads write too. Bounded: past [`MAX_REMEMBERED`] policies (deleted
/// ones accumulate) a thread starts over.
pub fn app_names(policy: &PolicyId) -> Rc<AppNames> {
    type Names = HashMap<PolicyId, Rc<AppNames>, foldhash::fast::RandomState>;
    thread_local! {
        static NAMES: RefCell<Names> = RefCell::default();
    }
    NAMES.with_borrow_mut(|remembered| {
        if let Some(names) = remembered.get(policy) {
            return names.clone();
        }
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        let names = Rc::new(AppNames {
            cookie: app_cookie(policy),
            audience: policy.to_string(),
        });
        remembered.insert(policy.clone(), names.clone());
        names
    })
}

/// Policies whose [`AppNames`] are remembered at most.
const MAX_REMEMBERED: usize = 4096;

/// Every cookie in the request's `Cookie` headers, as (name, value), in order. Malformed pairs
/// are skipped.
pub fn parse(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let value = value.trim_matches('"');
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

/// The value of cookie `name`, if it appears exactly once and is not oversized.
pub fn get<'a>(cookies: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    let mut found = cookies.iter().filter(|(n, _)| *n == name);
    let (_, value) = found.next()?;
    if found.next().is_some() || value.len() > MAX_COOKIE_LEN || value.is_empty() {
        return None;
    }
    Some(value)
}

/// A `Set-Cookie` value for a gateway cookie.
pub fn set(name: &str, value: &str, max_age: Duration) -> Option<HeaderValue> {
    if value.len() > MAX_COOKIE_LEN {
        return None;
    }
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    ))
    .ok()
}

/// A `Set-Cookie` value that deletes a gateway cookie.
pub fn clear(name: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::COOKIE, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn names_are_exact_and_duplicates_are_refused() {
        let map = headers(&[
            "a=1; __Host-portcullis-sso=tok; __host-portcullis-sso=other",
            "b=2",
        ]);
        let cookies = parse(&map);
        assert_eq!(get(&cookies, SSO), Some("tok"));
        assert_eq!(get(&cookies, "b"), Some("2"));
        let map = headers(&["__Host-portcullis-sso=one", "__Host-portcullis-sso=two"]);
        assert_eq!(get(&parse(&map), SSO), None);
    }

    #[test]
    fn oversized_values_are_ignored_and_never_set() {
        let big = "x".repeat(MAX_COOKIE_LEN + 1);
        let map = headers(&[&format!("{SSO}={big}")]);
        assert_eq!(get(&parse(&map), SSO), None);
        assert!(set(SSO, &big, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let value = set(SSO, "tok", Duration::from_secs(60)).expect("valid");
        assert_eq!(
            value,
            "__Host-portcullis-sso=tok; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
        );
    }

    #[test]
    fn app_cookie_names_differ_per_policy() {
        let a = app_cookie(&PolicyId::new("team", "a"));
        let b = app_cookie(&PolicyId::new("team", "b"));
        let remembered = app_names(&PolicyId::new("team", "a"));
        assert_eq!(remembered.cookie, a);
        assert_eq!(remembered.audience, "team/a");
        assert!(Rc::ptr_eq(
            &remembered,
            &app_names(&PolicyId::new("team", "a"))
        ));
        assert!(a.starts_with(APP_PREFIX));
        assert_ne!(a, b);
    }
}
