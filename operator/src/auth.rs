//! Who may open the stream: a bearer token checked with a TokenReview (authenticated, carrying
//! our audience, belonging to one of the allowed ServiceAccounts). Results are cached by the
//! token's digest for a minute, so acks do not cost a review each.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest as _, Sha256};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 4096;

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
type ReviewCache = HashMap<[u8; 32], (Result<String, String>, Instant)>;

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
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(&digest)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(r, _)| r.clone())
        });
        let user = match cached {
            Some(result) => result,
            None => {
                let result = self.review(token).await?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_MAX {
                        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                    }
                    cache.insert(digest, (result.clone(), Instant::now()));
                }
                result
            }
        };
        user.map_err(|_| AuthError::Unauthenticated)
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
