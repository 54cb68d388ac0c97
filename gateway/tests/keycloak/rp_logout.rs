//! RP-initiated logout with the real Keycloak: signing out at the auth host sends the browser
//! to the `end_session_endpoint` Keycloak's discovery document advertises (nothing is
//! configured), with the ID token Keycloak issued for the session as `id_token_hint`. With the
//! hint Keycloak ends its session at once — without it, Keycloak shows its own "Do you want
//! to log out?" page — and sends the browser to `/.portcullis/logged-out`. Keycloak's
//! session is really gone: the next login asks for the password again.

use super::{AUTH, Setup};
use anyhow::{Context as _, Result, bail, ensure};
use portcullis_tests::keycloak::{self, Landing};
use reqwest::{StatusCode, Url, header};

/// frank signs in, then out at the auth host, and follows where the gateway sends him.
pub async fn signing_out_at_the_gateway_ends_keycloaks_session_without_its_prompt(
    s: &Setup,
) -> Result<()> {
    let browser = s.logged_in("frank").await?;
    let at_login = s.id_token("frank@example.com")?;
    // Keycloak sends a new ID token with every refresh: the newest is the one kept.
    s.confirmed_twice(&browser, "frank@example.com").await?;
    let (kept, newest) = s.id_token("frank@example.com")?;
    ensure!(
        newest != at_login.1,
        "the ID token of the login was kept after two confirmations"
    );

    // The confirmation page's POST (same origin by `Origin`: reqwest sends no Fetch Metadata).
    let auth = s.gateway.origin(AUTH);
    let response = browser
        .post(format!("{auth}/.portcullis/logout"))
        .header(header::ORIGIN, &auth)
        .send()
        .await?;
    let to = location(&response).context("the logout did not redirect to Keycloak")?;
    let end_session = format!("{}/protocol/openid-connect/logout", s.keycloak.info.issuer);
    ensure!(
        to.as_str().starts_with(&format!("{end_session}?")),
        "not Keycloak's discovered end_session_endpoint: {to}"
    );
    let hint = super::query(&to, "id_token_hint").context("no id_token_hint")?;
    ensure!(
        kept.starts_with("v1.") && !kept.contains(&hint),
        "the ID token is not stored sealed: {kept}"
    );
    ensure!(hint == newest, "the hint is not the newest ID token");
    let claims = portcullis_tests::dex::unverified_claims(&hint)?;
    ensure!(
        claims["aud"] == s.keycloak.info.client_id.as_str()
            && claims["email"] == "frank@example.com",
        "the hint is not frank's ID token: {claims}"
    );
    ensure!(super::query(&to, "client_id").as_deref() == Some(s.keycloak.info.client_id.as_str()));
    ensure!(
        s.record("frank@example.com")?.spec.revoked,
        "not revoked here"
    );

    // Keycloak: no prompt, straight back to the gateway's logged-out page.
    let at_keycloak = browser.get(to.clone()).send().await?;
    let status = at_keycloak.status();
    let Some(back) = location(&at_keycloak) else {
        let page = at_keycloak.text().await.unwrap_or_default();
        bail!("Keycloak answered {status} instead of redirecting back: {page:.400}");
    };
    let logged_out = format!("{auth}/.portcullis/logged-out");
    ensure!(
        back.as_str().starts_with(&logged_out),
        "Keycloak sent the browser to {back}"
    );
    let page = browser.get(back).send().await?;
    ensure!(page.status() == StatusCode::OK, "{}", page.status());
    ensure!(page.text().await?.contains("You are signed out"));

    // Keycloak's own session ended: a new login needs the password.
    let action = match keycloak::follow(&browser, s.url("/")?, Setup::on_app).await? {
        Landing::PasswordForm { action, .. } => action,
        Landing::Stopped(url) => {
            bail!("signed in again without a password (Keycloak's session survived): {url}")
        }
    };
    let frank = s.keycloak.info.user("frank")?.clone();
    keycloak::submit_password(&browser, action, &frank, Setup::on_app).await?;
    without_the_hint_keycloak_asks(s, &browser).await
}

/// The control: the same logout with `id_token_hint` taken out of the URL is answered by
/// Keycloak's own confirmation page, not a redirect. What the scenario above checks is
/// therefore the hint's doing.
async fn without_the_hint_keycloak_asks(s: &Setup, browser: &reqwest::Client) -> Result<()> {
    let auth = s.gateway.origin(AUTH);
    let response = browser
        .post(format!("{auth}/.portcullis/logout"))
        .header(header::ORIGIN, &auth)
        .send()
        .await?;
    let to = location(&response).context("the logout did not redirect to Keycloak")?;
    let bare = super::without(&to, &["id_token_hint"]);
    let at_keycloak = browser.get(bare).send().await?;
    let status = at_keycloak.status();
    ensure!(
        status == StatusCode::OK && location(&at_keycloak).is_none(),
        "without id_token_hint Keycloak answered {status} rather than asking"
    );
    let page = at_keycloak.text().await?;
    ensure!(
        page.to_lowercase().contains("log out"),
        "not Keycloak's logout confirmation: {page:.400}"
    );
    Ok(())
}

/// The `Location` of a redirect.
fn location(response: &reqwest::Response) -> Option<Url> {
    if !response.status().is_redirection() {
        return None;
    }
    let value = response.headers().get(header::LOCATION)?.to_str().ok()?;
    response.url().join(value).ok()
}
