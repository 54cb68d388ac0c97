//! The identity headers of signed-in users, made once per app token and host: the user, email
//! and groups headers and the signed `Portcullis-Jwt-Assertion`, checked as [`Vouched`]. They
//! are kept in the app-token verifier's own cache entry ([`AppToken`]'s memo), so the lookup
//! that finds a token's verified claims finds its headers too: an authorized request copies
//! them (reference counts) instead of building, signing and checking them again, and pays no
//! second lookup keyed by the token. They are dropped with the entry, and with the whole cache
//! when the signing keys change, so an assertion is never served under keys no longer in force.
//!
//! A memo is used only while its assertion has more than [`MARGIN`] seconds left and the user
//! is still described the same way: a session's email and groups can change under the same
//! app token (an identity-provider refresh re-reads them), and the headers must follow.
//! Revocation is not this memo's business: the access check runs on every request before the
//! headers are looked up.

use crate::proxy::headers::Vouched;
use portcullis_core::token::{AppClaims, Verified};
use std::sync::{
    RwLock,
    atomic::{AtomicU64, Ordering},
};

/// An app token as the verifier caches it, with the identity headers made for it.
pub type AppToken = Verified<AppClaims, TokenMemo>;

/// An entry is used until its assertion has this many seconds left, then made again.
const MARGIN: u64 = 10;

struct Entry {
    host: Box<str>,
    headers: Vouched,
    /// When the assertion among `headers` expires (unix seconds).
    exp: u64,
    email: Option<String>,
    groups: Vec<String>,
}

/// What is kept with one verified app token: the headers made for it, one entry per host it
/// was presented on (a policy may cover several, and only those: a request reaches here after
/// its host matched the policy), and the second its session was last noted as in use.
#[derive(Default)]
pub struct TokenMemo {
    entries: RwLock<Vec<Entry>>,
    /// Unix second of the last request that noted the session in use. The refresher looks at
    /// its table once a second, so one note per token per second says all it needs; the rest
    /// of that second's requests skip its lock and its hash.
    noted_in_use: AtomicU64,
}

impl TokenMemo {
    /// The headers made for this token on `host`, if they still describe `claims` and their
    /// assertion is good for more than [`MARGIN`] seconds after `now`.
    pub fn get(&self, claims: &AppClaims, host: &str, now: u64) -> Option<Vouched> {
        let entries = self.entries.read().ok()?;
        entries
            .iter()
            .find(|e| {
                &*e.host == host
                    && e.exp > now.saturating_add(MARGIN)
                    && e.email == claims.email
                    && e.groups == claims.groups
            })
            .map(|e| e.headers.clone())
    }

    /// Remembers `headers`, made on `host` from `claims`, with an assertion that expires at
    /// `exp`; they replace whatever was made for that host before.
    pub fn insert(&self, claims: &AppClaims, host: &str, headers: Vouched, exp: u64) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        entries.retain(|e| &*e.host != host);
        entries.push(Entry {
            host: host.into(),
            headers,
            exp,
            email: claims.email.clone(),
            groups: claims.groups.clone(),
        });
    }

    /// Whether this token's session was already noted in use in second `now`. A plain read:
    /// the rest of that second's requests leave the value's cache line shared between cores.
    pub fn noted_in_use(&self, now: u64) -> bool {
        self.noted_in_use.load(Ordering::Relaxed) == now
    }

    /// This token's session was noted in use at `now`.
    pub fn note_in_use(&self, now: u64) {
        self.noted_in_use.store(now, Ordering::Relaxed);
    }

    /// Hosts with headers made.
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
    fn a_hit_needs_the_same_host_and_identity_and_time_left() {
        let memo = TokenMemo::default();
        let alice = claims("alice@example.com", &["eng"]);
        memo.insert(&alice, "wiki.example", headers("alice"), 1060);

        let hit = memo.get(&alice, "wiki.example", 1000).expect("hit");
        assert_eq!(user(&hit), b"alice");
        assert!(memo.get(&alice, "docs.example", 1000).is_none());
        let moved = claims("alice@example.com", &["eng", "admins"]);
        assert!(memo.get(&moved, "wiki.example", 1000).is_none());
        let renamed = claims("alice@corp.example", &["eng"]);
        assert!(memo.get(&renamed, "wiki.example", 1000).is_none());
        // Made again when the assertion is close to expiring.
        assert!(memo.get(&alice, "wiki.example", 1049).is_some());
        assert!(memo.get(&alice, "wiki.example", 1050).is_none());
    }

    #[test]
    fn a_note_of_use_holds_for_its_second() {
        let memo = TokenMemo::default();
        assert!(!memo.noted_in_use(1000));
        memo.note_in_use(1000);
        assert!(memo.noted_in_use(1000));
        assert!(!memo.noted_in_use(1001));
    }

    #[test]
    fn one_entry_per_host() {
        let memo = TokenMemo::default();
        let alice = claims("alice@example.com", &[]);
        memo.insert(&alice, "wiki.example", headers("one"), 1060);
        memo.insert(&alice, "docs.example", headers("two"), 1060);
        memo.insert(&alice, "wiki.example", headers("three"), 1070);
        let wiki = memo.get(&alice, "wiki.example", 1010).expect("wiki");
        let docs = memo.get(&alice, "docs.example", 1010).expect("docs");
        assert_eq!((user(&wiki), user(&docs)), (&b"three"[..], &b"two"[..]));
        assert_eq!(memo.len(), 2);
    }
}
