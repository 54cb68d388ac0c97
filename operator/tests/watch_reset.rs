//! A watch that can no longer resume (410 Gone: the events it missed were compacted away) loses
//! no revocation: the operator relists, and the relist ends every session it revoked. Real
//! etcd, real API server, real `portcullis-operator` and two real gateways in cluster mode.
//!
//! To make sure the operator can learn of the revocation only through a relist, it is made
//! while the API server is down, in etcd itself (the stored object, revoked, as the API server
//! would have written it); etcd is then compacted to that revision and the API server started
//! again, so the operator's resumed watch can only be answered with 410 Gone.

use anyhow::{Context as _, Result, ensure};
use portcullis_tests::{
    cluster::private_stack,
    etcd::{compact_etcd, revoke_in_etcd},
    fleet::{Fleet, Verdict},
};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(30);

fn relists(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("listed") && l.contains("AccessSession"))
        .count()
}

#[tokio::test]
async fn a_watch_that_expires_relists_and_loses_no_revocation() -> Result<()> {
    let dir = portcullis_tests::fsutil::scratch_dir("watch-reset", "gone")?;
    let ns = "watch-reset";
    let (mut stack, client) = private_stack(&dir.join("stack"), ns).await?;
    let kubeconfig = stack.info().kubeconfig.clone();
    let fleet = Fleet::start_plain(&dir.join("fleet"), &client, &kubeconfig, ns, 2).await?;
    let result = async {
        let tokens = fleet
            .live_sessions(&["kept", "revoked-while-away"], POLL, LIMIT)
            .await?;
        let listed_before = relists(&std::fs::read_to_string(fleet.operator.log_path())?);
        ensure!(listed_before >= 1, "{}", fleet.operator.log_tail());

        let etcd = stack.info().etcd.url.clone().context("etcd url")?;
        let http = reqwest::Client::new();
        stack.stop_apiserver().await?;
        revoke_in_etcd(&http, &etcd, ns, "revoked-while-away").await?;
        compact_etcd(&http, &etcd).await?;
        stack.start_apiserver().await?;

        fleet
            .until_everywhere(&tokens[1], Verdict::Refused, POLL, LIMIT)
            .await
            .with_context(|| {
                format!(
                    "revoked while the operator's watch was away\n{}",
                    fleet.operator.log_tail()
                )
            })?;
        for i in 0..fleet.gateways.len() {
            ensure!(
                fleet.probe(i)?.ask(&tokens[0]).await? == Verdict::Accepted,
                "the session nobody revoked is refused at gateway {i}"
            );
        }
        // The gateways also watch revocations themselves, so they may refuse the session
        // before the operator has relisted: the operator's own path is checked on its own.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while relists(&std::fs::read_to_string(fleet.operator.log_path())?) <= listed_before {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the operator did not relist its sessions, so this test did not exercise a \
                 410 Gone:\n{}",
                fleet.operator.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
        let sessions: kube::Api<portcullis_crds::AccessSession> =
            kube::Api::namespaced(stack.client().await?, ns);
        while sessions
            .get("revoked-while-away")
            .await?
            .status
            .and_then(|s| s.revoked_at)
            .is_none()
        {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the operator's relist did not see the revocation:\n{}",
                fleet.operator.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
    .await;
    fleet.stop().await?;
    stack.stop().await?;
    result
}
