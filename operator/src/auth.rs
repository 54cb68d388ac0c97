//! Who may open the stream: a bearer token checked with a TokenReview (authenticated, carrying
//! our audience, belonging to one of the allowed ServiceAccounts). Results are cached by the
//! token's digest for a minute, so acks do not cost a review each.
//!
//! While the API server cannot answer a review, a token it accepted before is still accepted,
//! until the expiry written in the token itself (at most [`STALE_MAX`] after its last review):
//! a gateway restarted during an API-server outage (the same pod, the same projected token) gets
//! its state from the operator instead of staying NotReady until the API server is back. A
//! token never reviewed, or refused, is not: the outage admits nobody new. The trade-off: a
//! token invalidated during the outage (its pod deleted) reads the state until it expires.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest as _, Sha256};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};
use tracing::warn;

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 4096;
/// The longest a positive review is relied on while the API server cannot review again.
const STALE_MAX: Duration = Duration::from_secs(24 * 3600);

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("token not accepted")]
    Unauthenticated,
    #[error("{0} may not read the access state")]
    Forbidden(String),
    #[error("token review failed: {0}")]
    Review(#[from] kube::Error),
}

/// The token of an `Authorization: Bearer` header value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)
}

/// A review's outcome (the user, or why not) and when it was made, by token digest.
type ReviewCache = HashMap<[u8; 32], Review>;

/// One review of a token.
#[derive(Clone, Debug)]
struct Review {
    outcome: Result<String, String>,
    at: Instant,
    /// The `exp` the token carries (unix seconds), if it is a JWT that says.
    expires: Option<u64>,
}

impl Review {
    fn fresh(&self) -> bool {
        self.at.elapsed() < CACHE_TTL
    }

    /// Whether it may stand in for a review the API server cannot make now.
    fn usable_while_unreviewable(&self, now: u64) -> bool {
        self.outcome.is_ok()
            && self.at.elapsed() < STALE_MAX
            && self.expires.is_some_and(|exp| now < exp)
    }
}

/// Checks tokens.
pub struct Authenticator {
    client: Client,
    audience: String,
    allowed: Vec<String>,
    cache: Mutex<ReviewCache>,
}

impl Authenticator {
    pub fn new(client: Client, audience: String, allowed: Vec<String>) -> Self {
        Self {
            client,
            audience,
            allowed,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The allowed ServiceAccount user the `Authorization` header value belongs to.
    pub async fn check(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let user = self.user_of(bearer(authorization)?).await?;
        if self.allowed.contains(&user) {
            Ok(user)
        } else {
            Err(AuthError::Forbidden(user))
        }
    }

    /// The user a token with our audience belongs to, whoever it is.
    pub async fn user_of(&self, token: &str) -> Result<String, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&digest).cloned());
        if let Some(review) = known.as_ref().filter(|r| r.fresh()) {
            return review
                .outcome
                .clone()
                .map_err(|_| AuthError::Unauthenticated);
        }
        let outcome = match self.review(token).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let now = crate::clock::now();
                return match known.filter(|r| r.usable_while_unreviewable(now)) {
                    Some(review) => {
                        warn!(%error, "the API server cannot review tokens: accepting one it accepted before, until it expires");
                        review.outcome.map_err(|_| AuthError::Unauthenticated)
                    }
                    None => Err(AuthError::Review(error)),
                };
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                let now = crate::clock::now();
                cache.retain(|_, r| r.fresh() || r.usable_while_unreviewable(now));
            }
            if cache.len() < CACHE_MAX {
                let review = Review {
                    outcome: outcome.clone(),
                    at: Instant::now(),
                    expires: expiry_of(token),
                };
                cache.insert(digest, review);
            }
        }
        outcome.map_err(|_| AuthError::Unauthenticated)
    }

    /// Ok(user) for an authenticated token with our audience, Err(()) otherwise.
    async fn review(&self, token: &str) -> Result<Result<String, String>, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api.create(&PostParams::default(), &review).await?;
        let Some(status) = reviewed.status else {
            return Ok(Err("no status".into()));
        };
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience));
        match (
            status.authenticated,
            audience_ok,
            status.user.and_then(|u| u.username),
        ) {
            (Some(true), true, Some(user)) => Ok(Ok(user)),
            _ => Ok(Err(status
                .error
                .unwrap_or_else(|| "not authenticated".into()))),
        }
    }
}

/// The `exp` claim of a JWT, read without checking it: only ever read from a token the API
/// server has accepted (the cache is keyed by its digest).
fn expiry_of(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(outcome: Result<String, String>, expires: Option<u64>) -> Review {
        Review {
            outcome,
            at: Instant::now(),
            expires,
        }
    }

    #[test]
    fn only_an_accepted_unexpired_token_stands_in_for_a_review() {
        let user = Ok("system:serviceaccount:portcullis:gateway".to_owned());
        assert!(review(user.clone(), Some(2_000)).usable_while_unreviewable(1_000));
        assert!(!review(user.clone(), Some(1_000)).usable_while_unreviewable(1_000));
        assert!(!review(user, None).usable_while_unreviewable(1_000));
        assert!(!review(Err("refused".into()), Some(2_000)).usable_while_unreviewable(1_000));
    }

    #[test]
    fn the_expiry_is_read_from_the_token_payload() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"aud":["portcullis"],"exp":1800000000,"sub":"x"}"#);
        assert_eq!(expiry_of(&format!("h.{payload}.s")), Some(1_800_000_000));
        assert_eq!(expiry_of("not a jwt"), None);
        assert_eq!(expiry_of("h.!!!.s"), None);
    }
}
