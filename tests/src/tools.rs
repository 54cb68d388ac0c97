//! Finds the real third-party binaries the stack runs.
//!
//! The binaries are built from their published sources by `hack/build-tools.sh` into a cache
//! outside the repository, so the harness never runs fakes and never downloads anything itself.

use std::path::{Path, PathBuf};

/// Environment variable naming the tools cache; the binaries live in its `bin/` folder.
pub const TOOLS_ENV: &str = "PORTCULLIS_TOOLS";

/// A third-party binary the stack starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// etcd v3.6, the API server's storage.
    Etcd,
    /// kube-apiserver v1.34.
    KubeApiserver,
    /// kube-controller-manager v1.34, for namespace deletion, garbage collection and
    /// ServiceAccounts.
    KubeControllerManager,
    /// Dex v2.45.1, the OpenID Connect provider.
    Dex,
    /// kubectl at the API server's version (the machine's own may be skewed).
    Kubectl,
    /// Helm v3, for the chart tests.
    Helm,
    /// kubelet v1.34, the node's agent (only tests that need pods).
    Kubelet,
    /// kube-scheduler v1.34.
    KubeScheduler,
    /// kube-proxy v1.34 (iptables mode).
    KubeProxy,
    /// CoreDNS v1.15, the node's cluster DNS (runs as a pod).
    Coredns,
    /// actionlint, which checks the release workflow.
    Actionlint,
    /// Jaeger v2, the OTLP receiver (with a query API) of the trace tests.
    Jaeger,
    /// Traefik v3, the ingress controller of the in-cluster tests.
    Traefik,
    /// nginx from Debian's package, the other ingress of the in-cluster tests.
    Nginx,
    /// Keycloak 26, the second OpenID Connect provider (a launcher for its `kc.sh`; only the
    /// tests that need it start it).
    Keycloak,
}

/// A binary is missing from the tools cache.
#[derive(Debug, thiserror::Error)]
#[error(
    "{binary} not found at {path}: run `hack/build-tools.sh {binary}` from the repository root \
     (binaries are looked up in ${TOOLS_ENV}/bin, default ~/.cache/portcullis-tools/bin)"
)]
pub struct MissingTool {
    /// File name of the binary.
    pub binary: &'static str,
    /// Where it was expected.
    pub path: PathBuf,
}

impl Tool {
    /// Every tool the stack needs, in start order.
    pub const ALL: [Tool; 4] = [
        Tool::Etcd,
        Tool::KubeApiserver,
        Tool::KubeControllerManager,
        Tool::Dex,
    ];

    /// The binary's file name, which is also its `hack/build-tools.sh` target.
    pub fn binary(self) -> &'static str {
        match self {
            Tool::Etcd => "etcd",
            Tool::KubeApiserver => "kube-apiserver",
            Tool::KubeControllerManager => "kube-controller-manager",
            Tool::Dex => "dex",
            Tool::Kubectl => "kubectl",
            Tool::Helm => "helm",
            Tool::Kubelet => "kubelet",
            Tool::KubeScheduler => "kube-scheduler",
            Tool::KubeProxy => "kube-proxy",
            Tool::Coredns => "coredns",
            Tool::Actionlint => "actionlint",
            Tool::Jaeger => "jaeger",
            Tool::Traefik => "traefik",
            Tool::Nginx => "nginx",
            Tool::Keycloak => "keycloak",
        }
    }

    /// Absolute path of the binary, or an error that says how to build it.
    pub fn path(self) -> Result<PathBuf, MissingTool> {
        let path = bin_dir().join(self.binary());
        if path.is_file() {
            Ok(path)
        } else {
            Err(MissingTool {
                binary: self.binary(),
                path,
            })
        }
    }
}

/// The folder holding the binaries: `$PORTCULLIS_TOOLS/bin`, else
/// `$XDG_CACHE_HOME/portcullis-tools/bin`, else `~/.cache/portcullis-tools/bin` (the same rule
/// `hack/build-tools.sh` uses).
pub fn bin_dir() -> PathBuf {
    let root = std::env::var_os(TOOLS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("portcullis-tools")
        });
    root.join("bin")
}

/// Runs `helm` with `args` against the cluster of `kubeconfig`, with Helm's cache, config and
/// data folders under `scratch` (nothing of the machine's own Helm setup is read or written);
/// returns its output, or fails with it.
pub fn helm(args: &[&str], kubeconfig: &Path, scratch: &Path) -> anyhow::Result<String> {
    use anyhow::{Context as _, ensure};
    let out = std::process::Command::new(Tool::Helm.path()?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", scratch.join("helm/cache"))
        .env("HELM_CONFIG_HOME", scratch.join("helm/config"))
        .env("HELM_DATA_HOME", scratch.join("helm/data"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("running helm")?;
    ensure!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace's root folder (the checkout).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
