//! End to end against the real API server, the real Dex, the real `portcullis-operator` and two
//! real `portcullis-gateway` processes in cluster mode (`--operator-url`): revocations reach
//! every gateway through the operator's stream.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_crds::AccessSession;
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    operator::{OperatorProcess, gateway_token},
    pki::Pki,
    process::free_port,
};
use reqwest::{StatusCode, Url};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

const AUTH: &str = "auth.portcullis.test";

fn policy(namespace: &str, app: &str, epoch: i64) -> String {
    format!(
        r#"{{"apiVersion":"access.portcullis.dev/v1alpha1","kind":"AccessPolicy",
"metadata":{{"name":"apps","namespace":"{namespace}"}},
"spec":{{"hosts":["{app}"],"identityProviders":["dex"],"upstream":{{"url":"http://127.0.0.1:9"}},
"revocationEpoch":{epoch},
"rules":[{{"action":"Allow","include":[{{"emailDomains":["example.com"]}}]}}]}}}}"#
    )
}

/// `target/debug`, where cargo put both binaries (the gateway's is built by `cargo build -p
/// portcullis-gateway`, or by the workspace test run).
fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?;
    let path = dir.join(name);
    ensure!(
        path.exists(),
        "{} not found: run `cargo build -p portcullis-gateway -p portcullis-operator` first",
        path.display()
    );
    Ok(path)
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("portcullis-stream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

struct Fleet {
    app: String,
    operator: OperatorProcess,
    gateways: Vec<GatewayProcess>,
    dex: DexServer,
}

/// An operator and two gateways following it, with a policy in `ns`.
/// Every test its own app host: policies of other tests' namespaces (being deleted) stay
/// visible to an operator that watches all namespaces.
async fn fleet(dir: &Path, client: &Client, kubeconfig: &Path, ns: &str) -> Result<Fleet> {
    let app = format!("{ns}.portcullis.test");
    let policies: Api<portcullis_crds::AccessPolicy> = Api::namespaced(client.clone(), ns);
    let manifest: portcullis_crds::AccessPolicy = serde_json::from_str(&policy(ns, &app, 0))?;
    policies
        .create(&kube::api::PostParams::default(), &manifest)
        .await?;
    let pki = Pki::generate(&dir.join("pki"))?;
    let token = dir.join("gateway-token");
    let account = gateway_token(client, ns, "gateway", &token).await?;
    let operator = OperatorProcess::start(
        &binary("portcullis-operator")?,
        &dir.join("operator"),
        &pki,
        kubeconfig,
        ns,
        &[account],
    )
    .await?;
    let port = free_port()?;
    let dex = DexServer::start(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(AUTH, port)],
    )
    .await?;
    let mut config = GatewayConfig::new(dir.join("gateway"), AUTH, &[app.as_str()], "");
    config.port = port;
    config.env = vec![
        ("KUBECONFIG".into(), kubeconfig.display().to_string()),
        ("PORTCULLIS_SESSION_NAMESPACE".into(), ns.into()),
        ("PORTCULLIS_OPERATOR_URL".into(), operator.url()),
        (
            "PORTCULLIS_OPERATOR_CA_FILE".into(),
            pki.ca_cert_path().display().to_string(),
        ),
        (
            "PORTCULLIS_OPERATOR_TOKEN_FILE".into(),
            token.display().to_string(),
        ),
        ("PORTCULLIS_STATE_STALE_AFTER".into(), "30s".into()),
    ];
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway_bin = binary("portcullis-gateway")?;
    let first = GatewayProcess::start(&gateway_bin, config, files).await?;
    let second = first.start_replica(&gateway_bin).await?;
    Ok(Fleet {
        app,
        operator,
        gateways: vec![first, second],
        dex,
    })
}

/// A browser logged in as `user`, and one client per gateway sharing its cookies.
async fn login(fleet: &Fleet, user: &str) -> Result<Vec<reqwest::Client>> {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let first = &fleet.gateways[0];
    let browser = first.browser_with_jar(jar.clone())?;
    let user = fleet.dex.info.user(user)?.clone();
    let app = Url::parse(&format!("{}/", first.origin(&fleet.app)))?;
    dex::follow_login(&browser, app.clone(), &user, Connector::Password, |u| {
        u.host_str() == Some(fleet.app.as_str()) && u.path() == "/"
    })
    .await?;
    let _ = browser.get(app).send().await?.status();
    fleet
        .gateways
        .iter()
        .map(|g| {
            Ok(dex::http_client_builder(&first.files.ca_file)?
                .cookie_provider(jar.clone())
                .resolve(&fleet.app, g.addr)
                .build()?)
        })
        .collect()
}

/// The session-status answer of one gateway for the app.
async fn ask(fleet: &Fleet, client: &reqwest::Client) -> Result<StatusCode> {
    let url = format!(
        "{}/.portcullis/session?path=/",
        fleet.gateways[0].origin(&fleet.app)
    );
    Ok(client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await?
        .status())
}

/// Waits until `client` gets `want`, within `limit`.
async fn until(
    fleet: &Fleet,
    client: &reqwest::Client,
    want: StatusCode,
    limit: Duration,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let got = ask(fleet, client).await?;
        if got == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: still {got} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn session_of(client: &Client, ns: &str, email: &str) -> Result<String> {
    let sessions: Api<AccessSession> = Api::namespaced(client.clone(), ns);
    sessions
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .find(|s| s.spec.email.as_deref() == Some(email))
        .and_then(|s| s.metadata.name)
        .with_context(|| format!("no session of {email}"))
}

/// Seed scenario 1: revoke one session with a merge patch → that user's next request is refused
/// at both gateways (through the operator), another user is unaffected.
#[tokio::test]
async fn revoking_one_session_reaches_every_gateway_through_the_operator() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-revoke", |client: Client, ns: String| async move {
            let dir = scratch("revoke")?;
            let fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            let alice = login(&fleet, "alice").await?;
            let bob = login(&fleet, "bob").await?;
            for (i, c) in alice.iter().chain(&bob).enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(5),
                    &format!("client {i} accepted"),
                )
                .await?;
            }
            let sid = session_of(&client, &ns, "alice@example.com").await?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            sessions
                .patch(
                    &sid,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&serde_json::json!({"spec": {"revoked": true}})),
                )
                .await?;
            for (i, c) in alice.iter().enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::UNAUTHORIZED,
                    Duration::from_secs(5),
                    &format!("alice at gateway {i}"),
                )
                .await?;
            }
            for c in &bob {
                ensure!(ask(&fleet, c).await? == StatusCode::OK, "bob was affected");
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// Operator down: the gateways keep serving with their last state (and its age grows); a
/// revocation made meanwhile is enforced once the operator is back.
#[tokio::test]
async fn gateways_keep_their_state_while_the_operator_is_down_and_catch_up_after() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-down", |client: Client, ns: String| async move {
            let dir = scratch("down")?;
            let mut fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            let alice = login(&fleet, "alice").await?;
            for c in &alice {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(5),
                    "alice accepted",
                )
                .await?;
            }
            fleet.operator.stop().await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            for c in &alice {
                ensure!(
                    ask(&fleet, c).await? == StatusCode::OK,
                    "gateway stopped serving without the operator"
                );
            }
            let metrics = reqwest::get(format!("http://{}/metrics", fleet.gateways[0].ops_addr))
                .await?
                .text()
                .await?;
            let age: f64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix("portcullis_gateway_state_age_seconds "))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("no state age metric in {metrics}"))?;
            ensure!(
                age >= 1.0,
                "state age {age} does not grow while the operator is down"
            );
            // Revoked while the operator is away: enforced once it is back.
            let sid = session_of(&client, &ns, "alice@example.com").await?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            sessions
                .patch(
                    &sid,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&serde_json::json!({"spec": {"revoked": true}})),
                )
                .await?;
            fleet.operator.restart().await?;
            for (i, c) in alice.iter().enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::UNAUTHORIZED,
                    Duration::from_secs(15),
                    &format!("alice at gateway {i} after the operator came back"),
                )
                .await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
}
