//! The gateway's shared state: settings, the current access snapshot, keys, verifiers, identity
//! providers and the proxy. Cheap to clone; one per process.

pub use crate::settings::Settings;

use crate::{
    idp::Providers,
    metrics::Metrics,
    proxy::Proxy,
    rate_limit::RateLimit,
    sessions::{SessionRecorder, pending::PendingRevocations, refresh::Refresher},
    signing::{Signing, SigningSource},
    state::{Snapshot, session_index::SessionIndex},
    tokens::AssertionClaims,
};
use portcullis_core::token::{AppClaims, TokenKind};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;

/// What a single-use value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SingleUse {
    /// A login's `state`, spent by its first callback.
    LoginState,
    /// A hand-off ticket's `jti`, spent by its redemption.
    HandoffTicket,
}

/// Cluster mode's session services.
pub struct SessionServices {
    /// Records logins as AccessSessions.
    pub recorder: SessionRecorder,
    /// The sessions accepted on every request.
    pub index: watch::Receiver<Arc<SessionIndex>>,
    /// Background refresh, when a session key is configured.
    pub refresher: Option<Arc<Refresher>>,
}

/// Shared gateway state.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

struct Inner {
    settings: Settings,
    issuer: String,
    state: watch::Receiver<Arc<Snapshot>>,
    /// The signing keys and their verifiers, replaced as a whole when the key files change.
    signing: watch::Receiver<Arc<Signing>>,
    providers: Providers,
    proxy: Proxy,
    metrics: Metrics,
    /// Where logins are recorded as AccessSessions (cluster mode).
    sessions: Option<SessionRecorder>,
    /// The sessions accepted on every request (cluster mode).
    session_index: Option<watch::Receiver<Arc<SessionIndex>>>,
    /// Confirms active sessions with their identity provider (cluster mode with a session key).
    refresher: Option<Arc<Refresher>>,
    /// Single-use values (login states, hand-off tickets) already used on this replica, until
    /// they expire.
    spent: Mutex<HashMap<(SingleUse, String), u64>>,
    /// Logout revocations waiting for the API server.
    pending_revocations: Option<Arc<PendingRevocations>>,
    /// The per-client rate limit of the login endpoints.
    login_limit: RateLimit,
}

/// Read access to the parts, for the layers above; nothing outside the crate reaches in.
macro_rules! parts {
    ($($(#[$doc:meta])* $vis:vis $name:ident: $ty:ty;)*) => {
        impl Gateway {
            $(
                $(#[$doc])*
                $vis fn $name(&self) -> &$ty {
                    &self.0.$name
                }
            )*
        }
    };
}

parts! {
    pub(crate) settings: Settings;
    /// The issuer of every token: the auth host's origin.
    pub(crate) issuer: String;
    pub(crate) providers: Providers;
    pub(crate) proxy: Proxy;
    /// Public: router tests read the counters the request path writes.
    pub metrics: Metrics;
    /// Where logins are recorded as AccessSessions (cluster mode).
    pub(crate) sessions: Option<SessionRecorder>;
    /// The sessions accepted on every request (cluster mode).
    pub(crate) session_index: Option<watch::Receiver<Arc<SessionIndex>>>;
    /// Confirms active sessions with their identity provider (cluster mode with a session key).
    pub(crate) refresher: Option<Arc<Refresher>>;
    /// The per-client rate limit of the login endpoints.
    pub(crate) login_limit: RateLimit;
    /// Logout revocations waiting for the API server (when logins are recorded).
    pub(crate) pending_revocations: Option<Arc<PendingRevocations>>;
}

impl Gateway {
    pub fn new(
        settings: Settings,
        state: watch::Receiver<Arc<Snapshot>>,
        keys: impl Into<SigningSource>,
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
        keys: impl Into<SigningSource>,
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
        let pending_revocations = sessions
            .as_ref()
            .map(|recorder| PendingRevocations::new(recorder.clone(), metrics.clone()));
        Self(Arc::new(Inner {
            signing: keys.into().into_receiver(&issuer),
            issuer,
            state,
            providers,
            proxy,
            metrics,
            sessions,
            session_index,
            refresher,
            pending_revocations,
            spent: Mutex::new(HashMap::new()),
            login_limit: RateLimit::new(settings.login_rate),
            settings,
        }))
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.state.borrow().clone()
    }

    /// The signing keys in force now, with their verifiers: a read of the channel and a
    /// reference count, as for the snapshot, and no file is looked at.
    pub(crate) fn signing(&self) -> Arc<Signing> {
        self.0.signing.borrow().clone()
    }

    /// A receiver of the access state, for those that wait on its changes (leases of open
    /// exchanges).
    pub fn watch_state(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.0.state.clone()
    }

    /// Marks `id` used, until `exp`; false if it already was on this replica (a replay). Only
    /// values from verified, signed tokens get here, and they expire within minutes.
    pub fn spend(&self, kind: SingleUse, id: &str, exp: u64, now: u64) -> bool {
        let mut spent = self.0.spent.lock().unwrap_or_else(|e| e.into_inner());
        if spent.len() > 10_000 {
            spent.retain(|_, e| *e > now);
        }
        spent.insert((kind, id.to_owned()), exp).is_none()
    }

    /// A new `Portcullis-Jwt-Assertion` for a request allowed by `app` to `host`, and when it
    /// expires; callers keep it in [`Gateway::identities`].
    pub fn sign_assertion(&self, app: &AppClaims, host: &str, now: u64) -> Option<(String, u64)> {
        // Short-lived, whatever the app token: an expired token of a live session is being
        // renewed on this very response.
        let exp = now + 60;
        let claims = AssertionClaims {
            iss: self.0.issuer.clone(),
            aud: self.0.settings.origin(host),
            sub: app.sub.clone(),
            email: app.email.clone(),
            groups: app.groups.clone(),
            sid: app.sid.clone(),
            policy: app.aud.clone(),
            iat: now,
            exp,
        };
        let assertion = self
            .signing()
            .keys()
            .sign(TokenKind::Assertion, &claims)
            .ok()?;
        Some((assertion, exp))
    }
}
