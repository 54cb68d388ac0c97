//! ID-token validation, shared by the login and the refresh: which signatures are accepted,
//! which claims must match, and which email the provider vouches for.

use super::{Client, ExtraClaims, IdToken, IdTokenClaims, OidcError, Provider};
use openidconnect::{Nonce, core::CoreJwsSigningAlgorithm};
use portcullis_core::{Identity, identity::ClaimError, token::CLOCK_SKEW_SECS};
use std::{sync::Arc, time::Duration};

/// Signature algorithms accepted on ID tokens. Never `none`, never HMAC (the client secret is
/// not a signing key we want to trust).
pub(super) const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 5] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// How far in the past an ID token's `iat` may be.
const MAX_ID_TOKEN_AGE: Duration = Duration::from_secs(10 * 60);

impl Provider {
    /// Verifies an ID token, at login (`nonce` given) or from a refresh (refreshed ID tokens
    /// carry none): signature with an allow-listed algorithm and the provider's keys (fetched
    /// again, with the cooldown, for a key it does not know: the provider may have rotated),
    /// `aud`, `exp`, then `iss` (or an alias), `azp` and `iat`. Returns the claims and `iat`.
    pub(super) async fn verified_claims(
        &self,
        client: &Arc<Client>,
        id_token: &IdToken,
        nonce: Option<&Nonce>,
        now: u64,
    ) -> Result<(IdTokenClaims, u64), OidcError> {
        let invalid = |m: String| OidcError::InvalidIdToken(m);
        let verify = |client: &Client| {
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(ALLOWED_ALGS)
                .require_issuer_match(false);
            match nonce {
                Some(nonce) => id_token.claims(&verifier, nonce),
                None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
            }
            .cloned()
        };
        let claims = match verify(client) {
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => {
                let fresh = self.discover(Some(client)).await?;
                verify(&fresh)
            }
            other => other,
        }
        .map_err(|e| invalid(e.to_string()))?;
        let iss = claims.issuer().as_str();
        if iss != self.config.issuer && !self.config.issuer_aliases.iter().any(|a| a == iss) {
            return Err(invalid(format!("unexpected issuer {iss}")));
        }
        if let Some(azp) = claims.authorized_party()
            && azp.as_str() != self.config.client_id
        {
            return Err(invalid("azp is not this client".into()));
        }
        let iat = u64::try_from(claims.issue_time().timestamp()).unwrap_or(0);
        if iat + MAX_ID_TOKEN_AGE.as_secs() < now || iat > now + CLOCK_SKEW_SECS {
            return Err(invalid("iat is out of range".into()));
        }
        check_not_before(claims.additional_claims(), now).map_err(|m| invalid(m.into()))?;
        Ok((claims, iat))
    }

    /// The email as the provider states it, only when it vouches for it (`email_verified`, or
    /// `trustUnverifiedEmail` for providers that never send it). [`Provider::identity`]
    /// parses it strictly.
    pub(super) fn verified_email<'a>(&self, claims: &'a IdTokenClaims) -> Option<&'a str> {
        let verified = claims
            .email_verified()
            .unwrap_or(self.config.trust_unverified_email);
        claims.email().filter(|_| verified).map(|e| e.as_str())
    }

    /// The user an ID token describes, its claim values checked before they can become a
    /// session (see [`Identity::checked`]): `sub`, the verified email parsed strictly,
    /// `groups` (read by [`Provider::groups`], from the ID token or userinfo), and the claims
    /// `forwardClaims` names.
    pub(super) fn identity(
        &self,
        claims: &IdTokenClaims,
        groups: Vec<String>,
    ) -> Result<Identity, ClaimError> {
        Identity::checked(
            claims.subject().as_str().to_owned(),
            self.verified_email(claims),
            groups,
            self.forwarded_claims(claims),
        )
    }
}

/// `nbf`, when the ID token has one (OIDC makes it optional; the library does not check it):
/// a number of seconds no later than now, give or take the clock skew `iat` is allowed.
fn check_not_before(extra: &ExtraClaims, now: u64) -> Result<(), &'static str> {
    let Some(nbf) = extra.other.get("nbf") else {
        return Ok(());
    };
    let Some(nbf) = nbf.as_f64().filter(|n| n.is_finite()) else {
        return Err("nbf is not a number");
    };
    // Compared as floats: `nbf` may be fractional, and an absurd value must not wrap.
    #[allow(clippy::cast_precision_loss)]
    let latest = (now + CLOCK_SKEW_SECS) as f64;
    if nbf > latest {
        return Err("nbf is in the future");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(nbf: Option<serde_json::Value>) -> ExtraClaims {
        let mut extra = ExtraClaims::default();
        if let Some(nbf) = nbf {
            extra.other.insert("nbf".into(), nbf);
        }
        extra
    }

    #[test]
    fn not_before_is_checked_with_the_clock_skew_of_iat() {
        let now = 1_700_000_000;
        let skew = CLOCK_SKEW_SECS;
        for nbf in [
            None,
            Some(serde_json::json!(now)),
            Some(serde_json::json!(now - 3600)),
            Some(serde_json::json!(now + skew)),
            Some(serde_json::json!(0)),
            Some(serde_json::json!(-5)),
            Some(serde_json::json!(now as f64 + 0.5)),
        ] {
            assert_eq!(
                check_not_before(&extra(nbf.clone()), now),
                Ok(()),
                "{nbf:?}"
            );
        }
        for (nbf, error) in [
            (serde_json::json!(now + skew + 1), "nbf is in the future"),
            (serde_json::json!(now + 86_400), "nbf is in the future"),
            (serde_json::json!(u64::MAX), "nbf is in the future"),
            (
                serde_json::json!((now + skew) as f64 + 0.5),
                "nbf is in the future",
            ),
            (serde_json::json!(1e300), "nbf is in the future"),
            (serde_json::json!("1700000000"), "nbf is not a number"),
            (serde_json::json!(null), "nbf is not a number"),
            (serde_json::json!([now]), "nbf is not a number"),
        ] {
            assert_eq!(
                check_not_before(&extra(Some(nbf.clone())), now),
                Err(error),
                "{nbf}"
            );
        }
    }
}
