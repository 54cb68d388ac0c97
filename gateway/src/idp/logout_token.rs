//! OpenID Connect Back-Channel Logout 1.0, §2.6: validating a provider's `logout_token`.
//!
//! A logout token ends sessions, so it is judged as strictly as an ID token, and never as
//! one (a distinct token kind, RFC 8725 §3.11): a compact JWS (no JWE, no `crit`), `typ`
//! `logout+jwt` or plain `JWT`, signed with an allow-listed algorithm by one of the provider's
//! keys (the same JWKS and the same allow-list as its ID tokens, fetched again with the
//! cooldown for an unknown `kid`); `iss` the provider's, `aud` naming our client, `iat` present
//! and recent, `exp` present (required since the specification's errata set 1) and not passed,
//! a `jti`, the back-channel logout event with an object value, `sid` and/or `sub`, and no
//! `nonce` (which would make it an ID token). Replays of a `jti` are refused by the provider's
//! [`ReplayCache`].

use super::{Provider, jws};
use openidconnect::core::CoreJsonWebKeySet;
use portcullis_core::token::CLOCK_SKEW_SECS;
use serde_json::{Map, Value};
use std::{collections::HashMap, time::Duration};

/// The event a logout token must carry (§2.4).
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How far in the past a logout token's `iat` may be; a `jti` is remembered this long (plus
/// the clock skew), after which the token is refused for its age anyway.
pub const MAX_LOGOUT_TOKEN_AGE: Duration = Duration::from_secs(5 * 60);

/// The largest `logout_token` looked at (a JWT of a few claims is well under 2 KB).
pub const MAX_LOGOUT_TOKEN_LEN: usize = 8 * 1024;

/// What a valid logout token says: end the provider's session `sid`, or every session of
/// `sub` when there is no `sid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    pub iat: u64,
}

/// Why a logout token was refused: the `error_description` of the 400 answer. Never echoes
/// the token or a claim value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("the logout token is not a signed JWT: {0}")]
    Malformed(&'static str),
    #[error("the logout token's header is not acceptable: {0}")]
    Header(&'static str),
    #[error("the logout token's signature does not verify with the provider's keys")]
    Signature,
    #[error("the logout token's claims are not acceptable: {0}")]
    Claims(&'static str),
    #[error("the logout token was already used")]
    Replayed,
    #[error("too many recent logout tokens; try again later")]
    ReplayCacheFull,
    #[error("the identity provider's keys are not available")]
    Keys,
}

/// What a logout token must look like (§2.6: `typ` absent, `JWT` or `logout+jwt`).
const LOGOUT_JWS: jws::Expect = jws::Expect {
    max_len: MAX_LOGOUT_TOKEN_LEN,
    typs: &["jwt", "logout+jwt"],
    typ_error: "typ is not logout+jwt or JWT",
};

impl From<jws::JwsError> for LogoutTokenError {
    fn from(error: jws::JwsError) -> Self {
        match error {
            jws::JwsError::Malformed(why) => Self::Malformed(why),
            jws::JwsError::Header(why) => Self::Header(why),
        }
    }
}

/// The claims of a verified token, checked against the provider (`issuers`: its issuer and
/// aliases; `client_id`) at `now` (unix seconds).
fn check_claims(
    payload: &[u8],
    issuers: &[&str],
    client_id: &str,
    now: u64,
) -> Result<LogoutClaims, LogoutTokenError> {
    let bad = LogoutTokenError::Claims;
    let claims: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| bad("the payload is not a JSON object"))?;
    let string = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
        Some(_) => Err(bad("a string claim is empty, too long or not a string")),
    };
    let iss = string("iss")?.ok_or(bad("iss is missing"))?;
    if !issuers.contains(&iss.as_str()) {
        return Err(bad("iss is not this provider"));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(bad("aud does not name this client"));
    }
    let iat = seconds(claims.get("iat")).ok_or(bad("iat is missing or not a number"))?;
    if iat > now + CLOCK_SKEW_SECS || iat + MAX_LOGOUT_TOKEN_AGE.as_secs() < now {
        return Err(bad("iat is out of range"));
    }
    let exp = seconds(claims.get("exp")).ok_or(bad("exp is missing or not a number"))?;
    if exp + CLOCK_SKEW_SECS <= now {
        return Err(bad("the token has expired"));
    }
    let jti = string("jti")?.ok_or(bad("jti is missing"))?;
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_EVENT));
    if !matches!(event, Some(Value::Object(_))) {
        return Err(bad("events does not hold the back-channel logout event"));
    }
    if claims.contains_key("nonce") {
        return Err(bad("a logout token must not contain nonce"));
    }
    let (sid, sub) = (string("sid")?, string("sub")?);
    if sid.is_none() && sub.is_none() {
        return Err(bad("neither sid nor sub is present"));
    }
    Ok(LogoutClaims { sid, sub, jti, iat })
}

/// A non-negative whole number of seconds (a fraction is dropped).
fn seconds(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
            // In range and non-negative by the filter.
            .map(|f| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let whole = f as u64;
                whole
            })
    })
}

/// Verifies `token` with `keys`: header, signature, then claims. `Err(None)` asks the caller
/// to fetch the keys again (unknown `kid`) and retry once.
pub fn verify(
    token: &str,
    keys: &CoreJsonWebKeySet,
    issuers: &[&str],
    client_id: &str,
    now: u64,
) -> Result<LogoutClaims, Option<LogoutTokenError>> {
    let jws = jws::parse(token, &LOGOUT_JWS).map_err(|e| Some(e.into()))?;
    jws::verify_signature(&jws, keys)
        .map_err(|unknown_kid| (!unknown_kid).then_some(LogoutTokenError::Signature))?;
    check_claims(&jws.payload, issuers, client_id, now).map_err(Some)
}

/// The `jti`s of one provider's logout tokens seen recently, each until its token is too old
/// to be accepted anyway. Bounded: when full of live entries, new tokens are refused (fail
/// closed) rather than old entries forgotten. Per replica: a replay sent to another replica is
/// accepted there, and only revokes again what is already revoked.
#[derive(Debug, Default)]
pub struct ReplayCache {
    /// `jti` → until when it is remembered (unix seconds).
    seen: HashMap<String, u64>,
}

/// How many `jti`s one provider's cache holds.
pub const REPLAY_CACHE_CAPACITY: usize = 10_000;

impl ReplayCache {
    /// Records `claims.jti`, or refuses it as a replay (or for a full cache).
    pub fn admit(&mut self, claims: &LogoutClaims, now: u64) -> Result<(), LogoutTokenError> {
        if self
            .seen
            .get(&claims.jti)
            .is_some_and(|until| *until >= now)
        {
            return Err(LogoutTokenError::Replayed);
        }
        if self.seen.len() >= REPLAY_CACHE_CAPACITY {
            self.seen.retain(|_, until| *until >= now);
        }
        if self.seen.len() >= REPLAY_CACHE_CAPACITY {
            return Err(LogoutTokenError::ReplayCacheFull);
        }
        let until = claims.iat + MAX_LOGOUT_TOKEN_AGE.as_secs() + CLOCK_SKEW_SECS;
        self.seen.insert(claims.jti.clone(), until);
        Ok(())
    }

    /// Forgets `jti`: its logout could not be carried out, and the provider may send it again.
    pub fn forget(&mut self, jti: &str) {
        self.seen.remove(jti);
    }
}

impl Provider {
    /// Validates a `logout_token` of this provider (see the module), keys fetched again with
    /// the cooldown for an unknown `kid`, and records its `jti`.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now: u64,
    ) -> Result<LogoutClaims, LogoutTokenError> {
        let mut issuers = vec![self.config.issuer.as_str()];
        issuers.extend(self.config.issuer_aliases.iter().map(String::as_str));
        let client_id = self.config.client_id.as_str();
        let (client, keys) = self.keys(None).await.map_err(|_| LogoutTokenError::Keys)?;
        let claims = match verify(token, &keys, &issuers, client_id, now) {
            Err(None) => {
                let (_, fresh) = self
                    .keys(Some(&client))
                    .await
                    .map_err(|_| LogoutTokenError::Keys)?;
                verify(token, &fresh, &issuers, client_id, now)
                    .map_err(|e| e.unwrap_or(LogoutTokenError::Signature))
            }
            other => other.map_err(|e| e.unwrap_or(LogoutTokenError::Signature)),
        }?;
        self.replay_cache().admit(&claims, now)?;
        Ok(claims)
    }

    /// Forgets a logout token's `jti` (see [`ReplayCache::forget`]).
    pub fn forget_logout_token(&self, jti: &str) {
        self.replay_cache().forget(jti);
    }
}

#[cfg(test)]
mod tests;
