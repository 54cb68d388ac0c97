//! Machines with Keycloak's real client-credentials tokens: service-account clients created
//! through the admin API get access tokens (no user, no browser) and call the `orders` API
//! through the gateway, whose `ServiceAuth` rule has a `bearer` selector. The allowed client
//! with the right audience and scopes is let through, with its identity in the upstream's
//! headers; every other token — another client, another audience, a missing scope, an altered
//! payload, an expired token — is refused with 401 `invalid_token`, never a login redirect.

use super::{API, CLOCK_SKEW, Setup};
use anyhow::{Context as _, Result, ensure};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis_tests::keycloak::ServiceClient;
use reqwest::{StatusCode, header};
use serde_json::Value;
use std::time::Duration;

/// The audience the API's rule requires (an audience mapper puts it into `aud`).
pub const AUDIENCE: &str = "orders-api";

/// The API's policies: `/` admits the clients `billing` and `reporting` and `shortlived` with
/// the `orders-api` audience and the `profile` scope; `/admin` also asks for a scope Keycloak
/// never grants them.
pub fn manifests(upstream: std::net::SocketAddr) -> String {
    let policy = |name: &str, path: &str, scope: &str| {
        format!(
            r#"
---
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: {name}, namespace: demo }}
spec:
  hosts: [{API}]
  paths: [{path}]
  identityProviders: [keycloak]
  upstream: {{ url: "http://{upstream}" }}
  rules:
    - name: machines
      action: ServiceAuth
      include:
        - bearer:
            identityProvider: keycloak
            audiences: [{AUDIENCE}]
            clientIds: [billing, reporting, shortlived]
            scopes: [{scope}]
"#
        )
    };
    policy("orders", "/", "profile") + &policy("orders-admin", "/admin", "orders-admin")
}

/// A GET of `path` on the API with `token` as an API client sends it.
async fn call(s: &Setup, path: &str, token: Option<&str>) -> Result<reqwest::Response> {
    let client = s.gateway.browser()?;
    let mut request = client
        .get(format!("{}{path}", s.gateway.origin(API)))
        .header(header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?)
}

/// Checks `response` is the RFC 6750 refusal, its description mentioning `reason`.
async fn invalid_token(response: reqwest::Response, reason: &str) -> Result<()> {
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}: {body}");
    ensure!(
        challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.contains(reason),
        "challenge {challenge:?} should name {reason:?}"
    );
    ensure!(body.contains("invalid_token"), "{body}");
    Ok(())
}

/// `token` with its payload's `azp` and `client_id` replaced, the signature kept.
fn tampered(token: &str, client_id: &str) -> Result<String> {
    let parts: Vec<&str> = token.split('.').collect();
    ensure!(parts.len() == 3, "not a JWS");
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    claims["azp"] = client_id.into();
    claims["client_id"] = client_id.into();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    Ok(format!("{}.{payload}.{}", parts[0], parts[2]))
}

async fn client(s: &Setup, client_id: &str, audience: &str, lifespan: u64) -> Result<String> {
    let client = ServiceClient {
        client_id,
        audience: Some(audience),
        token_lifespan: lifespan,
    };
    let secret = s.keycloak.create_service_client(&client).await?;
    s.keycloak.client_credentials(client_id, &secret).await
}

/// The allowed client is let through, twice (the second time from the cache of verified
/// tokens), with its service account and client id in the upstream's headers and its
/// `Authorization` header passed on.
async fn the_allowed_client_is_let_through(s: &Setup, token: &str) -> Result<()> {
    for _ in 0..2 {
        let response = call(s, "/orders", Some(token)).await?;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        let echo: Value = response.json().await?;
        let headers = &echo["headers"];
        ensure!(headers["portcullis-client-id"] == "billing", "{echo}");
        let sub = headers["x-auth-request-user"].as_str().unwrap_or_default();
        ensure!(!sub.is_empty(), "no X-Auth-Request-User: {echo}");
        ensure!(
            headers["authorization"] == format!("Bearer {token}").as_str(),
            "the Authorization header should reach the app: {echo}"
        );
        ensure!(headers.get("x-auth-request-email").is_none(), "{echo}");
    }
    Ok(())
}

pub async fn client_credentials_tokens_are_checked(s: &Setup) -> Result<()> {
    let good = client(s, "billing", AUDIENCE, 300).await?;
    the_allowed_client_is_let_through(s, &good)
        .await
        .context("the allowed client")?;
    let intruder = client(s, "intruder", AUDIENCE, 300).await?;
    invalid_token(
        call(s, "/orders", Some(&intruder)).await?,
        "not accepted here",
    )
    .await
    .context("a client not in the allow-list")?;
    let other_audience = client(s, "reporting", "other-api", 300).await?;
    invalid_token(
        call(s, "/orders", Some(&other_audience)).await?,
        "not accepted here",
    )
    .await
    .context("a token for another audience")?;
    invalid_token(
        call(s, "/admin/orders", Some(&good)).await?,
        "not accepted here",
    )
    .await
    .context("a token without the required scope")?;
    invalid_token(
        call(s, "/orders", Some(&tampered(&intruder, "billing")?)).await?,
        "signature",
    )
    .await
    .context("a token whose payload was altered")?;
    invalid_token(
        call(s, "/orders", Some("not-a-jwt")).await?,
        "not a signed JWT",
    )
    .await
    .context("a malformed token")?;
    // No token at all: as before, an API client is asked to log in.
    let anonymous = call(s, "/orders", None).await?;
    ensure!(anonymous.status() == StatusCode::UNAUTHORIZED);
    ensure!(anonymous.text().await?.contains("login_required"));
    navigations(s).await?;
    an_expired_token_is_refused(s).await
}

/// What a browser-like navigation (`Accept: text/html`) gets: without a token, the login
/// redirect as before; with a bad one, the same 401 as an API client, never a redirect.
async fn navigations(s: &Setup) -> Result<()> {
    let browser = s.gateway.browser()?;
    let url = format!("{}/orders", s.gateway.origin(API));
    let navigate = || browser.get(&url).header(header::ACCEPT, "text/html");
    let anonymous = navigate().send().await?;
    ensure!(
        anonymous.status().is_redirection(),
        "a navigation without a token should be sent to log in: {}",
        anonymous.status()
    );
    invalid_token(
        navigate().bearer_auth("a.b.c").send().await?,
        "not a signed JWT",
    )
    .await
    .context("a navigation with a malformed token")
}

/// A token living one second: admitted at first, refused once past its `exp` and the clock
/// skew, although it was cached as verified.
async fn an_expired_token_is_refused(s: &Setup) -> Result<()> {
    let token = client(s, "shortlived", AUDIENCE, 1).await?;
    let first = call(s, "/orders", Some(&token)).await?;
    ensure!(first.status() == StatusCode::OK, "{}", first.status());
    tokio::time::sleep(CLOCK_SKEW + Duration::from_secs(3)).await;
    invalid_token(call(s, "/orders", Some(&token)).await?, "expired")
        .await
        .context("an expired token")
}
