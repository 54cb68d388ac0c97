//! The login, as the authorization code flow: the authorization request (PKCE S256, `state`,
//! `nonce`) and, at the callback, the code exchange and the checks that turn the ID token into
//! a [`VerifiedLogin`].

use super::{Client, IdTokenClaims, OidcError, Provider, TokenResponse};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse as _,
    PkceCodeChallenge, PkceCodeVerifier, Scope, TokenResponse as _,
    core::{CoreAuthPrompt, CoreResponseType},
};
use portcullis_runtime::error_chain;
use std::time::Duration;

/// What starting a login produces: where to send the browser, and what to remember until the
/// callback.
pub struct AuthorizationRequest {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The verified result of a login.
#[derive(Clone)]
pub struct VerifiedLogin {
    pub subject: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub ext: serde_json::Map<String, serde_json::Value>,
    /// `auth_time`, or `iat` when the provider does not send it.
    pub auth_time: u64,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for VerifiedLogin {
    /// Never the refresh token: a `?` in a log line must not leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedLogin")
            .field("subject", &self.subject)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("auth_time", &self.auth_time)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds the authorization request. `force_login` asks the provider to authenticate the
    /// user again (`prompt=login`, `max_age=0`) instead of reusing its own session.
    pub async fn authorize(&self, force_login: bool) -> Result<AuthorizationRequest, OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        if force_login {
            request = request
                .add_prompt(CoreAuthPrompt::Login)
                .set_max_age(Duration::ZERO);
        }
        let (url, state, nonce) = request.url();
        Ok(AuthorizationRequest {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code and validates the ID token: signature (allow-listed algorithms, keys
    /// from the provider's JWKS), `iss` (or an alias), `aud`, `azp`, `exp`, `iat`, `nbf`,
    /// `nonce`; then the claim values (`OidcError::UnacceptableClaims`).
    /// `not_before` is the earliest acceptable `auth_time` (for forced re-logins).
    pub async fn complete(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        not_before: Option<u64>,
        now: u64,
    ) -> Result<VerifiedLogin, OidcError> {
        let client = self.client().await?;
        let response = self.exchange_code(&client, code, pkce_verifier).await?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        let (claims, iat) = self
            .verified_claims(&client, id_token, Some(&nonce), now)
            .await?;
        let auth_time = self.proven_auth_time(&claims, iat, not_before)?;
        let identity = self.identity(&claims)?;
        Ok(VerifiedLogin {
            subject: identity.subject,
            email: identity.email,
            groups: identity.groups,
            ext: identity.claims,
            auth_time,
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        })
    }

    /// Redeems the authorization code (with the PKCE verifier) at the token endpoint. A refusal
    /// by the provider is told apart from failing to reach it: a spent or foreign code is the
    /// user's problem, an unreachable provider is ours.
    #[tracing::instrument(
        target = "portcullis::trace",
        name = "identity_provider",
        skip_all,
        fields(otel.name = "exchange code", otel.kind = "client")
    )]
    async fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<TokenResponse, OidcError> {
        client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // The provider answered, and said no (a spent or foreign code: `invalid_grant`).
                openidconnect::RequestTokenError::ServerResponse(response) => {
                    OidcError::CodeRejected(response.error().to_string())
                }
                other => OidcError::Exchange(error_chain(&other)),
            })
    }

    /// When the user authenticated: `auth_time`, or `iat` when the provider does not send it.
    /// With `not_before` (a forced re-login) it must be proven no earlier than that, give or
    /// take the clock skew.
    fn proven_auth_time(
        &self,
        claims: &IdTokenClaims,
        iat: u64,
        not_before: Option<u64>,
    ) -> Result<u64, OidcError> {
        let stated_auth_time = claims
            .auth_time()
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        // A forced re-authentication must be proven: without `auth_time` the provider may
        // have reused its own session.
        if not_before.is_some() && stated_auth_time.is_none() && self.config.require_auth_time {
            return Err(OidcError::NotReauthenticated(
                "the ID token has no auth_time".into(),
            ));
        }
        let auth_time = stated_auth_time.unwrap_or(iat);
        if let Some(not_before) = not_before
            && auth_time + portcullis_core::token::CLOCK_SKEW_SECS < not_before
        {
            return Err(OidcError::NotReauthenticated(format!(
                "auth_time {auth_time} predates the required {not_before}"
            )));
        }
        Ok(auth_time)
    }

    /// The extra claims `forwardClaims` names, as the provider sent them.
    pub(super) fn forwarded_claims(
        &self,
        claims: &IdTokenClaims,
    ) -> serde_json::Map<String, serde_json::Value> {
        let extra = claims.additional_claims();
        self.config
            .forward_claims
            .iter()
            .filter_map(|name| extra.other.get(name).map(|v| (name.clone(), v.clone())))
            .collect()
    }
}
