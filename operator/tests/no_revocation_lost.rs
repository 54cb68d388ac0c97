//! No revocation is lost when a gateway is killed and restarted, or when the API server
//! restarts while the operator streams: real API server, real `portcullis-operator`, two real
//! `portcullis-gateway` processes in cluster mode. Sessions are made directly in the API server
//! (the object a login writes) with app tokens minted by the gateways' own key
//! ([`portcullis_tests::fleet`]), so the verdicts are the gateways' own.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_tests::{
    cluster::{TestCluster, private_stack},
    fleet::{Fleet, Verdict},
};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(20);

fn scratch(name: &str) -> Result<PathBuf> {
    portcullis_tests::fsutil::scratch_dir("lost", name)
}

async fn fleet(dir: &Path, client: &Client, kubeconfig: &Path, ns: &str) -> Result<Fleet> {
    Fleet::start_plain(dir, client, kubeconfig, ns, 2).await
}

async fn live_sessions(fleet: &Fleet, sids: &[&str]) -> Result<Vec<String>> {
    fleet.live_sessions(sids, POLL, LIMIT).await
}

/// Waits until every gateway refuses `token`.
async fn refused_everywhere(fleet: &Fleet, token: &str, what: &str) -> Result<()> {
    fleet
        .until_everywhere(token, Verdict::Refused, POLL, LIMIT)
        .await
        .with_context(|| what.to_owned())
}

async fn accepted_everywhere(fleet: &Fleet, token: &str, what: &str) -> Result<()> {
    for i in 0..fleet.gateways.len() {
        ensure!(
            fleet.probe(i)?.ask(token).await? == Verdict::Accepted,
            "{what}: refused at gateway {i}"
        );
    }
    Ok(())
}

/// A gateway killed (SIGKILL) while a session is revoked refuses that session on its very
/// first answer after it is ready again: it never serves from a state older than the
/// revocation, and its first state already holds it.
#[tokio::test]
async fn a_gateway_killed_while_a_session_is_revoked_refuses_it_as_soon_as_it_is_ready()
-> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("lost-gw", |client: Client, ns: String| async move {
            let dir = scratch("gateway")?;
            let mut fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            let tokens = live_sessions(&fleet, &["kept", "revoked-while-down"]).await?;
            fleet.kill_gateway(1).await?;
            fleet.revoke("revoked-while-down").await?;
            // The survivor enforces it (so the operator has streamed it) before the restart.
            fleet
                .probe(0)?
                .until(&tokens[1], Verdict::Refused, POLL, LIMIT)
                .await
                .context("the running gateway refuses the revoked session")?;
            fleet.restart_gateway(1).await?;
            let first = fleet.probe(1)?.ask(&tokens[1]).await?;
            ensure!(
                first == Verdict::Refused,
                "the restarted gateway accepted a session revoked while it was down"
            );
            accepted_everywhere(&fleet, &tokens[0], "the session that was not revoked").await?;
            // And one revoked right after the restart reaches it too.
            let later = live_sessions(&fleet, &["revoked-after-restart"]).await?;
            fleet.revoke("revoked-after-restart").await?;
            refused_everywhere(&fleet, &later[0], "revoked after the restart").await?;
            fleet.stop().await
        })
        .await
}

/// Moving a session's `expiresAt` into the past (the CRD allows it to move earlier) ends it at
/// every gateway at once, although its app tokens still carry the original expiry; a session
/// shortened to a time still ahead ends when that time comes.
#[tokio::test]
async fn a_session_whose_expiry_is_moved_earlier_ends_everywhere() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("lost-expiry", |client: Client, ns: String| async move {
            let dir = scratch("expiry")?;
            let fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            // A login of two minutes ago, so its expiry can be moved well into the past (it
            // must stay after `issuedAt`), beyond the clock-skew allowance.
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            fleet
                .create_session_issued("ended-now", u64::try_from(now - 120)?)
                .await?;
            let mut tokens = live_sessions(&fleet, &["kept", "ends-soon"]).await?;
            let old = fleet.app_token("ended-now")?;
            fleet
                .until_everywhere(&old, Verdict::Accepted, POLL, LIMIT)
                .await?;
            tokens.insert(1, old);
            let sessions: Api<portcullis_crds::AccessSession> = Api::namespaced(client, &ns);
            let at = |offset: i64| -> Result<String> {
                Ok(k8s_openapi::jiff::Timestamp::from_second(now + offset)?.to_string())
            };
            let shorten = |name: &'static str, to: String| {
                let sessions = sessions.clone();
                async move {
                    sessions
                        .patch(
                            name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(
                                serde_json::json!({"spec": {"expiresAt": to}}),
                            ),
                        )
                        .await
                }
            };
            shorten("ended-now", at(-60)?).await?;
            refused_everywhere(&fleet, &tokens[1], "expiry moved into the past").await?;
            shorten("ends-soon", at(4)?).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            accepted_everywhere(&fleet, &tokens[2], "expiry moved earlier, not yet reached")
                .await?;
            refused_everywhere(&fleet, &tokens[2], "the earlier expiry reached").await?;
            accepted_everywhere(&fleet, &tokens[0], "the session left alone").await?;
            fleet.stop().await
        })
        .await
}

/// The API server restarts while the operator streams: a revocation accepted just before the
/// restart (possibly never delivered on the old watch) and one made right after it both reach
/// every gateway; a session nobody revoked stays accepted. A private control plane, so the
/// shared one other tests use is never restarted.
#[tokio::test]
async fn an_api_server_restart_mid_stream_loses_no_revocation() -> Result<()> {
    let dir = scratch("apiserver")?;
    let ns = "lost-apiserver";
    let (mut stack, client) = private_stack(&dir.join("stack"), ns).await?;
    let kubeconfig = stack.info().kubeconfig.clone();
    let fleet = fleet(&dir.join("fleet"), &client, &kubeconfig, ns).await?;
    let tokens = live_sessions(
        &fleet,
        &[
            "kept",
            "before-restart",
            "just-before-restart",
            "after-restart",
        ],
    )
    .await?;
    fleet.revoke("before-restart").await?;
    refused_everywhere(&fleet, &tokens[1], "revoked before the restart").await?;
    // Accepted by the API server, then the API server goes away at once.
    fleet.revoke("just-before-restart").await?;
    stack.restart_apiserver().await?;
    let client = stack.client().await?;
    let sessions: Api<portcullis_crds::AccessSession> = Api::namespaced(client.clone(), ns);
    ensure!(
        sessions.get("just-before-restart").await?.spec.revoked,
        "the revocation did not survive the API server restart"
    );
    refused_everywhere(&fleet, &tokens[2], "revoked just before the restart").await?;
    fleet.revoke("after-restart").await?;
    refused_everywhere(&fleet, &tokens[3], "revoked after the restart").await?;
    refused_everywhere(&fleet, &tokens[1], "revoked before the restart").await?;
    accepted_everywhere(&fleet, &tokens[0], "the session that was not revoked").await?;
    fleet.stop().await?;
    stack.stop().await
}
