//! End to end against a real Keycloak, which (unlike Dex) keeps a login session of its own and
//! sends `auth_time`: after a policy's revocation epoch is raised, the gateway forces a new
//! authentication, and only a provider answer that proves one (`auth_time` after the raise) is
//! accepted. A client that strips `prompt=login` / `max_age=0` gets a code from Keycloak's
//! still-live session, and the gateway refuses it.
//!
//! Sessions are confirmed with Keycloak every few seconds (standalone mode's session store):
//! a user taken out of a group at Keycloak loses access at the next confirmation, and a user
//! signed out at Keycloak (its admin API) loses the session, whose refresh token died with the
//! Keycloak session. Keycloak rotates refresh tokens: each rotated one is stored, and a copy
//! redeemed elsewhere first ends the session here at the next confirmation.
//!
//! Signing out at the auth host ends Keycloak's session too (RP-initiated logout with
//! `id_token_hint`, `keycloak/rp_logout.rs`).
//!
//! With the client's back-channel logout URL set, a sign-out at Keycloak reaches the gateway
//! as Keycloak's own `logout_token` call and ends the session before the next request
//! (`keycloak/backchannel.rs`).
//!
//! One Keycloak (a JVM, about a minute to start) and one gateway serve every scenario of this
//! file, in sequence, each with its own user.

#[path = "keycloak/backchannel.rs"]
mod backchannel;
#[path = "keycloak/machines.rs"]
mod machines;
#[path = "keycloak/rp_logout.rs"]
mod rp_logout;

use anyhow::{Context as _, Result, bail, ensure};
use portcullis_crds::AccessSession;
use portcullis_gateway::sessions::seal::{KeyRing, SessionKey};
use portcullis_tests::{
    fsutil::TempDir,
    gateway::{GatewayConfig, GatewayFiles, GatewayProcess},
    keycloak::{self, KeycloakServer, Landing},
    pki::Pki,
    process::free_port,
};
use reqwest::{StatusCode, Url};
use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "wiki.portcullis.test";
/// The API machines call with client-credentials tokens (`keycloak/machines.rs`).
const API: &str = "orders.portcullis.test";
/// The gateway tolerates this much clock difference with the provider when it compares
/// `auth_time` with the moment of a revocation (`portcullis_core::token::CLOCK_SKEW_SECS`).
const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// How often the gateway confirms an active session with Keycloak.
const REFRESH_INTERVAL: &str = "2s";

struct Setup {
    /// Held for the whole test: see [`ONE_KEYCLOAK_AT_A_TIME`].
    _turn: tokio::sync::MutexGuard<'static, ()>,
    gateway: GatewayProcess,
    /// Standalone mode's session store.
    store: PathBuf,
    keycloak: KeycloakServer,
    upstream: SocketAddr,
    _dir: TempDir,
}

/// Engineering may use the wiki; the group comes from Keycloak's group-membership mapper.
fn manifests(upstream: SocketAddr, epoch: u64) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: wiki, namespace: demo }}
spec:
  hosts: [{APP}]
  identityProviders: [keycloak]
  upstream: {{ url: "http://{upstream}" }}
  revocationEpoch: {epoch}
  rules:
    - action: Allow
      include: [{{ groups: [engineering] }}]
{}"#,
        machines::manifests(upstream)
    )
}

/// The tests of this file run one Keycloak at a time. Every instance runs from the same
/// installation, whose data directory holds the truststore Keycloak builds from
/// `--truststore-paths` at start: a second instance started later replaced the first one's, and
/// the first one's back-channel call to its gateway then failed ("does not chain with any of
/// the trust anchors"). Two JVMs at once are also most of a two-CPU machine.
static ONE_KEYCLOAK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup(name: &str) -> Result<Setup> {
    setup_with(name, &[]).await
}

/// [`setup`] with `idp_options` added to the gateway's provider entry.
async fn setup_with(name: &str, idp_options: &[(&str, serde_json::Value)]) -> Result<Setup> {
    let turn = ONE_KEYCLOAK_AT_A_TIME.lock().await;
    portcullis_tests::install_crypto_provider();
    // Removed when the test ends, with Keycloak's temporary files.
    let guard = TempDir::new("keycloak", name)?;
    let dir = guard.path().to_owned();
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let redirect = GatewayProcess::redirect_uri(AUTH, port);
    let keycloak =
        KeycloakServer::start(&dir.join("keycloak"), &pki, vec![redirect], &[AUTH]).await?;
    let upstream = portcullis_tests::upstream::echo().await?;
    let mut config = GatewayConfig::new(
        dir.join("gateway"),
        AUTH,
        &[APP, API],
        &manifests(upstream, 0),
    );
    config.port = port;
    let store = dir.join("sessions.json");
    config.env.push((
        "PORTCULLIS_SESSION_STORE_FILE".into(),
        store.display().to_string(),
    ));
    config
        .idp_options
        .insert("refreshInterval".into(), REFRESH_INTERVAL.into());
    config
        .idp_options
        .insert("backchannelLogout".into(), true.into());
    for (option, value) in idp_options {
        config.idp_options.insert((*option).into(), value.clone());
    }
    let files = GatewayFiles::write_with_provider(&config, &pki, keycloak.info.gateway_entry())?;
    let gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        config,
        files,
    )
    .await?;
    Ok(Setup {
        _turn: turn,
        gateway,
        store,
        keycloak,
        upstream,
        _dir: guard,
    })
}

impl Setup {
    fn url(&self, path: &str) -> Result<Url> {
        Ok(Url::parse(&format!("{}{path}", self.gateway.origin(APP)))?)
    }

    /// Whether `url` is back on the app itself (the end of a login).
    fn on_app(url: &Url) -> bool {
        url.host_str() == Some(APP) && !url.path().starts_with("/.portcullis/")
    }

    /// Whether `url` is Keycloak's authorization endpoint.
    fn at_keycloak(&self, url: &Url) -> bool {
        url.as_str()
            .starts_with(&self.keycloak.info.authorization_endpoint())
    }

    /// The logs of both, for failure messages.
    fn logs(&self) -> String {
        format!(
            "gateway log:\n{}\nkeycloak log:\n{}",
            self.gateway.log_tail(),
            self.keycloak.log_tail()
        )
    }

    /// GETs `url` and returns the upstream's echo (the request it received).
    async fn echo(&self, browser: &reqwest::Client, url: Url) -> Result<serde_json::Value> {
        let response = browser.get(url.clone()).send().await?;
        ensure!(
            response.status() == StatusCode::OK,
            "{url}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// The browser's session as the app host reports it (`/.portcullis/session`).
    async fn session(&self, browser: &reqwest::Client) -> Result<serde_json::Value> {
        self.echo(browser, self.url("/.portcullis/session?path=/")?)
            .await
            .context("reading /.portcullis/session")
    }

    /// Logs `user` in with a browser of its own and checks the app admits it.
    async fn logged_in(&self, user: &str) -> Result<reqwest::Client> {
        let user = self.keycloak.info.user(user)?.clone();
        let browser = self.gateway.browser()?;
        let landed = keycloak::follow_login(&browser, self.url("/")?, &user, Setup::on_app).await?;
        self.echo(&browser, landed).await?;
        Ok(browser)
    }

    /// The refresh token stored (sealed) in a session record, opened with the gateway's key.
    fn refresh_token(&self, record: &AccessSession) -> Result<Option<String>> {
        let key = SessionKey::from_file_content(&std::fs::read(&self.gateway.files.session_key)?)?;
        let sid = record
            .metadata
            .name
            .clone()
            .context("a session without a name")?;
        let refresh = record.status.as_ref().and_then(|st| st.refresh.as_ref());
        match refresh.and_then(|r| r.sealed_token.as_ref()) {
            Some(sealed) => Ok(Some(key.open(&sid, sealed)?)),
            None => Ok(None),
        }
    }

    /// The ID token kept in the newest session record of `email`: as stored (sealed), and
    /// opened with the gateway's key.
    fn id_token(&self, email: &str) -> Result<(String, String)> {
        let key = SessionKey::from_file_content(&std::fs::read(&self.gateway.files.session_key)?)?;
        let record = self.record(email)?;
        let sid = record
            .metadata
            .name
            .clone()
            .context("a session without a name")?;
        let sealed = record
            .status
            .and_then(|st| st.refresh)
            .and_then(|r| r.sealed_id_token)
            .context("the session record holds no sealed ID token")?;
        let opened = KeyRing::new(key, vec![]).open_id_token(&sid, &sealed)?;
        Ok((sealed, opened))
    }

    /// The newest session record of `email` in the gateway's store.
    fn record(&self, email: &str) -> Result<AccessSession> {
        let all: Vec<AccessSession> = serde_json::from_slice(&std::fs::read(&self.store)?)?;
        all.into_iter()
            .filter(|s| s.spec.email.as_deref() == Some(email))
            .max_by_key(|s| s.spec.issued_at.0)
            .with_context(|| format!("no session of {email} in the store"))
    }

    /// Keeps `browser`'s session active (an API request every 300 ms, each admitted) until its
    /// record shows two more successful confirmations with Keycloak, each having stored a new
    /// refresh token.
    async fn confirmed_twice(&self, browser: &reqwest::Client, email: &str) -> Result<()> {
        let token = |s: &AccessSession| self.refresh_token(s);
        let mut tokens = vec![token(&self.record(email)?)?];
        let confirmed = |s: &AccessSession| {
            s.status
                .as_ref()
                .and_then(|st| st.refresh.as_ref())
                .and_then(|r| r.last_refreshed_at.clone())
        };
        let mut last = confirmed(&self.record(email)?);
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen < 2 {
            let response = browser
                .get(self.url("/")?)
                .header("accept", "application/json")
                .send()
                .await?;
            ensure!(response.status() == StatusCode::OK, "{}", response.status());
            let record = self.record(email)?;
            ensure!(!record.spec.revoked, "revoked: {:?}", record.spec);
            let now = confirmed(&record);
            if now.is_some() && now != last {
                seen += 1;
                last = now;
                tokens.push(token(&record)?);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{seen} confirmations within 30 s: {:?}",
                record.status
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let distinct: std::collections::BTreeSet<_> = tokens.iter().flatten().collect();
        ensure!(
            distinct.len() == 3,
            "Keycloak rotates refresh tokens; the stored one did not change at each confirmation"
        );
        Ok(())
    }

    /// Keeps `browser`'s session active until the app refuses it as ended (401), and checks
    /// that its record was revoked because Keycloak refused the refresh.
    async fn revoked_at_next_confirmation(
        &self,
        browser: &reqwest::Client,
        email: &str,
    ) -> Result<()> {
        let status = self.active_until_refused(browser).await?;
        ensure!(status == StatusCode::UNAUTHORIZED, "{email} got {status}");
        let record = self.record(email)?;
        let reason = record.spec.revocation_reason.clone().unwrap_or_default();
        ensure!(
            record.spec.revoked && reason.contains("identity provider refused"),
            "{email}'s session should be revoked by the refused refresh: {:?}",
            record.spec
        );
        Ok(())
    }

    /// Keeps `browser`'s session active (an API request every 300 ms) until the app answers
    /// with something else than 200, and returns that status.
    async fn active_until_refused(&self, browser: &reqwest::Client) -> Result<StatusCode> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let response = browser
                .get(self.url("/")?)
                .header("accept", "application/json")
                .send()
                .await?;
            if response.status() != StatusCode::OK {
                return Ok(response.status());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "still admitted after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The gateway's redirect for `browser` from the app to Keycloak's authorization endpoint.
    async fn authorize_url(&self, browser: &reqwest::Client) -> Result<Url> {
        match keycloak::follow(browser, self.url("/")?, |u| self.at_keycloak(u)).await? {
            Landing::Stopped(url) => Ok(url),
            Landing::PasswordForm { page, .. } => bail!("a password form at {page}"),
        }
    }
}

fn unix_now() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` without the query parameters named in `drop`.
fn without(url: &Url, drop: &[&str]) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !drop.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut stripped = url.clone();
    stripped.query_pairs_mut().clear().extend_pairs(kept);
    stripped
}

#[tokio::test]
async fn keycloak_scenarios() -> Result<()> {
    let s = setup("scenarios").await?;
    machines::client_credentials_tokens_are_checked(&s)
        .await
        .with_context(|| s.logs())?;
    forced_reauthentication_is_proven_by_auth_time(&s)
        .await
        .with_context(|| s.logs())?;
    a_group_removed_at_keycloak_ends_access_at_the_next_confirmation(&s)
        .await
        .with_context(|| s.logs())?;
    signing_out_at_keycloak_ends_the_session_at_the_next_confirmation(&s)
        .await
        .with_context(|| s.logs())?;
    a_refresh_token_redeemed_elsewhere_ends_the_session(&s)
        .await
        .with_context(|| s.logs())?;
    rp_logout::signing_out_at_the_gateway_ends_keycloaks_session_without_its_prompt(&s)
        .await
        .with_context(|| s.logs())?;
    // From here on Keycloak calls the gateway's back-channel logout endpoint (before, a
    // sign-out at Keycloak was seen at the next confirmation, above).
    let endpoint = format!(
        "{}/.portcullis/backchannel-logout/keycloak",
        s.gateway.origin(AUTH)
    );
    s.keycloak.enable_backchannel_logout(&endpoint).await?;
    backchannel::signing_out_at_keycloak_ends_the_session_at_once(&s, &endpoint)
        .await
        .with_context(|| s.logs())?;
    Ok(())
}

/// `groupsFrom: userinfo` with Keycloak's group mapper writing to userinfo only (its own
/// example ID token for carol has no `groups`, its example userinfo has them): carol is
/// admitted by the group rule, her session records the group, and when she is taken out of it
/// at Keycloak the next confirmation (a refresh, then userinfo again) refuses her.
#[tokio::test]
async fn keycloak_groups_from_userinfo() -> Result<()> {
    let s = setup_with("userinfo", &[("groupsFrom", "userinfo".into())]).await?;
    s.keycloak.groups_in_userinfo_only().await?;
    groups_come_from_userinfo(&s)
        .await
        .with_context(|| s.logs())
}

async fn groups_come_from_userinfo(s: &Setup) -> Result<()> {
    let id_token = s.keycloak.example_claims("id-token", "carol").await?;
    ensure!(
        id_token["sub"].is_string() && id_token.get("groups").is_none(),
        "Keycloak's ID token still carries groups: {id_token}"
    );
    let userinfo = s.keycloak.example_claims("userinfo", "carol").await?;
    ensure!(
        userinfo["groups"] == serde_json::json!(["engineering"]),
        "{userinfo}"
    );

    let browser = s.logged_in("carol").await?;
    let record = s.record("carol@example.com")?;
    ensure!(record.spec.groups == ["engineering"], "{:?}", record.spec);
    s.keycloak.remove_from_group("carol", "engineering").await?;
    let status = s.active_until_refused(&browser).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "carol, out of engineering, got {status}"
    );
    let record = s.record("carol@example.com")?;
    ensure!(
        !record.spec.revoked && record.spec.groups.is_empty(),
        "carol's session should be live with no groups: {:?}",
        record.spec
    );
    Ok(())
}

/// Keycloak rotates refresh tokens (the realm's `revokeRefreshToken`): two confirmations in a
/// row succeed only if the gateway stored the token the first one received. Groups are read
/// again at every confirmation: taken out of `engineering` at Keycloak, carol is refused by
/// the group rule within a few confirmations, without logging in again.
async fn a_group_removed_at_keycloak_ends_access_at_the_next_confirmation(s: &Setup) -> Result<()> {
    let browser = s.logged_in("carol").await?;
    s.confirmed_twice(&browser, "carol@example.com").await?;
    s.keycloak.remove_from_group("carol", "engineering").await?;
    let status = s.active_until_refused(&browser).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "carol, out of engineering, got {status}"
    );
    let record = s.record("carol@example.com")?;
    ensure!(
        !record.spec.revoked && record.spec.groups.is_empty(),
        "carol's session should be live with no groups: {:?}",
        record.spec
    );
    Ok(())
}

/// The refresh token the gateway holds, redeemed by someone else first (a stolen copy): with
/// rotation, Keycloak refuses it when the gateway's confirmation redeems it in turn, and the
/// gateway ends the session rather than keep a user whose token now lives elsewhere.
async fn a_refresh_token_redeemed_elsewhere_ends_the_session(s: &Setup) -> Result<()> {
    let browser = s.logged_in("dave").await?;
    // A confirmation of the gateway's own may redeem the token between the read and the
    // theft; then the thief tries the new one.
    let mut attempts = 0;
    loop {
        let record = s.record("dave@example.com")?;
        let stolen = s
            .refresh_token(&record)?
            .context("no refresh token stored")?;
        match s.keycloak.refresh(&stolen).await {
            Ok(_) => break,
            Err(e) if attempts < 3 => {
                attempts += 1;
                eprintln!("redeeming dave's refresh token failed ({e:#}); again");
            }
            Err(e) => return Err(e.context("redeeming dave's refresh token")),
        }
    }
    s.revoked_at_next_confirmation(&browser, "dave@example.com")
        .await
}

/// Keycloak's refresh tokens belong to its login session: signing alice out there (the admin
/// API) makes the next confirmation fail with `invalid_grant`, which revokes her session here.
async fn signing_out_at_keycloak_ends_the_session_at_the_next_confirmation(
    s: &Setup,
) -> Result<()> {
    let browser = s.logged_in("alice").await?;
    s.keycloak.logout_user("alice").await?;
    s.revoked_at_next_confirmation(&browser, "alice@example.com")
        .await
}

/// Seed question 1.1: after a revocation the user must really authenticate again.
async fn forced_reauthentication_is_proven_by_auth_time(s: &Setup) -> Result<()> {
    let alice = s.keycloak.info.user("alice")?.clone();
    let browser = s.gateway.browser()?;
    // A first login, through Keycloak's password form; the group comes from its mapper.
    let landed = keycloak::follow_login(&browser, s.url("/")?, &alice, Setup::on_app).await?;
    let seen = s.echo(&browser, landed).await?;
    ensure!(
        seen["headers"]["x-auth-request-groups"] == "admins,engineering"
            || seen["headers"]["x-auth-request-groups"] == "engineering,admins",
        "{seen}"
    );
    let first = s.session(&browser).await?;
    let first_auth = first["authenticated_at"]
        .as_u64()
        .context("authenticated_at")?;

    // Keycloak's session stays live; its auth_time must be clearly older than the raise.
    let wait = (first_auth + CLOCK_SKEW.as_secs() + 2).saturating_sub(unix_now()?);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let raised_at = unix_now()?;
    s.gateway.update_policies(&manifests(s.upstream, 1)).await?;

    // (a) The gateway sends the browser back to Keycloak asking for a new authentication,
    // and Keycloak shows its password form rather than answering with a code.
    let authorize = s.authorize_url(&browser).await?;
    ensure!(
        query(&authorize, "prompt").as_deref() == Some("login")
            && query(&authorize, "max_age").as_deref() == Some("0"),
        "the forced login did not ask for a new authentication: {authorize}"
    );
    let landing = keycloak::follow(&browser, authorize.clone(), |_| true).await?;
    ensure!(
        matches!(landing, Landing::PasswordForm { .. }),
        "Keycloak did not ask for the password: {landing:?}"
    );

    // (b) Without prompt and max_age, Keycloak's live session answers with a code at once;
    // the gateway refuses it, because its auth_time predates the raise.
    let stripped = without(&authorize, &["prompt", "max_age"]);
    let callback =
        match keycloak::follow(&browser, stripped, |u| u.host_str() == Some(AUTH)).await? {
            Landing::Stopped(url) => url,
            Landing::PasswordForm { page, .. } => bail!("Keycloak asked for a password at {page}"),
        };
    ensure!(
        query(&callback, "code").is_some(),
        "no silent code from Keycloak: {callback}"
    );
    let refused = browser.get(callback).send().await?;
    let status = refused.status();
    let body = refused.text().await?;
    ensure!(
        status == StatusCode::FORBIDDEN && body.contains("not_reauthenticated"),
        "the gateway accepted a login that did not re-authenticate: {status} {body}"
    );
    let after = browser.get(s.url("/")?).send().await?;
    ensure!(
        after.status().is_redirection(),
        "a session exists after the refused login: {}",
        after.status()
    );

    // (c) With the password entered again, auth_time is fresh and the login succeeds.
    let authorize = s.authorize_url(&browser).await?;
    let Landing::PasswordForm { action, .. } =
        keycloak::follow(&browser, authorize, Setup::on_app).await?
    else {
        bail!("Keycloak did not ask for the password the second time");
    };
    let landed = keycloak::submit_password(&browser, action, &alice, Setup::on_app).await?;
    s.echo(&browser, landed).await?;
    let second = s.session(&browser).await?;
    let second_auth = second["authenticated_at"]
        .as_u64()
        .context("authenticated_at")?;
    ensure!(
        second_auth >= raised_at && second_auth > first_auth,
        "auth_time {second_auth} is not after the raise at {raised_at}: {second}"
    );
    Ok(())
}
