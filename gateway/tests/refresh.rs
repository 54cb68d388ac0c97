//! Background confirmation of sessions with the real Dex, through the real gateway, with
//! sessions recorded in the real API server: an active session is confirmed every
//! `refreshInterval` (its rotated refresh token stored sealed), a refresh the provider refuses
//! revokes the session, and while the provider is down each policy's `refreshFailure` decides.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_crds::{AccessSession, RefreshStatus};
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    gateway::{DexServer, GatewayProcess, start_with_sessions},
    upstream,
};
use reqwest::{StatusCode, Url};
use std::time::{Duration, Instant};

const AUTH: &str = "auth.portcullis.test";
const STRICT: &str = "strict.portcullis.test";
const LENIENT: &str = "lenient.portcullis.test";

fn manifests(upstream: &str) -> String {
    let policy = |name: &str, host: &str, mode: &str| {
        format!(
            r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: {name}, namespace: demo }}
spec:
  hosts: [{host}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
  session: {{ refreshFailure: {{ mode: {mode} }} }}
---"#
        )
    };
    policy("strict", STRICT, "FailClosed") + &policy("lenient", LENIENT, "KeepUntilExpiry")
}

async fn start(
    name: &str,
    kubeconfig: &std::path::Path,
    ns: &str,
    interval: &str,
) -> Result<(GatewayProcess, DexServer)> {
    let dir =
        std::env::temp_dir().join(format!("portcullis-refresh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let echo = upstream::echo().await?;
    start_with_sessions(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        &dir,
        kubeconfig,
        ns,
        (AUTH, &[STRICT, LENIENT]),
        &manifests(&echo.to_string()),
        |config| {
            config
                .idp_options
                .insert("refreshInterval".into(), interval.into());
        },
    )
    .await
}

/// Logs alice in on both hosts (the second by single sign-on) and returns her browser.
async fn login(gateway: &GatewayProcess, dex: &DexServer) -> Result<reqwest::Client> {
    let browser = gateway.browser()?;
    let user = dex.info.user("alice")?.clone();
    for host in [STRICT, LENIENT] {
        let start = Url::parse(&format!("{}/", gateway.origin(host)))?;
        dex::follow_login(&browser, start, &user, Connector::Password, |u| {
            u.host_str() == Some(host) && u.path() == "/"
        })
        .await
        .with_context(|| gateway.log_tail())?;
    }
    Ok(browser)
}

async fn status(browser: &reqwest::Client, gateway: &GatewayProcess, host: &str) -> Result<u16> {
    let response = browser
        .get(format!("{}/", gateway.origin(host)))
        .header("accept", "application/json")
        .send()
        .await?;
    Ok(response.status().as_u16())
}

async fn only_session(api: &Api<AccessSession>) -> Result<AccessSession> {
    let list = api.list(&Default::default()).await?;
    ensure!(
        list.items.len() == 1,
        "expected one session, found {}",
        list.items.len()
    );
    Ok(list.items[0].clone())
}

fn refresh(session: &AccessSession) -> RefreshStatus {
    session
        .status
        .as_ref()
        .and_then(|s| s.refresh.clone())
        .unwrap_or_default()
}

/// Keeps the session active (a request every 300 ms) until `done` holds for the session.
async fn active_until(
    browser: &reqwest::Client,
    gateway: &GatewayProcess,
    api: &Api<AccessSession>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&AccessSession) -> bool,
) -> Result<AccessSession> {
    let deadline = Instant::now() + timeout;
    loop {
        let _ = status(browser, gateway, LENIENT).await?;
        let session = only_session(api).await?;
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

#[tokio::test]
async fn active_sessions_are_confirmed_and_their_rotated_tokens_kept() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-refresh-ok", |client: Client, ns: String| async move {
            let (gateway, dex) = start("ok", &kubeconfig, &ns, "3s").await?;
            let browser = login(&gateway, &dex).await?;
            let api: Api<AccessSession> = Api::namespaced(client, &ns);
            let first = refresh(&only_session(&api).await?);
            let sealed = first
                .sealed_token
                .clone()
                .context("no sealed refresh token")?;
            ensure!(sealed.starts_with("v1."), "{sealed}");
            let confirmed_at = first
                .last_refreshed_at
                .clone()
                .context("no lastRefreshedAt")?;

            // Two confirmations in a row: the second redeems the token the first rotated in,
            // so it only succeeds if that token was stored (Dex refuses a used one).
            let mut seen = vec![(confirmed_at, sealed)];
            for round in 1..=2 {
                let previous = seen[round - 1].clone();
                let session = active_until(
                    &browser,
                    &gateway,
                    &api,
                    Duration::from_secs(20),
                    "a confirmation",
                    |s| {
                        refresh(s)
                            .last_refreshed_at
                            .is_some_and(|t| t.0 > previous.0.0)
                    },
                )
                .await?;
                let now = refresh(&session);
                ensure!(!session.spec.revoked, "revoked: {:?}", session.spec);
                ensure!(
                    now.failing_since.is_none() && now.last_error.is_none(),
                    "{now:?}"
                );
                ensure!(
                    now.holder.is_none() && now.lease_until.is_none(),
                    "lease kept: {now:?}"
                );
                let token = now.sealed_token.clone().context("token dropped")?;
                ensure!(
                    token != previous.1,
                    "Dex rotates refresh tokens; the new one was not stored"
                );
                seen.push((now.last_refreshed_at.clone().context("time")?, token));
            }
            ensure!(status(&browser, &gateway, STRICT).await? == 200);
            Ok::<_, anyhow::Error>(())
        })
        .await
}

#[tokio::test]
async fn a_refresh_the_provider_refuses_ends_the_session() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns(
            "gw-refresh-refused",
            |client: Client, ns: String| async move {
                let (gateway, mut dex) = start("refused", &kubeconfig, &ns, "3s").await?;
                let browser = login(&gateway, &dex).await?;
                let api: Api<AccessSession> = Api::namespaced(client, &ns);
                ensure!(status(&browser, &gateway, LENIENT).await? == 200);

                // Dex keeps refresh tokens in memory: after a restart it no longer knows the
                // session's, and says so at the next refresh.
                dex.restart().await?;
                let session = active_until(
                    &browser,
                    &gateway,
                    &api,
                    Duration::from_secs(30),
                    "the revocation",
                    |s| s.spec.revoked,
                )
                .await?;
                let reason = session.spec.revocation_reason.clone().unwrap_or_default();
                ensure!(reason.contains("identity provider refused"), "{reason}");
                ensure!(
                    refresh(&session).sealed_token.is_none(),
                    "a dead token was kept"
                );
                for host in [STRICT, LENIENT] {
                    let code = status(&browser, &gateway, host).await?;
                    ensure!(code == StatusCode::UNAUTHORIZED.as_u16(), "{host}: {code}");
                }
                Ok::<_, anyhow::Error>(())
            },
        )
        .await
}

#[tokio::test]
async fn while_the_provider_is_down_each_policy_decides() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-refresh-down", |client: Client, ns: String| async move {
            let (gateway, mut dex) = start("down", &kubeconfig, &ns, "3s").await?;
            let browser = login(&gateway, &dex).await?;
            let api: Api<AccessSession> = Api::namespaced(client, &ns);
            ensure!(status(&browser, &gateway, STRICT).await? == 200);

            dex.stop().await?;
            let session = active_until(
                &browser,
                &gateway,
                &api,
                Duration::from_secs(30),
                "failingSince",
                |s| refresh(s).failing_since.is_some(),
            )
            .await?;
            ensure!(
                !session.spec.revoked,
                "a transient failure revoked the session"
            );
            ensure!(
                refresh(&session).sealed_token.is_some(),
                "the token was dropped"
            );
            // The gateway's index follows the status within moments.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let strict = status(&browser, &gateway, STRICT).await?;
                if strict == StatusCode::UNAUTHORIZED.as_u16() {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "FailClosed still admits: {strict}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ensure!(
                status(&browser, &gateway, LENIENT).await? == 200,
                "KeepUntilExpiry must keep the session while the provider is down"
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}
