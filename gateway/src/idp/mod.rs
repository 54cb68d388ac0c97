//! OpenID Connect relying party: discovery, the authorization request (PKCE S256, `state`,
//! `nonce`), the code exchange and full ID-token validation, per identity provider.

use crate::config::IdpConfig;
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    Scope, StandardErrorResponse, TokenResponse as _,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
        CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
        CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
        CoreTokenIntrospectionResponse, CoreTokenType,
    },
};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::RwLock;

/// Claims beyond the standard ones: `groups` (Dex, Okta, Keycloak…) and whatever else the
/// provider sends, from which `forwardClaims` picks.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims {
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

type IdTokenFields = openidconnect::IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = openidconnect::StandardTokenResponse<IdTokenFields, CoreTokenType>;
type IdToken = openidconnect::IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type IdTokenClaims = openidconnect::IdTokenClaims<ExtraClaims, CoreGenderClaim>;
type Client = openidconnect::Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

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

/// Failures talking to, or believing, an identity provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("unknown identity provider {0:?}")]
    UnknownProvider(String),
    #[error("identity provider {idp} is not reachable: {detail}")]
    Discovery { idp: String, detail: String },
    #[error("the identity provider could not exchange the code: {0}")]
    Exchange(String),
    #[error("the identity provider refused the code: {0}")]
    CodeRejected(String),
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    #[error("the ID token is invalid: {0}")]
    InvalidIdToken(String),
    #[error("bad configuration: {0}")]
    Config(String),
}

impl OidcError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownProvider(_) => "unknown_provider",
            Self::Discovery { .. } => "discovery",
            Self::Exchange(_) => "exchange",
            Self::CodeRejected(_) => "code_rejected",
            Self::NoIdToken => "no_id_token",
            Self::InvalidIdToken(_) => "invalid_id_token",
            Self::Config(_) => "config",
        }
    }
}

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

/// What redeeming a refresh token produced.
pub struct Refreshed {
    /// The provider's new refresh token, when it rotates them (Dex does): the old one is dead.
    pub refresh_token: Option<String>,
    /// The identity in the new ID token, when the provider sent one; an error when that ID
    /// token does not verify (the rotated refresh token must be kept all the same).
    pub identity: Result<Option<RefreshedIdentity>, RefreshError>,
}

impl std::fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshed")
            .field("rotated", &self.refresh_token.is_some())
            .field("identity", &self.identity)
            .finish()
    }
}

/// Email and groups as the provider states them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshedIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

/// Why a refresh did not confirm the session.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider answered that the refresh token is dead (`invalid_grant`, or another code
    /// listed in `refreshRejectionErrors`): the session is over.
    #[error("the identity provider refused the refresh token: {0}")]
    Rejected(String),
    /// Anything else: unreachable, 5xx, an unexpected answer. Retried; meanwhile the policy's
    /// `refreshFailure` applies.
    #[error("the identity provider could not confirm the session: {0}")]
    Transient(String),
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

/// One configured provider; discovery happens on first use and is retried until it succeeds.
pub struct Provider {
    config: IdpConfig,
    secret: String,
    redirect: RedirectUrl,
    http: reqwest::Client,
    client: RwLock<Option<(Arc<Client>, std::time::Instant)>>,
}

impl Provider {
    /// The configuration this provider was built from.
    pub fn config(&self) -> &IdpConfig {
        &self.config
    }

    async fn client(&self) -> Result<Arc<Client>, OidcError> {
        if let Some((client, _)) = self.client.read().await.as_ref() {
            return Ok(client.clone());
        }
        self.discover(None).await
    }

    /// Runs discovery, unless another task did since `stale` (a client known not to have the
    /// key) or the last discovery is younger than the cooldown: after a token signed with an
    /// unknown key the provider may have rotated, but a flood of forged `kid`s must not become
    /// a flood of requests to it.
    async fn discover(&self, stale: Option<&Arc<Client>>) -> Result<Arc<Client>, OidcError> {
        let mut slot = self.client.write().await;
        if let Some((client, at)) = slot.as_ref() {
            let replaced = stale.is_some_and(|stale| !Arc::ptr_eq(stale, client));
            if stale.is_none() || replaced || at.elapsed() < self.config.jwks_refresh_cooldown {
                return Ok(client.clone());
            }
        }
        let discovery = |detail: String| OidcError::Discovery {
            idp: self.config.name.clone(),
            detail,
        };
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery(error_chain(&e)))?;
        let client = openidconnect::Client::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(self.redirect.clone());
        let client = Arc::new(client);
        *slot = Some((client.clone(), std::time::Instant::now()));
        Ok(client)
    }

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
    /// from the provider's JWKS), `iss` (or an alias), `aud`, `azp`, `exp`, `iat`, `nonce`.
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
        let response = client
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
            })?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let invalid = |m: String| OidcError::InvalidIdToken(m);
        let nonce = Nonce::new(nonce.to_owned());
        let (claims, iat) = self
            .verified_claims(&client, id_token, Some(&nonce), now)
            .await?;
        let stated_auth_time = claims
            .auth_time()
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        // A forced re-authentication must be proven: without `auth_time` the provider may
        // have reused its own session.
        if not_before.is_some() && stated_auth_time.is_none() && self.config.require_auth_time {
            return Err(invalid(
                "re-authentication was required but the ID token has no auth_time".into(),
            ));
        }
        let auth_time = stated_auth_time.unwrap_or(iat);
        if let Some(not_before) = not_before
            && auth_time + portcullis_core::token::CLOCK_SKEW_SECS < not_before
        {
            return Err(invalid(
                "the provider did not re-authenticate the user".into(),
            ));
        }
        let email = self.verified_email(&claims);
        let extra = claims.additional_claims();
        let ext = self
            .config
            .forward_claims
            .iter()
            .filter_map(|name| extra.other.get(name).map(|v| (name.clone(), v.clone())))
            .collect();
        Ok(VerifiedLogin {
            subject: claims.subject().as_str().to_owned(),
            email,
            groups: extra.groups.clone().unwrap_or_default(),
            ext,
            auth_time,
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        })
    }
}

impl Provider {
    /// Redeems `refresh_token`. A new ID token in the answer is verified like a login's
    /// (signature, issuer, audience, `azp`, `iat`) except for the nonce, which refreshed ID
    /// tokens do not carry; its subject must be `subject`.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        subject: &str,
        now: u64,
    ) -> Result<Refreshed, RefreshError> {
        let transient = |e: String| RefreshError::Transient(e);
        let client = self.client().await.map_err(|e| transient(e.to_string()))?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| transient(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(response) => {
                    let code = response.error().to_string();
                    if self.config.refresh_rejection_errors.contains(&code) {
                        RefreshError::Rejected(code)
                    } else {
                        transient(format!("the provider answered {code}"))
                    }
                }
                other => transient(error_chain(&other)),
            })?;
        let refresh_token = response.refresh_token().map(|t| t.secret().clone());
        let identity = self
            .refreshed_identity(&client, &response, subject, now)
            .await;
        Ok(Refreshed {
            refresh_token,
            identity,
        })
    }

    /// Verifies the ID token of a refresh answer, if there is one.
    async fn refreshed_identity(
        &self,
        client: &Arc<Client>,
        response: &TokenResponse,
        subject: &str,
        now: u64,
    ) -> Result<Option<RefreshedIdentity>, RefreshError> {
        let Some(id_token) = response.id_token() else {
            return Ok(None);
        };
        let (claims, _) = self
            .verified_claims(client, id_token, None, now)
            .await
            .map_err(|e| RefreshError::Transient(format!("refreshed ID token: {e}")))?;
        // A different subject is not a transient glitch: the grant now speaks for someone else.
        if claims.subject().as_str() != subject {
            return Err(RefreshError::Rejected("subject changed".into()));
        }
        Ok(Some(RefreshedIdentity {
            subject: subject.to_owned(),
            email: self.verified_email(&claims),
            groups: claims
                .additional_claims()
                .groups
                .clone()
                .unwrap_or_default(),
        }))
    }

    /// Verifies an ID token, at login (`nonce` given) or from a refresh (refreshed ID tokens
    /// carry none): signature with an allow-listed algorithm and the provider's keys (fetched
    /// again, with the cooldown, for a key it does not know: the provider may have rotated),
    /// `aud`, `exp`, then `iss` (or an alias), `azp` and `iat`. Returns the claims and `iat`.
    async fn verified_claims(
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
    fn verified_email(&self, claims: &IdTokenClaims) -> Option<String> {
        let verified = claims
            .email_verified()
            .unwrap_or(self.config.trust_unverified_email);
        claims
            .email()
            .filter(|_| verified)
            .map(|e| e.as_str().to_ascii_lowercase())
    }
}

/// Every configured provider, by name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: Arc<HashMap<String, Arc<Provider>>>,
}

impl Providers {
    /// Builds the providers; client secrets are read from their files here, once.
    pub fn new(
        configs: Vec<IdpConfig>,
        redirect: &str,
        http: reqwest::Client,
    ) -> Result<Self, OidcError> {
        let redirect =
            RedirectUrl::new(redirect.to_owned()).map_err(|e| OidcError::Config(e.to_string()))?;
        let mut by_name = HashMap::new();
        for config in configs {
            let secret = std::fs::read_to_string(&config.client_secret_file)
                .map_err(|e| {
                    OidcError::Config(format!(
                        "cannot read the client secret of {} from {}: {e}",
                        config.name,
                        config.client_secret_file.display()
                    ))
                })?
                .trim()
                .to_owned();
            let name = config.name.clone();
            if let Some(endpoint) = &config.end_session_endpoint
                && (endpoint.scheme() != "https"
                    || endpoint.fragment().is_some()
                    || !endpoint.username().is_empty())
            {
                return Err(OidcError::Config(format!(
                    "endSessionEndpoint of {name} must be an https URL without fragment or credentials"
                )));
            }
            let provider = Provider {
                config,
                secret,
                redirect: redirect.clone(),
                http: http.clone(),
                client: RwLock::new(None),
            };
            if by_name.insert(name.clone(), Arc::new(provider)).is_some() {
                return Err(OidcError::Config(format!(
                    "identity provider {name} is configured twice"
                )));
            }
        }
        Ok(Self {
            by_name: Arc::new(by_name),
        })
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<Provider>, OidcError> {
        self.by_name
            .get(name)
            .ok_or_else(|| OidcError::UnknownProvider(name.to_owned()))
    }

    /// True when a provider of that name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// The message of an error and all its sources, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
