//! ID-token validation, shared by the login and the refresh: which signatures are accepted,
//! which claims must match, and which email the provider vouches for.

use super::{Client, IdToken, IdTokenClaims, OidcError, Provider};
use openidconnect::{Nonce, core::CoreJwsSigningAlgorithm};
use std::{sync::Arc, time::Duration};

/// Signature algorithms accepted on ID tokens. Never `none`, never HMAC (the client secret is
/// not a signing key we want to trust).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 5] = [
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
        if iat + MAX_ID_TOKEN_AGE.as_secs() < now
            || iat > now + portcullis_core::token::CLOCK_SKEW_SECS
        {
            return Err(invalid("iat is out of range".into()));
        }
        Ok((claims, iat))
    }

    /// The lower-cased email, only when the provider vouches for it (`email_verified`, or
    /// `trustUnverifiedEmail` for providers that never send it).
    pub(super) fn verified_email(&self, claims: &IdTokenClaims) -> Option<String> {
        let verified = claims
            .email_verified()
            .unwrap_or(self.config.trust_unverified_email);
        claims
            .email()
            .filter(|_| verified)
            .map(|e| e.as_str().to_ascii_lowercase())
    }

    /// The groups the ID token states (none when it states none): at login and at every
    /// refresh alike.
    pub(super) fn groups(claims: &IdTokenClaims) -> Vec<String> {
        claims
            .additional_claims()
            .groups
            .clone()
            .unwrap_or_default()
    }
}
