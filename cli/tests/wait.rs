//! `--wait` against the real operator and a real gateway in cluster mode: with the operator
//! running but no gateway connected, nothing can prove enforcement and the wait times out with
//! exit code 3 and the operator's reason; once a gateway follows the operator, each wait returns
//! as soon as status shows the revocation enforced, and not before. The `--wait` commands of
//! docs/cli.md are run here in the same form (`tests/tests/docs.rs` checks it).

mod common;

use anyhow::{Context as _, Result, ensure};
use common::{create, plugin, policy, revoked, session};
use kube::Api;
use kube::api::PostParams;
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_tests::TestCluster;
use portcullis_tests::fsutil::{scratch_dir, sibling_binary};
use portcullis_tests::gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess};
use portcullis_tests::operator::{OperatorProcess, gateway_token};
use portcullis_tests::pki::Pki;

const AUTH: &str = "auth.portcullis.test";

/// Whether the session's `Enforced` condition is `True` right now.
async fn enforced(api: &Api<AccessSession>, name: &str) -> Result<bool> {
    Ok(api.get(name).await?.status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Enforced" && c.status == "True")
    }))
}

#[tokio::test]
async fn wait_returns_once_every_gateway_enforces_and_times_out_without_one() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("cli-wait", |client, ns| async move {
            let dir = scratch_dir("cli", "wait")?;
            let app = format!("{ns}.portcullis.test");
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            policies
                .create(&PostParams::default(), &policy(&ns, "apps", &app)?)
                .await?;
            let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(
                &sessions,
                vec![
                    session("s1", "ursula", Some("ursula@example.com"), "dex"),
                    session("s2", "ursula", Some("ursula@example.com"), "dex"),
                    session("s3", "victor", Some("victor@example.com"), "dex"),
                ],
            )
            .await?;

            // The operator, admitting the gateway's ServiceAccount, with no gateway yet.
            let pki = Pki::generate(&dir.join("pki"))?;
            let token = dir.join("gateway-token");
            let account = gateway_token(&client, &ns, "gateway", &token).await?;
            let operator = OperatorProcess::start(
                &sibling_binary("portcullis-operator")?,
                &dir.join("operator"),
                &pki,
                &kubeconfig,
                &ns,
                std::slice::from_ref(&account),
            )
            .await?;

            let run = plugin(&kubeconfig, &ns, &["revoke", "session", "s1", "--wait=6s"])
                .await?
                .expect(3)?;
            ensure!(run.stdout.starts_with("accesssession/s1 revoked\n"), "{}", run.stdout);
            ensure!(
                run.stderr.contains("not shown as enforced by every connected gateway after 6s")
                    && run.stderr.contains("s1: Enforced=False, NoGatewayConnected"),
                "{}\noperator:\n{}",
                run.stderr,
                operator.log_tail()
            );
            ensure!(revoked(&sessions, "s1").await?.0, "a timed-out wait must keep the revocation");

            let run = plugin(&kubeconfig, &ns, &["revoke", "policy", "apps", "-n", &ns, "--wait=6s"])
                .await?
                .expect(3)?;
            ensure!(run.stdout.contains("revocationEpoch 0 → 1"), "{}", run.stdout);
            ensure!(
                run.stderr.contains("no gateway is connected to the operator"),
                "{}",
                run.stderr
            );

            // A gateway in cluster mode follows the operator (ready once it has the snapshot).
            let dex = DexServer::start(&dir.join("dex"), &pki, Vec::new()).await?;
            let mut config = GatewayConfig::new(dir.join("gateway"), AUTH, &[app.as_str()], "");
            config.env = vec![
                ("KUBECONFIG".into(), kubeconfig.display().to_string()),
                ("PORTCULLIS_SESSION_NAMESPACE".into(), ns.clone()),
                ("PORTCULLIS_OPERATOR_URL".into(), operator.url()),
                (
                    "PORTCULLIS_OPERATOR_CA_FILE".into(),
                    pki.ca_cert_path().display().to_string(),
                ),
                (
                    "PORTCULLIS_OPERATOR_TOKEN_FILE".into(),
                    token.display().to_string(),
                ),
            ];
            let files = GatewayFiles::write(&config, &pki, &dex.info)?;
            let gateway =
                GatewayProcess::start(&sibling_binary("portcullis-gateway")?, config, files)
                    .await?;

            // A user: s2 is revoked by the command, which returns only once the operator shows
            // the gateway refusing it. Read right after the exit: a wait that returned early
            // would leave the condition False here.
            let run = plugin(
                &kubeconfig,
                &ns,
                &["revoke", "user", "--email", "ursula@example.com", "--wait=2m"],
            )
                .await?
                .expect(0)
                .with_context(|| format!("gateway:\n{}", gateway.log_tail()))?;
            ensure!(enforced(&sessions, "s2").await?, "--wait returned before s2 was enforced");
            ensure!(enforced(&sessions, "s1").await?, "--wait returned before s1 was enforced");
            ensure!(
                run.stdout.contains("accesssession/s2 enforced by every connected gateway (1/1)"),
                "{}",
                run.stdout
            );
            ensure!(!revoked(&sessions, "s3").await?.0, "another user's session was revoked");

            // A policy: epoch 2 shown enforced by the one connected gateway.
            let run = plugin(&kubeconfig, &ns, &["revoke", "policy", "apps", "-n", &ns, "--wait"])
                .await?
                .expect(0)?;
            ensure!(run.stdout.contains("revocationEpoch 1 → 2"), "{}", run.stdout);
            let status = policies.get("apps").await?.status.context("no policy status")?;
            ensure!(
                status.enforced_epoch >= Some(2)
                    && status.gateways.as_ref().is_some_and(|g| g.connected == 1),
                "--wait returned before epoch 2 was enforced: {status:?}"
            );
            ensure!(
                run.stdout.contains("epoch 2 enforced by all 1 connected gateways"),
                "{}",
                run.stdout
            );

            // An already revoked session: nothing written, and the wait still proves it.
            let run = plugin(&kubeconfig, &ns, &["revoke", "session", "s1", "--wait"])
                .await?
                .expect(0)?;
            ensure!(
                run.stdout
                    == "accesssession/s1 already revoked (unchanged)\naccesssession/s1 enforced by every connected gateway (1/1)\n",
                "{}",
                run.stdout
            );
            let listed = plugin(&kubeconfig, &ns, &["sessions", "--user", "ursula"])
                .await?
                .expect(0)?;
            ensure!(
                listed.stdout.lines().skip(1).count() == 2
                    && listed.stdout.lines().skip(1).all(|l| {
                        l.split_whitespace().rev().take(2).eq(["1/1", "true"])
                    }),
                "REVOKED and ENFORCED columns: {}",
                listed.stdout
            );
            drop(gateway);
            drop(dex);
            drop(operator);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .await
}
