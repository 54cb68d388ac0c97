//! OpenID Connect Back-Channel Logout with Keycloak's real call: a user signed out at Keycloak
//! is refused by the gateway on the very next request, its session revoked with the
//! back-channel logout as the reason (not by a failed confirmation, which would name the
//! refused refresh). Before that, requests to the endpoint that are not Keycloak's (forged
//! signature, wrong method, body or provider) are refused and revoke nothing.

use super::Setup;
use anyhow::{Context as _, Result, ensure};
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token for `sid`/`sub` that says everything Keycloak's would, signed with a key
/// Keycloak never published.
fn forged_token(issuer: &str, client_id: &str, sid: &str, sub: &str) -> Result<String> {
    let key = Ed25519KeyPair::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = super::unix_now()?;
    let encode =
        |v: &Value| -> Result<String> { Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(v)?)) };
    let header = json!({ "alg": "EdDSA", "typ": "logout+jwt", "kid": "forged" });
    let claims = json!({
        "iss": issuer, "aud": client_id, "iat": now, "exp": now + 120, "jti": "forged-1",
        "sid": sid, "sub": sub, "events": { EVENT: {} },
    });
    let signed = format!("{}.{}", encode(&header)?, encode(&claims)?);
    let signature = key.sign(signed.as_bytes());
    Ok(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

/// Requests to the endpoint that must all be refused with the spec's error JSON.
async fn refused_requests(s: &Setup, endpoint: &str, token: &str) -> Result<()> {
    let client = s.gateway.browser()?;
    let form = [("logout_token", token)];
    let checks = [
        ("forged signature", client.post(endpoint).form(&form), 400),
        (
            "two tokens",
            client
                .post(endpoint)
                .form(&[("logout_token", token), ("logout_token", token)]),
            400,
        ),
        (
            "JSON body",
            client
                .post(endpoint)
                .json(&json!({ "logout_token": token })),
            400,
        ),
        ("GET", client.get(endpoint), 405),
        (
            "unknown provider",
            client
                .post(endpoint.replace("/keycloak", "/dex"))
                .form(&form),
            404,
        ),
    ];
    for (case, request, expected) in checks {
        let response = request.send().await.with_context(|| case.to_owned())?;
        let status = response.status().as_u16();
        let no_store = response
            .headers()
            .get("cache-control")
            .is_some_and(|v| v == "no-store");
        let body: Value = response.json().await.with_context(|| case.to_owned())?;
        ensure!(
            status == expected
                && no_store
                && body["error"] == "invalid_request"
                && body["error_description"].is_string(),
            "{case}: {status} {body}"
        );
    }
    Ok(())
}

/// erin signs in; forged and malformed logouts change nothing; then Keycloak's admin API
/// signs her out there, Keycloak calls the endpoint, and her next request is refused.
pub async fn signing_out_at_keycloak_ends_the_session_at_once(
    s: &Setup,
    endpoint: &str,
) -> Result<()> {
    let browser = s.logged_in("erin").await?;
    let record = s.record("erin@example.com")?;
    let sid = record
        .spec
        .provider_session_id
        .clone()
        .context("the session does not record Keycloak's sid")?;
    let sub = s.keycloak.user_id("erin").await?;
    ensure!(record.spec.subject == sub, "{:?}", record.spec);
    let token = forged_token(
        &s.keycloak.info.issuer,
        &s.keycloak.info.client_id,
        &sid,
        &sub,
    )?;
    refused_requests(s, endpoint, &token).await?;
    let app = s.url("/")?;
    let status = || async {
        let response = browser
            .get(app.clone())
            .header("accept", "application/json")
            .send()
            .await?;
        anyhow::Ok(response.status())
    };
    let still = status().await?;
    ensure!(still == StatusCode::OK, "after forged logouts: {still}");
    ensure!(
        !s.record("erin@example.com")?.spec.revoked,
        "a forged logout revoked erin"
    );

    s.keycloak.logout_user("erin").await?;
    let next = status().await?;
    ensure!(
        next == StatusCode::UNAUTHORIZED,
        "the request right after the sign-out at Keycloak got {next}"
    );
    let record = s.record("erin@example.com")?;
    let reason = record.spec.revocation_reason.clone().unwrap_or_default();
    ensure!(
        record.spec.revoked && reason.contains("back-channel logout"),
        "erin's session should be revoked by the back-channel logout: {:?}",
        record.spec
    );
    Ok(())
}
