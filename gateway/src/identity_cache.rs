//! The identity headers of signed-in users, made once per app token and host: the user, email
//! and groups headers and the signed `Portcullis-Jwt-Assertion`, checked as [`Vouched`]. Every
//! later request of the token copies them (reference counts), so an authorized request costs
//! one lookup here instead of building, signing and checking its headers again.
//!
//! An entry is used only while its assertion has more than [`MARGIN`] seconds left and the
//! user is still described the same way: a session's email and groups can change under the
//! same app token (an identity-provider refresh re-reads them), and the headers must follow.
//! Revocation is not this cache's business: the access check runs on every request before the
//! headers are looked up.

use crate::proxy::headers::Vouched;
use portcullis_core::token::AppClaims;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

/// An entry is used until its assertion has this many seconds left, then made again.
const MARGIN: u64 = 10;
/// Entries kept before the expired ones are dropped (and all of them, if none had expired).
const CAPACITY: usize = 50_000;

/// App token → the headers made for it, one per host it was presented on (a policy may cover
/// several). Keyed on tokens the verifier accepted, so an attacker cannot choose the keys; a
/// fast seeded hash then suffices.
type Entries = HashMap<Arc<str>, Vec<Entry>, foldhash::fast::RandomState>;

struct Entry {
    host: Box<str>,
    headers: Vouched,
    /// When the assertion among `headers` expires (unix seconds).
    exp: u64,
    email: Option<String>,
    groups: Vec<String>,
}

/// The cache; one per gateway.
#[derive(Default)]
pub struct IdentityCache {
    entries: RwLock<Entries>,
}

impl IdentityCache {
    /// The headers made for `token` on `host`, if they still describe `claims` and their
    /// assertion is good for more than [`MARGIN`] seconds after `now`.
    pub fn get(&self, token: &str, claims: &AppClaims, host: &str, now: u64) -> Option<Vouched> {
        let entries = self.entries.read().ok()?;
        entries
            .get(token)?
            .iter()
            .find(|e| {
                &*e.host == host
                    && e.exp > now.saturating_add(MARGIN)
                    && e.email == claims.email
                    && e.groups == claims.groups
            })
            .map(|e| e.headers.clone())
    }

    /// Remembers `headers`, made for `token` on `host` from `claims`, with an assertion that
    /// expires at `exp`.
    pub fn insert(
        &self,
        token: &Arc<str>,
        claims: &AppClaims,
        host: &str,
        headers: Vouched,
        exp: u64,
        now: u64,
    ) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= CAPACITY {
            entries.retain(|_, made| made.iter().any(|e| e.exp > now));
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        let made = entries.entry(token.clone()).or_default();
        made.retain(|e| &*e.host != host);
        made.push(Entry {
            host: host.into(),
            headers,
            exp,
            email: claims.email.clone(),
            groups: claims.groups.clone(),
        });
    }

    /// Tokens with headers cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn claims(email: &str, groups: &[&str]) -> AppClaims {
        let mut claims: AppClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://auth.example", "aud": "apps/wiki", "sub": "alice", "sid": "s1",
            "idp": "dex", "iat": 1000, "exp": 1300, "auth_time": 1000, "epoch": 0,
        }))
        .expect("claims");
        claims.email = Some(email.to_owned());
        claims.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        claims
    }

    fn headers(user: &'static str) -> Vouched {
        Vouched::new(vec![(
            HeaderName::from_static("x-auth-request-user"),
            HeaderValue::from_static(user),
        )])
        .expect("vouched")
    }

    fn user(v: &Vouched) -> &[u8] {
        v.iter().next().expect("one header").1.as_bytes()
    }

    #[test]
    fn a_hit_needs_the_same_token_host_and_identity_and_time_left() {
        let cache = IdentityCache::default();
        let token: Arc<str> = Arc::from("token-a");
        let alice = claims("alice@example.com", &["eng"]);
        cache.insert(&token, &alice, "wiki.example", headers("alice"), 1060, 1000);

        let hit = cache
            .get("token-a", &alice, "wiki.example", 1000)
            .expect("hit");
        assert_eq!(user(&hit), b"alice");
        assert!(cache.get("token-b", &alice, "wiki.example", 1000).is_none());
        assert!(cache.get("token-a", &alice, "docs.example", 1000).is_none());
        let moved = claims("alice@example.com", &["eng", "admins"]);
        assert!(cache.get("token-a", &moved, "wiki.example", 1000).is_none());
        let renamed = claims("alice@corp.example", &["eng"]);
        assert!(
            cache
                .get("token-a", &renamed, "wiki.example", 1000)
                .is_none()
        );
        // Made again when the assertion is close to expiring.
        assert!(cache.get("token-a", &alice, "wiki.example", 1049).is_some());
        assert!(cache.get("token-a", &alice, "wiki.example", 1050).is_none());
    }

    #[test]
    fn one_token_keeps_one_entry_per_host() {
        let cache = IdentityCache::default();
        let token: Arc<str> = Arc::from("token-a");
        let alice = claims("alice@example.com", &[]);
        cache.insert(&token, &alice, "wiki.example", headers("one"), 1060, 1000);
        cache.insert(&token, &alice, "docs.example", headers("two"), 1060, 1000);
        cache.insert(&token, &alice, "wiki.example", headers("three"), 1070, 1010);
        let wiki = cache
            .get("token-a", &alice, "wiki.example", 1010)
            .expect("wiki");
        let docs = cache
            .get("token-a", &alice, "docs.example", 1010)
            .expect("docs");
        assert_eq!((user(&wiki), user(&docs)), (&b"three"[..], &b"two"[..]));
        assert_eq!(cache.len(), 1);
    }
}
