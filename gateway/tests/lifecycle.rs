//! A session's life after login, through the real gateway and the real Dex, both ways its
//! records can be kept (AccessSessions in the real API server, and standalone mode's own
//! store): an active session is confirmed every `refreshInterval` (its rotated refresh token
//! stored sealed), a refresh the provider refuses revokes it, while the provider is down each
//! policy's `refreshFailure` decides, and logging out ends it on every app and path.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_crds::{AccessSession, RefreshStatus};
use portcullis_gateway::sessions::seal::SessionKey;
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    gateway::{DexServer, GatewayConfig, GatewayProcess, SessionRecords, start_recording},
    upstream,
};
use reqwest::{StatusCode, Url};
use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

const AUTH: &str = "auth.portcullis.test";
const STRICT: &str = "strict.portcullis.test";
const LENIENT: &str = "lenient.portcullis.test";
/// Every app of the tests: (host, path).
const APPS: [(&str, &str); 3] = [(STRICT, "/"), (LENIENT, "/"), (LENIENT, "/b/")];

fn manifests(upstream: &str) -> String {
    let policy = |name: &str, host: &str, paths: &str, mode: &str| {
        format!(
            r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: {name}, namespace: demo }}
spec:
  hosts: [{host}]
  paths: [{paths}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
  session: {{ refreshFailure: {{ mode: {mode} }} }}
---"#
        )
    };
    policy("strict", STRICT, "/", "FailClosed")
        + &policy("lenient", LENIENT, "/", "KeepUntilExpiry")
        + &policy("lenient-b", LENIENT, "/b", "KeepUntilExpiry")
}

/// Where the session records of one test run live, and how the test reads them.
enum Records {
    Cluster(Box<Api<AccessSession>>),
    Local(PathBuf),
}

impl Records {
    /// Where the records live, for reports.
    fn mode(&self) -> &'static str {
        match self {
            Self::Cluster(_) => "AccessSessions",
            Self::Local(_) => "standalone",
        }
    }

    async fn all(&self) -> Result<Vec<AccessSession>> {
        match self {
            Self::Cluster(api) => Ok(api.list(&Default::default()).await?.items),
            Self::Local(file) => match std::fs::read(file) {
                Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            },
        }
    }

    async fn only(&self) -> Result<AccessSession> {
        let all = self.all().await?;
        ensure!(all.len() == 1, "expected one session, found {}", all.len());
        Ok(all[0].clone())
    }
}

/// One scenario, given where its gateway records sessions.
struct Run {
    config: SessionRecords,
    records: Records,
    dir: PathBuf,
}

fn scratch(name: &str) -> Result<PathBuf> {
    portcullis_tests::fsutil::scratch_dir("lifecycle", name)
}

async fn in_cluster<F, Fut>(name: &str, scenario: F) -> Result<()>
where
    F: FnOnce(Run) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns(name, |client: Client, ns: String| async move {
            let run = Run {
                config: SessionRecords::Cluster {
                    kubeconfig,
                    namespace: ns.clone(),
                },
                records: Records::Cluster(Box::new(Api::namespaced(client, &ns))),
                dir: scratch(&format!("{name}-cluster"))?,
            };
            scenario(run).await
        })
        .await
}

async fn standalone<F, Fut>(name: &str, scenario: F) -> Result<()>
where
    F: FnOnce(Run) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = scratch(&format!("{name}-standalone"))?;
    let file = dir.join("sessions.json");
    scenario(Run {
        config: SessionRecords::Local { file: file.clone() },
        records: Records::Local(file),
        dir,
    })
    .await
}

/// Runs a scenario both ways, as two tests.
macro_rules! both_ways {
    ($name:ident, $ns:literal) => {
        mod $name {
            #[tokio::test]
            async fn in_a_cluster() -> anyhow::Result<()> {
                super::in_cluster($ns, super::$name).await
            }
            #[tokio::test]
            async fn standalone() -> anyhow::Result<()> {
                super::standalone($ns, super::$name).await
            }
        }
    };
}

async fn start(run: &Run, interval: &str) -> Result<(GatewayProcess, DexServer)> {
    start_with(run, |config| {
        config
            .idp_options
            .insert("refreshInterval".into(), interval.into());
    })
    .await
}

/// The scenario's gateway (with its own Dex) in front of an echo upstream, configured by
/// `tweak`.
async fn start_with(
    run: &Run,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Result<(GatewayProcess, DexServer)> {
    let echo = upstream::echo().await?;
    start_recording(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        &run.dir,
        &run.config,
        (AUTH, &[STRICT, LENIENT]),
        &manifests(&echo.to_string()),
        tweak,
    )
    .await
}

fn url(gateway: &GatewayProcess, (host, path): (&str, &str)) -> Result<Url> {
    Ok(Url::parse(&format!("{}{path}", gateway.origin(host)))?)
}

/// Logs alice in on every app (all but the first by single sign-on); returns her browser.
async fn login(gateway: &GatewayProcess, dex: &DexServer) -> Result<reqwest::Client> {
    let browser = gateway.browser()?;
    login_with(&browser, gateway, dex).await?;
    Ok(browser)
}

async fn login_with(
    browser: &reqwest::Client,
    gateway: &GatewayProcess,
    dex: &DexServer,
) -> Result<()> {
    let user = dex.info.user("alice")?.clone();
    for app in APPS {
        dex::follow_login(
            browser,
            url(gateway, app)?,
            &user,
            Connector::Password,
            |u| u.host_str() == Some(app.0) && u.path() == app.1,
        )
        .await
        .with_context(|| gateway.log_tail())?;
    }
    Ok(())
}

/// The status an API request of `browser` (made with
/// [`GatewayProcess::direct_browser_with_jar`]) gets from an app at that very replica.
async fn status_at(
    browser: &reqwest::Client,
    gateway: &GatewayProcess,
    (host, path): (&str, &str),
) -> Result<u16> {
    let response = browser
        .get(format!("{}{path}", gateway.direct_origin(host)))
        .header("accept", "application/json")
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// The status an API request (`fetch`) of `browser` gets from an app.
async fn status(
    browser: &reqwest::Client,
    gateway: &GatewayProcess,
    app: (&str, &str),
) -> Result<u16> {
    let response = browser
        .get(url(gateway, app)?)
        .header("accept", "application/json")
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn refresh(session: &AccessSession) -> RefreshStatus {
    session
        .status
        .as_ref()
        .and_then(|s| s.refresh.clone())
        .unwrap_or_default()
}

/// Keeps the session active (a request every 300 ms) until `done` holds for its record.
async fn active_until(
    browser: &reqwest::Client,
    gateway: &GatewayProcess,
    records: &Records,
    what: &str,
    done: impl Fn(&AccessSession) -> bool,
) -> Result<AccessSession> {
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    loop {
        let _ = status(browser, gateway, APPS[1]).await?;
        let session = records.only().await?;
        if done(&session) {
            return Ok(session);
        }
        ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}; session status {:?}\n{}",
            session.status,
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

both_ways!(
    active_sessions_are_confirmed_and_rotated_tokens_kept,
    "lc-confirm"
);
async fn active_sessions_are_confirmed_and_rotated_tokens_kept(run: Run) -> Result<()> {
    let (gateway, dex) = start(&run, "3s").await?;
    let key = SessionKey::from_file_content(&std::fs::read(&gateway.files.session_key)?)?;
    let browser = login(&gateway, &dex).await?;
    let first = refresh(&run.records.only().await?);
    let sealed = first
        .sealed_token
        .clone()
        .context("no sealed refresh token")?;
    ensure!(sealed.starts_with("v1."), "{sealed}");
    let confirmed_at = first
        .last_refreshed_at
        .clone()
        .context("no lastRefreshedAt")?;

    // Two confirmations in a row: the second redeems the token the first rotated in, so it
    // only succeeds if that token was stored (Dex refuses a used one).
    let mut previous = (confirmed_at, sealed);
    for _ in 0..2 {
        let session = active_until(&browser, &gateway, &run.records, "a confirmation", |s| {
            refresh(s)
                .last_refreshed_at
                .is_some_and(|t| t.0 > previous.0.0)
        })
        .await?;
        let now = refresh(&session);
        ensure!(!session.spec.revoked, "revoked: {:?}", session.spec);
        ensure!(
            now.failing_since.is_none() && now.last_error.is_none(),
            "{now:?}"
        );
        // The confirmation reserved the next round for this gateway: one claim past the
        // next due time.
        let reserved = now.lease_until.as_ref().map(|t| t.0);
        let confirmed_at = now.last_refreshed_at.as_ref().map(|t| t.0);
        ensure!(
            now.holder.is_some() && reserved > confirmed_at,
            "no reservation for the next round: {now:?}"
        );
        let token = now.sealed_token.clone().context("token dropped")?;
        let sid = session.metadata.name.clone().context("name")?;
        ensure!(
            key.open(&sid, &token)? != key.open(&sid, &previous.1)?,
            "Dex rotates refresh tokens; the new one was not stored"
        );
        previous = (now.last_refreshed_at.clone().context("time")?, token);
    }
    for app in APPS {
        ensure!(status(&browser, &gateway, app).await? == 200, "{app:?}");
    }
    let confirmed = metric(
        &gateway,
        r#"portcullis_gateway_session_confirmations_total{idp="dex",outcome="confirmed"}"#,
    )
    .await?;
    ensure!(confirmed >= 2.0, "confirmations counted: {confirmed}");
    Ok(())
}

/// Counts the modifications of the namespace's sessions from now on (a watch, in the
/// background, for the rest of the test).
async fn count_writes(
    api: Api<AccessSession>,
) -> Result<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    use futures::StreamExt as _;
    let list = api.list_metadata(&Default::default()).await?;
    let from = list
        .metadata
        .resource_version
        .context("no resourceVersion")?;
    let mut events = api
        .watch(&kube::api::WatchParams::default(), &from)
        .await?
        .boxed();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if let kube::api::WatchEvent::Modified(_) = event {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    Ok(count)
}

/// The value of one sample on the gateway's `/metrics` (0 when absent).
async fn metric(gateway: &GatewayProcess, sample: &str) -> Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", gateway.ops_addr))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0))
}

both_ways!(
    a_provider_without_refresh_tokens_is_counted_not_silent,
    "lc-no-refresh"
);
/// Without `offline_access` Dex issues no refresh token: the login works, the session is kept
/// without a sealed token, and the metric says so (such sessions are never confirmed).
async fn a_provider_without_refresh_tokens_is_counted_not_silent(run: Run) -> Result<()> {
    let (gateway, dex) = start_with(&run, |config| {
        config.idp_options.insert(
            "scopes".into(),
            serde_json::json!(["openid", "email", "profile", "groups"]),
        );
    })
    .await?;
    let sample = r#"portcullis_gateway_logins_without_refresh_token_total{idp="dex"}"#;
    ensure!(metric(&gateway, sample).await? == 0.0);
    let browser = login(&gateway, &dex).await?;
    ensure!(status(&browser, &gateway, APPS[1]).await? == 200);
    let session = run.records.only().await?;
    ensure!(
        refresh(&session).sealed_token.is_none(),
        "a token was kept: {:?}",
        session.status
    );
    ensure!(
        metric(&gateway, sample).await? == 1.0,
        "{}",
        gateway.log_tail()
    );
    ensure!(
        gateway
            .log_tail()
            .contains("the identity provider issued no refresh token"),
        "not logged"
    );
    Ok(())
}

both_ways!(
    a_refresh_the_provider_refuses_ends_the_session,
    "lc-refused"
);
async fn a_refresh_the_provider_refuses_ends_the_session(run: Run) -> Result<()> {
    let (gateway, mut dex) = start(&run, "3s").await?;
    let browser = login(&gateway, &dex).await?;
    ensure!(status(&browser, &gateway, APPS[1]).await? == 200);

    // Dex keeps refresh tokens in memory: after a restart it no longer knows the session's,
    // and says so at the next refresh.
    dex.restart().await?;
    let session = active_until(&browser, &gateway, &run.records, "the revocation", |s| {
        s.spec.revoked
    })
    .await?;
    let reason = session.spec.revocation_reason.clone().unwrap_or_default();
    ensure!(reason.contains("identity provider refused"), "{reason}");
    // The revocation (spec) and the dropped token (status) are two writes, the revocation
    // first so that it is never lost: the token goes with the second.
    active_until(
        &browser,
        &gateway,
        &run.records,
        "dropping the dead token",
        |s| refresh(s).sealed_token.is_none(),
    )
    .await?;
    for app in APPS {
        let code = status(&browser, &gateway, app).await?;
        ensure!(code == StatusCode::UNAUTHORIZED.as_u16(), "{app:?}: {code}");
    }
    Ok(())
}

both_ways!(while_the_provider_is_down_each_policy_decides, "lc-down");
/// Fault matrix, row "identity provider down": a `KeepUntilExpiry` policy serves its live
/// session through the outage with no failed request, also after the gateway restarts during
/// it; a `FailClosed` policy refuses the session once a refresh has failed.
async fn while_the_provider_is_down_each_policy_decides(run: Run) -> Result<()> {
    let (mut gateway, mut dex) = start(&run, "3s").await?;
    let browser = login(&gateway, &dex).await?;
    ensure!(status(&browser, &gateway, APPS[0]).await? == 200);

    dex.stop().await?;
    let down = Instant::now();
    let (mut asked, mut failed) = (0, Vec::new());
    let mut lenient = async |gateway: &GatewayProcess| -> Result<()> {
        for app in &APPS[1..] {
            asked += 1;
            let code = status(&browser, gateway, *app).await?;
            if code != 200 {
                failed.push(format!("{app:?}: {code}"));
            }
        }
        Ok(())
    };
    let session = loop {
        lenient(&gateway).await?;
        let session = run.records.only().await?;
        if refresh(&session).failing_since.is_some() {
            break session;
        }
        ensure!(
            down.elapsed() < Duration::from_secs(60),
            "no failingSince: {:?}",
            session.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        !session.spec.revoked,
        "a transient failure revoked the session"
    );
    ensure!(
        refresh(&session).sealed_token.is_some(),
        "the token was dropped"
    );
    // The gateway's index follows the record within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        lenient(&gateway).await?;
        let strict = status(&browser, &gateway, APPS[0]).await?;
        if strict == StatusCode::UNAUTHORIZED.as_u16() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "FailClosed still admits: {strict}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused_after = down.elapsed();
    // A gateway restarted during the outage keeps both decisions.
    gateway
        .restart(env!("CARGO_BIN_EXE_portcullis-gateway").as_ref())
        .await?;
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(4) {
        lenient(&gateway).await?;
        let strict = status(&browser, &gateway, APPS[0]).await?;
        ensure!(
            strict == StatusCode::UNAUTHORIZED.as_u16(),
            "FailClosed admits after a restart: {strict}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "FAULT idp-down ({}): KeepUntilExpiry {asked} requests, {} failed (a gateway restart \
         included); FailClosed refused {refused_after:?} after the provider went down",
        run.records.mode(),
        failed.len()
    );
    ensure!(
        failed.is_empty(),
        "KeepUntilExpiry must keep the session while the provider is down: {failed:?}"
    );
    Ok(())
}

both_ways!(
    logging_out_ends_the_session_on_every_app_and_path,
    "lc-logout"
);
async fn logging_out_ends_the_session_on_every_app_and_path(run: Run) -> Result<()> {
    let (gateway, dex) = start(&run, "5m").await?;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = gateway.browser_with_jar(jar.clone())?;
    login_with(&browser, &gateway, &dex).await?;
    for app in APPS {
        ensure!(status(&browser, &gateway, app).await? == 200, "{app:?}");
    }
    // A copy of every cookie taken before logout (another tab, a stolen jar).
    let copy = std::sync::Arc::new(reqwest::cookie::Jar::default());
    for origin in [AUTH, STRICT, LENIENT] {
        let at = Url::parse(&format!("{}/", gateway.origin(origin)))?;
        if let Some(cookies) = reqwest::cookie::CookieStore::cookies(&*jar, &at) {
            for cookie in cookies.to_str()?.split("; ") {
                copy.add_cookie_str(&format!("{cookie}; Secure; HttpOnly; Path=/"), &at);
            }
        }
    }
    let stolen = gateway.browser_with_jar(copy)?;

    // Log out from the second host: its cookies go, then the auth host revokes the session.
    let logout = browser
        .get(format!("{}/.portcullis/logout", gateway.origin(LENIENT)))
        .send()
        .await?;
    ensure!(logout.status().is_redirection(), "{}", logout.status());
    let next = logout.headers()[reqwest::header::LOCATION]
        .to_str()?
        .to_owned();
    ensure!(next.starts_with(&gateway.origin(AUTH)), "{next}");
    // A browser without Fetch Metadata gets the confirmation page; its button (a POST from
    // the auth host) signs out.
    let confirm = browser.get(&next).send().await?;
    ensure!(confirm.status() == StatusCode::OK, "{}", confirm.status());
    ensure!(
        !run.records.only().await?.spec.revoked,
        "a logout without Fetch Metadata signed out directly"
    );
    let done = browser
        .post(&next)
        .header("origin", gateway.origin(AUTH))
        .send()
        .await?;
    ensure!(done.status() == StatusCode::OK, "{}", done.status());
    ensure!(
        run.records.only().await?.spec.revoked,
        "logout did not revoke the session"
    );

    // Every app and path refuses, for the browser (whose first host's cookie is still in its
    // jar) and for the copy taken before logout.
    for client in [&browser, &stolen] {
        for app in APPS {
            let code = status(client, &gateway, app).await?;
            ensure!(code == StatusCode::UNAUTHORIZED.as_u16(), "{app:?}: {code}");
        }
    }
    // The copy's SSO cookie does not bring the session back either: the auth host sends the
    // browser to the identity provider instead of handing the session to the app.
    let mut next = url(&gateway, APPS[0])?;
    for _ in 0..4 {
        let response = stolen.get(next.clone()).send().await?;
        let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
            break;
        };
        next = next.join(location.to_str()?)?;
        ensure!(
            !next.path().contains("/.portcullis/handoff"),
            "a logged-out session was handed off: {next}"
        );
        if next.as_str().starts_with(&dex.info.issuer) {
            return Ok(());
        }
    }
    anyhow::bail!("expected a new login at the identity provider, ended at {next}")
}

#[tokio::test]
async fn two_gateways_confirm_a_session_once_per_interval_without_racing() -> Result<()> {
    in_cluster("lc-pair", |run: Run| async move {
        let (first, dex) = start(&run, "2s").await?;
        let second = first
            .start_replica(env!("CARGO_BIN_EXE_portcullis-gateway").as_ref())
            .await?;
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        login_with(&first.browser_with_jar(jar.clone())?, &first, &dex).await?;
        // Each replica reached directly: through the public port both would be the first.
        let one = first.direct_browser_with_jar(jar.clone())?;
        let two = second.direct_browser_with_jar(jar)?;
        let start_at = refresh(&run.records.only().await?)
            .last_refreshed_at
            .context("no lastRefreshedAt")?;
        // Every write to the session from here on, as the API server reports it.
        let Records::Cluster(api) = &run.records else {
            anyhow::bail!("a cluster run");
        };
        let writes = count_writes((**api).clone()).await?;
        // Both replicas see the session active all along; each is due at the same moments.
        let mut confirmations = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(14);
        while Instant::now() < deadline {
            for (browser, gateway) in [(&one, &first), (&two, &second)] {
                let code = status_at(browser, gateway, APPS[1]).await?;
                ensure!(
                    code == 200,
                    "refused ({code}) while both gateways refresh:\n{}\n{}",
                    first.log_tail(),
                    second.log_tail()
                );
            }
            let session = run.records.only().await?;
            ensure!(!session.spec.revoked, "revoked: {:?}", session.spec);
            if let Some(at) = refresh(&session).last_refreshed_at {
                confirmations.insert(at.0);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let later = confirmations.iter().filter(|t| **t > start_at.0).count();
        ensure!(
            later >= 3,
            "expected several confirmations over 14 s at a 2 s interval, saw {later}"
        );
        // Every confirmation was counted by one replica or the other, never by both for the
        // same interval (which one wins the lease depends on their tick phases).
        let mut counted = 0.0;
        for gateway in [&first, &second] {
            counted += metric(
                gateway,
                r#"portcullis_gateway_session_confirmations_total{idp="dex",outcome="confirmed"}"#,
            )
            .await?;
        }
        ensure!(
            counted >= later as f64 && counted <= later as f64 + 1.0,
            "{counted} confirmations counted by the replicas for {later} seen (+1 at login)"
        );
        // One API-server write per confirmation: the outcome's write reserves the next round
        // for the same replica, so only a round without a reservation (the first after the
        // login, one claim at most more) writes a claim first. Two writes per confirmation
        // would be `2 * later`.
        let written = writes.load(std::sync::atomic::Ordering::SeqCst);
        ensure!(
            written <= later + 2,
            "{written} writes to the session for {later} confirmations"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_session_key_is_rotated_without_logging_anyone_out() -> Result<()> {
    in_cluster("lc-key-rotation", key_rotation).await
}

/// A session confirmed under key A goes on being confirmed after the gateway restarts with key
/// B current and A only as a previous key, and its refresh token ends up sealed with B: after
/// one refresh interval A can be retired.
async fn key_rotation(run: Run) -> Result<()> {
    let (mut gateway, dex) = start(&run, "2s").await?;
    let old_key = SessionKey::from_file_content(&std::fs::read(&gateway.files.session_key)?)?;
    let browser = login(&gateway, &dex).await?;
    let sealed_with = |session: &AccessSession| {
        refresh(session)
            .sealed_token
            .and_then(|t| t.split('.').nth(1).map(str::to_owned))
    };
    let first = active_until(&browser, &gateway, &run.records, "a sealed token", |s| {
        sealed_with(s).is_some()
    })
    .await?;
    ensure!(sealed_with(&first).as_deref() == Some(old_key.id()));

    let new_file = run.dir.join("session-key-new");
    let raw: [u8; 32] = rand::random();
    std::fs::write(
        &new_file,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw),
    )?;
    let new_key = SessionKey::from_file_content(&std::fs::read(&new_file)?)?;
    ensure!(new_key.id() != old_key.id());
    let mut config = gateway.config.clone();
    config.env.extend([
        (
            "PORTCULLIS_SESSION_KEY_FILE".to_owned(),
            new_file.display().to_string(),
        ),
        (
            "PORTCULLIS_PREVIOUS_SESSION_KEY_FILES".to_owned(),
            gateway.files.session_key.display().to_string(),
        ),
    ]);
    let files = gateway.files.clone();
    gateway.stop().await?;
    let gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        config,
        files,
    )
    .await?;

    let confirmed_at = refresh(&first)
        .last_refreshed_at
        .context("no lastRefreshedAt")?;
    let rotated = active_until(
        &browser,
        &gateway,
        &run.records,
        "a confirmation under the new key",
        |s| {
            refresh(s)
                .last_refreshed_at
                .is_some_and(|t| t.0 > confirmed_at.0)
                && sealed_with(s).as_deref() == Some(new_key.id())
        },
    )
    .await?;
    let now = refresh(&rotated);
    ensure!(!rotated.spec.revoked, "revoked: {:?}", rotated.spec);
    ensure!(
        now.failing_since.is_none() && now.last_error.is_none(),
        "{now:?}"
    );
    let sid = rotated.metadata.name.clone().context("name")?;
    let token = now.sealed_token.context("token")?;
    ensure!(new_key.open(&sid, &token).is_ok());
    ensure!(
        old_key.open(&sid, &token).is_err(),
        "still sealed with the old key"
    );
    for app in APPS {
        ensure!(status(&browser, &gateway, app).await? == 200, "{app:?}");
    }

    // Mid-rollout, a replica that has only the old key meets the token sealed with the new one:
    // it leaves the session to a replica with the key, and marks nothing failing, so even the
    // FailClosed app keeps admitting the user there.
    let mut config = gateway.config.clone();
    config.env.retain(|(k, _)| {
        k != "PORTCULLIS_SESSION_KEY_FILE" && k != "PORTCULLIS_PREVIOUS_SESSION_KEY_FILES"
    });
    config.public_port = Some(config.public_port());
    config.port = 0;
    config.ops_port = 0;
    let old_replica = GatewayProcess::start(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        config,
        gateway.files.clone(),
    )
    .await?;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    login_with(&gateway.browser_with_jar(jar.clone())?, &gateway, &dex).await?;
    let direct = old_replica.direct_browser_with_jar(jar)?;
    let deferred =
        r#"portcullis_gateway_session_confirmations_total{idp="dex",outcome="deferred"}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&old_replica, deferred).await? < 1.0 {
        for app in APPS {
            ensure!(
                status_at(&direct, &old_replica, app).await? == 200,
                "{app:?} refused at the replica without the new key:\n{}",
                old_replica.log_tail()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the replica without the new key never deferred:\n{}",
            old_replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for session in run.records.all().await? {
        let now = refresh(&session);
        ensure!(
            now.failing_since.is_none() && now.holder.is_none(),
            "a deferred refresh left a mark: {now:?}"
        );
    }
    for app in APPS {
        ensure!(
            status_at(&direct, &old_replica, app).await? == 200,
            "{app:?}"
        );
    }
    Ok(())
}

both_ways!(
    a_session_in_use_stays_in_when_renewed_tokens_never_reach_the_browser,
    "lc-undelivered"
);
/// Behind an ingress that drops the `Set-Cookie` of its authorization answer (Envoy's
/// ext_authz), a browser keeps sending the app token of its login however active it is. The
/// idle timeout counts from the session's last known use (the gateways confirm only sessions
/// with requests), not from that token: a user who keeps working stays in past the idle
/// timeout; one who stopped is out once it has passed since the last use, and the refused
/// request does not bring the session back.
async fn a_session_in_use_stays_in_when_renewed_tokens_never_reach_the_browser(
    run: Run,
) -> Result<()> {
    const IDLE: Duration = Duration::from_secs(60);
    let echo = upstream::echo().await?;
    let manifest = format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: strict, namespace: demo }}
spec:
  hosts: [{STRICT}]
  identityProviders: [dex]
  upstream: {{ url: "http://{echo}" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
  session: {{ idleTimeout: 1m, tokenLifetime: 10s }}
"#
    );
    let (gateway, dex) = start_recording(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        &run.dir,
        &run.config,
        (AUTH, &[STRICT]),
        &manifest,
        |config| {
            config
                .idp_options
                .insert("refreshInterval".into(), "2s".into());
        },
    )
    .await?;
    let app = url(&gateway, (STRICT, "/"))?;
    // The app cookie of a login, as a browser that never takes a renewed one keeps sending it.
    // Two users: Dex keeps one refresh token per user and client, so a second login of the same
    // user would end the first session at its next refresh.
    let login = async |name: &str| -> Result<String> {
        let user = dex.info.user(name)?.clone();
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let browser = gateway.browser_with_jar(jar.clone())?;
        dex::follow_login(&browser, app.clone(), &user, Connector::Password, |u| {
            u.host_str() == Some(STRICT) && u.path() == "/"
        })
        .await?;
        let cookies = reqwest::cookie::CookieStore::cookies(jar.as_ref(), &app);
        Ok(cookies.context("no app cookie")?.to_str()?.to_owned())
    };
    let (working, stopped) = (login("alice").await?, login("bob").await?);
    let logged_in = Instant::now();
    let frozen = async |cookie: &str| -> Result<u16> {
        // A fresh client each time: nothing the gateway answers is kept.
        let response = gateway
            .browser()?
            .get(app.clone())
            .header("accept", "application/json")
            .header("cookie", cookie)
            .send()
            .await?;
        Ok(response.status().as_u16())
    };
    let mut refused = Vec::new();
    while logged_in.elapsed() < IDLE + Duration::from_secs(15) {
        let code = frozen(&working).await?;
        if code != 200 {
            refused.push(format!("{:?}: {code}", logged_in.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    ensure!(
        refused.is_empty(),
        "the working user was refused: {refused:?}\n{}",
        gateway.log_tail()
    );
    ensure!(frozen(&working).await? == 200);
    // The other session had no request since its login, more than the idle timeout ago.
    ensure!(frozen(&stopped).await? == 401, "an idle session was let in");
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        frozen(&stopped).await? == 401,
        "a refused request brought an idle session back"
    );
    Ok(())
}
