//! Checking one bearer JWT against one provider's keys and issuer, with no I/O: the header
//! (compact JWS, allow-listed `alg`, an access-token `typ`, no `crit`), the signature, then the
//! claims every access token must carry. What depends on the policy (audience, client, scopes)
//! is left to the rules (`portcullis_core::BearerRule`).

use super::{BearerError, MAX_BEARER_LEN};
use crate::idp::jws;
use openidconnect::core::CoreJsonWebKeySet;
use portcullis_core::{BearerToken, token::CLOCK_SKEW_SECS};
use serde_json::{Map, Value};

/// The longest string claim copied out of a token (`sub`, the client id, an audience).
const MAX_CLAIM_LEN: usize = 255;

/// What a bearer access token must look like (`typ` absent, `JWT` or `at+jwt`, RFC 9068).
const BEARER_JWS: jws::Expect = jws::Expect {
    max_len: MAX_BEARER_LEN,
    typs: &["jwt", "at+jwt"],
    typ_error: "typ is not at+jwt or JWT",
};

impl From<jws::JwsError> for BearerError {
    fn from(error: jws::JwsError) -> Self {
        match error {
            jws::JwsError::Malformed(why) => Self::Malformed(why),
            jws::JwsError::Header(why) => Self::Header(why),
        }
    }
}

fn b64(part: &str) -> Result<Vec<u8>, BearerError> {
    Ok(jws::b64(part)?)
}

/// The unverified payload, only to pick which provider's keys to try (its `iss`): nothing
/// read here is trusted before [`verify`] has checked the signature.
pub fn unverified_issuer(token: &str) -> Result<String, BearerError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or(BearerError::Malformed("not three parts"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&b64(payload)?)
        .map_err(|_| BearerError::Malformed("the payload is not a JSON object"))?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err(BearerError::Claims("iss is missing")),
    }
}

/// A non-negative whole number of seconds.
fn seconds(value: Option<&Value>) -> Option<u64> {
    value?.as_u64()
}

/// A string claim: `Ok(None)` when absent; refused when empty, too long, or not a string.
fn string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, BearerError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_CLAIM_LEN => Ok(Some(s.clone())),
        Some(_) => Err(BearerError::Claims(
            "a string claim is empty, too long or not a string",
        )),
    }
}

/// The token's times at `now`: `exp` and `iat` required, `nbf` optional, each with the clock
/// skew the gateway allows everywhere.
fn check_times(claims: &Map<String, Value>, now: u64) -> Result<u64, BearerError> {
    let exp = seconds(claims.get("exp")).ok_or(BearerError::Claims("exp is missing"))?;
    if exp.saturating_add(CLOCK_SKEW_SECS) <= now {
        return Err(BearerError::Expired);
    }
    let iat = seconds(claims.get("iat")).ok_or(BearerError::Claims("iat is missing"))?;
    if iat > now + CLOCK_SKEW_SECS {
        return Err(BearerError::Claims("iat is in the future"));
    }
    match claims.get("nbf") {
        None => {}
        Some(nbf) => match seconds(Some(nbf)) {
            Some(nbf) if nbf <= now + CLOCK_SKEW_SECS => {}
            Some(_) => return Err(BearerError::Claims("the token is not valid yet (nbf)")),
            None => return Err(BearerError::Claims("nbf is not a number")),
        },
    }
    Ok(exp)
}

/// The claims of a token whose signature verified, for the provider `identity_provider`
/// whose issuer (and configured aliases) are `issuers`.
fn check_claims(
    payload: &[u8],
    identity_provider: &str,
    issuers: &[&str],
    now: u64,
) -> Result<BearerToken, BearerError> {
    let claims: Map<String, Value> = serde_json::from_slice(payload)
        .map_err(|_| BearerError::Malformed("the payload is not a JSON object"))?;
    let iss = string(&claims, "iss")?.ok_or(BearerError::Claims("iss is missing"))?;
    if !issuers.contains(&iss.as_str()) {
        return Err(BearerError::Claims("iss is not the provider's issuer"));
    }
    let expires_at = check_times(&claims, now)?;
    // Other kinds of token the provider signs with the same keys are never access tokens
    // here: an ID token (a `nonce`, or Keycloak's `typ: ID`), a logout token (`events`).
    let keycloak_typ = string(&claims, "typ")?;
    if claims.contains_key("nonce")
        || claims.contains_key("events")
        || keycloak_typ.is_some_and(|typ| typ != "Bearer")
    {
        return Err(BearerError::Claims("the token is not an access token"));
    }
    let subject = string(&claims, "sub")?.ok_or(BearerError::Claims("sub is missing"))?;
    let client_id = match (string(&claims, "azp")?, string(&claims, "client_id")?) {
        (Some(azp), Some(client_id)) if azp != client_id => {
            return Err(BearerError::Claims("azp and client_id disagree"));
        }
        (Some(client), _) | (None, Some(client)) => client,
        (None, None) => return Err(BearerError::Claims("azp or client_id is missing")),
    };
    let audiences = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(BearerError::Claims(
                "aud holds a value that is not a string",
            ))?,
        _ => return Err(BearerError::Claims("aud is missing")),
    };
    let scopes = match claims.get("scope") {
        None => Default::default(),
        Some(Value::String(scope)) => scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(BearerError::Claims("scope is not a string")),
    };
    Ok(BearerToken {
        identity_provider: identity_provider.to_owned(),
        subject,
        client_id,
        audiences,
        scopes,
        expires_at,
    })
}

/// Verifies `token` with `keys`: header, signature, then claims. `Err(None)` asks the caller
/// to fetch the keys again (unknown `kid`) and retry once.
pub(super) fn verify(
    token: &str,
    keys: &CoreJsonWebKeySet,
    identity_provider: &str,
    issuers: &[&str],
    now: u64,
) -> Result<BearerToken, Option<BearerError>> {
    let jws = jws::parse(token, &BEARER_JWS).map_err(|e| Some(e.into()))?;
    jws::verify_signature(&jws, keys)
        .map_err(|unknown_kid| (!unknown_kid).then_some(BearerError::Signature))?;
    check_claims(&jws.payload, identity_provider, issuers, now).map_err(Some)
}
