//! OpenID Connect Back-Channel Logout 1.0 receiver:
//! `POST https://<auth host>/.portcullis/backchannel-logout/<provider name>`.
//!
//! One URL per provider, not one keyed on the token's `iss`: the path says whose keys verify
//! the token before a byte of it is believed, so an unverified claim never picks the key set,
//! and a provider without `backchannelLogout: true` has no endpoint at all (404).
//!
//! A valid `logout_token` (`crate::idp::logout_token`) revokes every live session it names —
//! by the provider's `sid` when it has one, otherwise every session of its `sub` — exactly as
//! a logout does (`logout::end_session`): at once in this gateway's memory, then as
//! `spec.revoked` at the API server, which every gateway enforces. Answers follow §2.8: 200 on
//! success, 400 with `{"error", "error_description"}` on any failure, both `no-store`. A
//! logout that cannot be carried out (the sessions cannot be listed) is a 400 too, and its
//! `jti` is forgotten so the provider may send the token again.

use crate::{
    audit,
    clock::now,
    gateway::Gateway,
    http::no_store,
    idp::{
        Provider,
        logout_token::{LogoutClaims, LogoutTokenError, MAX_LOGOUT_TOKEN_LEN},
    },
    login::logout::end_session,
    metrics::{BackchannelResult, UNKNOWN_IDP},
};
use axum::{
    Json,
    extract::Request,
    response::{IntoResponse, Response},
};
use futures::{StreamExt as _, stream};
use http::{Method, StatusCode, header};
use tracing::{info, warn};

/// The path prefix; the provider's name follows.
pub const PREFIX: &str = "/.portcullis/backchannel-logout/";

/// The largest request body read (a form holding one logout token).
const MAX_BODY: usize = MAX_LOGOUT_TOKEN_LEN + 64;

/// Revocations of one back-channel logout written at once.
const CONCURRENT_REVOCATIONS: usize = 8;

/// Why a back-channel logout was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no back-channel logout endpoint for this provider")]
    NotFound,
    #[error("only POST is accepted")]
    Method,
    #[error("the request is not application/x-www-form-urlencoded")]
    ContentType,
    #[error("the request body is too large or unreadable")]
    Body,
    #[error("the request must carry exactly one logout_token")]
    Form,
    #[error(transparent)]
    Token(#[from] LogoutTokenError),
    #[error("the sessions to end could not be looked up; try again")]
    Lookup,
}

impl Refusal {
    /// The metric's `result` for this refusal.
    fn result(&self) -> BackchannelResult {
        match self {
            Self::NotFound => BackchannelResult::NotFound,
            Self::Method => BackchannelResult::Method,
            Self::ContentType => BackchannelResult::ContentType,
            Self::Body => BackchannelResult::Body,
            Self::Form => BackchannelResult::Form,
            Self::Lookup => BackchannelResult::Lookup,
            Self::Token(error) => match error {
                LogoutTokenError::Malformed(_) => BackchannelResult::Malformed,
                LogoutTokenError::Header(_) => BackchannelResult::Header,
                LogoutTokenError::Signature => BackchannelResult::Signature,
                LogoutTokenError::Claims(_) => BackchannelResult::Claims,
                LogoutTokenError::Replayed => BackchannelResult::Replayed,
                LogoutTokenError::ReplayCacheFull => BackchannelResult::ReplayCacheFull,
                LogoutTokenError::Keys => BackchannelResult::Keys,
            },
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({
            "error": "invalid_request",
            "error_description": self.to_string(),
        });
        let mut response = (status, Json(body)).into_response();
        no_store(response.headers_mut());
        response
    }
}

/// `POST /.portcullis/backchannel-logout/<provider>` on the auth host. Every request is
/// counted in `backchannel_logouts_total` by provider and result.
pub async fn handle(gateway: &Gateway, req: Request) -> Response {
    let name = req.uri().path().strip_prefix(PREFIX).unwrap_or_default();
    let Some(provider) = gateway
        .providers()
        .get(name)
        .ok()
        .filter(|p| p.config().backchannel_logout)
        .cloned()
    else {
        // The path's name is the caller's: never a label.
        gateway
            .metrics()
            .backchannel_logout(UNKNOWN_IDP, BackchannelResult::NotFound);
        return Refusal::NotFound.into_response();
    };
    let idp = provider.config().name.as_str();
    match logout(gateway, &provider, req).await {
        Ok(()) => {
            gateway
                .metrics()
                .backchannel_logout(idp, BackchannelResult::Accepted);
            let mut response = StatusCode::OK.into_response();
            no_store(response.headers_mut());
            response
        }
        Err(refusal) => {
            gateway.metrics().backchannel_logout(idp, refusal.result());
            refusal.into_response()
        }
    }
}

async fn logout(gateway: &Gateway, provider: &Provider, req: Request) -> Result<(), Refusal> {
    let idp = provider.config().name.clone();
    if req.method() != Method::POST {
        return Err(Refusal::Method);
    }
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(Refusal::ContentType);
    }
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| Refusal::Body)?;
    let token = logout_token(&body)?;
    let claims = provider
        .verify_logout_token(&token, now())
        .await
        .inspect_err(|error| warn!(idp, %error, "refused a back-channel logout token"))?;
    let sids = match named_sessions(gateway, &idp, &claims).await {
        Ok(sids) => sids,
        Err(refusal) => {
            provider.forget_logout_token(&claims.jti);
            return Err(refusal);
        }
    };
    let reason = format!("back-channel logout from identity provider {idp}");
    // A `sub`-only token can name many sessions: each ends in memory at once, and their
    // revocations are written side by side, so an API server that is slow or down (each write
    // waits up to `REVOKE_WAIT`, then queues) does not hold the provider's call for the sum.
    stream::iter(&sids)
        .for_each_concurrent(CONCURRENT_REVOCATIONS, |sid| {
            audit::ended_by_provider(sid, &idp, "back-channel logout");
            end_session(gateway, sid, &reason)
        })
        .await;
    info!(idp, sessions = sids.len(), "back-channel logout");
    Ok(())
}

/// The one `logout_token` of the form.
fn logout_token(body: &[u8]) -> Result<String, Refusal> {
    let mut tokens = url::form_urlencoded::parse(body)
        .filter(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(token), None) if !token.is_empty() => Ok(token),
        _ => Err(Refusal::Form),
    }
}

/// The live sessions the token names.
async fn named_sessions(
    gateway: &Gateway,
    idp: &str,
    claims: &LogoutClaims,
) -> Result<Vec<String>, Refusal> {
    let recorder = gateway.sessions().as_ref().ok_or(Refusal::Lookup)?;
    recorder
        .named_by_logout(idp, claims.sid.as_deref(), claims.sub.as_deref())
        .await
        .map_err(|error| {
            warn!(idp, %error, "cannot list the sessions a back-channel logout names");
            Refusal::Lookup
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_carries_exactly_one_logout_token() {
        assert_eq!(
            logout_token(b"logout_token=a.b.c").ok().as_deref(),
            Some("a.b.c")
        );
        assert_eq!(
            logout_token(b"x=1&logout_token=a%2Eb.c").ok().as_deref(),
            Some("a.b.c")
        );
        for bad in [
            &b""[..],
            b"logout_token=",
            b"token=a.b.c",
            b"logout_token=a&logout_token=b",
        ] {
            assert!(matches!(logout_token(bad), Err(Refusal::Form)));
        }
    }

    #[test]
    fn a_refusal_is_a_400_with_the_spec_error_fields_and_no_store() {
        let response = Refusal::Token(LogoutTokenError::Replayed).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response
                .headers()
                .get(header::CACHE_CONTROL)
                .map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        assert_eq!(
            Refusal::NotFound.into_response().status(),
            StatusCode::NOT_FOUND
        );
    }
}
