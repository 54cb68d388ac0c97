//! The compact JWS checks shared by every token a provider sends besides its ID tokens
//! (`openidconnect` verifies those): back-channel `logout_token`s and machine clients' bearer
//! access tokens. One parser, so both refuse the same things: more or fewer than three parts,
//! non-base64url parts, an algorithm outside the ID tokens' allow-list, an unexpected `typ`,
//! any `crit`, a non-string `kid`.

use super::id_token::ALLOWED_ALGS;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use openidconnect::{
    JsonWebKey, JsonWebKeyId,
    core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm},
};
use serde_json::{Map, Value};

/// A compact JWS split and decoded; nothing in it is trusted before [`verify_signature`].
pub(super) struct Jws<'a> {
    pub alg: CoreJwsSigningAlgorithm,
    pub kid: Option<JsonWebKeyId>,
    pub signed: &'a [u8],
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Why a token is not an acceptable JWS: the token isn't one, or its header is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JwsError {
    Malformed(&'static str),
    Header(&'static str),
}

/// What a kind of token must look like.
pub(super) struct Expect {
    /// The longest token looked at.
    pub max_len: usize,
    /// The `typ` values accepted besides an absent one, lower case, without `application/`.
    pub typs: &'static [&'static str],
    /// The refusal when `typ` is another one.
    pub typ_error: &'static str,
}

/// Decodes one base64url part.
pub(super) fn b64(part: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed("a part is not base64url"))
}

/// Splits and decodes `token` and checks its header against `expect`.
pub(super) fn parse<'a>(token: &'a str, expect: &Expect) -> Result<Jws<'a>, JwsError> {
    if token.len() > expect.max_len {
        return Err(JwsError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("not three parts"));
    };
    let header: Map<String, Value> = serde_json::from_slice(&b64(header)?)
        .map_err(|_| JwsError::Malformed("the header is not a JSON object"))?;
    let alg: CoreJwsSigningAlgorithm = header
        .get("alg")
        .cloned()
        .and_then(|alg| serde_json::from_value(alg).ok())
        .filter(|alg| ALLOWED_ALGS.contains(alg))
        .ok_or(JwsError::Header("alg is missing or not allowed"))?;
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) => {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            if !expect.typs.contains(&typ) {
                return Err(JwsError::Header(expect.typ_error));
            }
        }
        Some(_) => return Err(JwsError::Header("typ is not a string")),
    }
    if header.contains_key("crit") {
        return Err(JwsError::Header("crit is not supported"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(JsonWebKeyId::new(kid.clone())),
        Some(_) => return Err(JwsError::Header("kid is not a string")),
    };
    let signed_len = token.len() - signature.len() - 1;
    Ok(Jws {
        alg,
        kid,
        signed: &token.as_bytes()[..signed_len],
        signature: b64(signature)?,
        payload: b64(payload)?,
    })
}

/// Whether a key of `keys` (the one named by `kid`, when the header names one) verifies the
/// signature: `Err(true)` when the key set has no key of that `kid` (the provider may have
/// rotated: fetch the keys again), `Err(false)` when the signature does not verify.
pub(super) fn verify_signature(jws: &Jws<'_>, keys: &CoreJsonWebKeySet) -> Result<(), bool> {
    let candidates: Vec<&CoreJsonWebKey> = keys
        .keys()
        .iter()
        .filter(|key| match (&jws.kid, key.key_id()) {
            (Some(kid), Some(id)) => kid == id,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(true);
    }
    let verified = candidates.iter().any(|key| {
        key.verify_signature(&jws.alg, jws.signed, &jws.signature)
            .is_ok()
    });
    if verified { Ok(()) } else { Err(false) }
}
