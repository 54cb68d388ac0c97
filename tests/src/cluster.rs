//! The control plane shared by every integration test of a run, and per-test namespaces.
//!
//! One `devstack` process owns the stack for the whole run: test binaries run one after the
//! other and threads within a binary run in parallel, so the stack cannot belong to any of
//! them. A file lock in the state directory serialises "find a healthy stack or start one" and
//! the CRD installation across processes; within a process a `OnceCell` does it once.
//!
//! kube-rs clients are tied to the tokio runtime they were created on and every
//! `#[tokio::test]` has its own runtime, so the shared value holds only configuration and each
//! test gets fresh clients.

use std::future::Future;
use std::os::unix::process::CommandExt as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Event, Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt as _};
use rand::Rng as _;
use tokio::sync::OnceCell;

use crate::fsutil::tail;
use crate::stack::StackInfo;

/// Environment variable naming the shared state directory.
pub const STACK_DIR_ENV: &str = "PORTCULLIS_STACK_DIR";
/// Environment variable naming the `devstack` binary to spawn.
pub const DEVSTACK_BIN_ENV: &str = "PORTCULLIS_DEVSTACK_BIN";
/// Label on every test namespace, so leftovers are easy to find and delete:
/// `kubectl delete ns -l portcullis.dev/test`.
pub const TEST_NAMESPACE_LABEL: &str = "portcullis.dev/test";
/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "portcullis-tests";

const START_TIMEOUT: Duration = Duration::from_secs(300);
const LOCK_TIMEOUT: Duration = Duration::from_secs(420);

static SHARED: OnceCell<TestCluster> = OnceCell::const_new();

/// The shared control plane, as seen by one test process.
#[derive(Debug)]
pub struct TestCluster {
    info: StackInfo,
}

impl TestCluster {
    /// The cluster of this test run; starts it on first use. Panics with the full error chain
    /// (including the tail of the failing component's log) if it cannot be started.
    pub async fn shared() -> &'static TestCluster {
        match Self::try_shared().await {
            Ok(cluster) => cluster,
            Err(e) => panic!("portcullis test cluster unavailable: {e:#}"),
        }
    }

    /// Like [`TestCluster::shared`], returning the error.
    pub async fn try_shared() -> Result<&'static TestCluster> {
        SHARED.get_or_try_init(init).await
    }

    /// `stack.json` of the running stack.
    pub fn info(&self) -> &StackInfo {
        &self.info
    }

    /// A new admin client, bound to the calling test's runtime.
    pub async fn client(&self) -> Result<Client> {
        self.info.client().await
    }

    /// Creates a namespace `<name>-<random>` labelled [`TEST_NAMESPACE_LABEL`] and waits for
    /// its `default` ServiceAccount, so the namespace is usable like a real one.
    pub async fn namespace(&self, name: &str) -> Result<TestNamespace> {
        let client = self.client().await?;
        let ns_name = unique_name(name);
        let test_name = sanitize(name, 63).trim_matches('-').to_owned();
        let labels = [
            (TEST_NAMESPACE_LABEL, "true"),
            ("portcullis.dev/test-name", test_name.as_str()),
        ];
        create_namespace(&client, &ns_name, &labels).await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns_name);
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "ServiceAccount {ns_name}/default not created within 30s; controller manager log:\n{}",
                tail(&self.info.controller_manager.log, 30)
            )
        })?
        .context("watching ServiceAccounts")?;
        Ok(TestNamespace {
            name: ns_name,
            client,
        })
    }

    /// Runs `test` with a fresh namespace and deletes the namespace afterwards. If the test
    /// panics or returns `Err`, prints diagnostics (objects in the namespace, its events, the
    /// end of the API server log) to stderr first, then lets the failure through.
    pub async fn with_temp_ns<F, Fut, T>(&self, name: &str, test: F) -> T
    where
        F: FnOnce(Client, String) -> Fut,
        Fut: Future<Output = T>,
        T: Outcome,
    {
        let ns = match self.namespace(name).await {
            Ok(ns) => ns,
            Err(e) => panic!("creating a test namespace for {name}: {e:#}"),
        };
        let result = AssertUnwindSafe(test(ns.client(), ns.name().to_owned()))
            .catch_unwind()
            .await;
        let failed = result.as_ref().map_or(true, Outcome::failed);
        if failed {
            eprintln!("{}", self.diagnostics(ns.name()).await);
        }
        if let Err(e) = ns.cleanup().await {
            eprintln!("warning: {e:#}");
        }
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A report for a failed test: every object in the namespace, its events and the end of
    /// the API server log. Never fails; errors are part of the report.
    pub async fn diagnostics(&self, namespace: &str) -> String {
        let mut out = format!("===== diagnostics for namespace {namespace} =====\n");
        match self.client().await {
            Ok(client) => {
                out += &list_objects(&client, namespace)
                    .await
                    .unwrap_or_else(|e| format!("listing objects failed: {e:#}\n"));
                out += &list_events(&client, namespace)
                    .await
                    .unwrap_or_else(|e| format!("listing events failed: {e:#}\n"));
            }
            Err(e) => out += &format!("no client: {e:#}\n"),
        }
        out += &format!(
            "----- last lines of {} -----\n{}\n",
            self.info.apiserver.log.display(),
            tail(&self.info.apiserver.log, 40)
        );
        out
    }
}

/// [`TestCluster::with_temp_ns`] on the shared cluster.
pub async fn with_temp_ns<F, Fut, T>(name: &str, test: F) -> T
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = T>,
    T: Outcome,
{
    TestCluster::shared().await.with_temp_ns(name, test).await
}

/// Whether a test body's result counts as a failure (for diagnostics).
pub trait Outcome {
    /// `true` for a failed test.
    fn failed(&self) -> bool;
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
    }
}

impl<T, E> Outcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}

/// A namespace owned by one test.
#[derive(Clone)]
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    /// The namespace name (`<test name>-<random>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client (created on the test's runtime).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Deletes the namespace without waiting for it to disappear.
    pub async fn cleanup(self) -> Result<()> {
        match Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting namespace {}", self.name)),
        }
    }

    /// Deletes the namespace and waits until the namespace controller has removed it.
    pub async fn delete_and_wait(self, timeout: Duration) -> Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        let name = self.name.clone();
        let Some(uid) = api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading namespace {name}"))?
            .and_then(|ns| ns.metadata.uid)
        else {
            return Ok(());
        };
        self.cleanup().await?;
        tokio::time::timeout(
            timeout,
            await_condition(api, &name, conditions::is_deleted(&uid)),
        )
        .await
        .map_err(|_| anyhow!("namespace {name} still exists after {timeout:?}"))?
        .context("watching namespace")?;
        Ok(())
    }
}

/// Installs the Portcullis CRDs by server-side apply and waits until they are `Established`.
/// Idempotent: the same objects are applied by `devstack up` and by every test process.
/// A control plane of a test's own (for tests that restart or tamper with it, which the shared
/// one must never see), with the CRDs installed and `namespace` created.
pub async fn private_stack(
    dir: &std::path::Path,
    namespace: &str,
) -> Result<(crate::stack::Stack, Client)> {
    let stack = crate::stack::Stack::start(crate::StackConfig::new(dir.to_path_buf())).await?;
    let client = stack.client().await?;
    install_crds(&client).await?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(namespace.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    Ok((stack, client))
}

/// Creates namespace `name` with `labels` (none: no `labels` field). Tests use
/// [`TestCluster::namespace`], which labels and cleans up; benchmarks on a private control
/// plane call this directly.
pub async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) -> Result<()> {
    let labels = (!labels.is_empty()).then(|| {
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    });
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels,
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for (_, crd) in portcullis_crds::crds() {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| anyhow!("CRD {name} not Established within 30s"))?
        .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

/// The state directory of the shared stack: `$PORTCULLIS_STACK_DIR`, else
/// `<workspace>/target/portcullis-stack`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os(STACK_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_target_dir().join("portcullis-stack"))
}

/// `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn workspace_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // This crate lives in <workspace>/tests.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("target")
}

async fn init() -> Result<TestCluster> {
    crate::install_crypto_provider();
    let dir = default_state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock_file(&dir, ".lock").await?;
    let info = match StackInfo::load(&dir) {
        Ok(info) if info.healthy().await => info,
        _ => start_devstack(&dir).await?,
    };
    install_crds(&info.client().await?).await?;
    Ok(TestCluster { info })
}

/// Takes the exclusive lock file `name` in the state directory, polling so the wait is bounded.
pub(crate) async fn lock_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                bail!("{} still locked after {LOCK_TIMEOUT:?}", path.display())
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

/// Spawns `devstack up` detached and waits for its ready file.
async fn start_devstack(dir: &Path) -> Result<StackInfo> {
    crate::stack::stop_leftovers(dir).await?;
    spawn_devstack(dir, "up", "ready", "devstack.log", START_TIMEOUT).await?;
    StackInfo::load(dir)
}

/// Spawns `devstack <subcommand> --state-dir DIR --detach-ready-file DIR/<ready>` detached (its
/// own process group, so Ctrl-C on the test run does not take the shared stack down half-way)
/// and waits until the ready file exists; the output goes to `DIR/<log>`.
pub(crate) async fn spawn_devstack(
    dir: &Path,
    subcommand: &str,
    ready: &str,
    log: &str,
    timeout: Duration,
) -> Result<()> {
    let ready = dir.join(ready);
    let _ = std::fs::remove_file(&ready);
    let bin = devstack_bin()?;
    let log_path = dir.join(log);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new(&bin)
        .arg(subcommand)
        .arg("--state-dir")
        .arg(dir)
        .arg("--detach-ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating log handle")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + timeout;
    while !ready.exists() {
        if let Some(status) = child.try_wait().context("polling devstack")? {
            bail!(
                "devstack {subcommand} exited with {status} before it was ready; last lines of {}:\n{}",
                log_path.display(),
                tail(&log_path, 60)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "devstack {subcommand} not ready after {timeout:?}; last lines of {}:\n{}",
                log_path.display(),
                tail(&log_path, 60)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The child is deliberately not waited for: it outlives this process and is stopped by
    // `devstack down`.
    drop(child);
    Ok(())
}

/// `$PORTCULLIS_DEVSTACK_BIN`, else `devstack` next to the running test binary's profile
/// directory (`target/<profile>/devstack`, built by `cargo test -p portcullis-tests` or
/// `cargo build -p portcullis-tests --bin devstack`).
fn devstack_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(DEVSTACK_BIN_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    crate::fsutil::sibling_binary("devstack").with_context(|| {
        format!("run `cargo build -p portcullis-tests --bin devstack` or set {DEVSTACK_BIN_ENV}")
    })
}

/// `<name>-<6 random chars>`, a valid namespace name (DNS label).
fn unique_name(name: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let base = sanitize(name, 63 - 7);
    let base = base.trim_matches('-');
    if base.is_empty() {
        format!("test-{suffix}")
    } else {
        format!("{base}-{suffix}")
    }
}

fn sanitize(name: &str, max: usize) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect()
}

async fn list_objects(client: &Client, namespace: &str) -> Result<String> {
    use kube::discovery::{Discovery, Scope, verbs};
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discovery")?;
    let mut out = String::from("----- objects -----\n");
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            if ar.kind == "Event" {
                continue;
            }
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &ar);
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    for obj in list.items {
                        out += &format!("{}/{} {}\n", ar.api_version, ar.kind, obj.name_any());
                    }
                }
                Err(e) => out += &format!("{} list failed: {e}\n", ar.kind),
            }
        }
    }
    Ok(out)
}

async fn list_events(client: &Client, namespace: &str) -> Result<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut events = api
        .list(&ListParams::default())
        .await
        .context("listing events")?
        .items;
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
    });
    let mut out = String::from("----- events -----\n");
    for e in events.iter().rev().take(30).rev() {
        out += &format!(
            "{} {} {}/{}: {}\n",
            e.type_.as_deref().unwrap_or("?"),
            e.reason.as_deref().unwrap_or("?"),
            e.involved_object.kind.as_deref().unwrap_or("?"),
            e.involved_object.name.as_deref().unwrap_or("?"),
            e.message.as_deref().unwrap_or("")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_valid_dns_labels() {
        for input in ["My_Test::case", "---", &"x".repeat(100), "ok"] {
            let name = unique_name(input);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
