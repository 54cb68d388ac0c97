//! `kubectl portcullis preview` against the real API server: who an epoch raise logs out and who
//! a changed policy locks out or lets in, judged from the live AccessSessions, with nothing
//! written.

mod common;

use anyhow::{Context as _, Result, ensure};
use common::{create, plugin, policy, session, session_issued};
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use kube::api::PostParams;
use portcullis_crds::{AccessPolicy, AccessSession, session::USED_POLICY_PREFIX};
use portcullis_tests::TestCluster;
use portcullis_tests::fsutil::scratch_dir;

/// The first column of each table row.
fn rows(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("Raising") && !l.starts_with("Applying"))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

async fn sessions(api: &Api<AccessSession>) -> Result<()> {
    let mut carol = session("s-carol", "carol", Some("carol@other.test"), "dex");
    carol.spec.groups = vec!["contractors".into()];
    let mut revoked = session("s-revoked", "alice", Some("alice@example.com"), "dex");
    revoked.spec.revoked = true;
    let expired = session_issued(
        "s-expired",
        "alice",
        Some("alice@example.com"),
        "dex",
        SignedDuration::from_hours(-3),
    );
    create(
        api,
        vec![
            session("s-alice", "alice", Some("alice@example.com"), "dex"),
            session("s-bob-google", "bob", Some("bob@example.com"), "google"),
            session("s-eve", "eve", Some("eve@other.test"), "dex"),
            carol,
            revoked,
            expired,
        ],
    )
    .await
}

/// Two sessions that record the policies a gateway handed them to: dana another policy's
/// object, frank this one (`uid`).
async fn used(api: &Api<AccessSession>, ns: &str, uid: &str) -> Result<()> {
    let handed = |name: &str, who: &str, email: &str, uid: &str, policy: &str| {
        let mut s = session(name, who, Some(email), "dex");
        let key = format!("{USED_POLICY_PREFIX}{uid}");
        s.metadata.annotations = Some([(key, format!("{ns}/{policy}"))].into());
        s
    };
    create(
        api,
        vec![
            handed(
                "s-dana",
                "dana",
                "dana@example.com",
                "another-object",
                "admin",
            ),
            handed("s-frank", "frank", "frank@other.test", uid, "apps"),
        ],
    )
    .await
}

#[tokio::test]
async fn preview_shows_who_an_epoch_raise_or_a_rule_change_affects() {
    let cluster = TestCluster::shared().await;
    let kc = cluster.info().kubeconfig.clone();
    let result: Result<()> = cluster
        .with_temp_ns("cli-preview", |client, ns| async move {
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            policies
                .create(
                    &PostParams::default(),
                    &policy(&ns, "apps", "apps.example.com")?,
                )
                .await?;
            sessions(&Api::namespaced(client.clone(), &ns)).await?;
            let uid = policies.get("apps").await?.metadata.uid.context("uid")?;
            used(&Api::namespaced(client.clone(), &ns), &ns, &uid).await?;

            // The epoch: the sessions handed to this policy object (frank, whom the rules no
            // longer admit, but not dana, handed only to another policy), and those that do
            // not record where they were handed and whom the rules admit: only live dex
            // sessions (alice; not google's, not eve's, not the revoked or expired ones).
            let epoch = plugin(&kc, &ns, &["preview", "epoch", "apps", "-n", &ns])
                .await?
                .expect(0)?;
            ensure!(
                rows(&epoch.stdout) == ["s-alice", "s-frank"],
                "{}",
                epoch.stdout
            );
            ensure!(
                epoch
                    .stdout
                    .contains("logs out 2 of 6 live sessions (2 users)"),
                "{}",
                epoch.stdout
            );

            // A rule change: contractors in, example.com out.
            let dir = scratch_dir("cli-preview", &ns)?;
            let file = dir.join("apps.yaml");
            let mut changed = policy(&ns, "apps", "apps.example.com")?;
            changed.spec.rules[0].include =
                serde_json::from_value(serde_json::json!([{ "groups": ["contractors"] }]))?;
            std::fs::write(&file, serde_json::to_string(&changed)?)?;
            let file_arg = file.display().to_string();
            let change = plugin(&kc, &ns, &["preview", "policy", "-f", &file_arg])
                .await?
                .expect(0)?;
            ensure!(
                rows(&change.stdout) == ["s-alice", "s-carol", "s-dana"],
                "{}",
                change.stdout
            );
            let line = |name: &str| {
                change
                    .stdout
                    .lines()
                    .find(|l| l.starts_with(name))
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .context("row")
            };
            ensure!(
                line("s-alice")?.ends_with(&["allowed", "refused"]),
                "{}",
                change.stdout
            );
            ensure!(
                line("s-carol")?.ends_with(&["refused", "allowed"]),
                "{}",
                change.stdout
            );
            ensure!(
                change
                    .stdout
                    .contains("2 live sessions lose access, 1 gain it (of 6 live)"),
                "{}",
                change.stdout
            );

            // Nothing was written.
            let apps = policies.get("apps").await?;
            ensure!(apps.spec.revocation_epoch == 0, "the epoch moved");
            ensure!(apps.spec.rules[0].include.len() == 1, "the rules moved");

            // Not a policy: a usage error that says what the file holds.
            std::fs::write(
                &file,
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            )?;
            let wrong = plugin(&kc, &ns, &["preview", "policy", "-f", &file_arg])
                .await?
                .expect(2)?;
            ensure!(wrong.stderr.contains("ConfigMap"), "{}", wrong.stderr);
            Ok(())
        })
        .await;
    result.expect("preview");
}
