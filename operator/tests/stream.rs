//! End to end against the real API server, the real Dex, the real `portcullis-operator` and two
//! real `portcullis-gateway` processes in cluster mode (`--operator-url`): revocations reach
//! every gateway through the operator's stream.

use anyhow::{Context as _, Result, ensure};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use portcullis_crds::{AccessPolicy, AccessPolicyStatus, AccessSession};
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

fn scratch(name: &str) -> Result<PathBuf> {
    portcullis_tests::fsutil::scratch_dir("stream", name)
}

struct Fleet {
    app: String,
    operators: Vec<OperatorProcess>,
    gateways: Vec<GatewayProcess>,
    dex: DexServer,
    config: GatewayConfig,
    files: GatewayFiles,
}

/// An operator and two gateways following it, with a policy in `ns`.
async fn fleet(dir: &Path, client: &Client, kubeconfig: &Path, ns: &str) -> Result<Fleet> {
    fleet_with(dir, client, kubeconfig, ns, 1, &[], Follow::OnePerReplica).await
}

/// Which replicas each gateway streams from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Follow {
    /// The first gateway the first replica, the second the second (or the first if alone).
    OnePerReplica,
    /// Both gateways list every replica, the first replica first.
    AllReplicas,
}

/// `operators` replicas (relaying to their leader with the operator's own ServiceAccount token)
/// and two gateways, with a policy in `ns`. The first replica holds the Lease before the others
/// start. With [`Follow::OnePerReplica`] and several replicas the first gateway follows the
/// first replica and the second the second, so status counts both only if relaying works.
/// Every test its own app host: policies of other tests' namespaces (being deleted) stay
/// visible to an operator that watches all namespaces.
async fn fleet_with(
    dir: &Path,
    client: &Client,
    kubeconfig: &Path,
    ns: &str,
    operators: usize,
    operator_env: &[(&str, &str)],
    follow: Follow,
) -> Result<Fleet> {
    let options = Options {
        operators,
        operator_env,
        follow,
        gateway_env: &[],
    };
    fleet_opts(dir, client, kubeconfig, ns, options).await
}

/// How to start a fleet: [`fleet_with`]'s choices, and settings of the gateways' own.
struct Options<'a> {
    operators: usize,
    operator_env: &'a [(&'a str, &'a str)],
    follow: Follow,
    /// Added to (or replacing) the gateways' environment.
    gateway_env: &'a [(&'a str, &'a str)],
}

async fn fleet_opts(
    dir: &Path,
    client: &Client,
    kubeconfig: &Path,
    ns: &str,
    options: Options<'_>,
) -> Result<Fleet> {
    let Options {
        operators,
        operator_env,
        follow,
        gateway_env,
    } = options;
    let app = format!("{ns}.portcullis.test");
    let policies: Api<portcullis_crds::AccessPolicy> = Api::namespaced(client.clone(), ns);
    let manifest: portcullis_crds::AccessPolicy = serde_json::from_str(&policy(ns, &app, 0))?;
    policies
        .create(&kube::api::PostParams::default(), &manifest)
        .await?;
    let pki = Pki::generate(&dir.join("pki"))?;
    let token = dir.join("gateway-token");
    let account = gateway_token(client, ns, "gateway", &token).await?;
    let peer_token = dir.join("operator-token");
    gateway_token(client, ns, "operator", &peer_token).await?;
    let mut env: Vec<(String, String)> = vec![
        (
            "PORTCULLIS_PEER_TOKEN_FILE".into(),
            peer_token.display().to_string(),
        ),
        (
            "PORTCULLIS_PEER_CA_FILE".into(),
            pki.ca_cert_path().display().to_string(),
        ),
    ];
    env.extend(
        operator_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut replicas = Vec::new();
    for i in 0..operators {
        replicas.push(
            OperatorProcess::start_with(
                &portcullis_tests::fsutil::sibling_binary("portcullis-operator")?,
                &dir.join(format!("operator-{i}")),
                &pki,
                kubeconfig,
                ns,
                std::slice::from_ref(&account),
                env.clone(),
            )
            .await?,
        );
        if i == 0 && operators > 1 {
            let first = replicas[0].identity();
            wait_for(
                Duration::from_secs(15),
                "the first replica leads",
                || async {
                    let h = lease_holder(client, ns).await?;
                    let seen = format!("{h:?}");
                    Ok(((h.as_deref() == Some(first.as_str())).then_some(()), seen))
                },
            )
            .await?;
        }
    }
    let every_replica = replicas
        .iter()
        .map(OperatorProcess::url)
        .collect::<Vec<_>>()
        .join(",");
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
        (
            "PORTCULLIS_OPERATOR_URL".into(),
            match follow {
                Follow::OnePerReplica => replicas[0].url(),
                Follow::AllReplicas => every_replica,
            },
        ),
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
    for (key, value) in gateway_env {
        config.env.retain(|(k, _)| k != key);
        config.env.push(((*key).to_owned(), (*value).to_owned()));
    }
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway_bin = portcullis_tests::fsutil::sibling_binary("portcullis-gateway")?;
    let first = GatewayProcess::start(&gateway_bin, config.clone(), files.clone()).await?;
    let mut second_config = replica_config(&config);
    if let (Follow::OnePerReplica, Some(other)) = (follow, replicas.get(1)) {
        for (k, v) in &mut second_config.env {
            if k == "PORTCULLIS_OPERATOR_URL" {
                *v = other.url();
            }
        }
    }
    let second = GatewayProcess::start(&gateway_bin, second_config, files.clone()).await?;
    Ok(Fleet {
        app,
        operators: replicas,
        gateways: vec![first, second],
        dex,
        config,
        files,
    })
}

/// Settings of another gateway replica: the same public port, ports of its own.
fn replica_config(config: &GatewayConfig) -> GatewayConfig {
    let mut config = config.clone();
    config.public_port = Some(config.public_port());
    config.port = 0;
    config.ops_port = 0;
    config
}

/// A browser logged in as `user`, and one client per gateway sharing its cookies.
async fn login(fleet: &Fleet, user: &str) -> Result<Vec<GatewayClient>> {
    Ok(login_jar(fleet, user).await?.0)
}

/// [`login`], and the browser's cookie jar.
async fn login_jar(
    fleet: &Fleet,
    user: &str,
) -> Result<(Vec<GatewayClient>, Arc<reqwest::cookie::Jar>)> {
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
    let clients = fleet
        .gateways
        .iter()
        .map(|g| {
            Ok(GatewayClient {
                http: dex::http_client_builder(&first.files.ca_file)?
                    .cookie_provider(jar.clone())
                    .resolve(&fleet.app, g.addr)
                    .build()?,
                port: g.addr.port(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((clients, jar))
}

/// A browser's connection to one particular gateway. reqwest connects to the URL's port
/// whatever `resolve` says, so the URL must carry this gateway's own port, or every client
/// would reach the gateway of the public port.
struct GatewayClient {
    http: reqwest::Client,
    port: u16,
}

/// The session-status answer of one gateway for the app.
async fn ask(fleet: &Fleet, client: &GatewayClient) -> Result<StatusCode> {
    let url = format!(
        "https://{}:{}/.portcullis/session?path=/",
        fleet.app, client.port
    );
    Ok(client
        .http
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await?
        .status())
}

/// Waits until `client` gets `want`, within `limit`.
async fn until(
    fleet: &Fleet,
    client: &GatewayClient,
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
            // The hand-off recorded the policy object the session was handed to (what
            // `kubectl portcullis preview epoch` reads).
            let policies: Api<portcullis_crds::AccessPolicy> = Api::namespaced(client.clone(), &ns);
            let uid = policies.get("apps").await?.metadata.uid.context("uid")?;
            let session = sessions.get(&sid).await?;
            let used: Vec<&str> = portcullis_crds::session::used_policies(&session).collect();
            ensure!(used == [uid.as_str()], "handed to {used:?}, not {uid}");
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
            fleet.operators[0].stop().await?;
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
            fleet.operators[0].restart().await?;
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

/// Polls `check` until it yields `Some`, within `limit`; the last observation in the error.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(Option<T>, String)>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let (got, seen) = check().await?;
        if let Some(got) = got {
            return Ok(got);
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn policy_status(client: &Client, ns: &str, name: &str) -> Result<AccessPolicyStatus> {
    let api: Api<AccessPolicy> = Api::namespaced(client.clone(), ns);
    Ok(api.get(name).await?.status.unwrap_or_default())
}

fn ready(status: &AccessPolicyStatus) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the policy's status says `summary` gateways and Ready=`want_ready`.
async fn wait_policy(
    client: &Client,
    ns: &str,
    name: &str,
    summary: &str,
    want_ready: &str,
    limit: Duration,
) -> Result<AccessPolicyStatus> {
    wait_for(
        limit,
        &format!("{ns}/{name} at {summary}, Ready={want_ready}"),
        || async {
            let status = policy_status(client, ns, name).await?;
            let ok = status
                .gateways
                .as_ref()
                .is_some_and(|g| g.summary == summary)
                && ready(&status).is_some_and(|(s, _, _)| s == want_ready);
            let seen = format!("{status:?}");
            Ok((ok.then_some(status), seen))
        },
    )
    .await
}

async fn patch_merge<K>(api: &Api<K>, name: &str, body: serde_json::Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// Follows the redirects a browser would from the app, and fails if the chain lands back on
/// the app (a token re-issued without the identity provider); true when it reaches Dex.
async fn must_log_in_again(fleet: &Fleet, browser: &reqwest::Client) -> Result<()> {
    let dex = Url::parse(&fleet.dex.info.issuer)?;
    let mut url = Url::parse(&format!("{}/", fleet.gateways[0].origin(&fleet.app)))?;
    for _ in 0..10 {
        if url.host_str() == dex.host_str() && url.port() == dex.port() {
            return Ok(());
        }
        let response = browser
            .get(url.clone())
            .header("accept", "text/html")
            .send()
            .await?;
        let status = response.status();
        ensure!(
            !(status.is_success() && url.host_str() == Some(fleet.app.as_str())),
            "the app answered {status} at {url} without a new login"
        );
        if !status.is_redirection() {
            ensure!(
                url.host_str() == Some(AUTH),
                "unexpected {status} at {url} while following the login"
            );
            // The auth host's own page (a provider choice or an error), not a silent re-issue.
            return Ok(());
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("redirect without location")?;
        url = url.join(location)?;
    }
    anyhow::bail!("no end to the redirects from the app")
}

/// Seed 1.1 end to end: the fleet's progress is in `kubectl get accesspolicies` (GATEWAYS 2/2,
/// Ready); revoking a session shows `enforcement 2/2` and `revokedAt`; raising the epoch ends
/// every session of the policy at both gateways, the auth host sends the user back to the
/// identity provider instead of silently re-issuing, and status records the raised epoch.
#[tokio::test]
async fn raising_the_epoch_ends_every_session_and_status_proves_the_fleet_enforces_it() -> Result<()>
{
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-epoch", |client: Client, ns: String| async move {
            let dir = scratch("epoch")?;
            let fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            let (alice, alice_jar) = login_jar(&fleet, "alice").await?;
            let bob = login(&fleet, "bob").await?;
            for c in alice.iter().chain(&bob) {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(5),
                    "logged in",
                )
                .await?;
            }
            let status =
                wait_policy(&client, &ns, "apps", "2/2", "True", Duration::from_secs(15)).await?;
            ensure!(
                ready(&status).is_some_and(|(_, reason, _)| reason == "Accepted"),
                "{status:?}"
            );
            ensure!(status.observed_generation == Some(1), "{status:?}");

            // One session revoked: enforcement proven on both gateways.
            let sid = session_of(&client, &ns, "bob@example.com").await?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            patch_merge(
                &sessions,
                &sid,
                serde_json::json!({"spec": {"revoked": true}}),
            )
            .await?;
            let revoked = wait_for(
                Duration::from_secs(15),
                "bob's revocation enforced 2/2",
                || async {
                    let s = sessions.get(&sid).await?.status.unwrap_or_default();
                    let ok = s.enforcement.as_ref().is_some_and(|e| e.summary == "2/2")
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Enforced" && c.status == "True");
                    let seen = format!("{s:?}");
                    Ok((ok.then_some(s), seen))
                },
            )
            .await?;
            let revoked_at = revoked.revoked_at.clone().context("no revokedAt")?;
            for c in &bob {
                ensure!(
                    ask(&fleet, c).await? == StatusCode::UNAUTHORIZED,
                    "bob still admitted"
                );
            }

            // Raise the epoch.
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            patch_merge(
                &policies,
                "apps",
                serde_json::json!({"spec": {"revocationEpoch": 1}}),
            )
            .await?;
            for (i, c) in alice.iter().enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::UNAUTHORIZED,
                    Duration::from_secs(5),
                    &format!("alice at gateway {i} after the epoch"),
                )
                .await?;
            }
            // Alice's browser, with every cookie of her login.
            let browser = fleet.gateways[0].browser_with_jar(alice_jar.clone())?;
            must_log_in_again(&fleet, &browser).await?;
            let status = wait_for(
                Duration::from_secs(15),
                "generation 2 enforced 2/2 with epoch 1",
                || async {
                    let s = policy_status(&client, &ns, "apps").await?;
                    let ok = s.observed_generation == Some(2)
                        && s.enforced_epoch == Some(1)
                        && s.gateways.as_ref().is_some_and(|g| g.summary == "2/2")
                        && ready(&s).is_some_and(|(r, _, _)| r == "True");
                    let seen = format!("{s:?}");
                    Ok((ok.then_some(s), seen))
                },
            )
            .await?;
            ensure!(
                status.raised_epoch == Some(1) && status.epoch_raised_at.is_some(),
                "{status:?}"
            );
            // A logged-out user logs in again and is admitted under the new epoch.
            let alice_again = login(&fleet, "alice").await?;
            for c in &alice_again {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(5),
                    "alice after a new login",
                )
                .await?;
            }
            // First-seen times are kept by later writes.
            let later = sessions.get(&sid).await?.status.unwrap_or_default();
            ensure!(
                later.revoked_at == Some(revoked_at),
                "revokedAt moved: {later:?}"
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// Fail closed: a gateway that never received state from an operator is not ready and admits
/// nobody, not even to its own session endpoint.
#[tokio::test]
async fn a_gateway_that_never_got_state_is_not_ready_and_admits_nobody() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-nostate", |client: Client, ns: String| async move {
            let dir = scratch("nostate")?;
            let fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            let (alice, jar) = login_jar(&fleet, "alice").await?;
            until(
                &fleet,
                &alice[0],
                StatusCode::OK,
                Duration::from_secs(5),
                "alice at a gateway with state",
            )
            .await?;
            // A new gateway whose operator is not running.
            let mut config = replica_config(&fleet.config);
            let nowhere = format!("https://localhost:{}", free_port()?);
            for (k, v) in &mut config.env {
                if k == "PORTCULLIS_OPERATOR_URL" {
                    v.clone_from(&nowhere);
                }
            }
            let mut lonely = GatewayProcess::spawn_unready(
                &portcullis_tests::fsutil::sibling_binary("portcullis-gateway")?,
                config,
                fleet.files.clone(),
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            lonely.ensure_running()?;
            let readyz = reqwest::get(format!("http://{}/readyz", lonely.ops_addr))
                .await?
                .status();
            ensure!(
                readyz == StatusCode::SERVICE_UNAVAILABLE,
                "/readyz answered {readyz}"
            );
            let anonymous = dex::http_client_builder(&fleet.gateways[0].files.ca_file)?
                .resolve(&fleet.app, lonely.addr)
                .build()?;
            // The very cookies that pass at a gateway with state.
            let with_alice = dex::http_client_builder(&fleet.gateways[0].files.ca_file)?
                .cookie_provider(jar)
                .resolve(&fleet.app, lonely.addr)
                .build()?;
            // The lonely gateway's own port: reqwest connects to the URL's port.
            let origin = format!("https://{}:{}", fleet.app, lonely.addr.port());
            for (who, c) in [("anonymous", &anonymous), ("alice", &with_alice)] {
                for path in ["/", "/private/report"] {
                    let got = c
                        .get(format!("{origin}{path}"))
                        .header("accept", "application/json")
                        .send()
                        .await?
                        .status();
                    ensure!(
                        got == StatusCode::SERVICE_UNAVAILABLE,
                        "{who} got {got} for {path} from a gateway without state"
                    );
                }
            }
            ensure!(
                ask(&fleet, &alice[0]).await? == StatusCode::OK,
                "alice refused where there is state"
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}

async fn lease_holder(client: &Client, ns: &str) -> Result<Option<String>> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    Ok(leases
        .get_opt("portcullis-operator")
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

/// Two replicas, each followed by one gateway: status counts both gateways only through the
/// follower's relay to the leader, including a revocation relayed as a delta. The leader is killed (SIGKILL, no release): the standby
/// takes the Lease within seconds and keeps writing — a conflicting policy gets
/// `HostPathConflict` naming the other, with an Event — and collects expired sessions.
#[tokio::test]
async fn the_standby_takes_over_when_the_leader_is_killed_and_keeps_writing_status() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-ha", |client: Client, ns: String| async move {
            let dir = scratch("ha")?;
            let mut fleet = fleet_with(
                &dir,
                &client,
                &kubeconfig,
                &ns,
                2,
                &[("PORTCULLIS_SESSION_GC_GRACE", "0s")],
                Follow::OnePerReplica,
            )
            .await?;
            wait_policy(&client, &ns, "apps", "2/2", "True", Duration::from_secs(20)).await?;
            let holder = wait_for(Duration::from_secs(10), "a lease holder", || async {
                let h = lease_holder(&client, &ns).await?;
                let seen = format!("{h:?}");
                Ok((h, seen))
            })
            .await?;
            let leader = fleet
                .operators
                .iter()
                .position(|o| o.identity() == holder)
                .with_context(|| format!("holder {holder} is none of the replicas"))?;
            let standby = fleet.operators[1 - leader].identity();

            // A session revoked now is counted 2/2 only if the follower relays that its gateway
            // enforces the end: by then its relays are deltas the leader confirmed.
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            let live: AccessSession = serde_json::from_value(serde_json::json!({
                "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessSession",
                "metadata": {"name": "relayed-revocation"},
                "spec": {"subject": "someone", "identityProvider": "dex",
                         "issuedAt": "2020-01-01T00:00:00Z", "expiresAt": "2999-01-01T00:00:00Z"}
            }))?;
            sessions
                .create(&kube::api::PostParams::default(), &live)
                .await?;
            patch_merge(
                &sessions,
                "relayed-revocation",
                serde_json::json!({"spec": {"revoked": true}}),
            )
            .await?;
            wait_for(
                Duration::from_secs(15),
                "the revocation enforced 2/2 through the relay",
                || async {
                    let s = sessions
                        .get("relayed-revocation")
                        .await?
                        .status
                        .unwrap_or_default();
                    let ok = s.enforcement.as_ref().is_some_and(|e| e.summary == "2/2");
                    Ok((ok.then_some(()), format!("{s:?}")))
                },
            )
            .await?;
            let follower = &fleet.operators[1 - leader];
            wait_for(
                Duration::from_secs(10),
                "the follower relays deltas after its first full relay",
                || async {
                    let deltas = relays(follower, "sent").await?;
                    let full = relays(follower, "sent_full").await?;
                    let ok = full >= 1.0 && deltas >= 3.0 && deltas > full;
                    Ok((ok.then_some(()), format!("{full} full, {deltas} deltas")))
                },
            )
            .await?;

            fleet.operators[leader].kill().await?;
            let killed = Instant::now();
            wait_for(
                Duration::from_secs(20),
                "the standby holds the lease",
                || async {
                    let h = lease_holder(&client, &ns).await?;
                    let seen = format!("{h:?}");
                    Ok(((h.as_deref() == Some(standby.as_str())).then_some(()), seen))
                },
            )
            .await?;
            eprintln!("takeover after {:?}", killed.elapsed());

            // The new leader writes: a policy claiming the same host and path conflicts.
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            let mut copy: AccessPolicy = serde_json::from_str(&policy(&ns, &fleet.app, 0))?;
            copy.metadata.name = Some("apps-copy".into());
            policies
                .create(&kube::api::PostParams::default(), &copy)
                .await?;
            let status = wait_for(
                Duration::from_secs(15),
                "HostPathConflict on apps-copy",
                || async {
                    let s = policy_status(&client, &ns, "apps-copy").await?;
                    let seen = format!("{s:?}");
                    let hit = ready(&s)
                        .filter(|(st, reason, _)| st == "False" && reason == "HostPathConflict");
                    Ok((hit, seen))
                },
            )
            .await?;
            ensure!(
                status.2.contains(&format!("{ns}/apps")),
                "the other policy is not named: {}",
                status.2
            );
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(client.clone(), &ns);
            wait_for(
                Duration::from_secs(10),
                "a HostPathConflict Event",
                || async {
                    let list = events.list(&Default::default()).await?;
                    let hit = list.items.iter().any(|e| {
                        e.reason.as_deref() == Some("HostPathConflict")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some("apps-copy")
                    });
                    Ok((hit.then_some(()), format!("{} events", list.items.len())))
                },
            )
            .await?;
            // Expired sessions are collected by the new leader (grace 0s).
            let expired: AccessSession = serde_json::from_value(serde_json::json!({
                "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessSession",
                "metadata": {"name": "expired-session"},
                "spec": {"subject": "someone", "identityProvider": "dex",
                         "issuedAt": "2020-01-01T00:00:00Z", "expiresAt": "2020-01-01T01:00:00Z"}
            }))?;
            sessions
                .create(&kube::api::PostParams::default(), &expired)
                .await?;
            wait_for(
                Duration::from_secs(45),
                "the expired session deleted",
                || async {
                    let gone = sessions.get_opt("expired-session").await?.is_none();
                    Ok((gone.then_some(()), "still there".into()))
                },
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// A gauge or counter of the operator's `/metrics` (without labels).
async fn operator_metric(operator: &OperatorProcess, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", operator.ops_addr))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {name} in the operator's metrics"))
}

/// Relays of the given kind a replica sent (`portcullis_operator_peer_relays`).
async fn relays(operator: &OperatorProcess, kind: &str) -> Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", operator.ops_addr))
        .await?
        .text()
        .await?;
    let prefix = format!("portcullis_operator_peer_relays_total{{kind=\"{kind}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// How long the operator may take to stop after SIGTERM: a few seconds, far inside Kubernetes'
/// default 30 s grace and the harness's own SIGKILL grace.
const STOP_LIMIT: Duration = Duration::from_secs(4);
/// How soon after the leader exits the standby must hold the Lease: far less than the lease
/// duration (10 s), which is what a leader that does not release it costs.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(3);

/// SIGTERM to the leader while both gateways stream from it: it ends the streams, releases the
/// Lease and exits 0 within seconds; the standby holds the Lease at once; the gateways keep
/// serving with their state throughout, move to the standby and enforce a revocation made after
/// the leader left, which the new leader proves in status.
#[tokio::test]
async fn on_sigterm_the_leader_releases_the_lease_and_exits_promptly_while_gateways_keep_serving()
-> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-sigterm", |client: Client, ns: String| async move {
            let dir = scratch("sigterm")?;
            let mut fleet =
                fleet_with(&dir, &client, &kubeconfig, &ns, 2, &[], Follow::AllReplicas).await?;
            let leader = fleet.operators[0].identity();
            let standby = fleet.operators[1].identity();
            let alice = login(&fleet, "alice").await?;
            let bob = login(&fleet, "bob").await?;
            for c in alice.iter().chain(&bob) {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(5),
                    "logged in",
                )
                .await?;
            }
            let bob_sid = session_of(&client, &ns, "bob@example.com").await?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            patch_merge(
                &sessions,
                &bob_sid,
                serde_json::json!({"spec": {"revoked": true}}),
            )
            .await?;
            for c in &bob {
                until(
                    &fleet,
                    c,
                    StatusCode::UNAUTHORIZED,
                    Duration::from_secs(5),
                    "bob revoked",
                )
                .await?;
            }
            wait_policy(&client, &ns, "apps", "2/2", "True", Duration::from_secs(15)).await?;
            let streams =
                operator_metric(&fleet.operators[0], "portcullis_operator_streams").await?;
            ensure!(
                streams >= 2.0,
                "{streams} gateway streams on the leader, expected 2"
            );
            ensure!(
                lease_holder(&client, &ns).await?.as_deref() == Some(leader.as_str()),
                "the first replica does not lead"
            );

            let (exit, took) = fleet.operators[0]
                .terminate(Duration::from_secs(30))
                .await?;
            let exited = Instant::now();
            eprintln!("the leader exited with {exit} {took:?} after SIGTERM");
            let log = fleet.operators[0].log_tail();
            ensure!(exit.success(), "the leader exited with {exit}:\n{log}");
            ensure!(
                took < STOP_LIMIT,
                "the leader took {took:?} to stop after SIGTERM (limit {STOP_LIMIT:?}):\n{log}"
            );
            let holder = lease_holder(&client, &ns).await?;
            ensure!(
                holder.as_deref() != Some(leader.as_str()),
                "the Lease still names the stopped leader"
            );
            wait_for(TAKEOVER_LIMIT, "the standby holds the lease", || async {
                let h = lease_holder(&client, &ns).await?;
                let seen = format!("{h:?}");
                Ok(((h.as_deref() == Some(standby.as_str())).then_some(()), seen))
            })
            .await?;
            eprintln!(
                "the standby leads {:?} after the leader exited",
                exited.elapsed()
            );

            // The gateways kept their state: alice still admitted, bob still refused.
            for c in &alice {
                ensure!(
                    ask(&fleet, c).await? == StatusCode::OK,
                    "alice refused after the leader left"
                );
            }
            for c in &bob {
                ensure!(
                    ask(&fleet, c).await? == StatusCode::UNAUTHORIZED,
                    "bob admitted after the leader left"
                );
            }
            // They stream from the standby now: a revocation made after reaches both, and the
            // new leader writes that both enforce it.
            wait_for(
                Duration::from_secs(10),
                "both gateways on the standby",
                || async {
                    let n =
                        operator_metric(&fleet.operators[1], "portcullis_operator_streams").await?;
                    Ok(((n >= 2.0).then_some(()), format!("{n} streams")))
                },
            )
            .await?;
            eprintln!(
                "both gateways stream from the standby {:?} after the leader exited",
                exited.elapsed()
            );
            let alice_sid = session_of(&client, &ns, "alice@example.com").await?;
            patch_merge(
                &sessions,
                &alice_sid,
                serde_json::json!({"spec": {"revoked": true}}),
            )
            .await?;
            for (i, c) in alice.iter().enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::UNAUTHORIZED,
                    Duration::from_secs(5),
                    &format!("alice at gateway {i} through the standby"),
                )
                .await?;
            }
            wait_for(
                Duration::from_secs(15),
                "alice's revocation enforced 2/2 by the new leader",
                || async {
                    let s = sessions.get(&alice_sid).await?.status.unwrap_or_default();
                    let ok = s.enforcement.as_ref().is_some_and(|e| e.summary == "2/2");
                    Ok((ok.then_some(()), format!("{s:?}")))
                },
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// The gateways' settings for the outage tests: a staleness threshold far below the outage, and
/// a quick fallback to the API server.
const OUTAGE_ENV: &[(&str, &str)] = &[
    ("PORTCULLIS_STATE_STALE_AFTER", "3s"),
    ("PORTCULLIS_API_FALLBACK_AFTER", "1s"),
    ("PORTCULLIS_API_FALLBACK_JITTER", "1s"),
];

/// An operator and two gateways with [`OUTAGE_ENV`].
async fn outage_fleet(dir: &Path, client: &Client, kubeconfig: &Path, ns: &str) -> Result<Fleet> {
    let options = Options {
        operators: 1,
        operator_env: &[],
        follow: Follow::OnePerReplica,
        gateway_env: OUTAGE_ENV,
    };
    fleet_opts(dir, client, kubeconfig, ns, options).await
}

/// What a gateway's `/readyz` answers.
async fn readyz(gateway: &GatewayProcess) -> Result<(StatusCode, String)> {
    let response = reqwest::get(format!("http://{}/readyz", gateway.ops_addr)).await?;
    Ok((response.status(), response.text().await?))
}

/// Waits until every gateway is ready and follows `source` (`api_server`, `operator_stream`).
async fn until_source(fleet: &Fleet, source: &str, limit: Duration) -> Result<()> {
    for gateway in &fleet.gateways {
        wait_for(limit, &format!("a gateway on {source}"), || async {
            let (status, text) = readyz(gateway).await?;
            let ok = status == StatusCode::OK && text.contains(&format!("source {source}"));
            Ok((ok.then_some(()), format!("{status} {text}")))
        })
        .await?;
    }
    Ok(())
}

/// Asks every client in a loop until stopped; the answers that were not 200.
fn steady_load(
    fleet: &Arc<Fleet>,
    clients: Arc<Vec<GatewayClient>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Result<(usize, Vec<String>)>> {
    let fleet = fleet.clone();
    tokio::spawn(async move {
        let (mut asked, mut failed) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for (i, c) in clients.iter().enumerate() {
                asked += 1;
                match ask(&fleet, c).await {
                    Ok(StatusCode::OK) => {}
                    Ok(other) => failed.push(format!("gateway {i}: {other}")),
                    Err(error) => failed.push(format!("gateway {i}: {error}")),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((asked, failed))
    })
}

/// Fault matrix, row "operator down for longer than the staleness threshold": the gateways stay
/// Ready and fall back to the API server; a live session is served with no failure under a
/// steady request loop; a revocation written during the outage is enforced at every gateway
/// within 2 s; the gateways return to the stream when the operator is back.
#[tokio::test]
async fn an_operator_outage_longer_than_the_staleness_threshold_takes_nothing_down() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-outage", |client: Client, ns: String| async move {
            let dir = scratch("outage")?;
            let fleet = outage_fleet(&dir, &client, &kubeconfig, &ns).await?;
            let alice = login(&fleet, "alice").await?;
            let bob = login(&fleet, "bob").await?;
            for c in alice.iter().chain(&bob) {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(5),
                    "logged in",
                )
                .await?;
            }
            let mut fleet = fleet;
            fleet.operators[0].stop().await?;
            let fleet = Arc::new(fleet);
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let load = steady_load(&fleet, Arc::new(alice), stop.clone());
            // Well past the 3 s staleness threshold.
            tokio::time::sleep(Duration::from_secs(6)).await;
            until_source(&fleet, "api_server", Duration::from_secs(5)).await?;
            let sid = session_of(&client, &ns, "bob@example.com").await?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            patch_merge(
                &sessions,
                &sid,
                serde_json::json!({"spec": {"revoked": true}}),
            )
            .await?;
            let revoked = Instant::now();
            for (i, c) in bob.iter().enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::UNAUTHORIZED,
                    Duration::from_secs(2),
                    &format!("bob at gateway {i}, revoked during the outage"),
                )
                .await?;
            }
            let enforced = revoked.elapsed();
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let (asked, failed) = load.await??;
            eprintln!(
                "FAULT operator-down: {asked} requests for a live session, {} failed; \
                 revocation enforced at every gateway after {enforced:?}",
                failed.len()
            );
            ensure!(
                failed.is_empty(),
                "live session refused during the outage: {failed:?}"
            );
            for gateway in &fleet.gateways {
                let metrics = reqwest::get(format!("http://{}/metrics", gateway.ops_addr))
                    .await?
                    .text()
                    .await?;
                ensure!(
                    metrics.contains("portcullis_gateway_state_source{source=\"api_server\"} 1"),
                    "no fallback in the metrics: {metrics}"
                );
            }
            let mut fleet = Arc::into_inner(fleet).context("the load still holds the fleet")?;
            fleet.operators[0].restart().await?;
            until_source(&fleet, "operator_stream", Duration::from_secs(20)).await?;
            for c in &bob {
                ensure!(
                    ask(&fleet, c).await? == StatusCode::UNAUTHORIZED,
                    "bob back after recovery"
                );
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// Fault matrix, row "new login during an operator outage": it completes without a loop, and
/// the other gateway (which never saw the session) admits it by asking the API server.
#[tokio::test]
async fn a_new_login_during_an_operator_outage_works_at_every_gateway() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-outage-login", |client: Client, ns: String| async move {
            let dir = scratch("outage-login")?;
            let mut fleet = outage_fleet(&dir, &client, &kubeconfig, &ns).await?;
            fleet.operators[0].stop().await?;
            until_source(&fleet, "api_server", Duration::from_secs(10)).await?;
            let started = Instant::now();
            let alice = login(&fleet, "alice").await?;
            for (i, c) in alice.iter().enumerate() {
                until(
                    &fleet,
                    c,
                    StatusCode::OK,
                    Duration::from_secs(3),
                    &format!("alice at gateway {i}"),
                )
                .await?;
            }
            eprintln!(
                "FAULT operator-down new-login: signed in at both gateways in {:?}",
                started.elapsed()
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// A policy deleted and created again under the same name (as GitOps tools do) gets its status
/// back within seconds: the writer remembers objects by uid, not by name.
#[tokio::test]
async fn a_policy_deleted_and_created_again_gets_its_status_back() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-recreate", |client: Client, ns: String| async move {
            let dir = scratch("recreate")?;
            let fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            wait_policy(&client, &ns, "apps", "2/2", "True", Duration::from_secs(15)).await?;
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            for round in 0..2 {
                let old = policies.get("apps").await?.metadata.uid;
                policies.delete("apps", &Default::default()).await?;
                wait_for(Duration::from_secs(10), "the policy deleted", || async {
                    let gone = policies.get_opt("apps").await?.is_none();
                    Ok((gone.then_some(()), String::new()))
                })
                .await?;
                let manifest: AccessPolicy = serde_json::from_str(&policy(&ns, &fleet.app, 0))?;
                let created = policies.create(&Default::default(), &manifest).await?;
                ensure!(created.metadata.uid != old, "the same uid again");
                let started = Instant::now();
                let status =
                    wait_policy(&client, &ns, "apps", "2/2", "True", Duration::from_secs(20))
                        .await?;
                ensure!(status.observed_generation == Some(1), "{status:?}");
                eprintln!("round {round}: status back after {:?}", started.elapsed());
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// A gateway that stops acknowledging (here: stopped with SIGSTOP, its stream still open) stays
/// in the denominator, as behind, long past the 30 s acknowledgement window; the revocation's
/// "enforced" claim waits for it.
#[tokio::test]
async fn a_gateway_that_stops_acknowledging_stays_counted_as_behind() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-silent", |client: Client, ns: String| async move {
            let dir = scratch("silent")?;
            let options = Options {
                operators: 1,
                operator_env: &[],
                follow: Follow::AllReplicas,
                gateway_env: &[],
            };
            let fleet = fleet_opts(&dir, &client, &kubeconfig, &ns, options).await?;
            let bob = login(&fleet, "bob").await?;
            until(
                &fleet,
                &bob[0],
                StatusCode::OK,
                Duration::from_secs(5),
                "bob",
            )
            .await?;
            wait_policy(&client, &ns, "apps", "2/2", "True", Duration::from_secs(15)).await?;
            let pid = fleet.gateways[1].pid().context("no pid")?;
            signal(pid, "STOP")?;
            let result = async {
                let sid = session_of(&client, &ns, "bob@example.com").await?;
                let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
                patch_merge(
                    &sessions,
                    &sid,
                    serde_json::json!({"spec": {"revoked": true}}),
                )
                .await?;
                // Past the 30 s window in which a silent gateway used to vanish from the count.
                tokio::time::sleep(Duration::from_secs(40)).await;
                let s = sessions.get(&sid).await?.status.unwrap_or_default();
                let summary = s.enforcement.as_ref().map(|e| e.summary.clone());
                ensure!(
                    summary.as_deref() == Some("1/2"),
                    "enforcement {summary:?}: {s:?}"
                );
                ensure!(
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Enforced" && c.status == "False"),
                    "{s:?}"
                );
                let policy = policy_status(&client, &ns, "apps").await?;
                let gateways = policy.gateways.map(|g| g.connected);
                ensure!(gateways == Some(2), "GATEWAYS connected {gateways:?}");
                // No Event claims enforcement the acknowledgements do not show.
                let claimed = enforced_events(&client, &ns, &sid).await?;
                ensure!(
                    claimed == 0,
                    "{claimed} EnforcedByAllGateways Event(s) at 1/2"
                );
                Ok::<_, anyhow::Error>(sid)
            }
            .await;
            signal(pid, "CONT")?;
            let sid = result?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            wait_for(
                Duration::from_secs(15),
                "enforced 2/2 once it acknowledges",
                || async {
                    let s = sessions.get(&sid).await?.status.unwrap_or_default();
                    let ok = s.enforcement.as_ref().is_some_and(|e| e.summary == "2/2");
                    Ok((ok.then_some(()), format!("{s:?}")))
                },
            )
            .await?;
            wait_for(
                Duration::from_secs(10),
                "the EnforcedByAllGateways Event",
                || async {
                    let claimed = enforced_events(&client, &ns, &sid).await?;
                    Ok(((claimed == 1).then_some(()), format!("{claimed} Events")))
                },
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// Sends `SIGname` to process `pid` (with the system's `kill`).
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// Fault matrix, row "API server down": live sessions keep working at every gateway; a new
/// login ends on a clear 503 page with `Retry-After` (no loop, no bare error); logout signs the
/// user out at once, and its revocation lands, and is enforced at every gateway, once the API
/// server is back. A private control plane: the shared one is never stopped.
#[tokio::test]
async fn with_the_api_server_down_sessions_work_logins_say_retry_and_logout_lands_later()
-> Result<()> {
    let dir = scratch("apiserver-down")?;
    let ns = "apiserver-down";
    let (mut stack, client) =
        portcullis_tests::cluster::private_stack(&dir.join("stack"), ns).await?;
    let kubeconfig = stack.info().kubeconfig.clone();
    std::fs::create_dir_all(dir.join("fleet"))?;
    let fleet = outage_fleet(&dir.join("fleet"), &client, &kubeconfig, ns).await?;
    let (alice, alice_jar) = login_jar(&fleet, "alice").await?;
    let bob = login(&fleet, "bob").await?;
    for c in alice.iter().chain(&bob) {
        until(
            &fleet,
            c,
            StatusCode::OK,
            Duration::from_secs(5),
            "logged in",
        )
        .await?;
    }
    let alice_sid = session_of(&client, ns, "alice@example.com").await?;
    stack.stop_apiserver().await?;
    let fleet = Arc::new(fleet);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load(&fleet, Arc::new(bob), stop.clone());

    // A new login (a fresh browser): the identity provider signs bob in, the session cannot be
    // recorded.
    let browser = fleet.gateways[0].browser()?;
    let user = fleet.dex.info.user("bob")?.clone();
    let app = Url::parse(&format!("{}/", fleet.gateways[0].origin(&fleet.app)))?;
    let callback = dex::follow_login(&browser, app, &user, Connector::Password, |u| {
        u.host_str() == Some(AUTH) && u.path() == "/.portcullis/callback"
    })
    .await?;
    let answer = browser
        .get(callback)
        .header("accept", "text/html")
        .send()
        .await?;
    let retry_after = answer.headers().get("retry-after").cloned();
    ensure!(
        answer.status() == StatusCode::SERVICE_UNAVAILABLE
            && retry_after.is_some()
            && answer.headers().get("location").is_none(),
        "a new login without the API server answered {} (Retry-After {retry_after:?})",
        answer.status()
    );

    // Logout: signed out at once, however long the API server stays away.
    let alice_browser = fleet.gateways[0].browser_with_jar(alice_jar)?;
    let started = Instant::now();
    let logout = alice_browser
        .get(format!(
            "{}/.portcullis/logout",
            fleet.gateways[0].origin(AUTH)
        ))
        // From the auth host's own page: a logout without that signal asks for confirmation.
        .header("sec-fetch-site", "same-origin")
        .send()
        .await?;
    let took = started.elapsed();
    ensure!(
        logout.status() == StatusCode::OK,
        "logout answered {}",
        logout.status()
    );
    ensure!(
        logout.text().await?.contains("You are signed out"),
        "no signed-out page"
    );
    until(
        &fleet,
        &alice[0],
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
        "alice at the gateway that signed her out",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (asked, failed) = load.await??;
    ensure!(
        failed.is_empty(),
        "live session refused while the API server was down: {failed:?}"
    );

    stack.start_apiserver().await?;
    let back = Instant::now();
    let sessions: Api<AccessSession> = Api::namespaced(stack.client().await?, ns);
    wait_for(
        Duration::from_secs(60),
        "the logout's revocation written",
        || async {
            let revoked = sessions.get(&alice_sid).await.map(|s| s.spec.revoked);
            Ok((
                matches!(revoked, Ok(true)).then_some(()),
                format!("{revoked:?}"),
            ))
        },
    )
    .await?;
    let written = back.elapsed();
    for (i, c) in alice.iter().enumerate() {
        until(
            &fleet,
            c,
            StatusCode::UNAUTHORIZED,
            Duration::from_secs(45),
            &format!("alice at gateway {i} after the API server is back"),
        )
        .await?;
    }
    let everywhere = back.elapsed();
    eprintln!(
        "FAULT apiserver-down: {asked} requests for a live session, {} failed; new login: {} \
         with Retry-After {retry_after:?}; logout answered in {took:?}; its revocation written \
         {written:?} and enforced everywhere {everywhere:?} after the API server was back",
        failed.len(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    drop(fleet);
    stack.stop().await
}

/// How many `EnforcedByAllGateways` Events name session `sid`.
async fn enforced_events(client: &Client, ns: &str, sid: &str) -> Result<usize> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("EnforcedByAllGateways")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(sid)
        })
        .count())
}
