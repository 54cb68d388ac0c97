//! Authentication: who is behind a request, from the policy's app-token cookie. A signature is
//! verified once per token (the verifier caches it); everything that can end a session is
//! checked on every request: the policy's epoch and object, the session index, the identity
//! provider's confirmation, idle and absolute lifetimes.

use super::{LoginReason, SignedIn};
use crate::{
    audit, cookies, gateway::Gateway, identity_cache::TokenMemo, metrics::Rejection,
    state::session_index::NotLive,
};
use http::{HeaderMap, HeaderValue};
use portcullis_core::{
    Policy,
    session::{self, Standing},
    token::{AppClaims, TokenError, TokenKind},
};
use std::sync::Arc;

/// Why no signed-in user stands behind a request.
pub(super) enum Unauthenticated {
    NoCookie,
    Token(TokenError),
    /// Minted before the policy's revocation epoch was raised, or for an earlier object of
    /// the policy's name.
    StaleEpoch,
    /// Idle or past its absolute lifetime.
    Ended(Standing, String),
    /// Revoked (or logged out, or deleted).
    SessionEnded,
    /// Not (yet) in the session index: absence is not validity. The id, to ask the API server.
    SessionUnknown(String),
    /// The identity provider has not confirmed the session for longer than the policy allows.
    RefreshFailing(String),
}

impl Unauthenticated {
    /// Why the user must log in, and the session the auth host must not hand back.
    pub(super) fn login_reason(self) -> (LoginReason, Option<String>) {
        match self {
            Self::NoCookie | Self::Token(_) | Self::SessionUnknown(_) => {
                (LoginReason::LoginRequired, None)
            }
            Self::StaleEpoch => (LoginReason::PolicyRevoked, None),
            Self::SessionEnded => (LoginReason::SessionRevoked, None),
            Self::RefreshFailing(sid) => (LoginReason::SessionUnconfirmed, Some(sid)),
            Self::Ended(Standing::Idle, sid) => (LoginReason::SessionIdle, Some(sid)),
            Self::Ended(_, sid) => (LoginReason::SessionExpired, Some(sid)),
        }
    }

    /// How the token rejection metric counts it; `None` when there was no token at all or it
    /// simply timed out.
    pub(super) fn rejection(&self) -> Option<Rejection<'_>> {
        match self {
            Self::NoCookie | Self::Ended(..) => None,
            Self::Token(error) => Some(Rejection::Token(error)),
            Self::StaleEpoch => Some(Rejection::StaleEpoch),
            Self::SessionEnded => Some(Rejection::SessionRevoked),
            Self::SessionUnknown(_) => Some(Rejection::SessionUnknown),
            Self::RefreshFailing(_) => Some(Rejection::RefreshFailing),
        }
    }
}

/// The signed-in user behind a request to `policy`, from its app-token cookie.
pub(super) fn authenticate(
    gateway: &Gateway,
    policy: &Policy,
    headers: &HeaderMap,
    now: u64,
) -> Result<SignedIn, Unauthenticated> {
    let cookies = cookies::parse(headers);
    let names = cookies::app_names(&policy.id);
    let token = cookies::get(&cookies, &names.cookie).ok_or(Unauthenticated::NoCookie)?;
    let token = gateway
        .signing()
        .app_tokens()
        .verified_allowing_expiry(token, Some(&names.audience), now)
        .map_err(Unauthenticated::Token)?;
    let claims = token.claims().clone();
    bound_to_policy(policy, &claims).inspect_err(|_| refused(policy, &claims, "policy_revoked"))?;
    let (claims, identity_changed, active_at) = match gateway.session_index() {
        Some(_) => confirm_session(gateway, policy, claims, token.memo(), now)?,
        None => (claims, false, None),
    };
    match session::standing_active(&claims, &policy.session, now, active_at) {
        Standing::Fresh if identity_changed => Ok(SignedIn {
            token,
            claims,
            standing: Standing::Renew,
            renewal: None,
        }),
        standing @ (Standing::Fresh | Standing::Renew) => Ok(SignedIn {
            token,
            claims,
            standing,
            renewal: None,
        }),
        ended => Err(Unauthenticated::Ended(ended, claims.sid.clone())),
    }
}

/// The token was minted under the policy as it stands: not before its revocation epoch was
/// raised, and for this object of the policy's name, not an earlier one deleted and created
/// again (its epoch back at 0), so whatever was revoked on the old one stays revoked.
pub(super) fn bound_to_policy(policy: &Policy, claims: &AppClaims) -> Result<(), Unauthenticated> {
    if claims.epoch < policy.epoch || (policy.uid.is_some() && claims.puid != policy.uid) {
        return Err(Unauthenticated::StaleEpoch);
    }
    Ok(())
}

/// The audit event of a revoked session's token refused with `reason`.
fn refused(policy: &Policy, claims: &AppClaims, reason: &str) {
    let user = audit::User::new(&claims.sub, claims.email.as_deref());
    audit::refused(&claims.sid, user, &policy.id.to_string(), reason);
}

/// Cluster mode: the session must be known and live, on every request. Returns the claims to
/// judge the request by (with the identity the provider states now), whether they differ
/// from the token's, and when the session was last known in use on any gateway.
fn confirm_session(
    gateway: &Gateway,
    policy: &Policy,
    claims: Arc<AppClaims>,
    memo: &TokenMemo,
    now: u64,
) -> Result<(Arc<AppClaims>, bool, Option<u64>), Unauthenticated> {
    let Some(index) = gateway.session_index() else {
        return Ok((claims, false, None));
    };
    let index = index.borrow();
    let session = match index.live(&claims.sid, &claims.sub, now) {
        Ok(session) => session,
        Err(NotLive::Ended) => {
            refused(policy, &claims, "session_revoked");
            return Err(Unauthenticated::SessionEnded);
        }
        Err(NotLive::Unknown) => return Err(Unauthenticated::SessionUnknown(claims.sid.clone())),
    };
    // An idle or finished session is refused before it is noted as in use: the note would have
    // the refresher confirm it, and the confirmation would count as use and revive it.
    let active_at = session.confirmed_at;
    if let ended @ (Standing::Idle | Standing::Expired) =
        session::standing_active(&claims, &policy.session, now, active_at)
    {
        return Err(Unauthenticated::Ended(ended, claims.sid.clone()));
    }
    // Noted before the refresh-failure check: a session refused while its provider is
    // down must still be retried, or it could never be confirmed again. Once a second per
    // token is enough: the refresher looks at its table once a second.
    if let Some(refresher) = gateway.refresher()
        && !memo.noted_in_use(now)
        && refresher.touch(&claims.sid, &claims.idp, now)
    {
        memo.note_in_use(now);
    }
    // The identity provider cannot confirm the session right now: the policy decides.
    if let Some(since) = session.refresh_failing_since
        && !policy.session.refresh_failure.admits(since, now)
    {
        return Err(Unauthenticated::RefreshFailing(claims.sid.clone()));
    }
    // The provider now states another email or other groups than the token carries (a
    // refresh re-read them): judge this request by the current ones, and renew the token
    // with them on this response.
    let current = &session.identity;
    if current.email != claims.email || current.groups != claims.groups {
        let mut updated = (*claims).clone();
        updated.email = current.email.clone();
        updated.groups = current.groups.clone();
        return Ok((Arc::new(updated), true, active_at));
    }
    Ok((claims, false, active_at))
}

/// Mints the renewed app token of a live session, as a `Set-Cookie` value.
pub fn renew(
    gateway: &Gateway,
    policy: &Policy,
    claims: &AppClaims,
    now: u64,
) -> Option<HeaderValue> {
    let renewed = session::renewed(claims, &policy.session, policy.epoch, now);
    let token = gateway
        .signing()
        .keys()
        .sign(TokenKind::App, &renewed)
        .ok()?;
    let remaining = session::deadlines(&renewed, &policy.session)
        .absolute
        .saturating_sub(now);
    gateway.metrics().token_renewed();
    cookies::set(
        &cookies::app_names(&policy.id).cookie,
        &token,
        std::time::Duration::from_secs(remaining),
    )
}
