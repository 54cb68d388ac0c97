//! Machine clients of the test realm: confidential clients with a service account, which get
//! access tokens by the OAuth 2.0 client-credentials grant (no user, no browser), as a
//! backend calling an API through the gateway would.

use super::{KeycloakServer, expect_success};
use crate::dex::random_token;
use anyhow::{Context as _, Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};

/// A machine client to create in the realm.
#[derive(Clone, Debug)]
pub struct ServiceClient<'a> {
    /// `clientId`: what the tokens carry in `azp` and `client_id`.
    pub client_id: &'a str,
    /// Added to the tokens' `aud` by an audience mapper (Keycloak puts none there by itself
    /// for a client-credentials token but its own `account`).
    pub audience: Option<&'a str>,
    /// How long its access tokens live, in seconds.
    pub token_lifespan: u64,
}

impl KeycloakServer {
    /// Creates `client` (service accounts enabled, every other flow off) and returns its
    /// secret.
    pub async fn create_service_client(&self, client: &ServiceClient<'_>) -> Result<String> {
        let secret = random_token();
        let mappers: Vec<Value> = client
            .audience
            .map(|audience| {
                json!({
                    "name": "audience",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {
                        "included.custom.audience": audience,
                        "access.token.claim": "true",
                        "id.token.claim": "false",
                    },
                })
            })
            .into_iter()
            .collect();
        let representation = json!({
            "clientId": client.client_id,
            "enabled": true,
            "publicClient": false,
            "clientAuthenticatorType": "client-secret",
            "secret": secret,
            "serviceAccountsEnabled": true,
            "standardFlowEnabled": false,
            "implicitFlowEnabled": false,
            "directAccessGrantsEnabled": false,
            "attributes": { "access.token.lifespan": client.token_lifespan.to_string() },
            "protocolMappers": mappers,
        });
        self.admin(Method::POST, "/clients", Some(representation))
            .await
            .with_context(|| format!("creating the client {}", client.client_id))?;
        Ok(secret)
    }

    /// An access token of `client_id` by the client-credentials grant.
    pub async fn client_credentials(&self, client_id: &str, secret: &str) -> Result<String> {
        let url = format!("{}/protocol/openid-connect/token", self.info.issuer);
        let response = self
            .http
            .post(&url)
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await;
        let body: Value = expect_success(response.with_context(|| format!("POST {url}"))?)
            .await?
            .json()
            .await
            .context("parsing the token response")?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no access_token in the token response"))
    }
}
