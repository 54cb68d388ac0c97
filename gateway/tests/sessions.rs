//! Cluster mode: every login through the real gateway and the real Dex becomes an
//! `AccessSession` in the real API server, and a login that cannot be recorded is refused rather
//! than half made.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_crds::AccessSession;
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    gateway::{DexServer, GatewayProcess},
    process::free_port,
};
use reqwest::{StatusCode, Url};
use std::path::Path;

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "myserver.portcullis.test";

fn manifests() -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: apps, namespace: demo }}
spec:
  hosts: [{APP}]
  identityProviders: [dex]
  upstream: {{ url: "http://127.0.0.1:9" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
"#
    )
}

async fn gateway(
    dir: &Path,
    kubeconfig: &Path,
    namespace: &str,
) -> Result<(GatewayProcess, DexServer)> {
    gateway_with(
        dir,
        kubeconfig,
        namespace,
        std::time::Duration::from_secs(30),
    )
    .await
}

async fn gateway_with(
    dir: &Path,
    kubeconfig: &Path,
    namespace: &str,
    ready_timeout: std::time::Duration,
) -> Result<(GatewayProcess, DexServer)> {
    portcullis_tests::gateway::start_with_sessions(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        dir,
        kubeconfig,
        namespace,
        (AUTH, &[APP]),
        &manifests(),
        |config| config.ready_timeout = ready_timeout,
    )
    .await
}

fn scratch(name: &str) -> Result<std::path::PathBuf> {
    portcullis_tests::fsutil::scratch_dir("sessions", name)
}

#[tokio::test]
async fn every_login_is_an_access_session() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-sessions", |client: Client, ns: String| async move {
            let dir = scratch("record")?;
            let (gateway, dex) = gateway(&dir, &kubeconfig, &ns).await?;
            let browser = gateway.browser()?;
            let user = dex.info.user("alice")?.clone();
            let start = Url::parse(&format!("{}/", gateway.origin(APP)))?;
            dex::follow_login(&browser, start, &user, Connector::Password, |u| {
                u.host_str() == Some(APP) && u.path() == "/"
            })
            .await
            .with_context(|| gateway.log_tail())?;

            let sessions: Api<AccessSession> = Api::namespaced(client, &ns);
            let list = sessions.list(&Default::default()).await?;
            ensure!(
                list.items.len() == 1,
                "expected one session, found {}",
                list.items.len()
            );
            let session = &list.items[0];
            ensure!(
                session.spec.email.as_deref() == Some("alice@example.com"),
                "{:?}",
                session.spec
            );
            ensure!(
                session.spec.identity_provider == "dex" && !session.spec.revoked,
                "{:?}",
                session.spec
            );
            ensure!(
                session.spec.expires_at.0 > session.spec.issued_at.0,
                "{:?}",
                session.spec
            );
            let labels = session.metadata.labels.clone().unwrap_or_default();
            ensure!(
                labels.get("access.portcullis.dev/user")
                    == Some(&portcullis_gateway::sessions::user_label(
                        &session.spec.subject
                    )),
                "{labels:?}"
            );
            // Its name is the session id in the user's tokens.
            ensure!(
                gateway
                    .log_tail()
                    .contains(session.metadata.name.as_deref().unwrap_or("?")),
                "sid not logged"
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}

#[tokio::test]
async fn a_login_that_cannot_be_recorded_is_refused_not_half_made() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let dir = scratch("refused")?;
    // A namespace that does not exist: the API server is up (the gateway is ready, its session
    // index is synced, empty) but refuses every session the gateway tries to record.
    let namespace = format!("portcullis-missing-{}", std::process::id());
    let (gateway, dex) = gateway(&dir, &cluster.info().kubeconfig, &namespace).await?;
    let browser = gateway.browser()?;
    let user = dex.info.user("alice")?.clone();
    let start = Url::parse(&format!("{}/", gateway.origin(APP)))?;
    let callback = dex::follow_login(&browser, start, &user, Connector::Password, |u| {
        u.path() == "/.portcullis/callback"
    })
    .await?;
    let response = browser.get(callback).send().await?;
    ensure!(
        response.status() == StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        response.status()
    );
    ensure!(
        // Only the spent login state is cleared; no session cookie of any kind is set.
        response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .all(|v| v.starts_with("__Host-portcullis-login-") && v.contains("Max-Age=0")),
        "a cookie was set for an unrecorded login"
    );
    ensure!(response.text().await?.contains("session_not_recorded"));
    // No SSO session came out of it: the app still needs a login.
    let response = browser
        .get(format!("{}/", gateway.origin(APP)))
        .header("accept", "application/json")
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::UNAUTHORIZED,
        "{}",
        response.status()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn a_gateway_that_cannot_list_sessions_is_not_ready() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let dir = scratch("down")?;
    // The same credentials, pointed at a port where no API server listens.
    let real = std::fs::read_to_string(&cluster.info().kubeconfig)?;
    let server = cluster.info().apiserver_url();
    let dead = real.replace(server, &format!("https://127.0.0.1:{}", free_port()?));
    ensure!(dead != real, "could not rewrite the kubeconfig's server");
    let kubeconfig = dir.join("dead-kubeconfig");
    std::fs::write(&kubeconfig, dead)?;
    let started = gateway_with(
        &dir,
        &kubeconfig,
        "default",
        std::time::Duration::from_secs(4),
    )
    .await;
    let error = match started {
        Ok(_) => anyhow::bail!("a gateway without its session index became ready"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(error.contains("not ready"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Revoking the AccessSession (`kubectl patch ... revoked: true`) ends single sign-on from it:
/// with the app cookie deleted, the auth host no longer re-issues one, it asks the identity
/// provider to authenticate the user again.
#[tokio::test]
async fn a_revoked_session_is_not_resurrected_by_single_sign_on() -> Result<()> {
    use reqwest::cookie::CookieStore as _;
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-revoke", |client: Client, ns: String| async move {
            let dir = scratch("revoke")?;
            let (gateway, dex) = gateway(&dir, &kubeconfig, &ns).await?;
            let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
            let browser = gateway.browser_with_jar(jar.clone())?;
            let user = dex.info.user("alice")?.clone();
            let app = Url::parse(&format!("{}/", gateway.origin(APP)))?;
            dex::follow_login(&browser, app.clone(), &user, Connector::Password, |u| {
                u.host_str() == Some(APP) && u.path() == "/"
            })
            .await?;

            // A browser holding only the auth host's cookies (the app cookie deleted).
            let auth = Url::parse(&format!("{}/", gateway.origin(AUTH)))?;
            let sso_only = || -> Result<reqwest::Client> {
                let fresh = std::sync::Arc::new(reqwest::cookie::Jar::default());
                let cookies = jar.cookies(&auth).context("no SSO cookie")?;
                for cookie in cookies.to_str()?.split("; ") {
                    fresh.add_cookie_str(&format!("{cookie}; Secure; HttpOnly; Path=/"), &auth);
                }
                gateway.browser_with_jar(fresh)
            };
            let bounce = |client: reqwest::Client| {
                let app = app.clone();
                async move {
                    // app → auth host start → (hand-off | identity provider)
                    let first = client.get(app).send().await?;
                    let start = first.headers()[reqwest::header::LOCATION]
                        .to_str()?
                        .to_owned();
                    let next = client.get(start).send().await?;
                    anyhow::Ok(
                        next.headers()[reqwest::header::LOCATION]
                            .to_str()?
                            .to_owned(),
                    )
                }
            };
            let before = bounce(sso_only()?).await?;
            ensure!(
                before.contains("/.portcullis/handoff"),
                "SSO did not work before revocation: {before}"
            );

            let sessions: Api<AccessSession> = Api::namespaced(client, &ns);
            let name = sessions.list(&Default::default()).await?.items[0]
                .metadata
                .name
                .clone()
                .context("name")?;
            let patch =
                serde_json::json!({ "spec": { "revoked": true, "revocationReason": "test" } });
            sessions
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;

            let after = bounce(sso_only()?).await?;
            ensure!(
                after.starts_with(&dex.info.issuer),
                "a revoked session was handed off again: {after}"
            );
            ensure!(
                after.contains("prompt=login") && after.contains("max_age=0"),
                "{after}"
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}

#[tokio::test]
async fn logout_revokes_the_access_session() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-logout", |client: Client, ns: String| async move {
            let dir = scratch("logout")?;
            let (gateway, dex) = gateway(&dir, &kubeconfig, &ns).await?;
            let browser = gateway.browser()?;
            let user = dex.info.user("alice")?.clone();
            let app = Url::parse(&format!("{}/", gateway.origin(APP)))?;
            dex::follow_login(&browser, app.clone(), &user, Connector::Password, |u| {
                u.host_str() == Some(APP) && u.path() == "/"
            })
            .await?;
            let to_auth = browser
                .get(format!("{}/.portcullis/logout", gateway.origin(APP)))
                .send()
                .await?;
            ensure!(
                to_auth.status() == StatusCode::FOUND,
                "{}",
                to_auth.status()
            );
            // The confirmation button of the auth host (a same-origin POST) signs out.
            let signed_out = browser
                .post(to_auth.headers()[reqwest::header::LOCATION].to_str()?)
                .header("origin", gateway.origin(AUTH))
                .send()
                .await?;
            ensure!(
                signed_out.status() == StatusCode::OK,
                "{}",
                signed_out.status()
            );

            let sessions: Api<AccessSession> = Api::namespaced(client, &ns);
            let session = sessions.list(&Default::default()).await?.items.remove(0);
            ensure!(session.spec.revoked, "logout did not revoke the session");
            ensure!(
                session.spec.revocation_reason.as_deref() == Some("logout"),
                "{:?}",
                session.spec
            );
            // And the app needs a new login (its cookie is gone, the SSO session too).
            let response = browser
                .get(app)
                .header("accept", "application/json")
                .send()
                .await?;
            ensure!(
                response.status() == StatusCode::UNAUTHORIZED,
                "{}",
                response.status()
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// `kubectl patch accesssession NAME -p '{"spec":{"revoked":true}}'`: the very next requests of
/// that session are refused by every gateway replica, from memory, with nothing to re-issue it.
#[tokio::test]
async fn revoking_a_session_is_enforced_by_every_replica_on_the_next_request() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-enforce", |client: Client, ns: String| async move {
            let dir = scratch("enforce")?;
            let (gateway, dex) = gateway(&dir, &kubeconfig, &ns).await?;
            let replica = gateway
                .start_replica(env!("CARGO_BIN_EXE_portcullis-gateway").as_ref())
                .await?;
            let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
            let browser = gateway.browser_with_jar(jar.clone())?;
            let user = dex.info.user("alice")?.clone();
            let app = Url::parse(&format!("{}/", gateway.origin(APP)))?;
            dex::follow_login(&browser, app.clone(), &user, Connector::Password, |u| {
                u.host_str() == Some(APP) && u.path() == "/"
            })
            .await?;
            // Land on the app, which sets the app cookie.
            let landing = browser.get(app.clone()).send().await?;
            let _ = landing.status();
            // The same browser (same cookies) through each replica.
            let via = |addr: std::net::SocketAddr| -> Result<reqwest::Client> {
                Ok(dex::http_client_builder(&gateway.files.ca_file)?
                    .cookie_provider(jar.clone())
                    .resolve(APP, addr)
                    .build()?)
            };
            let clients = [via(gateway.addr)?, via(replica.addr)?];
            let status_url = format!("{}/.portcullis/session?path=/", gateway.origin(APP));
            let ask = |client: &reqwest::Client| {
                let request = client
                    .get(&status_url)
                    .header("accept", "application/json")
                    .send();
                async move { anyhow::Ok(request.await?.status()) }
            };
            for (i, client) in clients.iter().enumerate() {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while ask(client).await? != StatusCode::OK {
                    ensure!(
                        std::time::Instant::now() < deadline,
                        "replica {i} never accepted the session"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }

            let sessions: Api<AccessSession> = Api::namespaced(client, &ns);
            let name = sessions.list(&Default::default()).await?.items[0]
                .metadata
                .name
                .clone()
                .context("name")?;
            let patch = serde_json::json!({ "spec": { "revoked": true } });
            let revoked_at = std::time::Instant::now();
            sessions
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            for (i, client) in clients.iter().enumerate() {
                loop {
                    if ask(client).await? == StatusCode::UNAUTHORIZED {
                        break;
                    }
                    ensure!(
                        revoked_at.elapsed() < std::time::Duration::from_secs(5),
                        "replica {i} still accepts a revoked session"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            let response = clients[1]
                .get(&status_url)
                .header("accept", "application/json")
                .send()
                .await?;
            let body: serde_json::Value = response.json().await?;
            ensure!(body["error"] == "session_revoked", "{body}");
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// A back-channel logout finds its sessions at the real API server: listed by the selectable
/// field `spec.identityProvider` (a provider name with `,` and `=` escaped in the selector),
/// then matched on the `providerSessionId` the login recorded, and on `subject`.
#[tokio::test]
async fn a_back_channel_logout_finds_its_sessions_at_the_api_server() -> Result<()> {
    use portcullis_gateway::sessions::{NewSession, SessionRecorder};
    let cluster = TestCluster::shared().await;
    cluster
        .with_temp_ns("gw-bcl", |client: Client, ns: String| async move {
            let recorder = SessionRecorder::new(client, &ns);
            let start = portcullis_gateway::clock::now();
            for (sid, subject, idp, provider_sid) in [
                ("s-1", "alice", "corp", "kc-1"),
                ("s-2", "alice", "corp", "kc-2"),
                ("s-3", "bob", "corp", "kc-1"),
                ("s-4", "alice", "odd,name=x", "kc-1"),
            ] {
                let login = NewSession {
                    sid,
                    subject,
                    email: None,
                    groups: &[],
                    identity_provider: idp,
                    issued_at: start,
                    expires_at: start + 3600,
                    sealed_refresh_token: None,
                    sealed_id_token: None,
                    attempt: sid,
                    provider_session_id: Some(provider_sid),
                };
                recorder.record(&login).await?;
            }
            let named =
                |idp: &'static str, sid: Option<&'static str>, sub: Option<&'static str>| {
                    let recorder = recorder.clone();
                    async move {
                        let mut found = recorder.named_by_logout(idp, sid, sub).await?;
                        found.sort();
                        anyhow::Ok(found)
                    }
                };
            ensure!(named("corp", Some("kc-1"), Some("alice")).await? == ["s-1"]);
            ensure!(named("corp", Some("kc-1"), None).await? == ["s-1", "s-3"]);
            ensure!(named("corp", None, Some("alice")).await? == ["s-1", "s-2"]);
            ensure!(named("odd,name=x", Some("kc-1"), None).await? == ["s-4"]);
            recorder.revoke("s-1", "test").await?;
            ensure!(named("corp", None, Some("alice")).await? == ["s-2"]);
            Ok::<_, anyhow::Error>(())
        })
        .await
}
