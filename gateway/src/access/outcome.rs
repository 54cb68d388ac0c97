//! What the access check decides, with typed reasons: each reason is the stable `code` of the
//! refusal a client sees and, through [`Outcome::result`], the label of the check metric.

use crate::identity_cache::AppToken;
use crate::idp::bearer::BearerError;
use crate::metrics::CheckResult;
use http::HeaderValue;
use portcullis_core::{BearerToken, Decision, Policy, session::Standing, token::AppClaims};
use std::sync::Arc;

/// What the check decided.
#[derive(Debug)]
pub enum Outcome {
    /// Let it through. `user` is set when a signed-in user is behind it.
    Allow {
        policy: Arc<Policy>,
        user: Option<SignedIn>,
        decision: Decision,
        /// The service token that let a `ServiceAuth` request through (its name, for the log).
        service_token: Option<Arc<str>>,
        /// The bearer token that let a `ServiceAuth` request through: the machine the
        /// upstream is told about.
        bearer: Option<Arc<BearerToken>>,
    },
    /// The user must log in (again) first.
    Login {
        policy: Arc<Policy>,
        reason: LoginReason,
        /// The session that ended idle, at its absolute limit or unconfirmed: the auth host
        /// must not hand that same session back (it asks the identity provider instead), but
        /// may hand over a newer one.
        ended_sid: Option<String>,
        /// The token's session is not in the index: the serving layer asks the API server
        /// about it before sending anyone to log in (absence = ask the truth).
        unknown_sid: Option<String>,
    },
    /// Refuse with 403. `policy` is the one whose rules refused, when a single policy did.
    Deny {
        reason: DenyReason,
        policy: Option<Arc<Policy>>,
    },
    /// No policy claims this host and path.
    NoPolicy,
    /// The gateway has not received its access state yet (or its session index is not
    /// synced): nobody is admitted, whatever the path (503).
    NotReady,
}

impl Outcome {
    /// The outcome as the check metric counts it.
    pub fn result(&self) -> CheckResult {
        match self {
            Self::Allow { .. } => CheckResult::Allow,
            Self::Login { .. } => CheckResult::Login,
            Self::Deny { .. } => CheckResult::Deny,
            Self::NoPolicy => CheckResult::NoPolicy,
            Self::NotReady => CheckResult::NotReady,
        }
    }
}

/// The signed-in user behind an allowed request: their verified app token.
#[derive(Clone)]
pub struct SignedIn {
    /// The token as the verifier holds it, with the identity headers made for it.
    pub token: Arc<AppToken>,
    /// The claims to judge the request by: the token's, or the identity the provider states
    /// now where a refresh re-read it.
    pub claims: Arc<AppClaims>,
    /// Where the app token stands (fresh, or to be renewed on this response).
    pub standing: Standing,
    /// A `Set-Cookie` with a renewed app token, to add to the response.
    pub renewal: Option<HeaderValue>,
}

/// Names the session, never the token: a `Debug` print must not put a credential in a log.
impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("sid", &self.claims.sid)
            .field("standing", &self.standing)
            .field("renewal", &self.renewal.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a request must log in (again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginReason {
    /// No usable app token (none, or one that failed verification or is unknown here).
    LoginRequired,
    /// The session was revoked (one session, or every session of its user), or logged out.
    SessionRevoked,
    /// The policy's revocation epoch was raised after the login, or the policy was deleted and
    /// created again: every session of the policy must log in again, not only this one.
    PolicyRevoked,
    /// The identity provider has not confirmed the session for longer than the policy allows.
    SessionUnconfirmed,
    /// The session was idle for longer than the policy's idle timeout.
    SessionIdle,
    /// The session reached the policy's absolute lifetime.
    SessionExpired,
}

impl LoginReason {
    /// The stable machine-readable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Self::LoginRequired => "login_required",
            Self::SessionRevoked => "session_revoked",
            Self::PolicyRevoked => "policy_revoked",
            Self::SessionUnconfirmed => "session_unconfirmed",
            Self::SessionIdle => "session_idle",
            Self::SessionExpired => "session_expired",
        }
    }
}

/// Why a request is refused outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The policy claiming this host and path is invalid: it denies rather than allow-all.
    InvalidPolicy,
    /// Two policies claim this host and path: both deny until one yields.
    ConflictingPolicies,
    /// A `Deny` rule matched.
    DeniedByRule,
    /// No rule allows the request.
    NoRuleAllows,
    /// The request's bearer token is invalid, or valid but accepted by no rule: answered 401
    /// with `WWW-Authenticate: Bearer error="invalid_token"`, never with a login.
    InvalidBearer(BearerError),
}

impl DenyReason {
    /// The stable machine-readable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidPolicy => "invalid_policy",
            Self::ConflictingPolicies => "conflicting_policies",
            Self::DeniedByRule => "denied_by_rule",
            Self::NoRuleAllows => "no_rule_allows",
            Self::InvalidBearer(BearerError::Keys) => "idp_unavailable",
            Self::InvalidBearer(_) => "invalid_token",
        }
    }
}
