//! The chart, installed as a user installs it, on a real node: `helm install charts/portcullis`
//! with the images `hack/build-images.sh` built (imported into the node's containerd), and the
//! operator's and the gateway's pods must become Running and Ready with nothing but what the
//! chart gives them: its ServiceAccounts and RBAC, the projected operator token, the generated
//! Secrets, the probes. The gateway is Ready only once it holds state streamed from the
//! operator, which takes in-cluster DNS (CoreDNS), the operator's TLS, the token's TokenReview
//! and the API server through the `kubernetes` Service.
//!
//! Needs root, the node's packages and binaries and the images (hack/test.sh builds them; the
//! node's preflight says what is missing).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use portcullis_tests::node::shared::TestNode;
use portcullis_tests::node::{TAINT_KEY, images};
use portcullis_tests::tools::{helm, repo};

/// The bar: node up (when this test starts it), chart installed, every pod Ready.
const BAR: Duration = Duration::from_secs(180);

/// Values of a user's install, plus the toleration of the test node's taint. No image values:
/// the chart's defaults must name the images the build produces.
fn values(ns: &str) -> String {
    format!(
        r#"
crds: {{enabled: false}}
gateway:
  authHost: auth.{ns}.test
  tolerations: [{{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}]
operator:
  tolerations: [{{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}]
identityProviders:
  - name: dex
    issuer: https://dex.{ns}.svc/dex
    clientId: portcullis
    clientSecret: {{existingSecret: dex-client}}
"#
    )
}

#[tokio::test]
async fn chart_pods_run_and_become_ready_on_a_real_node() {
    let started = Instant::now();
    let node = TestNode::shared().await;
    let node_up = started.elapsed();
    let cluster = node.cluster();
    let kubeconfig = cluster.info().kubeconfig.clone();
    let outcome = cluster
        .with_temp_ns("incluster", |client, ns| async move {
            let result = install_and_wait(&client, &ns, &kubeconfig).await;
            if result.is_err() {
                eprintln!("{}", node.pod_logs(&ns, 40));
            }
            result
        })
        .await;
    let ready = outcome.expect("chart installed and Ready");
    let total = started.elapsed();
    eprintln!(
        "in-cluster: node up after {node_up:?}, chart installed and every pod Ready after \
         {ready:?} more ({total:?} in all)"
    );
    assert!(
        total < BAR,
        "node up + chart installed + pods Ready took {total:?}, the bar is {BAR:?}"
    );
}

async fn install_and_wait(client: &kube::Client, ns: &str, kubeconfig: &Path) -> Result<Duration> {
    let scratch = portcullis_tests::fsutil::scratch_dir("incluster", ns)?;
    let values = scratch.join("values.yaml");
    std::fs::write(&values, self::values(ns))?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "dex-client"},
        "stringData": {"client-secret": "in-cluster-test-secret"},
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let start = Instant::now();
    let chart = repo().join("charts/portcullis");
    helm(
        &[
            "install",
            ns,
            &chart.display().to_string(),
            "-n",
            ns,
            "-f",
            &values.display().to_string(),
        ],
        kubeconfig,
        &scratch,
    )?;
    let release = format!("{ns}-portcullis");
    wait_ready(client, ns, &release).await?;
    check_pods(client, ns, &release).await?;
    Ok(start.elapsed())
}

/// Both Deployments at 2 ready replicas, failing early on a pod that cannot start.
async fn wait_ready(client: &kube::Client, ns: &str, release: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + BAR;
    loop {
        let mut ready = true;
        for component in ["operator", "gateway"] {
            let d = deployments.get(&format!("{release}-{component}")).await?;
            let n = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            ready &= n == 2;
        }
        if ready {
            return Ok(());
        }
        for pod in pods.list(&ListParams::default()).await?.items {
            for status in pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
            {
                let waiting = status.state.and_then(|s| s.waiting);
                if let Some(w) = waiting.filter(|w| {
                    matches!(
                        w.reason.as_deref(),
                        Some(
                            "ErrImageNeverPull"
                                | "ImagePullBackOff"
                                | "ErrImagePull"
                                | "CreateContainerConfigError"
                        )
                    )
                }) {
                    bail!(
                        "pod {} cannot start: {:?} {:?}",
                        pod.metadata.name.unwrap_or_default(),
                        w.reason,
                        w.message
                    );
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("operator and gateway not both at 2 ready replicas within {BAR:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every pod: the chart's ServiceAccount, the image the chart names by default (the build's
/// name for it), Running, Ready, and no container restarted (a crash loop that happens to be
/// Ready at the moment of the check would otherwise pass).
async fn check_pods(client: &kube::Client, ns: &str, release: &str) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    ensure!(pods.len() == 4, "expected 4 pods, found {}", pods.len());
    let version = env!("CARGO_PKG_VERSION");
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.context("spec")?;
        let component = if name.contains("-operator-") {
            "operator"
        } else {
            "gateway"
        };
        ensure!(
            spec.service_account_name.as_deref() == Some(&format!("{release}-{component}")),
            "{name} runs as {:?}",
            spec.service_account_name
        );
        let image = spec.containers[0].image.clone().unwrap_or_default();
        ensure!(
            image == format!("portcullis/{component}:{version}"),
            "{name} runs image {image}"
        );
        let status = pod.status.context("status")?;
        ensure!(
            status.phase.as_deref() == Some("Running"),
            "{name}: {:?}",
            status.phase
        );
        let containers = status.container_statuses.unwrap_or_default();
        ensure!(
            containers.iter().all(|c| c.ready && c.restart_count == 0),
            "{name}: containers {containers:?}"
        );
        ensure!(
            containers.iter().all(|c| {
                c.image == format!("{}/{component}:{version}", images::PREFIX)
                    && c.image_id.contains("sha256:")
            }),
            "{name}: unexpected image {containers:?}"
        );
    }
    Ok(())
}
