//! The one access check every protected request goes through, whether the gateway then proxies
//! it or answers an ingress controller's forward-auth sub-request.
//!
//! Phases: canonicalize host and path → route to a policy → authenticate (app token cookie) →
//! authorize (the policy's rules, on every request, so a policy edit applies at once) →
//! outcome. Every error on the way is a denial or a login; only an explicit positive decision
//! lets a request through.

use crate::{cookies, gateway::Gateway, state::session_index::Verdict};
use http::{HeaderMap, HeaderValue};
use portcullis_core::{
    CanonicalPath, Decision, Host, Policy, RequestFacts, Route,
    session::{self, Standing},
    token::{AppClaims, TokenError, TokenKind},
};
use std::{net::IpAddr, sync::Arc};

/// Header carrying a service token's id.
pub const CLIENT_ID_HEADER: &str = "portcullis-client-id";
/// Header carrying a service token's secret.
pub const CLIENT_SECRET_HEADER: &str = "portcullis-client-secret";

/// The parts of a request the check looks at.
pub struct Subject<'a> {
    pub host: &'a Host,
    pub path: &'a CanonicalPath,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// What the check decided.
#[derive(Debug)]
pub enum Outcome {
    /// Let it through. `session` is set when a user is behind it.
    Allow {
        policy: Arc<Policy>,
        session: Option<Session>,
        decision: Decision,
    },
    /// The user must log in (again) first.
    Login {
        policy: Arc<Policy>,
        reason: &'static str,
        /// The session that ended idle, at its absolute limit or unconfirmed: the auth host
        /// must not hand that same session back (it asks the identity provider instead), but
        /// may hand over a newer one.
        ended_sid: Option<String>,
    },
    /// Refuse with 403.
    Deny { reason: &'static str },
    /// No policy claims this host and path.
    NoPolicy,
    /// The gateway has not received its access state yet (or its session index is not
    /// synced): nobody is admitted, whatever the path (503).
    NotReady,
}

/// The verified app token behind an allowed request.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: Arc<str>,
    pub claims: Arc<AppClaims>,
    /// Where the session stands (fresh, or to be renewed on this response).
    pub standing: Standing,
    /// A `Set-Cookie` with a renewed app token, to add to the response.
    pub renewal: Option<HeaderValue>,
}

/// Runs the check at `now` (unix seconds).
pub fn check(gateway: &Gateway, subject: &Subject<'_>, now: u64) -> Outcome {
    // Fail closed before the first state: an empty route table must not read as "no policy
    // here", nor a session index that has not listed yet as "no such session".
    if gateway
        .session_index
        .as_ref()
        .is_some_and(|index| !index.borrow().synced)
    {
        return Outcome::NotReady;
    }
    let snapshot = gateway.snapshot();
    let policy = match snapshot.routes.route(subject.host, subject.path) {
        None => return Outcome::NoPolicy,
        Some(Route::Invalid { .. }) => {
            return Outcome::Deny {
                reason: "invalid_policy",
            };
        }
        Some(Route::Conflict { .. }) => {
            return Outcome::Deny {
                reason: "conflicting_policies",
            };
        }
        Some(Route::Policy(policy)) => policy.clone(),
    };

    let service_token = match (
        subject.headers.get(CLIENT_ID_HEADER),
        subject.headers.get(CLIENT_SECRET_HEADER),
    ) {
        (Some(id), Some(secret)) => {
            snapshot.service_token(&policy.id, id.as_bytes(), secret.as_bytes())
        }
        _ => None,
    };
    let facts = RequestFacts {
        client_ip: subject.client_ip,
        service_token,
    };

    let mut reason = "login_required";
    let mut ended_sid = None;
    let session = match authenticate(gateway, &policy, subject.headers, now) {
        Ok(session) => Some(session),
        Err(Unauthenticated::NoCookie) => None,
        Err(Unauthenticated::Token(error)) => {
            gateway.metrics.token_rejected(error.category());
            None
        }
        Err(Unauthenticated::StaleEpoch) => {
            gateway.metrics.token_rejected("stale_epoch");
            reason = "session_revoked";
            None
        }
        Err(Unauthenticated::SessionEnded) => {
            gateway.metrics.token_rejected("session_revoked");
            reason = "session_revoked";
            None
        }
        Err(Unauthenticated::SessionUnknown) => {
            gateway.metrics.token_rejected("session_unknown");
            None
        }
        Err(Unauthenticated::RefreshFailing(sid)) => {
            gateway.metrics.token_rejected("refresh_failing");
            reason = "session_unconfirmed";
            ended_sid = Some(sid);
            None
        }
        Err(Unauthenticated::Ended(standing, sid)) => {
            ended_sid = Some(sid);
            reason = if standing == Standing::Idle {
                "session_idle"
            } else {
                "session_expired"
            };
            None
        }
    };
    let identity = session.as_ref().map(|s| s.claims.identity());
    let decision = policy.evaluate(&facts, identity.as_ref());
    match decision {
        Decision::Allow { .. } => {
            let session = session.map(|mut session| {
                if session.standing == Standing::Renew {
                    session.renewal = renew(gateway, &policy, &session.claims, now);
                }
                session
            });
            Outcome::Allow {
                policy,
                session,
                decision,
            }
        }
        // A bypass or service-token request carries no user to the upstream.
        Decision::Bypass { .. } | Decision::ServiceAuth { .. } => Outcome::Allow {
            policy,
            session: None,
            decision,
        },
        Decision::LoginRequired => Outcome::Login {
            policy,
            reason,
            ended_sid,
        },
        Decision::Deny { .. } => Outcome::Deny {
            reason: "denied_by_rule",
        },
        Decision::NoRuleMatched => Outcome::Deny {
            reason: "no_rule_allows",
        },
    }
}

enum Unauthenticated {
    NoCookie,
    Token(TokenError),
    /// Minted before the policy's revocation epoch was raised.
    StaleEpoch,
    /// Idle or past its absolute lifetime.
    Ended(Standing, String),
    /// Revoked (or logged out, or deleted).
    SessionEnded,
    /// Not (yet) in the session index: absence is not validity.
    SessionUnknown,
    /// The identity provider has not confirmed the session for longer than the policy allows.
    RefreshFailing(String),
}

fn authenticate(
    gateway: &Gateway,
    policy: &Policy,
    headers: &HeaderMap,
    now: u64,
) -> Result<Session, Unauthenticated> {
    let cookies = cookies::parse(headers);
    let name = cookies::app_cookie(&policy.id);
    let token = cookies::get(&cookies, &name).ok_or(Unauthenticated::NoCookie)?;
    let audience = policy.id.to_string();
    let mut claims = gateway
        .app_tokens
        .verify_allowing_expiry(token, Some(&audience), now)
        .map_err(Unauthenticated::Token)?;
    let mut identity_changed = false;
    if claims.epoch < policy.epoch {
        return Err(Unauthenticated::StaleEpoch);
    }
    // Minted for another object of the same name (deleted and created again, its epoch back
    // at 0): whatever was revoked on the old one stays revoked.
    if policy.uid.is_some() && claims.puid != policy.uid {
        return Err(Unauthenticated::StaleEpoch);
    }
    // Cluster mode: the session must be known and live, on every request.
    if let Some(index) = &gateway.session_index {
        let index = index.borrow();
        match index.verdict(&claims.sid, &claims.sub, now) {
            Verdict::Live => {}
            Verdict::Ended => return Err(Unauthenticated::SessionEnded),
            Verdict::Unknown => return Err(Unauthenticated::SessionUnknown),
        }
        // Noted before the refresh-failure check: a session refused while its provider is
        // down must still be retried, or it could never be confirmed again.
        if let Some(refresher) = &gateway.refresher {
            refresher.touch(&claims.sid, &claims.idp, now);
        }
        // The identity provider cannot confirm the session right now: the policy decides.
        if let Some(since) = index.refresh_failing_since(&claims.sid)
            && !policy.session.refresh_failure.admits(since, now)
        {
            return Err(Unauthenticated::RefreshFailing(claims.sid.clone()));
        }
        // The provider now states another email or other groups than the token carries (a
        // refresh re-read them): judge this request by the current ones, and renew the token
        // with them on this response.
        if let Some(current) = index.identity(&claims.sid)
            && (current.email != claims.email || current.groups != claims.groups)
        {
            let mut updated = (*claims).clone();
            updated.email = current.email.clone();
            updated.groups = current.groups.clone();
            claims = Arc::new(updated);
            identity_changed = true;
        }
    }
    match session::standing(&claims, &policy.session, now) {
        Standing::Fresh if identity_changed => Ok(Session {
            token: Arc::from(token),
            claims,
            standing: Standing::Renew,
            renewal: None,
        }),
        standing @ (Standing::Fresh | Standing::Renew) => Ok(Session {
            token: Arc::from(token),
            claims,
            standing,
            renewal: None,
        }),
        ended => Err(Unauthenticated::Ended(ended, claims.sid.clone())),
    }
}

/// Mints the renewed app token of a live session, as a `Set-Cookie` value.
pub fn renew(
    gateway: &Gateway,
    policy: &Policy,
    claims: &AppClaims,
    now: u64,
) -> Option<HeaderValue> {
    let renewed = session::renewed(claims, &policy.session, policy.epoch, now);
    let token = gateway.keys.sign(TokenKind::App, &renewed).ok()?;
    let remaining = session::deadlines(&renewed, &policy.session)
        .absolute
        .saturating_sub(now);
    gateway.metrics.token_renewed();
    cookies::set(
        &cookies::app_cookie(&policy.id),
        &token,
        std::time::Duration::from_secs(remaining),
    )
}
