//! OpenID Connect relying party: discovery, the authorization request (PKCE S256, `state`,
//! `nonce`), the code exchange and full ID-token validation, per identity provider.
//!
//! This file holds the providers and their discovered clients; the flows live beside it:
//! `login` (authorization request and code exchange) and `refresh` (redeeming a refresh
//! token), both checking ID tokens through `id_token`; `bearer` checks machine clients' access
//! tokens.

pub mod bearer;
mod discovery_check;
mod error;
mod groups;
mod id_token;
mod jws;
mod login;
pub mod logout_token;
mod refresh;

pub use error::OidcError;
pub use login::{AuthorizationRequest, VerifiedLogin};
use portcullis_runtime::error_chain;
pub use refresh::{RefreshError, Refreshed, RefreshedIdentity};

use crate::config::IdpConfig;
use openidconnect::{
    AdditionalClaims, ClientId, ClientSecret, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, ProviderMetadataWithLogout, RedirectUrl,
    StandardErrorResponse,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
        CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
        CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse,
        CoreTokenType,
    },
};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
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

/// One configured provider; discovery happens on first use and is retried until it succeeds.
pub struct Provider {
    config: IdpConfig,
    /// The client secret in force: replaced when its file changes ([`Provider::set_secret`]).
    secret: Mutex<Arc<str>>,
    redirect: RedirectUrl,
    http: reqwest::Client,
    client: RwLock<Option<Discovered>>,
    /// The `jti`s of recent back-channel logout tokens.
    replay: Mutex<logout_token::ReplayCache>,
    /// Bearer tokens of machine clients verified recently, until their `exp`.
    bearers: Mutex<bearer::BearerCache>,
    /// When discovery last failed, and why (cleared by a success).
    failed: Mutex<Option<(Instant, String)>>,
}

/// After a failed discovery, further attempts fail at once for this long: a provider that is
/// down is not asked again for every request waiting on it (a bearer token, a login), which
/// any client could otherwise turn into a stream of requests to it.
const FAILED_DISCOVERY_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// A discovered client, when it was discovered, and the secret it was built with.
struct Discovered {
    client: Arc<Client>,
    at: Instant,
    secret: Arc<str>,
    /// The provider's keys as discovered with `client` (logout tokens are verified with them).
    jwks: Arc<CoreJsonWebKeySet>,
    /// The `end_session_endpoint` the discovery document advertises, when it is usable (see
    /// [`usable_end_session_endpoint`]); kept across rediscoveries like the keys.
    end_session: Option<url::Url>,
}

impl Provider {
    /// The configuration this provider was built from.
    pub fn config(&self) -> &IdpConfig {
        &self.config
    }

    /// Uses `secret` from the next call to the provider on (code exchange, refresh): the
    /// discovered client is rebuilt with it then, without a new discovery.
    pub fn set_secret(&self, secret: String) {
        *self.secret.lock().unwrap_or_else(PoisonError::into_inner) = secret.into();
    }

    fn secret(&self) -> Arc<str> {
        self.secret
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn client(&self) -> Result<Arc<Client>, OidcError> {
        if let Some(discovered) = self.client.read().await.as_ref()
            && discovered.secret == self.secret()
        {
            return Ok(discovered.client.clone());
        }
        self.discover(None).await
    }

    /// The discovered client and the provider's keys; with `stale` (a client whose keys lack
    /// a `kid`), discovered again under the same cooldown as for ID tokens.
    async fn keys(
        &self,
        stale: Option<&Arc<Client>>,
    ) -> Result<(Arc<Client>, Arc<CoreJsonWebKeySet>), OidcError> {
        let client = match stale {
            None => self.client().await?,
            Some(stale) => self.discover(Some(stale)).await?,
        };
        let jwks = self.client.read().await.as_ref().map(|d| d.jwks.clone());
        let jwks = jwks.ok_or_else(|| OidcError::Discovery {
            idp: self.config.name.clone(),
            detail: "no keys discovered".into(),
        })?;
        Ok((client, jwks))
    }

    /// Where to send the browser to end the user's session at this provider (RP-initiated
    /// logout): `None` when `rpInitiatedLogout` is off; else `endSessionEndpoint` when
    /// configured, else the discovered `end_session_endpoint` (discovery runs now if it has
    /// not yet; when it fails, `None`: the gateway's own logout must not wait on the provider).
    pub async fn end_session_endpoint(&self) -> Option<url::Url> {
        if !self.config.rp_initiated_logout {
            return None;
        }
        if let Some(configured) = &self.config.end_session_endpoint {
            return Some(configured.clone());
        }
        if let Err(error) = self.client().await {
            tracing::warn!(%error, "no discovery document: logout ends only the gateway's session");
            return None;
        }
        self.client.read().await.as_ref()?.end_session.clone()
    }

    fn bearer_cache(&self) -> std::sync::MutexGuard<'_, bearer::BearerCache> {
        self.bearers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replay_cache(&self) -> std::sync::MutexGuard<'_, logout_token::ReplayCache> {
        self.replay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs discovery, unless another task did since `stale` (a client known not to have the
    /// key) or the last discovery is younger than the cooldown: after a token signed with an
    /// unknown key the provider may have rotated, but a flood of forged `kid`s must not become
    /// a flood of requests to it.
    #[tracing::instrument(
        target = "portcullis::trace",
        name = "identity_provider",
        skip_all,
        fields(otel.name = "discovery", otel.kind = "client")
    )]
    async fn discover(&self, stale: Option<&Arc<Client>>) -> Result<Arc<Client>, OidcError> {
        let mut slot = self.client.write().await;
        let secret = self.secret();
        if let Some(discovered) = slot.as_mut() {
            let replaced = stale.is_some_and(|stale| !Arc::ptr_eq(stale, &discovered.client));
            if discovered.secret != secret {
                let client = (*discovered.client)
                    .clone()
                    .set_client_secret(ClientSecret::new(secret.to_string()));
                discovered.client = Arc::new(client);
                discovered.secret = secret.clone();
            }
            if stale.is_none()
                || replaced
                || discovered.at.elapsed() < self.config.jwks_refresh_cooldown
            {
                return Ok(discovered.client.clone());
            }
        }
        if let Some(pause) = self.paused() {
            return Err(pause);
        }
        match self.fetch(secret).await {
            Ok(discovered) => {
                let client = discovered.client.clone();
                *slot = Some(discovered);
                Ok(client)
            }
            Err(error) => {
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), error.to_string()));
                Err(error)
            }
        }
    }

    /// The error to answer at once while the last discovery failed less than
    /// [`FAILED_DISCOVERY_PAUSE`] ago.
    fn paused(&self) -> Option<OidcError> {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, detail) = failed.as_ref()?;
        (at.elapsed() < FAILED_DISCOVERY_PAUSE).then(|| OidcError::Discovery {
            idp: self.config.name.clone(),
            detail: format!("{detail} (not asked again for a moment)"),
        })
    }

    /// Fetches the discovery document and the keys, and builds the client with `secret`.
    async fn fetch(&self, secret: Arc<str>) -> Result<Discovered, OidcError> {
        let discovery = |detail: String| OidcError::Discovery {
            idp: self.config.name.clone(),
            detail,
        };
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery(error_chain(&e)))?;
        discovery_check::check_auth_time(
            &self.config.name,
            self.config.require_auth_time,
            metadata.claims_supported(),
        )?;
        let jwks = Arc::new(metadata.jwks().clone());
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .and_then(|e| usable_end_session_endpoint(&self.config.name, e.url()));
        let client = openidconnect::Client::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(secret.to_string())),
        )
        .set_redirect_uri(self.redirect.clone());
        *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(Discovered {
            client: Arc::new(client),
            at: Instant::now(),
            secret,
            jwks,
            end_session,
        })
    }
}

/// Every configured provider, by name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: Arc<HashMap<String, Arc<Provider>>>,
}

impl Providers {
    /// Builds the providers, with the client secrets in their files now (the reloader hands
    /// each provider a changed one, [`Provider::set_secret`]).
    pub fn new(
        configs: Vec<IdpConfig>,
        redirect: &str,
        http: reqwest::Client,
    ) -> Result<Self, OidcError> {
        let redirect =
            RedirectUrl::new(redirect.to_owned()).map_err(|e| OidcError::Config(e.to_string()))?;
        let mut by_name = HashMap::new();
        for config in configs {
            let secret = read_secret(&config.name, &config.client_secret_file)?;
            let name = config.name.clone();
            if let Some(endpoint) = &config.end_session_endpoint
                && !is_usable_end_session_endpoint(endpoint)
            {
                return Err(OidcError::Config(format!(
                    "endSessionEndpoint of {name} must be an https URL without fragment or credentials"
                )));
            }
            discovery_check::check_forced_login(&config)?;
            let provider = Provider {
                config,
                secret: Mutex::new(secret.into()),
                redirect: redirect.clone(),
                http: http.clone(),
                client: RwLock::new(None),
                replay: Mutex::default(),
                failed: Mutex::default(),
                bearers: Mutex::default(),
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

    /// Every configured provider.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.by_name.values()
    }

    /// The configured providers' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// Whether `endpoint` may receive a browser with an ID token in its query: https (an ID
/// token must not cross the network in clear), no credentials, no fragment.
fn is_usable_end_session_endpoint(endpoint: &url::Url) -> bool {
    endpoint.scheme() == "https"
        && endpoint.fragment().is_none()
        && endpoint.username().is_empty()
        && endpoint.password().is_none()
}

/// The discovered `end_session_endpoint` of provider `name`, when usable; one that is not is
/// ignored with a warning (logout then ends only the gateway's session), never followed.
fn usable_end_session_endpoint(name: &str, endpoint: &url::Url) -> Option<url::Url> {
    if is_usable_end_session_endpoint(endpoint) {
        return Some(endpoint.clone());
    }
    tracing::warn!(
        idp = name,
        %endpoint,
        "the discovered end_session_endpoint is not an https URL without fragment or \
         credentials; RP-initiated logout is not used"
    );
    None
}

/// The client secret of provider `name` in `file`, without surrounding whitespace.
pub fn read_secret(name: &str, file: &Path) -> Result<String, OidcError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        OidcError::Config(format!(
            "cannot read the client secret of {name} from {}: {e}",
            file.display()
        ))
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests;
