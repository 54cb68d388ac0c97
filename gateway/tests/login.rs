//! End to end, against a real Dex and the real `portcullis-gateway` binary: log in once by
//! following the real redirects and posting Dex's login form, then reach a second path and a
//! second host with no identity-provider interaction (single sign-on), and check what the
//! upstream receives.

use anyhow::{Context as _, Result, ensure};
use portcullis_tests::{
    dex::{self, Connector},
    fsutil::TempDir,
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    pki::Pki,
    process::free_port,
};
use reqwest::{StatusCode, Url, cookie::CookieStore as _, header};
use std::net::SocketAddr;

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "myserver.portcullis.test";
const APP2: &str = "express.portcullis.test";

struct Setup {
    gateway: GatewayProcess,
    dex: DexServer,
    upstream: SocketAddr,
    _dir: TempDir,
}

fn manifests(upstream: SocketAddr) -> String {
    manifests_with_epoch(upstream, 0)
}

fn manifests_with_epoch(upstream: SocketAddr, epoch: u64) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: apps, namespace: demo }}
spec:
  hosts: [{APP}]
  paths: [/wordpress, /express]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  revocationEpoch: {epoch}
  rules:
    - action: Deny
      include: [{{ groups: [sales] }}]
    - action: Allow
      include: [{{ emailDomains: [example.com] }}]
---
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: express, namespace: demo }}
spec:
  hosts: [{APP2}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  session: {{ tokenLifetime: 10s, idleTimeout: 1m, absoluteLifetime: 1h }}
  rules:
    - action: Allow
      include: [{{ groups: [engineering] }}, {{ emails: [bob@example.com] }}]
---
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: engineering, namespace: demo }}
spec:
  hosts: [{APP}]
  paths: [/engineering]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules:
    - action: Allow
      include: [{{ groups: [engineering] }}]
"#
    )
}

async fn setup(name: &str) -> Result<Setup> {
    portcullis_tests::install_crypto_provider();
    let guard = TempDir::new("login", name)?;
    let dir = guard.path().to_owned();
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let dex = DexServer::start(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(AUTH, port)],
    )
    .await?;
    let upstream = portcullis_tests::upstream::echo().await?;
    let mut config = GatewayConfig::new(
        dir.join("gateway"),
        AUTH,
        &[APP, APP2],
        &manifests(upstream),
    );
    config.port = port;
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        config,
        files,
    )
    .await?;
    Ok(Setup {
        gateway,
        dex,
        upstream,
        _dir: guard,
    })
}

impl Setup {
    fn url(&self, host: &str, path: &str) -> Result<Url> {
        Ok(Url::parse(&format!("{}{path}", self.gateway.origin(host)))?)
    }

    /// Logs `user` in starting from `start`, following every redirect, and returns the app
    /// URL the login ends on.
    async fn login(
        &self,
        browser: &reqwest::Client,
        start: Url,
        user: &str,
        connector: Connector,
    ) -> Result<Url> {
        let user = self.dex.info.user(user)?.clone();
        let app_host = start.host_str().map(str::to_owned);
        dex::follow_login(browser, start, &user, connector, |url| {
            url.host_str().map(str::to_owned) == app_host
                && !url.path().starts_with("/.portcullis/")
        })
        .await
        .with_context(|| {
            format!(
                "gateway log:\n{}\ndex log:\n{}",
                self.gateway.log_tail(),
                self.dex.log_tail()
            )
        })
    }
}

/// Follows redirects by hand, returning the final response and every URL visited.
async fn visit(browser: &reqwest::Client, start: Url) -> Result<(reqwest::Response, Vec<Url>)> {
    let mut url = start;
    let mut seen = vec![url.clone()];
    for _ in 0..10 {
        let response = browser
            .get(url.clone())
            .header(header::ACCEPT, "text/html")
            .send()
            .await?;
        if !response.status().is_redirection() {
            return Ok((response, seen));
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .context("Location")?;
        url = url.join(location)?;
        seen.push(url.clone());
    }
    anyhow::bail!("too many redirects: {seen:?}")
}

#[tokio::test]
async fn log_in_once_then_single_sign_on_across_paths_and_hosts() -> Result<()> {
    let s = setup("sso").await?;
    let browser = s.gateway.browser()?;

    let landed = s
        .login(
            &browser,
            s.url(APP, "/wordpress/wp-admin/?tab=1")?,
            "alice",
            Connector::Header,
        )
        .await?;
    ensure!(
        landed.path() == "/wordpress/wp-admin/" && landed.query() == Some("tab=1"),
        "landed on {landed}"
    );
    let (response, _) = visit(&browser, landed).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let seen: serde_json::Value = response.json().await?;
    let headers = &seen["headers"];
    ensure!(
        headers["x-auth-request-email"] == "alice@example.com",
        "{seen}"
    );
    ensure!(
        headers["x-auth-request-groups"] == "engineering,admins",
        "{seen}"
    );
    ensure!(
        !headers["cookie"]
            .as_str()
            .unwrap_or_default()
            .contains("portcullis"),
        "gateway cookie reached the upstream"
    );

    // The assertion verifies with the JWKS the auth host publishes.
    let jwks: jsonwebtoken::jwk::JwkSet = browser
        .get(s.url(AUTH, "/.well-known/jwks.json")?)
        .send()
        .await?
        .json()
        .await?;
    let assertion = headers["portcullis-jwt-assertion"]
        .as_str()
        .context("no assertion")?;
    let kid = jsonwebtoken::decode_header(assertion)?.kid.context("kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).context("kid not in JWKS")?)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[s.gateway.origin(AUTH)]);
    validation.set_audience(&[s.gateway.origin(APP)]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)?.claims;
    ensure!(
        claims["email"] == "alice@example.com" && claims["policy"] == "demo/apps",
        "{claims}"
    );

    // Second path, same host and policy: the app cookie already covers it.
    let (response, hops) = visit(&browser, s.url(APP, "/express/")?).await?;
    ensure!(
        response.status() == StatusCode::OK && hops.len() == 1,
        "{hops:?}"
    );

    // Second host, another policy: a bounce through the auth host, never through Dex.
    let (response, hops) = visit(&browser, s.url(APP2, "/dashboard")?).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "{} after {hops:?}",
        response.status()
    );
    ensure!(
        !hops
            .iter()
            .any(|u| u.as_str().starts_with(&s.dex.info.issuer)),
        "went to Dex: {hops:?}"
    );
    ensure!(
        hops.iter().any(|u| u.host_str() == Some(AUTH)),
        "no bounce through the auth host: {hops:?}"
    );
    let seen: serde_json::Value = response.json().await?;
    ensure!(
        seen["headers"]["x-auth-request-email"] == "alice@example.com",
        "{seen}"
    );
    // The audit trail has the login with its user.
    audit_line(
        &s,
        "audit=login",
        &["email=alice@example.com", "idp=dex", "sid="],
    )
    .await?;
    access_log_joins_the_request_to_its_decision(&s, &browser).await
}

/// Waits (5 s at most) for a line of the gateway's log on the audit target that holds `event`
/// and every one of `fields`.
async fn audit_line(s: &Setup, event: &str, fields: &[&str]) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(s.gateway.log_path())?;
        let found = log.lines().find(|l| {
            l.contains("portcullis::audit")
                && l.contains(event)
                && fields.iter().all(|field| l.contains(field))
        });
        if let Some(line) = found {
            return Ok(line.to_owned());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no audit line with {event} and {fields:?}:\n{}",
            s.gateway.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The request id a trusted proxy sent reaches the upstream and comes back, and the access log
/// has the request with its decision, policy and user; a refusal is logged with its reason.
async fn access_log_joins_the_request_to_its_decision(
    s: &Setup,
    browser: &reqwest::Client,
) -> Result<()> {
    let response = browser
        .get(s.url(APP, "/express/logged")?)
        .header("x-request-id", "trace-abc-123")
        .send()
        .await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    ensure!(
        response.headers().get("x-request-id").map(|v| v.as_bytes()) == Some(b"trace-abc-123"),
        "{:?}",
        response.headers()
    );
    let seen: serde_json::Value = response.json().await?;
    ensure!(seen["headers"]["x-request-id"] == "trace-abc-123", "{seen}");

    // A request id that is not well formed is replaced, even from a trusted proxy.
    let refused = s
        .gateway
        .browser()?
        .get(s.url(APP, "/express/anonymous")?)
        .header(header::ACCEPT, "application/json")
        .header("x-request-id", "two words")
        .send()
        .await?;
    ensure!(
        refused.status() == StatusCode::UNAUTHORIZED,
        "{}",
        refused.status()
    );
    let refused_id = refused
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .context("no request id on the refusal")?
        .to_owned();
    ensure!(refused_id.len() == 32, "{refused_id}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(s.gateway.log_path())?;
        let line = |id: &str| {
            log.lines()
                .find(|l| l.contains(&format!("request_id={id} ")))
                .map(str::to_owned)
        };
        if let (Some(allowed), Some(login)) = (line("trace-abc-123"), line(&refused_id)) {
            for field in [
                "decision=allow",
                "reason=allow",
                "policy=demo/apps",
                "user=alice@example.com",
                "path=/express/logged",
                "status=200",
            ] {
                ensure!(allowed.contains(field), "{field} missing from {allowed}");
            }
            ensure!(!allowed.contains("session= "), "no session in {allowed}");
            for field in [
                "decision=login",
                "reason=login_required",
                "status=401",
                "user= ",
            ] {
                ensure!(login.contains(field), "{field} missing from {login}");
            }
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no access-log lines for the requests:\n{}",
            s.gateway.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rules_use_the_groups_from_the_identity_provider() -> Result<()> {
    let s = setup("groups").await?;
    let browser = s.gateway.browser()?;
    // bob is in `sales`, denied on the first policy whatever his domain.
    let landed = s
        .login(
            &browser,
            s.url(APP, "/wordpress/")?,
            "bob",
            Connector::Header,
        )
        .await?;
    let (response, _) = visit(&browser, landed).await?;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "{}",
        response.status()
    );
    // ...and allowed by email on the second.
    let (response, hops) = visit(&browser, s.url(APP2, "/")?).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "{} after {hops:?}",
        response.status()
    );
    Ok(())
}

/// Dex's static users have groups: a login with email and password carries them to the rules
/// and to the upstream, with no other connector involved.
#[tokio::test]
async fn an_email_and_password_login_carries_its_groups_to_group_rules() -> Result<()> {
    let s = setup("password-groups").await?;
    // alice is in `engineering`: admitted where only that group is.
    let alice = s.gateway.browser()?;
    let landed = s
        .login(
            &alice,
            s.url(APP, "/engineering/")?,
            "alice",
            Connector::Password,
        )
        .await?;
    let (response, _) = visit(&alice, landed).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let echoed: serde_json::Value = response.json().await?;
    ensure!(
        echoed["headers"]["x-auth-request-groups"] == "engineering,admins",
        "the upstream does not see alice's groups: {echoed}"
    );
    // bob is in `sales` only: refused there, and denied by his group on the first policy.
    let bob = s.gateway.browser()?;
    let landed = s
        .login(
            &bob,
            s.url(APP, "/engineering/")?,
            "bob",
            Connector::Password,
        )
        .await?;
    let (response, _) = visit(&bob, landed).await?;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "bob without the group: {}",
        response.status()
    );
    let (response, _) = visit(&bob, s.url(APP, "/wordpress/")?).await?;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "bob in sales: {}",
        response.status()
    );
    // ...while his email still admits him where a rule names it.
    let (response, _) = visit(&bob, s.url(APP2, "/")?).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    Ok(())
}

#[tokio::test]
async fn a_callback_cannot_be_replayed_or_forged() -> Result<()> {
    let s = setup("callback").await?;
    let browser = s.gateway.browser()?;
    let user = s.dex.info.user("alice")?.clone();
    let callback = dex::follow_login(
        &browser,
        s.url(APP, "/wordpress/")?,
        &user,
        Connector::Password,
        |url| url.path() == "/.portcullis/callback",
    )
    .await?;

    // A forged state with the real code: refused before the code is used.
    let mut forged = callback.clone();
    let code = forged
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context("code")?;
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("state", "forged-state-value-0000")
        .append_pair("code", &code);
    let response = browser.get(forged).send().await?;
    ensure!(
        response.status() == StatusCode::BAD_REQUEST,
        "forged state: {}",
        response.status()
    );

    // The real callback logs in.
    let response = browser.get(callback.clone()).send().await?;
    ensure!(
        response.status() == StatusCode::FOUND,
        "callback: {} {}",
        response.status(),
        s.gateway.log_tail()
    );

    // Replaying it (the code and state are spent, the login cookie is gone) is refused.
    let response = browser.get(callback.clone()).send().await?;
    ensure!(
        response.status() == StatusCode::BAD_REQUEST,
        "replay: {}",
        response.status()
    );

    // A spent code under a fresh, genuine login (another browser with its own login state):
    // the provider refuses it and the user gets a precise 400, not a 5xx.
    let other = s.gateway.browser()?;
    let start = other.get(s.url(APP, "/express/")?).send().await?;
    let start = Url::parse(start.headers()[header::LOCATION].to_str()?)?;
    let to_dex = other.get(start).send().await?;
    let dex_url = Url::parse(to_dex.headers()[header::LOCATION].to_str()?)?;
    let state = dex_url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .context("state")?;
    let mut reused = s.url(AUTH, "/.portcullis/callback")?;
    reused
        .query_pairs_mut()
        .append_pair("state", &state)
        .append_pair("code", &code);
    let response = other.get(reused).send().await?;
    ensure!(
        response.status() == StatusCode::BAD_REQUEST,
        "reused code: {}",
        response.status()
    );
    ensure!(
        response.text().await?.contains("code_rejected"),
        "not refused by the provider"
    );

    // Another browser cannot use a stolen callback URL either.
    let stranger = s.gateway.browser()?;
    let response = stranger.get(callback).send().await?;
    ensure!(
        response.status() == StatusCode::BAD_REQUEST,
        "stolen callback: {}",
        response.status()
    );
    Ok(())
}

#[tokio::test]
async fn forward_auth_with_a_real_session() -> Result<()> {
    let s = setup("forward").await?;
    let browser = s.gateway.browser()?;
    let landed = s
        .login(
            &browser,
            s.url(APP, "/express/")?,
            "alice",
            Connector::Password,
        )
        .await?;
    let (response, _) = visit(&browser, landed).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    // An ingress forwards the browser's cookies with its sub-request; here the browser sends
    // the sub-request itself, from a trusted (loopback) peer.
    let response = browser
        .get(s.url(APP, "/.portcullis/auth/nginx")?)
        .header(
            "x-original-url",
            format!("{}/express/page", s.gateway.origin(APP)),
        )
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::OK,
        "nginx contract: {}",
        response.status()
    );
    ensure!(
        response.headers()["x-auth-request-email"] == "alice@example.com",
        "{:?}",
        response.headers()
    );
    let response = s
        .gateway
        .browser()?
        .get(s.url(APP, "/.portcullis/auth/nginx")?)
        .header(
            "x-original-url",
            format!("{}/express/page", s.gateway.origin(APP)),
        )
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::UNAUTHORIZED,
        "anonymous: {}",
        response.status()
    );
    ensure!(response.headers().contains_key("portcullis-signin-url"));
    Ok(())
}

#[tokio::test]
async fn logins_keep_working_when_the_identity_provider_rotates_its_keys() -> Result<()> {
    let mut s = setup("rotation").await?;
    let landed = s
        .login(
            &s.gateway.browser()?,
            s.url(APP, "/wordpress/")?,
            "alice",
            Connector::Password,
        )
        .await?;
    ensure!(landed.path() == "/wordpress/", "{landed}");
    // Dex keeps its keys in memory: a restart signs with new ones the gateway has not seen.
    s.dex.restart().await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let browser = s.gateway.browser()?;
    let landed = s
        .login(
            &browser,
            s.url(APP, "/express/")?,
            "alice",
            Connector::Password,
        )
        .await?;
    let (response, _) = visit(&browser, landed).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "{}:\n{}",
        response.status(),
        s.gateway.log_tail()
    );
    Ok(())
}

#[tokio::test]
async fn an_active_user_is_never_sent_back_to_the_login_page() -> Result<()> {
    let s = setup("active").await?;
    let browser = s.gateway.browser()?;
    let landed = s
        .login(&browser, s.url(APP2, "/app/")?, "alice", Connector::Header)
        .await?;
    let (response, _) = visit(&browser, landed).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());

    // A single-page app polling its API every 2 s across more than two 10 s token lifetimes:
    // every call answers, and the token is renewed on the way, in the background.
    let mut renewals = 0;
    for i in 0..13 {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let response = browser
            .get(s.url(APP2, "/app/api/items")?)
            .header("sec-fetch-mode", "cors")
            .header(header::ACCEPT, "application/json")
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "call {i}: {}",
            response.status()
        );
        if response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.starts_with("__Host-portcullis-app-"))
            })
        {
            renewals += 1;
        }
    }
    ensure!(
        renewals >= 3,
        "only {renewals} renewals in 26 s with a 10 s token lifetime"
    );
    Ok(())
}

/// Seed question 1.1: after "revoke existing tokens" (the policy's epoch raised), neither the
/// old app cookie nor deleting it and bouncing through the auth host brings access back without
/// a fresh login at the identity provider; other policies keep their single sign-on.
#[tokio::test]
async fn a_raised_epoch_is_not_undone_by_the_sso_session() -> Result<()> {
    let s = setup("epoch").await?;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = s.gateway.browser_with_jar(jar.clone())?;
    let landed = s
        .login(
            &browser,
            s.url(APP, "/wordpress/")?,
            "alice",
            Connector::Header,
        )
        .await?;
    let (response, _) = visit(&browser, landed).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());

    s.gateway
        .update_policies(&manifests_with_epoch(s.upstream, 1))
        .await?;
    let to_dex = |hops: &[Url]| {
        hops.iter()
            .any(|u| u.as_str().starts_with(&s.dex.info.issuer))
    };

    // The old app cookie is refused, and the bounce through the auth host goes to Dex, asking
    // it to authenticate again.
    let (response, hops) = visit(&browser, s.url(APP, "/wordpress/")?).await?;
    ensure!(
        to_dex(&hops),
        "no new login after the epoch was raised: {hops:?}"
    );
    let dex_url = hops.last().context("hops")?;
    ensure!(
        dex_url
            .query()
            .is_some_and(|q| q.contains("prompt=login") && q.contains("max_age=0")),
        "{dex_url}"
    );
    drop(response);
    // The audit trail names the user whose revoked token was refused, and why.
    audit_line(
        &s,
        "audit=refused",
        &[
            "reason=policy_revoked",
            "email=alice@example.com",
            "policy=demo/apps",
        ],
    )
    .await?;

    // Delete the app cookie, keep the auth host's session: still Dex.
    let auth_cookies = jar.cookies(&s.url(AUTH, "/")?).context("no SSO cookie")?;
    let fresh_jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    for cookie in auth_cookies.to_str()?.split("; ") {
        fresh_jar.add_cookie_str(
            &format!("{cookie}; Secure; HttpOnly; Path=/"),
            &s.url(AUTH, "/")?,
        );
    }
    let without_app_cookie = s.gateway.browser_with_jar(fresh_jar)?;
    let (_, hops) = visit(&without_app_cookie, s.url(APP, "/express/")?).await?;
    ensure!(
        to_dex(&hops),
        "the SSO session re-issued a revoked app token: {hops:?}"
    );

    // Another policy, not revoked: single sign-on as before.
    let (response, hops) = visit(&without_app_cookie, s.url(APP2, "/")?).await?;
    ensure!(
        response.status() == StatusCode::OK && !to_dex(&hops),
        "{} {hops:?}",
        response.status()
    );

    // Logging in again at Dex restores access.
    let landed = s
        .login(
            &browser,
            s.url(APP, "/wordpress/")?,
            "alice",
            Connector::Header,
        )
        .await?;
    let (response, _) = visit(&browser, landed).await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    Ok(())
}
