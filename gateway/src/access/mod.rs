//! The one access check every protected request goes through, whether the gateway then proxies
//! it, answers an ingress controller's forward-auth sub-request, or reports the session to an
//! app.
//!
//! Phases: canonicalize host and path (the caller) → route to a policy → authenticate (app
//! token cookie, [`authenticate`]) → authorize (the policy's rules, on every request, so a
//! policy edit applies at once) → [`Outcome`]. Every error on the way is a denial or a login;
//! only an explicit positive decision lets a request through.

mod authenticate;
mod bearer;
mod lease;
mod outcome;

pub use authenticate::renew;
pub use bearer::{Bearer, bearer};
pub use lease::{Lapsed, Lease};
pub use outcome::{DenyReason, LoginReason, Outcome, SignedIn};

use crate::idp::bearer::BearerError;
use crate::{gateway::Gateway, state::Snapshot};
use authenticate::{Unauthenticated, authenticate};
use http::{HeaderMap, HeaderName};
use portcullis_core::{
    BearerToken, CanonicalPath, Decision, Host, Policy, RequestFacts, Route, policy::Selector,
    session::Standing,
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

/// [`check_with`] for a request judged without its bearer token (an `Authorization` header is
/// then ignored, so no `bearer` selector can match: it fails closed).
pub fn check(gateway: &Gateway, snapshot: &Snapshot, subject: &Subject<'_>, now: u64) -> Outcome {
    check_with(gateway, snapshot, subject, &Bearer::Absent, now)
}

/// Runs the check at `now` (unix seconds) against `snapshot`, the access state the caller
/// read once for the whole request, and `bearer`, the request's bearer token as [`bearer`]
/// verified it. The serving surfaces call it through `serve::check`, which also counts it in
/// the check metric.
pub fn check_with(
    gateway: &Gateway,
    snapshot: &Snapshot,
    subject: &Subject<'_>,
    bearer: &Bearer,
    now: u64,
) -> Outcome {
    let policy = match routed(gateway, snapshot, subject) {
        Ok(policy) => policy,
        Err(outcome) => return outcome,
    };
    let verified = match bearer {
        Bearer::Absent => None,
        Bearer::Verified(token) => Some(token.clone()),
        Bearer::Refused(error) => return refused_bearer(policy, *error),
    };
    let facts = RequestFacts {
        client_ip: subject.client_ip,
        service_token: service_token(snapshot, &policy, subject.headers),
        bearer: verified.as_deref(),
    };
    let (user, refused, unknown) = signed_in(gateway, &policy, subject.headers, now);
    let identity = user.as_ref().map(|u| u.claims.identity());
    let decision = policy.evaluate(&facts, identity.as_ref());
    let machine = Machine {
        service_token: facts.service_token,
        bearer: verified.clone(),
    };
    let mut outcome = authorize(gateway, policy, decision, user, machine, refused, now);
    if let Outcome::Login {
        unknown_sid,
        policy,
        ..
    } = &mut outcome
    {
        // A verified bearer token no rule accepts: the client is a program, which a login
        // page would not help (RFC 6750: the token is not valid for this resource).
        if matches!(bearer, Bearer::Verified(_)) {
            return refused_bearer(policy.clone(), BearerError::NotAccepted);
        }
        *unknown_sid = unknown;
    }
    outcome
}

/// The policy the request is routed to, or the outcome without one: not ready (an empty
/// route table must not read as "no policy here", nor a session index that has not listed
/// yet as "no such session"), no policy, or an invalid or contested one.
fn routed(
    gateway: &Gateway,
    snapshot: &Snapshot,
    subject: &Subject<'_>,
) -> Result<Arc<Policy>, Outcome> {
    if gateway
        .session_index()
        .as_ref()
        .is_some_and(|index| !index.borrow().synced)
    {
        return Err(Outcome::NotReady);
    }
    let denied = |reason| Outcome::Deny {
        reason,
        policy: None,
    };
    match snapshot.routes.route(subject.host, subject.path) {
        None => Err(Outcome::NoPolicy),
        Some(Route::Invalid { .. }) => Err(denied(DenyReason::InvalidPolicy)),
        Some(Route::Conflict { .. }) => Err(denied(DenyReason::ConflictingPolicies)),
        Some(Route::Policy(policy)) => Ok(policy.clone()),
    }
}

/// The signed-in user behind the request, or why a login is needed, and the session the index
/// does not know (to ask the API server about).
fn signed_in(
    gateway: &Gateway,
    policy: &Policy,
    headers: &HeaderMap,
    now: u64,
) -> (Option<SignedIn>, Refused, Option<String>) {
    let refused = |(reason, ended_sid)| Refused { reason, ended_sid };
    match authenticate(gateway, policy, headers, now) {
        Ok(user) => (
            Some(user),
            refused((LoginReason::LoginRequired, None)),
            None,
        ),
        // The commonest refusal, and nothing to count: no token at all.
        Err(Unauthenticated::NoCookie) => (None, refused((LoginReason::LoginRequired, None)), None),
        Err(unauthenticated) => {
            if let Some(rejection) = unauthenticated.rejection() {
                gateway.metrics().token_rejected(rejection);
            }
            let unknown = match &unauthenticated {
                Unauthenticated::SessionUnknown(sid) => Some(sid.clone()),
                _ => None,
            };
            (None, refused(unauthenticated.login_reason()), unknown)
        }
    }
}

/// The refusal of a request whose bearer token is invalid, or valid but not accepted here.
fn refused_bearer(policy: Arc<Policy>, error: BearerError) -> Outcome {
    Outcome::Deny {
        reason: DenyReason::InvalidBearer(error),
        policy: Some(policy),
    }
}

/// The machine credentials a request proved it holds.
struct Machine<'a> {
    service_token: Option<&'a str>,
    bearer: Option<Arc<BearerToken>>,
}

impl Machine<'_> {
    /// The bearer token, if one of the `bearer` selectors of `rule` (the rule that let the
    /// request through) accepts it: the credential the upstream is told about.
    fn bearer_of(&self, policy: &Policy, rule: usize) -> Option<Arc<BearerToken>> {
        let token = self.bearer.as_ref()?;
        let accepted =
            policy.rules.get(rule)?.include.iter().any(
                |selector| matches!(selector, Selector::Bearer(bearer) if bearer.accepts(token)),
            );
        accepted.then(|| token.clone())
    }

    /// The outcome of a `ServiceAuth` decision by `rule`: no user, and the credential that
    /// rule accepted (the bearer token if one of its selectors took it, else the service
    /// token).
    fn admitted(self, policy: Arc<Policy>, decision: Decision, rule: usize) -> Outcome {
        let bearer = self.bearer_of(&policy, rule);
        Outcome::Allow {
            service_token: match bearer {
                Some(_) => None,
                None => self.service_token.map(Arc::from),
            },
            bearer,
            policy,
            user: None,
            decision,
        }
    }
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
    machine: Machine<'_>,
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
                bearer: None,
            }
        }
        // A bypass or service-token request carries no user to the upstream.
        Decision::Bypass { .. } => Outcome::Allow {
            policy,
            user: None,
            decision,
            service_token: None,
            bearer: None,
        },
        Decision::ServiceAuth { rule } => machine.admitted(policy, decision, rule),
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
