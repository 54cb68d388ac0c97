//! Command lines of the node's processes, and the identities they act as.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::config::NodePaths;
use super::{GATEWAY_IP, NODE_NAME};
use crate::tools::Tool;

/// Controllers the node's own controller manager runs, besides the shared one's (which runs
/// only what namespaces and ServiceAccounts need): what turns a Deployment into Pods and a
/// Service into endpoints, the `kube-root-ca.crt` ConfigMap every projected token volume
/// mounts, PodDisruptionBudget status, and the node lifecycle controller, which lifts the
/// `node.kubernetes.io/not-ready` taint the kubelet registers the node with once it is Ready.
pub const NODE_CONTROLLERS: &str = "deployment-controller,replicaset-controller,\
endpointslice-controller,endpointslice-mirroring-controller,root-ca-certificate-publisher-controller,\
disruption-controller,pod-garbage-collector-controller,node-lifecycle-controller";

pub fn containerd(p: &NodePaths) -> Command {
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(p.join("containerd.toml"));
    cmd
}

pub fn controller_manager(kubeconfig: &Path, ca: &Path) -> Result<Command> {
    let mut cmd = Command::new(Tool::KubeControllerManager.path()?);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--controllers={NODE_CONTROLLERS}"))
        .arg(format!("--root-ca-file={}", ca.display()))
        .arg("--leader-elect=false")
        .arg("--use-service-account-credentials=true")
        .arg("--secure-port=0")
        .arg("--v=1");
    Ok(cmd)
}

pub fn scheduler(kubeconfig: &Path) -> Result<Command> {
    let mut cmd = Command::new(Tool::KubeScheduler.path()?);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--leader-elect=false")
        // 0: no HTTPS endpoint; the scheduler listens on nothing.
        .arg("--secure-port=0")
        .arg("--v=1");
    Ok(cmd)
}

pub fn kube_proxy(config: &Path) -> Result<Command> {
    let mut cmd = Command::new(Tool::KubeProxy.path()?);
    cmd.arg(format!("--config={}", config.display()))
        .arg("--v=1");
    Ok(cmd)
}

pub fn kubelet(p: &NodePaths, kubeconfig: &Path) -> Result<Command> {
    let mut cmd = Command::new(Tool::Kubelet.path()?);
    cmd.arg(format!("--config={}", p.join("kubelet.yaml").display()))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--root-dir={}", p.join("kubelet").display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg(format!("--node-ip={GATEWAY_IP}"))
        .arg("--v=1");
    Ok(cmd)
}

/// Runs `kubectl apply --server-side` of a manifest with the admin kubeconfig.
pub fn kubectl_apply(kubeconfig: &Path, manifest: &Path) -> Result<()> {
    let kubectl = Tool::Kubectl.path()?.display().to_string();
    super::net::run(
        &kubectl,
        &[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            crate::cluster::FIELD_MANAGER,
            "-f",
            &manifest.display().to_string(),
        ],
    )?;
    Ok(())
}
