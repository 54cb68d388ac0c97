//! Who revoked a session, as the API server says it. `kubectl portcullis revoke` writes the
//! user the API server authenticated it as into `spec.revokedBy`; the chart's
//! ValidatingAdmissionPolicy (rendered by helm from the chart and applied) refuses any other name;
//! the CRD refuses `revokedBy` without `revoked` and any change once set; the operator's
//! `Revoked` condition names the user and the tool.

mod common;

use anyhow::{Context as _, Result, bail, ensure};
use common::{create, plugin, session};
use kube::Api;
use kube::api::{Patch, PatchParams};
use portcullis_crds::AccessSession;
use portcullis_tests::TestCluster;
use portcullis_tests::fsutil::{scratch_dir, sibling_binary};
use portcullis_tests::operator::OperatorProcess;
use portcullis_tests::pki::Pki;
use portcullis_tests::tools::Tool;
use std::time::{Duration, Instant};

/// The user name of the stack's admin certificate (CN), which every write here is made as.
const ADMIN: &str = "portcullis-admin";

/// What the policy answers a name that is not the requester's.
const REFUSAL: &str = "spec.revokedBy must be the name of the user making the request";

/// The chart's ValidatingAdmissionPolicy and its binding, as `helm template` renders them for
/// a release named for the test's namespace, applied with kubectl: the installed form.
struct AdmissionPolicy {
    manifest: String,
    kubeconfig: std::path::PathBuf,
}

impl AdmissionPolicy {
    async fn install(kubeconfig: &std::path::Path, ns: &str) -> Result<Self> {
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let values = format!("{repo}/examples/ingress/traefik/values.yaml");
        let rendered = tool(
            Tool::Helm,
            &[
                "template",
                ns,
                &format!("{repo}/charts/portcullis"),
                "-n",
                ns,
                "-f",
                &values,
                "--show-only",
                "templates/admission-policy.yaml",
            ],
            None,
        )
        .await?;
        ensure!(
            rendered.contains("kind: ValidatingAdmissionPolicyBinding"),
            "{rendered}"
        );
        let policy = Self {
            manifest: rendered,
            kubeconfig: kubeconfig.to_owned(),
        };
        policy.kubectl("apply").await?;
        Ok(policy)
    }

    async fn kubectl(&self, verb: &str) -> Result<String> {
        let config = self.kubeconfig.display().to_string();
        tool(
            Tool::Kubectl,
            &["--kubeconfig", &config, verb, "-f", "-"],
            Some(&self.manifest),
        )
        .await
    }

    async fn remove(self) -> Result<()> {
        self.kubectl("delete").await.map(drop)
    }
}

/// Runs `tool` with `args` (and `stdin`): its stdout, or its stderr as the error.
async fn tool(tool: Tool, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(tool.path()?)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().context("no stdin")?;
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await?;
    drop(input);
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "{tool:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A merge patch of `spec` on session `name`: the API server's refusal message, if refused.
async fn refusal(api: &Api<AccessSession>, name: &str, spec: serde_json::Value) -> Option<String> {
    let patch = serde_json::json!({ "spec": spec });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(status.message),
        Err(e) => Some(e.to_string()),
    }
}

/// Waits until the API server enforces the policy (it loads new policies asynchronously): each
/// try names someone else on a fresh session, since a write that got through is immutable.
async fn until_enforced(api: &Api<AccessSession>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        let probe = format!("probe-{attempt}");
        create(api, vec![session(&probe, "probe", None, "dex")]).await?;
        let spec = serde_json::json!({"revoked": true, "revokedBy": "mallory"});
        if let Some(message) = refusal(api, &probe, spec).await {
            ensure!(message.contains(REFUSAL), "refused otherwise: {message}");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the policy is not enforced after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("unreachable")
}

#[tokio::test]
async fn a_revocation_names_the_user_the_api_server_authenticated() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("cli-who", |client, ns| async move {
            let policy = AdmissionPolicy::install(&kubeconfig, &ns).await?;
            let result = story(&client, &kubeconfig, &ns).await;
            policy.remove().await?;
            result
        })
        .await
}

async fn story(client: &kube::Client, kubeconfig: &std::path::Path, ns: &str) -> Result<()> {
    let sessions: Api<AccessSession> = Api::namespaced(client.clone(), ns);
    create(
        &sessions,
        vec![
            session("s1", "ursula", Some("ursula@example.com"), "dex"),
            session("s2", "victor", Some("victor@example.com"), "dex"),
        ],
    )
    .await?;
    until_enforced(&sessions).await?;

    // The CRD: no name without the revocation itself.
    let alone = refusal(&sessions, "s2", serde_json::json!({"revokedBy": ADMIN})).await;
    ensure!(
        alone
            .as_deref()
            .is_some_and(|m| m.contains("revokedBy is set only together with revoked")),
        "{alone:?}"
    );

    let dir = scratch_dir("cli", "revoked-by")?;
    let pki = Pki::generate(&dir.join("pki"))?;
    let operator = OperatorProcess::start(
        &sibling_binary("portcullis-operator")?,
        &dir.join("operator"),
        &pki,
        kubeconfig,
        ns,
        &[format!("{ns}:gateway")],
    )
    .await?;
    plugin(
        kubeconfig,
        ns,
        &["revoke", "session", "s1", "--reason", "offboarded"],
    )
    .await?
    .expect(0)?;
    let revoked = sessions.get("s1").await?.spec;
    ensure!(
        revoked.revoked && revoked.revoked_by.as_deref() == Some(ADMIN),
        "{revoked:?}"
    );

    // Once set, the name stays, whoever asks.
    let changed = refusal(&sessions, "s1", serde_json::json!({"revokedBy": "mallory"})).await;
    ensure!(
        changed.is_some(),
        "spec.revokedBy was changed after the revocation"
    );

    let expected =
        format!("spec.revoked set by {ADMIN} with kubectl-portcullis (reason: offboarded)");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conditions = sessions
            .get("s1")
            .await?
            .status
            .map(|s| s.conditions)
            .unwrap_or_default();
        let revoked = conditions.iter().find(|c| c.type_ == "Revoked");
        if revoked.is_some_and(|c| c.message.starts_with(&expected)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "Revoked condition {revoked:?}, not {expected:?}\noperator:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
