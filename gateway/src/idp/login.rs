//! The login, as the authorization code flow: the authorization request (PKCE S256, `state`,
//! `nonce`) and, at the callback, the code exchange and the checks that turn the ID token into
//! a [`VerifiedLogin`].

use super::{Client, IdTokenClaims, OidcError, Provider, TokenResponse};
use crate::config::ForcedLoginPrompt;
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
    /// The provider's own session id (`sid`), when the ID token has one.
    pub provider_session_id: Option<String>,
    /// The ID token as the provider issued it (compact JWS), verified: kept, sealed, with the
    /// session, and sent back to the provider only as `id_token_hint` at logout.
    pub id_token: String,
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
            .field("id_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds the authorization request, with the provider's `authorizationParams`.
    /// `force_login` asks the provider to authenticate the user again (its `forcedLoginPrompt`
    /// added to the configured `prompt` values, with `max_age=0` for `login`) instead of
    /// reusing its own session.
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
        let params = &self.config.authorization_params;
        for (name, value) in params.extra() {
            request = request.add_extra_param(name.to_owned(), value.to_owned());
        }
        let forced = force_login.then_some(self.config.forced_login_prompt);
        for prompt in params.prompt(forced) {
            request = request.add_prompt(match prompt {
                "login" => CoreAuthPrompt::Login,
                "consent" => CoreAuthPrompt::Consent,
                "select_account" => CoreAuthPrompt::SelectAccount,
                other => CoreAuthPrompt::Extension(other.to_owned()),
            });
        }
        if forced.is_some_and(ForcedLoginPrompt::with_max_age) {
            request = request.set_max_age(Duration::ZERO);
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
        let stated_auth_time = claims
            .auth_time()
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        let auth_time = proven_auth_time(
            stated_auth_time,
            iat,
            not_before,
            self.config.require_auth_time,
        )?;
        let groups = self
            .groups(&client, &claims, response.access_token())
            .await?;
        let identity = self.identity(&claims, groups)?;
        Ok(VerifiedLogin {
            subject: identity.subject,
            email: identity.email,
            groups: identity.groups,
            ext: identity.claims,
            auth_time,
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            provider_session_id: provider_session_id(claims.additional_claims())?,
            id_token: id_token.to_string(),
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

/// The ID token's `sid` (OpenID Connect Front-/Back-Channel Logout), when present: the key a
/// back-channel logout names the session by. One that could not be stored (not a string, empty,
/// over 255 characters, control characters) refuses the login rather than making a session no
/// back-channel logout could find.
fn provider_session_id(claims: &super::ExtraClaims) -> Result<Option<String>, OidcError> {
    match claims.other.get("sid") {
        None => Ok(None),
        Some(serde_json::Value::String(sid))
            if !sid.is_empty()
                && sid.chars().count() <= 255
                && !sid.chars().any(char::is_control) =>
        {
            Ok(Some(sid.clone()))
        }
        Some(_) => Err(OidcError::InvalidIdToken(
            "sid is not a usable session id".into(),
        )),
    }
}

/// How far the provider's `auth_time` may lie before the gateway's `not_before` and still count
/// as a new authentication: for the two clocks' difference only. Not the 30 s tokens are
/// allowed: that would accept a provider session opened up to 30 s before a revocation (an
/// intruder who signed in just before being found) as the re-authentication the revocation
/// demands. Clocks of servers kept by NTP differ by well under a second.
pub const AUTH_TIME_SKEW_SECS: u64 = 5;

/// When the user authenticated: the ID token's `auth_time`, or its `iat` when the provider does
/// not send one. With `not_before` (a forced re-login after a revocation) the provider must
/// prove an authentication no earlier than that, give or take [`AUTH_TIME_SKEW_SECS`]: an
/// older `auth_time` means it reused its own login session (a client dropped
/// `prompt=login` / `max_age=0`, or the provider ignores them). With `require_auth_time` a
/// token without `auth_time` proves nothing and is refused too.
fn proven_auth_time(
    stated_auth_time: Option<u64>,
    iat: u64,
    not_before: Option<u64>,
    require_auth_time: bool,
) -> Result<u64, OidcError> {
    if not_before.is_some() && stated_auth_time.is_none() && require_auth_time {
        return Err(OidcError::NotReauthenticated(
            "the ID token has no auth_time".into(),
        ));
    }
    let auth_time = stated_auth_time.unwrap_or(iat);
    if let Some(not_before) = not_before
        && auth_time + AUTH_TIME_SKEW_SECS < not_before
    {
        return Err(OidcError::NotReauthenticated(format!(
            "auth_time {auth_time} predates the required {not_before}"
        )));
    }
    Ok(auth_time)
}

#[cfg(test)]
mod tests {
    use super::{AUTH_TIME_SKEW_SECS as CLOCK_SKEW_SECS, OidcError, proven_auth_time};

    const RAISED: u64 = 1_000_000;

    #[test]
    fn without_a_forced_login_any_auth_time_or_iat_is_taken() {
        assert_eq!(proven_auth_time(Some(5), 9, None, true).ok(), Some(5));
        assert_eq!(proven_auth_time(None, 9, None, true).ok(), Some(9));
    }

    #[test]
    fn a_forced_login_needs_an_auth_time_after_the_raise() {
        let fresh = proven_auth_time(Some(RAISED + 1), RAISED + 2, Some(RAISED), true);
        assert_eq!(fresh.ok(), Some(RAISED + 1));
        // Within the clock skew: accepted.
        let skewed = proven_auth_time(Some(RAISED - CLOCK_SKEW_SECS), RAISED, Some(RAISED), true);
        assert_eq!(skewed.ok(), Some(RAISED - CLOCK_SKEW_SECS));
        // A provider session from before the raise, however new the token (`iat`).
        for require in [true, false] {
            let stale = proven_auth_time(
                Some(RAISED - CLOCK_SKEW_SECS - 1),
                RAISED + 5,
                Some(RAISED),
                require,
            );
            assert!(
                matches!(stale, Err(OidcError::NotReauthenticated(_))),
                "{stale:?}"
            );
        }
    }

    #[test]
    fn a_forced_login_without_auth_time_is_refused_when_required() {
        let missing = proven_auth_time(None, RAISED + 5, Some(RAISED), true);
        assert!(
            matches!(missing, Err(OidcError::NotReauthenticated(_))),
            "{missing:?}"
        );
        // Not required (Dex): `iat` stands in, and must itself be after the raise.
        assert_eq!(
            proven_auth_time(None, RAISED + 5, Some(RAISED), false).ok(),
            Some(RAISED + 5)
        );
        assert!(proven_auth_time(None, RAISED - 100, Some(RAISED), false).is_err());
    }
}
