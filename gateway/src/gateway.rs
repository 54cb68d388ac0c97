//! The gateway's shared state: settings, the current access snapshot, keys, verifiers, identity
//! providers and the proxy. Cheap to clone; one per process.

use crate::{
    idp::Providers,
    metrics::Metrics,
    proxy::Proxy,
    state::Snapshot,
    tokens::{AssertionClaims, HandoffClaims, LoginClaims, SsoClaims},
};
use ipnet::IpNet;
use portcullis_core::{
    Host,
    token::{AppClaims, KeySet, TokenKind, Verifier},
};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// Verified tokens kept per kind (each entry is a few hundred bytes).
const VERIFIER_CAPACITY: usize = 100_000;

/// (app token, host) → the assertion minted for it.
type AssertionCache = HashMap<(Arc<str>, String), CachedAssertion>;

/// An assertion and what it was minted from: the identity is compared on every hit, because a
/// session's email and groups can change under the same app token (after an IdP refresh).
struct CachedAssertion {
    assertion: Arc<str>,
    exp: u64,
    email: Option<String>,
    groups: Vec<String>,
}

/// Fixed settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The auth host's name.
    pub auth_host: Host,
    /// The port browsers use (443 unless a local setup says otherwise).
    pub public_port: u16,
    pub sso_lifetime: Duration,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Settings {
    /// `https://host[:port]`, the way browsers reach `host` through the gateway.
    pub fn origin(&self, host: &str) -> String {
        match self.public_port {
            443 => format!("https://{host}"),
            port => format!("https://{host}:{port}"),
        }
    }

    /// The issuer of every token: the auth host's origin.
    pub fn issuer(&self) -> String {
        self.origin(self.auth_host.as_str())
    }

    /// True when `ip` is a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Cluster mode's session services.
pub struct SessionServices {
    /// Records logins as AccessSessions.
    pub recorder: crate::sessions::SessionRecorder,
    /// The sessions accepted on every request.
    pub index: watch::Receiver<Arc<crate::state::session_index::SessionIndex>>,
    /// Background refresh, when a session key is configured.
    pub refresher: Option<Arc<crate::sessions::refresh::Refresher>>,
}

/// Shared gateway state.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub issuer: String,
    pub state: watch::Receiver<Arc<Snapshot>>,
    pub keys: Arc<KeySet>,
    pub app_tokens: Verifier<AppClaims>,
    pub sso_tokens: Verifier<SsoClaims>,
    pub handoffs: Verifier<HandoffClaims>,
    pub logins: Verifier<LoginClaims>,
    pub providers: Providers,
    pub proxy: Proxy,
    pub metrics: Metrics,
    /// Where logins are recorded as AccessSessions (cluster mode).
    pub sessions: Option<crate::sessions::SessionRecorder>,
    /// The sessions accepted on every request (cluster mode).
    pub session_index: Option<watch::Receiver<Arc<crate::state::session_index::SessionIndex>>>,
    /// Confirms active sessions with their identity provider (cluster mode with a session key).
    pub refresher: Option<Arc<crate::sessions::refresh::Refresher>>,
    /// Hand-off tickets already redeemed on this replica, until they expire.
    redeemed: Mutex<HashMap<String, u64>>,
    /// Assertions minted for upstreams, by app token and host, so a signature is paid once per
    /// token rather than once per request.
    assertions: Mutex<AssertionCache>,
}

impl std::ops::Deref for Gateway {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Gateway {
    pub fn new(
        settings: Settings,
        state: watch::Receiver<Arc<Snapshot>>,
        keys: Arc<KeySet>,
        providers: Providers,
        proxy: Proxy,
        metrics: Metrics,
    ) -> Self {
        Self::with_sessions(settings, state, keys, providers, proxy, metrics, None)
    }

    /// [`Gateway::new`], recording logins with `sessions`.
    pub fn with_sessions(
        settings: Settings,
        state: watch::Receiver<Arc<Snapshot>>,
        keys: Arc<KeySet>,
        providers: Providers,
        proxy: Proxy,
        metrics: Metrics,
        sessions: Option<SessionServices>,
    ) -> Self {
        let (sessions, session_index, refresher) = match sessions {
            Some(s) => (Some(s.recorder), Some(s.index), s.refresher),
            None => (None, None, None),
        };
        let issuer = settings.issuer();
        Self(Arc::new(Inner {
            app_tokens: Verifier::new(
                keys.clone(),
                TokenKind::App,
                issuer.clone(),
                VERIFIER_CAPACITY,
            ),
            sso_tokens: Verifier::new(
                keys.clone(),
                TokenKind::Sso,
                issuer.clone(),
                VERIFIER_CAPACITY,
            ),
            handoffs: Verifier::new(keys.clone(), TokenKind::Handoff, issuer.clone(), 1024),
            logins: Verifier::new(keys.clone(), TokenKind::Login, issuer.clone(), 1024),
            settings,
            issuer,
            state,
            keys,
            providers,
            proxy,
            metrics,
            sessions,
            session_index,
            refresher,
            redeemed: Mutex::new(HashMap::new()),
            assertions: Mutex::new(HashMap::new()),
        }))
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.borrow().clone()
    }

    /// Marks a hand-off ticket redeemed; false if it already was (replay).
    pub fn redeem(&self, jti: &str, exp: u64, now: u64) -> bool {
        let Ok(mut redeemed) = self.redeemed.lock() else {
            return false;
        };
        if redeemed.len() > 10_000 {
            redeemed.retain(|_, e| *e > now);
        }
        redeemed.insert(jti.to_owned(), exp).is_none()
    }

    /// The `Portcullis-Jwt-Assertion` for a request allowed by `app` to `host`.
    pub fn assertion(
        &self,
        token: &Arc<str>,
        app: &AppClaims,
        host: &str,
        now: u64,
    ) -> Option<Arc<str>> {
        let key = (token.clone(), host.to_owned());
        if let Ok(cache) = self.assertions.lock()
            && let Some(cached) = cache.get(&key)
            && cached.exp > now + 10
            && cached.email == app.email
            && cached.groups == app.groups
        {
            return Some(cached.assertion.clone());
        }
        // Short-lived, whatever the app token: an expired token of a live session is being
        // renewed on this very response.
        let exp = now + 60;
        let claims = AssertionClaims {
            iss: self.issuer.clone(),
            aud: self.settings.origin(host),
            sub: app.sub.clone(),
            email: app.email.clone(),
            groups: app.groups.clone(),
            sid: app.sid.clone(),
            policy: app.aud.clone(),
            iat: now,
            exp,
        };
        let assertion: Arc<str> = self.keys.sign(TokenKind::Assertion, &claims).ok()?.into();
        if let Ok(mut cache) = self.assertions.lock() {
            if cache.len() > 50_000 {
                cache.retain(|_, cached| cached.exp > now);
            }
            cache.insert(
                key,
                CachedAssertion {
                    assertion: assertion.clone(),
                    exp,
                    email: app.email.clone(),
                    groups: app.groups.clone(),
                },
            );
        }
        Some(assertion)
    }
}
