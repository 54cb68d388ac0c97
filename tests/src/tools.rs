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

    /// Absolute path of the binary, or an error that says how to build it. While
    /// `hack/test.sh` is still building the later tools beside the tests (the file named by
    /// [`PENDING_ENV`] exists), a missing binary is waited for.
    pub fn path(self) -> Result<PathBuf, MissingTool> {
        let path = bin_dir().join(self.binary());
        wait_while_building(&path);
        self.built().ok_or(MissingTool {
            binary: self.binary(),
            path,
        })
    }

    /// The binary's path if it is built now, never waiting (for a teardown, which only
    /// follows a start that had it).
    pub fn built(self) -> Option<PathBuf> {
        Some(bin_dir().join(self.binary())).filter(|p| p.is_file())
    }
}

/// Environment variable naming a file that exists while `hack/test.sh` builds the `rest`
/// group of `hack/build-tools.sh` beside the tests (it removes the file when that build ends,
/// built or failed).
pub const PENDING_ENV: &str = "PORTCULLIS_TOOLS_PENDING";

/// The longest a test waits for a tool still being built (Traefik, the last, takes about a
/// quarter of an hour from nothing on two CPUs).
const MAX_TOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Blocks while `binary` is missing and the tools build of `hack/test.sh` is still running.
/// `go build -o` moves the finished binary into place, so once it exists it is whole.
fn wait_while_building(binary: &Path) {
    let pending = std::env::var_os(PENDING_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(pending) = pending {
        wait_for(
            binary,
            &pending,
            MAX_TOOL_WAIT,
            std::time::Duration::from_secs(1),
        );
    }
}

/// Blocks until `binary` exists, `pending` does not, or `max` has passed, looking every `every`.
fn wait_for(binary: &Path, pending: &Path, max: std::time::Duration, every: std::time::Duration) {
    let started = std::time::Instant::now();
    let mut said = false;
    while !binary.is_file() && pending.exists() && started.elapsed() < max {
        if !said {
            eprintln!("waiting for {} (still being built)", binary.display());
            said = true;
        }
        std::thread::sleep(every);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const LONG: Duration = Duration::from_secs(30);
    const TICK: Duration = Duration::from_millis(10);

    /// An empty scratch folder of its own for test `name`.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portcullis-tools-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// Runs `step` on another thread after 200 ms: the build, finishing or failing.
    fn a_moment_later(step: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            step();
        })
    }

    #[test]
    fn a_missing_tool_is_waited_for_until_it_is_built() {
        let dir = scratch("built");
        let (binary, pending) = (dir.join("traefik"), dir.join("pending"));
        std::fs::write(&pending, "").expect("pending");
        let built = binary.clone();
        let builder = a_moment_later(move || std::fs::write(built, "built").expect("binary"));
        wait_for(&binary, &pending, LONG, TICK);
        assert!(binary.is_file());
        builder.join().expect("builder");
    }

    #[test]
    fn a_failed_build_ends_the_wait_with_the_tool_still_missing() {
        let dir = scratch("failed");
        let (binary, pending) = (dir.join("traefik"), dir.join("pending"));
        std::fs::write(&pending, "").expect("pending");
        let ended = pending.clone();
        let builder = a_moment_later(move || std::fs::remove_file(ended).expect("build ended"));
        let started = Instant::now();
        wait_for(&binary, &pending, LONG, TICK);
        assert!(!binary.is_file());
        assert!(started.elapsed() < LONG);
        builder.join().expect("builder");
    }

    #[test]
    fn without_a_build_running_nothing_is_waited_for() {
        let dir = scratch("idle");
        let started = Instant::now();
        wait_for(&dir.join("traefik"), &dir.join("pending"), LONG, TICK);
        assert!(started.elapsed() < LONG);
    }
}
