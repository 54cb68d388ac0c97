//! Cluster mode: every login through the real gateway and the real Dex becomes an
//! `AccessSession` in the real API server, and a login that cannot be recorded is refused rather
//! than half made.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_crds::AccessSession;
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    pki::Pki,
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
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let dex = DexServer::start(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(AUTH, port)],
    )
    .await?;
    let mut config = GatewayConfig::new(dir.join("gateway"), AUTH, &[APP], &manifests());
    config.port = port;
    config.env = vec![
        ("KUBECONFIG".into(), kubeconfig.display().to_string()),
        ("PORTCULLIS_SESSION_NAMESPACE".into(), namespace.into()),
    ];
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        config,
        files,
    )
    .await?;
    Ok((gateway, dex))
}

fn scratch(name: &str) -> Result<std::path::PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("portcullis-sessions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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
    let dir = scratch("down")?;
    // The same credentials, pointed at a port where no API server listens.
    let real = std::fs::read_to_string(&cluster.info().kubeconfig)?;
    let server = cluster.info().apiserver_url();
    let dead = real.replace(server, &format!("https://127.0.0.1:{}", free_port()?));
    ensure!(dead != real, "could not rewrite the kubeconfig's server");
    let kubeconfig = dir.join("dead-kubeconfig");
    std::fs::write(&kubeconfig, dead)?;

    let (gateway, dex) = gateway(&dir, &kubeconfig, "default").await?;
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
        response
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .is_none(),
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
