//! The leader's Events on AccessSessions against the real API server and a real
//! `portcullis-operator`: a login is one `LoggedIn`, a revocation's Event and `Revoked`
//! condition name the field manager of `spec.revoked`, and an operator restart replays no
//! login. Sessions are made directly in the API server, as a login writes them
//! ([`portcullis_tests::fleet`]).

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use portcullis_crds::AccessSession;
use portcullis_tests::{cluster::TestCluster, fleet::Fleet};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

const LIMIT: Duration = Duration::from_secs(20);

fn scratch(name: &str) -> Result<PathBuf> {
    portcullis_tests::fsutil::scratch_dir("session-events", name)
}

async fn fleet(dir: &Path, client: &Client, kubeconfig: &Path, ns: &str) -> Result<Fleet> {
    Fleet::start_plain(dir, client, kubeconfig, ns, 1).await
}

/// The notes of the Events with `reason` about session `sid`, one per occurrence (an Event
/// the recorder repeated counts as often as its series says).
async fn notes(client: &Client, ns: &str, sid: &str, reason: &str) -> Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut notes = Vec::new();
    for e in events.list(&Default::default()).await?.items {
        if e.reason.as_deref() == Some(reason)
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(sid)
        {
            let times = e.series.as_ref().map_or(1, |s| s.count.max(1));
            for _ in 0..times {
                notes.push(e.note.clone().unwrap_or_default());
            }
        }
    }
    Ok(notes)
}

/// Waits until some Event with `reason` about `sid` exists; its notes.
async fn until_event(client: &Client, ns: &str, sid: &str, reason: &str) -> Result<Vec<String>> {
    let start = Instant::now();
    loop {
        let found = notes(client, ns, sid, reason).await?;
        if !found.is_empty() {
            return Ok(found);
        }
        ensure!(start.elapsed() < LIMIT, "no {reason} Event for {sid}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_login_is_one_logged_in_event_a_revocation_names_who_and_a_restart_replays_nothing()
-> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("sess-events", |client: Client, ns: String| async move {
            let dir = scratch("login")?;
            let mut fleet = fleet(&dir, &client, &kubeconfig, &ns).await?;
            fleet.create_session("first").await?;
            let logins = until_event(&client, &ns, "first", "LoggedIn").await?;
            ensure!(logins.len() == 1, "one login, Events: {logins:?}");
            ensure!(
                logins[0].contains("first@example.com") && logins[0].contains("dex"),
                "the Event names the user and the identity provider: {}",
                logins[0]
            );

            // A restart lists the existing session again: no second LoggedIn.
            fleet.operator.restart().await?;
            fleet.create_session("second").await?;
            until_event(&client, &ns, "second", "LoggedIn").await?;
            let logins = notes(&client, &ns, "first", "LoggedIn").await?;
            ensure!(
                logins.len() == 1,
                "the restart replayed a login: {logins:?}"
            );

            // Revoked the way `kubectl patch` does, with kubectl's field manager.
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            let params = PatchParams {
                field_manager: Some("kubectl-patch".into()),
                ..PatchParams::default()
            };
            let body =
                serde_json::json!({"spec": {"revoked": true, "revocationReason": "laptop lost"}});
            sessions
                .patch("second", &params, &Patch::Merge(&body))
                .await
                .context("revoking")?;
            let revoked = until_event(&client, &ns, "second", "Revoked").await?;
            ensure!(revoked.len() == 1, "one revocation Event: {revoked:?}");
            ensure!(
                revoked[0].contains("kubectl-patch") && revoked[0].contains("laptop lost"),
                "the revocation Event names who and why: {}",
                revoked[0]
            );
            let status = sessions.get("second").await?.status.unwrap_or_default();
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Revoked")
                .context("a Revoked condition")?;
            ensure!(
                condition.message.contains("kubectl-patch"),
                "the Revoked condition names who: {}",
                condition.message
            );
            fleet.stop().await
        })
        .await
}
