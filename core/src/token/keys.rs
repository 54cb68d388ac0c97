//! The gateway's signing keys: loading them, signing tokens, and verifying a token's signature,
//! type, issuer and audience.

use super::{Claims, KeyError, MAX_TOKEN_LEN, TokenError, TokenKind, check_issued, check_lifetime};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{Jwk, JwkSet, ThumbprintHash},
};
use serde::Serialize;

/// One ES256 key pair.
struct KeyPair {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl KeyPair {
    fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let encoding = EncodingKey::from_ec_pem(pem).map_err(KeyError::Pem)?;
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(KeyError::Public)?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(KeyError::Public)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(KeyError::Public)?;
        Ok(Self {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }
}

/// The gateway's signing keys: it signs with `current`, publishes `current` and `next` (so
/// verifiers know the next key before it is used) and still accepts `previous` (so a rotation
/// logs nobody out).
pub struct KeySet {
    current: KeyPair,
    others: Vec<KeyPair>,
    jwks: JwkSet,
}

impl KeySet {
    /// Loads the keys from PKCS#8 PEM.
    pub fn from_pems(
        current: &[u8],
        next: Option<&[u8]>,
        previous: &[&[u8]],
    ) -> Result<Self, KeyError> {
        let current = KeyPair::from_pem(current)?;
        let mut others = Vec::new();
        let mut published = vec![current.jwk.clone()];
        if let Some(next) = next {
            let next = KeyPair::from_pem(next)?;
            published.push(next.jwk.clone());
            others.push(next);
        }
        for pem in previous {
            let key = KeyPair::from_pem(pem)?;
            published.push(key.jwk.clone());
            others.push(key);
        }
        others.retain(|k| k.kid != current.kid);
        published.dedup_by(|a, b| a.common.key_id == b.common.key_id);
        Ok(Self {
            current,
            others,
            jwks: JwkSet { keys: published },
        })
    }

    /// The key id new tokens are signed with.
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs claims as a token of `kind`.
    pub fn sign<C: Serialize>(&self, kind: TokenKind, claims: &C) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(kind.typ().to_owned());
        header.kid = Some(self.current.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.current.encoding).map_err(KeyError::Sign)
    }

    fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        if self.current.kid == kid {
            return Some(&self.current.decoding);
        }
        self.others
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
    }

    /// Verifies signature, type, issuer and audience of a token of `kind`, and that it is
    /// within its lifetime at `now` (unix seconds). Costs a signature check: callers on the
    /// request path go through a `Verifier`.
    pub fn verify<C: Claims>(
        &self,
        kind: TokenKind,
        token: &str,
        issuer: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<C, TokenError> {
        let claims = self.verify_signature::<C>(kind, token, issuer, audience, now)?;
        check_lifetime(&claims, now)?;
        Ok(claims)
    }

    /// Like [`KeySet::verify`] but accepts an expired token (never one issued in the future):
    /// for renewing the token of a session that is still alive.
    pub fn verify_signature<C: Claims>(
        &self,
        kind: TokenKind,
        token: &str,
        issuer: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<C, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.typ.as_deref() != Some(kind.typ()) {
            return Err(TokenError::WrongType);
        }
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = self.decoding_key(kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        // Expiry is checked below against the caller's clock, so cached and fresh
        // verifications agree exactly.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<C>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                _ => TokenError::Malformed,
            }
        })?;
        check_issued(&data.claims, now)?;
        Ok(data.claims)
    }
}
