//! The one access check every protected request goes through, whether the gateway then proxies
//! it, answers an ingress controller's forward-auth sub-request, or reports the session to an
//! app.
//!
//! Phases: canonicalize host and path (the caller) → route to a policy → authenticate (app
//! token cookie, [`authenticate`]) → authorize (the policy's rules, on every request, so a
//! policy edit applies at once) → [`Outcome`]. Every error on the way is a denial or a login;
//! only an explicit positive decision lets a request through.

mod authenticate;
mod lease;
mod outcome;

pub use authenticate::renew;
pub use lease::{Lapsed, Lease};
pub use outcome::{DenyReason, LoginReason, Outcome, SignedIn};

use crate::{gateway::Gateway, state::Snapshot};
use authenticate::{Unauthenticated, authenticate};
use http::{HeaderMap, HeaderName};
use portcullis_core::{
    CanonicalPath, Decision, Host, Policy, RequestFacts, Route, session::Standing,
};
use std::{net::IpAddr, sync::Arc};

/// Header carrying a service token's id. A `HeaderName` rather than a string: a string name is
/// parsed again on every lookup, and this one is looked up on every request.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("portcullis-client-id");
/// Header carrying a service token's secret.
pub const CLIENT_SECRET_HEADER: HeaderName = HeaderName::from_static("portcullis-client-secret");

/// The parts of a request the check looks at.
pub struct Subject<'a> {
    pub host: &'a Host,
    pub path: &'a CanonicalPath,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// Runs the check at `now` (unix seconds) against `snapshot`, the access state the caller
/// read once for the whole request. The serving surfaces call it through `serve::check`, which
/// also counts it in the check metric.
pub fn check(gateway: &Gateway, snapshot: &Snapshot, subject: &Subject<'_>, now: u64) -> Outcome {
    // Fail closed before the first state: an empty route table must not read as "no policy
    // here", nor a session index that has not listed yet as "no such session".
    if gateway
        .session_index()
        .as_ref()
        .is_some_and(|index| !index.borrow().synced)
    {
        return Outcome::NotReady;
    }
    let policy = match snapshot.routes.route(subject.host, subject.path) {
        None => return Outcome::NoPolicy,
        Some(Route::Invalid { .. }) => {
            return Outcome::Deny {
                reason: DenyReason::InvalidPolicy,
                policy: None,
            };
        }
        Some(Route::Conflict { .. }) => {
            return Outcome::Deny {
                reason: DenyReason::ConflictingPolicies,
                policy: None,
            };
        }
        Some(Route::Policy(policy)) => policy.clone(),
    };
    let facts = RequestFacts {
        client_ip: subject.client_ip,
        service_token: service_token(snapshot, &policy, subject.headers),
    };
    let mut unknown = None;
    let (user, reason, ended_sid) = match authenticate(gateway, &policy, subject.headers, now) {
        Ok(user) => (Some(user), LoginReason::LoginRequired, None),
        // The commonest refusal, and nothing to count: no token at all.
        Err(Unauthenticated::NoCookie) => (None, LoginReason::LoginRequired, None),
        Err(unauthenticated) => {
            if let Some(rejection) = unauthenticated.rejection() {
                gateway.metrics().token_rejected(rejection);
            }
            if let Unauthenticated::SessionUnknown(sid) = &unauthenticated {
                unknown = Some(sid.clone());
            }
            let (reason, ended_sid) = unauthenticated.login_reason();
            (None, reason, ended_sid)
        }
    };
    let identity = user.as_ref().map(|u| u.claims.identity());
    let decision = policy.evaluate(&facts, identity.as_ref());
    let service_token = facts.service_token;
    let refused = Refused { reason, ended_sid };
    let mut outcome = authorize(gateway, policy, decision, user, service_token, refused, now);
    if let Outcome::Login { unknown_sid, .. } = &mut outcome {
        *unknown_sid = unknown;
    }
    outcome
}

/// The name of the service token presented in `headers`, if both its id and secret match one
/// of the policy's.
fn service_token<'a>(
    snapshot: &'a Snapshot,
    policy: &Policy,
    headers: &HeaderMap,
) -> Option<&'a str> {
    match (
        headers.get(&CLIENT_ID_HEADER),
        headers.get(&CLIENT_SECRET_HEADER),
    ) {
        (Some(id), Some(secret)) => {
            snapshot.service_token(&policy.id, id.as_bytes(), secret.as_bytes())
        }
        _ => None,
    }
}

/// Why a login is needed, should the decision ask for one.
struct Refused {
    reason: LoginReason,
    ended_sid: Option<String>,
}

/// The outcome of the policy's `decision` for the request's signed-in `user`, if any.
fn authorize(
    gateway: &Gateway,
    policy: Arc<Policy>,
    decision: Decision,
    user: Option<SignedIn>,
    service_token: Option<&str>,
    Refused { reason, ended_sid }: Refused,
    now: u64,
) -> Outcome {
    match decision {
        Decision::Allow { .. } => {
            let user = user.map(|mut user| {
                if user.standing == Standing::Renew {
                    user.renewal = renew(gateway, &policy, &user.claims, now);
                }
                user
            });
            Outcome::Allow {
                policy,
                user,
                decision,
                service_token: None,
            }
        }
        // A bypass or service-token request carries no user to the upstream.
        Decision::Bypass { .. } => Outcome::Allow {
            policy,
            user: None,
            decision,
            service_token: None,
        },
        Decision::ServiceAuth { .. } => Outcome::Allow {
            policy,
            user: None,
            decision,
            service_token: service_token.map(Arc::from),
        },
        Decision::LoginRequired => Outcome::Login {
            policy,
            reason,
            ended_sid,
            unknown_sid: None,
        },
        Decision::Deny { .. } => Outcome::Deny {
            reason: DenyReason::DeniedByRule,
            policy: Some(policy),
        },
        Decision::NoRuleMatched => Outcome::Deny {
            reason: DenyReason::NoRuleAllows,
            policy: Some(policy),
        },
    }
}
