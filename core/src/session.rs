//! Where a session stands, judged from its app token and its policy's lifetimes — with no
//! shared store, so every replica reaches the same verdict for the same token.
//!
//! - The **absolute** deadline is `auth_time + absoluteLifetime`, and never later than the end
//!   of the login itself (`sexp`): nothing extends it.
//! - The **idle** deadline is `iat + idleTimeout`: an app token is re-minted (its `iat` moved to
//!   now) on a request once half its lifetime has passed, so a user who keeps making requests
//!   keeps pushing it out. Its resolution is therefore half the token lifetime. Where the
//!   gateways also know when the session was last in use (cluster mode), the later of the two
//!   counts ([`deadlines_active`]), so a token an ingress never delivered does not end an
//!   active session.
//! - The token's own `exp` only says "look again": an expired token of a session that is
//!   still inside both deadlines is renewed on the spot, without a redirect — that is what keeps
//!   an active user (or a single-page app making API calls) from being thrown to the login page
//!   mid-work. Revocation is checked separately, on every request, against the live state.

use crate::{policy::SessionPolicy, token::AppClaims};

/// The verdict on one app token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Valid; nothing to do.
    Fresh,
    /// Valid, and a new token should be minted on this response.
    Renew,
    /// No request for longer than the idle timeout.
    Idle,
    /// Past the absolute lifetime.
    Expired,
}

/// The deadlines of a session, in unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// When the current token expires (it is renewed before, or on the next request after).
    pub token: u64,
    /// When the session ends without a request.
    pub idle: u64,
    /// When the session ends, however active.
    pub absolute: u64,
}

/// The deadlines of the session behind `claims` under `policy`, judged from its token alone.
pub fn deadlines(claims: &AppClaims, policy: &SessionPolicy) -> Deadlines {
    deadlines_active(claims, policy, None)
}

/// The deadlines of the session behind `claims` under `policy`, knowing that it was in use at
/// `active_at` (unix seconds) besides its token's `iat`.
///
/// Where the renewed token does not reach the browser (an ingress that drops the `Set-Cookie`
/// of its authorization answer), `iat` stays at the login however active the user is; the
/// gateways' record of the session's use (its identity provider's last confirmation, made
/// only for sessions with requests) keeps such a session from idling out mid-work.
pub fn deadlines_active(
    claims: &AppClaims,
    policy: &SessionPolicy,
    active_at: Option<u64>,
) -> Deadlines {
    let absolute = claims
        .auth_time
        .saturating_add(policy.absolute_lifetime.as_secs())
        .min(claims.sexp.unwrap_or(u64::MAX));
    let last_use = claims.iat.max(active_at.unwrap_or(0));
    Deadlines {
        token: claims.exp,
        idle: last_use
            .saturating_add(policy.idle_timeout.as_secs())
            .min(absolute),
        absolute,
    }
}

/// Judges the session behind `claims` at `now`, from its token alone.
pub fn standing(claims: &AppClaims, policy: &SessionPolicy, now: u64) -> Standing {
    standing_active(claims, policy, now, None)
}

/// Judges the session behind `claims` at `now`, knowing it was in use at `active_at`
/// ([`deadlines_active`]).
pub fn standing_active(
    claims: &AppClaims,
    policy: &SessionPolicy,
    now: u64,
    active_at: Option<u64>,
) -> Standing {
    let d = deadlines_active(claims, policy, active_at);
    if now >= d.absolute {
        return Standing::Expired;
    }
    if now >= d.idle {
        return Standing::Idle;
    }
    let half = (policy.token_lifetime.as_secs() / 2).max(1);
    if now >= d.token || now >= claims.iat.saturating_add(half) {
        return Standing::Renew;
    }
    Standing::Fresh
}

/// The claims of the renewed token: same session and identity, `iat` now, `exp` one token
/// lifetime later but never past the absolute deadline; `epoch` is the policy's current one
/// (the caller only renews tokens whose epoch is current).
pub fn renewed(claims: &AppClaims, policy: &SessionPolicy, epoch: u64, now: u64) -> AppClaims {
    let d = deadlines(claims, policy);
    AppClaims {
        iat: now,
        exp: now
            .saturating_add(policy.token_lifetime.as_secs())
            .min(d.absolute),
        epoch,
        ..claims.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RefreshFailurePolicy;
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            token_lifetime: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            absolute_lifetime: Duration::from_secs(3600),
            refresh_failure: RefreshFailurePolicy::FailClosed,
        }
    }

    fn claims(iat: u64, exp: u64, auth_time: u64) -> AppClaims {
        AppClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            email: None,
            groups: vec![],
            ext: Default::default(),
            sid: "sid".into(),
            idp: "dex".into(),
            epoch: 0,
            iat,
            exp,
            auth_time,
            sexp: None,
            puid: None,
        }
    }

    #[test]
    fn a_token_is_renewed_from_half_its_lifetime_and_after_it_expired() {
        let p = policy();
        assert_eq!(
            standing(&claims(NOW, NOW + 60, NOW), &p, NOW + 10),
            Standing::Fresh
        );
        assert_eq!(
            standing(&claims(NOW, NOW + 60, NOW), &p, NOW + 30),
            Standing::Renew
        );
        assert_eq!(
            standing(&claims(NOW, NOW + 60, NOW), &p, NOW + 300),
            Standing::Renew
        );
    }

    #[test]
    fn idle_and_absolute_deadlines_end_the_session() {
        let p = policy();
        assert_eq!(
            standing(&claims(NOW, NOW + 60, NOW), &p, NOW + 600),
            Standing::Idle
        );
        // Active all along (renewed a minute ago), but past the absolute lifetime.
        let active = claims(NOW + 3550, NOW + 3610, NOW);
        assert_eq!(standing(&active, &p, NOW + 3599), Standing::Renew);
        assert_eq!(standing(&active, &p, NOW + 3600), Standing::Expired);
    }

    #[test]
    fn known_use_moves_the_idle_deadline_but_never_the_absolute_one() {
        let p = policy();
        // The token was never renewed in the browser: minted at login, long idle by itself.
        let stale = claims(NOW, NOW + 60, NOW);
        assert_eq!(standing(&stale, &p, NOW + 900), Standing::Idle);
        // In use five minutes ago: not idle, and the expired token is renewed.
        let used = Some(NOW + 600);
        assert_eq!(
            standing_active(&stale, &p, NOW + 900, used),
            Standing::Renew
        );
        assert_eq!(deadlines_active(&stale, &p, used).idle, NOW + 1200);
        // Idle again ten minutes after the last known use.
        assert_eq!(
            standing_active(&stale, &p, NOW + 1200, used),
            Standing::Idle
        );
        // An older record of use than the token changes nothing.
        let renewed = claims(NOW + 700, NOW + 760, NOW);
        assert_eq!(
            deadlines_active(&renewed, &p, Some(NOW + 100)),
            deadlines(&renewed, &p)
        );
        // However active, the absolute lifetime ends it.
        assert_eq!(
            standing_active(&stale, &p, NOW + 3600, Some(NOW + 3590)),
            Standing::Expired
        );
    }

    #[test]
    fn a_renewed_token_never_outlives_the_absolute_deadline() {
        let p = policy();
        let old = claims(NOW + 3500, NOW + 3560, NOW);
        let new = renewed(&old, &p, 4, NOW + 3570);
        assert_eq!((new.iat, new.exp, new.epoch), (NOW + 3570, NOW + 3600, 4));
        assert_eq!((new.sid.as_str(), new.auth_time), ("sid", NOW));
        let d = deadlines(&new, &p);
        assert_eq!((d.idle, d.absolute), (NOW + 3600, NOW + 3600));
    }

    #[test]
    fn no_app_session_outlives_its_login() {
        let p = policy();
        let mut c = claims(NOW, NOW + 60, NOW);
        c.sexp = Some(NOW + 500);
        assert_eq!(deadlines(&c, &p).absolute, NOW + 500);
        assert_eq!(standing(&c, &p, NOW + 500), Standing::Expired);
    }
}
