//! A real Kubernetes node for the shared control plane, for tests that need pods.
//!
//! containerd + runc + the CNI bridge plugin (Debian packages), kubelet, kube-scheduler and
//! kube-proxy (built from `k8s.io/kubernetes` by `hack/build-tools.sh`), a second controller
//! manager running the controllers pods need, and CoreDNS as a pod. Images are imported with
//! `ctr` from the archives `hack/build-images.sh` writes; there is no registry.
//!
//! Like the control plane, one process owns the node for a whole test run (`devstack node`,
//! started on demand by [`shared::TestNode::shared`]) and `devstack down` stops it. Every file
//! lives in `<stack dir>/node`; what the node changes outside it (the bridge, iptables chains,
//! kernel settings) is undone by [`net::teardown`], also after a crash.
//!
//! Network: pods live on the bridge `portcullis0` (10.88.0.0/24, gateway 10.88.0.1), Services
//! in 10.96.0.0/16; pod and Service traffic never leaves the machine (see [`net`]). Pods reach
//! the API server through the `kubernetes` Service and [`relay`].

pub mod components;
pub mod config;
pub mod images;
pub mod net;
pub mod relay;
pub mod shared;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_public;
use crate::pki::Pki;
use crate::process::{self, ManagedProcess, STOP_GRACE};
use crate::stack::StackInfo;
use crate::tools::Tool;
use config::NodePaths;

/// Name of the node.
pub const NODE_NAME: &str = "portcullis-node";
/// The CNI bridge.
pub const BRIDGE: &str = "portcullis0";
/// Pod addresses.
pub const POD_CIDR: &str = "10.88.0.0/24";
/// The bridge's address: the pods' gateway, the node IP, and where the API relay listens.
pub const GATEWAY_IP: &str = "10.88.0.1";
/// Port of the API relay on [`GATEWAY_IP`].
pub const RELAY_PORT: u16 = 6443;
/// ClusterIP of the `kube-dns` Service (CoreDNS).
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
/// Taint of the node: pods must tolerate it (`operator: Exists`) to run there.
pub const TAINT_KEY: &str = "portcullis.dev/test-node";
/// Kernel settings recorded before the node changed them.
pub const SYSCTL_RECORD: &str = "sysctls.json";
/// The node description in its directory.
pub const NODE_JSON: &str = "node.json";

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The node's directory for the stack in `stack_dir`.
pub fn node_dir(stack_dir: &Path) -> PathBuf {
    stack_dir.join("node")
}

/// What other processes need to know about a running node (`node.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub dir: PathBuf,
    /// The process owning the node (`devstack node`).
    pub owner_pid: u32,
    /// Pids of the node's processes, for cleanup after a killed owner.
    pub pids: Vec<u32>,
    /// Images imported into containerd.
    pub images: Vec<String>,
    /// containerd's socket (for `ctr`).
    pub containerd_socket: PathBuf,
    /// Where the kubelet writes container logs (`<namespace>_<pod>_<uid>/<container>/N.log`).
    pub pod_logs: PathBuf,
}

impl NodeInfo {
    pub fn load(dir: &Path) -> Result<NodeInfo> {
        let path = dir.join(NODE_JSON);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Owner alive and the Node `Ready`.
    pub async fn healthy(&self, client: &kube::Client) -> bool {
        process::pid_alive(self.owner_pid) && node_ready(client).await.unwrap_or(false)
    }
}

/// A running node. Dropping it kills its processes; [`Node::stop`] also removes its pods and
/// undoes its changes to the machine.
pub struct Node {
    paths: NodePaths,
    stack: StackInfo,
    relay: tokio::task::JoinHandle<()>,
    /// In start order: containerd, controller manager, scheduler, kube-proxy, kubelet.
    procs: Vec<ManagedProcess>,
    info: NodeInfo,
}

/// Fails with what to install when something the node needs is missing.
pub fn preflight() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading own status")?;
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        bail!("a node needs root (containerd, iptables, the bridge)");
    }
    for tool in [
        Tool::Kubelet,
        Tool::KubeScheduler,
        Tool::KubeProxy,
        Tool::Coredns,
    ] {
        tool.path()?;
    }
    let missing: Vec<&str> = ["containerd", "runc", "ctr", "iptables", "ip"]
        .into_iter()
        .filter(|c| net::run("sh", &["-c", &format!("command -v {c}")]).is_err())
        .collect();
    let cni_missing = !Path::new("/usr/lib/cni/bridge").is_file();
    if !missing.is_empty() || cni_missing {
        bail!(
            "the node needs containerd, runc, the CNI plugins and iptables (missing: {}{}): \
             apt-get install containerd runc containernetworking-plugins iptables \
             (.ci/run installs them)",
            missing.join(", "),
            if cni_missing {
                " /usr/lib/cni/bridge"
            } else {
                ""
            }
        );
    }
    images::archive("pause").map(|_| ())
}

impl Node {
    /// Starts a node for the running stack `stack` and waits until it is `Ready` with CoreDNS
    /// serving. A node left in the same directory by a killed run is cleaned up first.
    pub async fn start(stack: &StackInfo) -> Result<Node> {
        crate::install_crypto_provider();
        preflight()?;
        let paths = NodePaths::new(&node_dir(&stack.state_dir));
        stop_leftovers(&paths.root).await?;
        for sub in [
            "containerd",
            "runc",
            "kubelet",
            "cni",
            "logs",
            "pod-logs",
            "pki",
        ] {
            let dir = paths.join(sub);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing old {}", dir.display()))?;
            }
        }
        for sub in [
            "containerd",
            "cni/net.d",
            "logs",
            "pod-logs",
            "pki",
            "images",
        ] {
            std::fs::create_dir_all(paths.join(sub))
                .with_context(|| format!("creating {sub} in {}", paths.root.display()))?;
        }
        net::prepare(&paths.join(SYSCTL_RECORD))?;
        let relay = relay::start(
            format!("{GATEWAY_IP}:{RELAY_PORT}").parse()?,
            ([127, 0, 0, 1], stack.ports.apiserver).into(),
        )
        .await?;
        let info = NodeInfo {
            dir: paths.root.clone(),
            owner_pid: std::process::id(),
            pids: Vec::new(),
            images: Vec::new(),
            containerd_socket: paths.containerd_socket(),
            pod_logs: paths.join("pod-logs"),
        };
        let mut node = Node {
            paths,
            stack: stack.clone(),
            relay,
            procs: Vec::new(),
            info,
        };
        node.bring_up().await?;
        Ok(node)
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    async fn bring_up(&mut self) -> Result<()> {
        let kubeconfigs = self.write_identities()?;
        let pause = images::image_name(&images::archive("pause")?)?;
        let p = &self.paths.clone();
        write_public(
            &p.join("containerd.toml"),
            config::containerd(p, &pause).as_bytes(),
        )?;
        write_public(
            &p.join("cni/net.d/10-portcullis.conflist"),
            config::cni(p).as_bytes(),
        )?;
        let objects = p.join("cluster-objects.yaml");
        write_public(&objects, config::cluster_objects(RELAY_PORT).as_bytes())?;
        components::kubectl_apply(&self.stack.kubeconfig, &objects)?;

        self.spawn("containerd", components::containerd(p))?;
        let socket = p.containerd_socket();
        self.wait_last("containerd answers", || {
            let socket = socket.clone();
            async move {
                Ok(net::run(
                    "ctr",
                    &["--address", &socket.display().to_string(), "version"],
                )
                .is_ok())
            }
        })
        .await?;
        self.import_images()?;

        let ca = self.stack.ca_file.clone();
        self.spawn(
            "kube-controller-manager",
            components::controller_manager(&kubeconfigs.controller_manager, &ca)?,
        )?;
        self.spawn(
            "kube-scheduler",
            components::scheduler(&kubeconfigs.scheduler)?,
        )?;
        write_public(
            &self.paths.join("kube-proxy.yaml"),
            config::kube_proxy(&kubeconfigs.proxy).as_bytes(),
        )?;
        self.spawn(
            "kube-proxy",
            components::kube_proxy(&self.paths.join("kube-proxy.yaml"))?,
        )?;
        self.spawn(
            "kubelet",
            components::kubelet(&self.paths, &kubeconfigs.kubelet)?,
        )?;
        let client = self.stack.client().await?;
        self.wait_last("Node Ready", || node_ready(&client)).await?;
        self.start_coredns(&client).await?;
        self.write_info()
    }

    /// Client certificates for the kubelet (`system:node:<name>` in `system:nodes`), the
    /// scheduler, kube-proxy and the controller manager (their bootstrap RBAC users), and the kubelet's serving
    /// certificate, all from the stack's CA.
    fn write_identities(&self) -> Result<Kubeconfigs> {
        let pki = Pki::load(&self.stack.state_dir.join("pki"))?;
        let ca = pki.ca_cert_path();
        let server = self.stack.apiserver_url();
        let dir = self.paths.join("pki");
        let kubeconfig = |name: &str, cn: &str, orgs: &[&str]| -> Result<PathBuf> {
            let files = pki.issue_client(&format!("node-{name}"), cn, orgs)?;
            let path = dir.join(format!("{name}.kubeconfig"));
            crate::kubeconfig::write(&path, server, &ca, &files)?;
            Ok(path)
        };
        let out = Kubeconfigs {
            kubelet: kubeconfig(
                "kubelet",
                &format!("system:node:{NODE_NAME}"),
                &["system:nodes"],
            )?,
            scheduler: kubeconfig("scheduler", "system:kube-scheduler", &[])?,
            proxy: kubeconfig("proxy", "system:kube-proxy", &[])?,
            controller_manager: kubeconfig(
                "controller-manager",
                "system:kube-controller-manager",
                &[],
            )?,
        };
        let serving = pki.issue_serving(
            "node-kubelet-serving",
            &[NODE_NAME.into(), GATEWAY_IP.into()],
        )?;
        write_public(
            &self.paths.join("kubelet.yaml"),
            config::kubelet(&self.paths, &ca, &serving.cert, &serving.key).as_bytes(),
        )?;
        Ok(out)
    }

    fn import_images(&mut self) -> Result<()> {
        let mut archives = Vec::new();
        for entry in std::fs::read_dir(images::images_dir())
            .with_context(|| format!("reading {}", images::images_dir().display()))?
        {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(".oci.tar") {
                archives.push(path);
            }
        }
        archives.sort();
        let (coredns, _) = images::coredns(&self.paths.join("images"), &Tool::Coredns.path()?)?;
        archives.push(coredns);
        images::import(&self.paths.containerd_socket(), &archives)?;
        self.info.images = archives
            .iter()
            .map(|a| images::image_name(a))
            .collect::<Result<_>>()?;
        Ok(())
    }

    async fn start_coredns(&mut self, client: &kube::Client) -> Result<()> {
        let manifest = self.paths.join("coredns.yaml");
        let image = format!("{}/coredns:{}", images::PREFIX, images::COREDNS_TAG);
        write_public(&manifest, config::coredns(&image).as_bytes())?;
        components::kubectl_apply(&self.stack.kubeconfig, &manifest)?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
        self.wait_last("CoreDNS available", || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("coredns").await?;
                Ok(d.status.and_then(|s| s.available_replicas).unwrap_or(0) >= 1)
            }
        })
        .await
    }

    fn spawn(&mut self, name: &str, cmd: std::process::Command) -> Result<()> {
        let proc = ManagedProcess::spawn(name, cmd, &self.paths.log(name))?;
        self.info.pids.extend(proc.pid());
        self.procs.push(proc);
        self.write_info()
    }

    /// Waits for `check` while every process of the node keeps running.
    async fn wait_last<F, Fut>(&mut self, what: &str, check: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_running()?;
            match check().await {
                Ok(true) => return Ok(()),
                _ if std::time::Instant::now() >= deadline => {
                    bail!(
                        "node: {what} not reached within {READY_TIMEOUT:?}; logs in {}",
                        self.paths.join("logs").display()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Fails with the log tail of the first node process that has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        for proc in &mut self.procs {
            proc.ensure_running()?;
        }
        Ok(())
    }

    fn write_info(&self) -> Result<()> {
        let body = serde_json::to_vec_pretty(&self.info).context("serializing node.json")?;
        write_public(&self.paths.join(NODE_JSON), &body)
    }

    /// Stops the node: no new pods, every pod removed through the kubelet (so the CNI plugin
    /// releases its address and interface), then the processes, then [`net::teardown`].
    pub async fn stop(mut self) -> Result<()> {
        let mut procs = std::mem::take(&mut self.procs);
        // Controller manager and scheduler first: nothing recreates the pods deleted next.
        for proc in procs
            .iter_mut()
            .filter(|p| p.name() == "kube-controller-manager" || p.name() == "kube-scheduler")
        {
            proc.stop(STOP_GRACE).await?;
        }
        if let Err(e) = self.drain_pods().await {
            tracing::warn!(error = %format!("{e:#}"), "node: pods not removed cleanly");
        }
        for mut proc in procs.into_iter().rev() {
            proc.stop(STOP_GRACE).await?;
        }
        self.relay.abort();
        let _ = std::fs::remove_file(self.paths.join(NODE_JSON));
        cleanup(&self.paths.root).await
    }

    async fn drain_pods(&self) -> Result<()> {
        let client = self.stack.client().await?;
        let pods: Api<Pod> = Api::all(client.clone());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let on_node = ListParams::default().fields(&format!("spec.nodeName={NODE_NAME}"));
        for pod in pods.list(&on_node).await?.items {
            let (Some(ns), Some(name)) = (pod.metadata.namespace, pod.metadata.name) else {
                continue;
            };
            Api::<Pod>::namespaced(client.clone(), &ns)
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await
                .ok();
        }
        let socket = self.paths.containerd_socket().display().to_string();
        while std::time::Instant::now() < deadline {
            let tasks = net::run(
                "ctr",
                &["--address", &socket, "-n", "k8s.io", "tasks", "ls", "-q"],
            )?;
            if tasks.trim().is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("containers still running after 30s")
    }
}

struct Kubeconfigs {
    controller_manager: PathBuf,
    kubelet: PathBuf,
    scheduler: PathBuf,
    proxy: PathBuf,
}

/// Whether the Node reports `Ready`.
pub async fn node_ready(client: &kube::Client) -> Result<bool> {
    let node = Api::<KubeNode>::all(client.clone())
        .get_opt(NODE_NAME)
        .await?;
    Ok(node
        .and_then(|n| n.status)
        .and_then(|s| s.conditions)
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
}

/// Stops what a killed owner left in `dir`: the recorded processes, then containers (through
/// `runc` with the node's own state root), shims and everything else whose command line names
/// the directory; then [`net::teardown`]. Does nothing but the network check when nothing is
/// left.
pub async fn stop_leftovers(dir: &Path) -> Result<()> {
    if let Ok(old) = NodeInfo::load(dir) {
        let needle = format!("{}/", dir.display());
        if old.owner_pid != std::process::id()
            && process::cmdline_contains(old.owner_pid, "devstack")
        {
            process::terminate_pid(old.owner_pid, STOP_GRACE * 6).await?;
        }
        for pid in old.pids {
            if process::cmdline_contains(pid, &needle) {
                process::terminate_pid(pid, STOP_GRACE).await?;
            }
        }
        let _ = std::fs::remove_file(dir.join(NODE_JSON));
    }
    cleanup(dir).await
}

/// Removes containers and shims of the node in `dir`, then undoes its network changes.
async fn cleanup(dir: &Path) -> Result<()> {
    let runc_root = dir.join("runc/k8s.io");
    if runc_root.is_dir() {
        let root = runc_root.display().to_string();
        let list = net::run("runc", &["--root", &root, "list", "-q"]).unwrap_or_default();
        for id in list.lines().filter(|l| !l.is_empty()) {
            let _ = net::run("runc", &["--root", &root, "delete", "--force", id]);
        }
    }
    // With the slash: `<stack>/node-ready` (the owner's ready file) is not inside the node.
    let needle = format!("{}/", dir.display());
    for pid in pids_mentioning(&needle) {
        process::terminate_pid(pid, STOP_GRACE).await?;
    }
    let proxy = Tool::KubeProxy.built();
    net::teardown(dir, proxy.as_deref())
}

/// Processes (not this one) whose command line contains `needle`: containerd shims started
/// with the node's socket address.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && process::cmdline_contains(pid, needle))
        .collect()
}
