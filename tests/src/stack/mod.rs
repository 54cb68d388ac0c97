//! One control plane: etcd, kube-apiserver, kube-controller-manager and Dex as child processes
//! of the process that owns the [`Stack`] (normally `devstack`).
//!
//! Each component keeps its own handle so tests of outages can stop and restart one of them;
//! etcd keeps its data across an API server restart. Everything the stack writes lives in its
//! state directory, described to other processes by `stack.json`.

pub(crate) mod components;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::dex::{self, DexInfo};
use crate::fsutil::{write_private, write_public};
use crate::pki::{self, Pki};
use crate::process::{self, ManagedProcess, STOP_GRACE, free_port};

pub use components::{CONTROLLERS, SERVICE_CLUSTER_IP_RANGE};

/// File name of the stack description in the state directory.
pub const STACK_JSON: &str = "stack.json";

/// What to start.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Where certificates, data, logs, kubeconfig and `stack.json` go.
    pub state_dir: PathBuf,
    /// Fixed etcd client port; free port when `None`.
    pub etcd_port: Option<u16>,
    /// Fixed API server port (the demo pins it); free port when `None`.
    pub apiserver_port: Option<u16>,
    /// Fixed Dex port; free port when `None`.
    pub dex_port: Option<u16>,
    /// Redirect URIs of the static `portcullis` client, besides
    /// [`dex::HARNESS_REDIRECT_URI`] which is always registered.
    pub redirect_uris: Vec<String>,
    /// Extra DNS names / IPs in the API server and Dex serving certificates.
    pub extra_dns_names: Vec<String>,
    /// Deadline for each component to become ready.
    pub ready_timeout: Duration,
    /// Whether Dex runs the trusted-header connector (see [`DexInfo::trusted_header`]): on for
    /// the test stacks, off for the demo.
    pub trusted_header: bool,
}

impl StackConfig {
    /// Free ports, no extra redirect URIs, a 120 s readiness deadline per component (the API
    /// server's first start on a loaded 2-core machine takes tens of seconds).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        StackConfig {
            state_dir: state_dir.into(),
            etcd_port: None,
            apiserver_port: None,
            dex_port: None,
            redirect_uris: Vec::new(),
            extra_dns_names: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            trusted_header: true,
        }
    }
}

/// Ports of one stack, all on 127.0.0.1.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    /// etcd client port (plain HTTP).
    pub etcd: u16,
    /// etcd peer port (plain HTTP, single member).
    pub etcd_peer: u16,
    /// API server (HTTPS).
    pub apiserver: u16,
    /// Dex (HTTPS).
    pub dex: u16,
}

/// Where things live in the state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) pki: PathBuf,
    pub(crate) etcd_data: PathBuf,
    pub(crate) logs: PathBuf,
    pub(crate) kcm_kubeconfig: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        Layout {
            root: root.to_owned(),
            pki: root.join("pki"),
            etcd_data: root.join("etcd-data"),
            logs: root.join("logs"),
            kcm_kubeconfig: root.join("controller-manager.kubeconfig"),
        }
    }

    fn log(&self, component: &str) -> PathBuf {
        self.logs.join(format!("{component}.log"))
    }
}

/// A running component as recorded in `stack.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Where it serves, if it serves anything.
    pub url: Option<String>,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Its stdout/stderr.
    pub log: PathBuf,
}

/// Everything another process needs to use a running stack: the content of `stack.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackInfo {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The process owning the stack (`devstack up`); stopping it stops everything.
    pub owner_pid: u32,
    /// The ports.
    pub ports: Ports,
    /// Admin kubeconfig (CN=portcullis-admin, O=system:masters).
    pub kubeconfig: PathBuf,
    /// The CA certificate every component's serving certificate chains to.
    pub ca_file: PathBuf,
    /// The admin client certificate and key.
    pub admin: pki::CertFiles,
    /// etcd (`http://127.0.0.1:PORT`).
    pub etcd: ComponentInfo,
    /// kube-apiserver (`https://127.0.0.1:PORT`).
    pub apiserver: ComponentInfo,
    /// kube-controller-manager (serves nothing).
    pub controller_manager: ComponentInfo,
    /// Dex (url = issuer).
    pub dex_process: ComponentInfo,
    /// Dex issuer, client and users.
    pub dex: DexInfo,
}

impl StackInfo {
    /// Reads `stack.json` from a state directory.
    pub fn load(state_dir: &Path) -> Result<StackInfo> {
        let path = state_dir.join(STACK_JSON);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// The API server URL.
    pub fn apiserver_url(&self) -> &str {
        self.apiserver.url.as_deref().unwrap_or_default()
    }

    /// A kube-rs configuration for the admin user.
    pub async fn kube_config(&self) -> Result<kube::Config> {
        crate::kubeconfig::client_config(&self.kubeconfig).await
    }

    /// A kube-rs client for the admin user. Create one per tokio runtime: a client's
    /// connection pool belongs to the runtime it was created on.
    pub async fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.kube_config().await?).context("building kube client")
    }

    /// Pids of every component still recorded as running.
    pub fn component_pids(&self) -> Vec<u32> {
        [
            &self.dex_process,
            &self.controller_manager,
            &self.apiserver,
            &self.etcd,
        ]
        .iter()
        .filter_map(|c| c.pid)
        .collect()
    }

    /// Whether the stack answers: owner alive, API server ready, Dex discovery served.
    pub async fn healthy(&self) -> bool {
        if !process::pid_alive(self.owner_pid) {
            return false;
        }
        let layout = Layout::new(&self.state_dir);
        let Ok(admin) = components::admin_http_client(&layout) else {
            return false;
        };
        let api = components::apiserver_ready(&admin, self.apiserver_url()).await;
        let dex = components::dex_ready(&admin, &self.dex.issuer).await;
        matches!((api, dex), (Ok(true), Ok(true)))
    }

    /// Shell exports for using the stack from a terminal.
    pub fn shell_exports(&self) -> String {
        let q = |p: &Path| shell_quote(&p.display().to_string());
        format!(
            "export KUBECONFIG={}\nexport PORTCULLIS_STACK_DIR={}\nexport PORTCULLIS_DEX_ISSUER={}\nexport PORTCULLIS_DEX_CLIENT_ID={}\nexport PORTCULLIS_DEX_CLIENT_SECRET_FILE={}\nexport PORTCULLIS_CA_FILE={}\n",
            q(&self.kubeconfig),
            q(&self.state_dir),
            shell_quote(&self.dex.issuer),
            shell_quote(&self.dex.client_id),
            q(&self.dex.client_secret_file),
            q(&self.ca_file),
        )
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A running control plane. Dropping it kills every component (SIGTERM, then SIGKILL).
pub struct Stack {
    layout: Layout,
    ports: Ports,
    ready_timeout: Duration,
    dex_config: PathBuf,
    client_secret: String,
    // Field order is drop order: clients of etcd go first.
    dex: Option<ManagedProcess>,
    controller_manager: Option<ManagedProcess>,
    apiserver: Option<ManagedProcess>,
    etcd: Option<ManagedProcess>,
    info: StackInfo,
}

impl Stack {
    /// Starts a fresh stack: new CA, empty etcd, every component ready before it returns.
    ///
    /// A stack recorded in the same state directory whose processes still run (left over by a
    /// killed owner) is stopped first, so ports and the etcd data directory are free.
    pub async fn start(config: StackConfig) -> Result<Stack> {
        crate::install_crypto_provider();
        let layout = Layout::new(&config.state_dir);
        std::fs::create_dir_all(&layout.root)
            .with_context(|| format!("creating {}", layout.root.display()))?;
        stop_leftovers(&layout.root).await?;
        for dir in [&layout.pki, &layout.etcd_data, &layout.logs] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("removing old {}", dir.display()))?;
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for tool in crate::tools::Tool::ALL {
            tool.path()?;
        }

        let ports = Ports {
            etcd: config.etcd_port.map_or_else(free_port, Ok)?,
            etcd_peer: free_port()?,
            apiserver: config.apiserver_port.map_or_else(free_port, Ok)?,
            dex: config.dex_port.map_or_else(free_port, Ok)?,
        };

        let pki = Pki::generate(&layout.pki)?;
        let mut api_names = vec![
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            pki::KUBERNETES_SERVICE_IP.to_string(),
        ];
        api_names.extend(config.extra_dns_names.iter().cloned());
        pki.issue_serving("apiserver", &api_names)?;
        let dex_tls = pki.issue_serving("dex", &config.extra_dns_names)?;
        let admin = pki.issue_client("admin", pki::ADMIN_CN, &[pki::ADMIN_GROUP])?;
        let kcm = pki.issue_client("controller-manager", "system:kube-controller-manager", &[])?;
        pki.service_account_keys()?;

        let apiserver_url = components::apiserver_url(&ports);
        let kubeconfig = layout.root.join("kubeconfig");
        crate::kubeconfig::write(&kubeconfig, &apiserver_url, &pki.ca_cert_path(), &admin)?;
        crate::kubeconfig::write(
            &layout.kcm_kubeconfig,
            &apiserver_url,
            &pki.ca_cert_path(),
            &kcm,
        )?;

        let dex_dir = layout.root.join("dex");
        std::fs::create_dir_all(&dex_dir).context("creating dex dir")?;
        let client_secret = dex::random_token();
        let client_secret_file = dex_dir.join("client-secret");
        write_private(&client_secret_file, client_secret.as_bytes())?;
        let mut redirect_uris = vec![dex::HARNESS_REDIRECT_URI.to_owned()];
        redirect_uris.extend(config.redirect_uris.iter().cloned());
        let issuer = components::dex_issuer(&ports);
        let dex_info = DexInfo {
            issuer: issuer.clone(),
            client_id: dex::CLIENT_ID.to_owned(),
            client_secret_file,
            ca_file: pki.ca_cert_path(),
            redirect_uris,
            users: dex::default_users(),
            trusted_header: config.trusted_header,
        };
        let dex_config = dex_dir.join("config.yaml");
        dex::write_config(
            &dex_config,
            &issuer,
            &format!("127.0.0.1:{}", ports.dex),
            &dex_tls,
            &dex_info,
        )?;

        let component = |name: &str, url: Option<String>| ComponentInfo {
            url,
            pid: None,
            log: layout.log(name),
        };
        let info = StackInfo {
            state_dir: layout.root.clone(),
            owner_pid: std::process::id(),
            ports,
            kubeconfig,
            ca_file: pki.ca_cert_path(),
            admin,
            etcd: component("etcd", Some(format!("http://127.0.0.1:{}", ports.etcd))),
            apiserver: component("kube-apiserver", Some(apiserver_url)),
            controller_manager: component("kube-controller-manager", None),
            dex_process: component("dex", Some(issuer)),
            dex: dex_info,
        };
        let mut stack = Stack {
            layout,
            ports,
            ready_timeout: config.ready_timeout,
            dex_config,
            client_secret,
            dex: None,
            controller_manager: None,
            apiserver: None,
            etcd: None,
            info,
        };
        stack.start_etcd().await?;
        stack.start_apiserver().await?;
        // Dex and the controller manager are independent; start Dex while the controller
        // manager's informers sync.
        stack.spawn_controller_manager()?;
        stack.start_dex().await?;
        stack.wait_controller_manager().await?;
        stack.write_info()?;
        Ok(stack)
    }

    /// What `stack.json` says.
    pub fn info(&self) -> &StackInfo {
        &self.info
    }

    /// The ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// An admin kube-rs client (one per tokio runtime).
    pub async fn client(&self) -> Result<kube::Client> {
        self.info.client().await
    }

    async fn start_etcd(&mut self) -> Result<()> {
        let cmd = components::etcd(&self.layout, &self.ports)?;
        let mut proc = ManagedProcess::spawn("etcd", cmd, &self.layout.log("etcd"))?;
        let ports = self.ports;
        proc.wait_ready("GET /health", self.ready_timeout, || {
            components::etcd_healthy(&ports)
        })
        .await?;
        self.info.etcd.pid = proc.pid();
        self.etcd = Some(proc);
        Ok(())
    }

    /// Starts the API server (if stopped) and waits for `/readyz`.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        let cmd = components::apiserver(&self.layout, &self.ports)?;
        let mut proc =
            ManagedProcess::spawn("kube-apiserver", cmd, &self.layout.log("kube-apiserver"))?;
        let admin = components::admin_http_client(&self.layout)?;
        let url = components::apiserver_url(&self.ports);
        proc.wait_ready("GET /readyz", self.ready_timeout, || {
            components::apiserver_ready(&admin, &url)
        })
        .await?;
        self.info.apiserver.pid = proc.pid();
        self.apiserver = Some(proc);
        self.write_info()
    }

    /// Stops the API server; etcd keeps its data, so a later start sees every object.
    pub async fn stop_apiserver(&mut self) -> Result<()> {
        if let Some(mut proc) = self.apiserver.take() {
            proc.stop(STOP_GRACE).await?;
        }
        self.info.apiserver.pid = None;
        self.write_info()
    }

    /// Stops and starts the API server on the same port with the same data.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.stop_apiserver().await?;
        self.start_apiserver().await
    }

    fn spawn_controller_manager(&mut self) -> Result<()> {
        let cmd = components::controller_manager(&self.layout)?;
        let log = self.layout.log("kube-controller-manager");
        let proc = ManagedProcess::spawn("kube-controller-manager", cmd, &log)?;
        self.info.controller_manager.pid = proc.pid();
        self.controller_manager = Some(proc);
        Ok(())
    }

    /// The controller manager has no endpoint of its own; it is ready when the ServiceAccount
    /// controller has created `default/default`.
    async fn wait_controller_manager(&mut self) -> Result<()> {
        let client = self.client().await?;
        let Some(proc) = self.controller_manager.as_mut() else {
            bail!("controller manager not started");
        };
        let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client, "default");
        proc.wait_ready(
            "ServiceAccount default/default created",
            self.ready_timeout,
            || {
                let api = api.clone();
                async move { Ok(api.get_opt("default").await?.is_some()) }
            },
        )
        .await
    }

    /// Starts the controller manager (if stopped) and waits until it works.
    pub async fn start_controller_manager(&mut self) -> Result<()> {
        if self.controller_manager.is_some() {
            return Ok(());
        }
        self.spawn_controller_manager()?;
        self.wait_controller_manager().await?;
        self.write_info()
    }

    /// Stops the controller manager: namespaces then stay `Terminating`.
    pub async fn stop_controller_manager(&mut self) -> Result<()> {
        if let Some(mut proc) = self.controller_manager.take() {
            proc.stop(STOP_GRACE).await?;
        }
        self.info.controller_manager.pid = None;
        self.write_info()
    }

    /// Starts Dex (if stopped) and waits for its discovery document. Dex's storage is in
    /// memory: a restart forgets sessions and refresh tokens and rotates signing keys, like an
    /// IdP losing state.
    pub async fn start_dex(&mut self) -> Result<()> {
        if self.dex.is_some() {
            return Ok(());
        }
        let cmd = components::dex(&self.dex_config, &self.client_secret)?;
        let mut proc = ManagedProcess::spawn("dex", cmd, &self.layout.log("dex"))?;
        let client = self.info.dex.http_client()?;
        let issuer = self.info.dex.issuer.clone();
        proc.wait_ready(
            "GET /.well-known/openid-configuration",
            self.ready_timeout,
            || components::dex_ready(&client, &issuer),
        )
        .await?;
        self.info.dex_process.pid = proc.pid();
        self.dex = Some(proc);
        self.write_info()
    }

    /// Stops Dex, e.g. to test an IdP outage.
    pub async fn stop_dex(&mut self) -> Result<()> {
        if let Some(mut proc) = self.dex.take() {
            proc.stop(STOP_GRACE).await?;
        }
        self.info.dex_process.pid = None;
        self.write_info()
    }

    /// Stops and starts Dex on the same port.
    pub async fn restart_dex(&mut self) -> Result<()> {
        self.stop_dex().await?;
        self.start_dex().await
    }

    /// Fails with the log tail of the first component that has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        for proc in [
            &mut self.etcd,
            &mut self.apiserver,
            &mut self.controller_manager,
            &mut self.dex,
        ]
        .into_iter()
        .flatten()
        {
            proc.ensure_running()?;
        }
        Ok(())
    }

    /// Stops every component, clients before etcd, and marks the stack stopped in
    /// `stack.json`.
    pub async fn stop(mut self) -> Result<()> {
        let mut first_error = None;
        for slot in [
            &mut self.dex,
            &mut self.controller_manager,
            &mut self.apiserver,
            &mut self.etcd,
        ] {
            if let Some(mut proc) = slot.take()
                && let Err(e) = proc.stop(STOP_GRACE).await
            {
                first_error.get_or_insert(e);
            }
        }
        for c in [
            &mut self.info.dex_process,
            &mut self.info.controller_manager,
            &mut self.info.apiserver,
            &mut self.info.etcd,
        ] {
            c.pid = None;
        }
        self.write_info()?;
        first_error.map_or(Ok(()), Err)
    }

    fn write_info(&self) -> Result<()> {
        let body = serde_json::to_vec_pretty(&self.info).context("serializing stack.json")?;
        write_public(&self.layout.root.join(STACK_JSON), &body)
    }
}

/// Stops processes recorded in an old `stack.json` that still run: its owner first (which
/// stops its children cleanly), then any component that outlived a killed owner.
pub async fn stop_leftovers(state_dir: &Path) -> Result<()> {
    let Ok(old) = StackInfo::load(state_dir) else {
        return Ok(());
    };
    // Pids can be reused after a reboot or a long time; only signal processes whose command
    // line proves they are ours.
    let dir = state_dir.display().to_string();
    if old.owner_pid != std::process::id() && process::cmdline_contains(old.owner_pid, "devstack") {
        process::terminate_pid(old.owner_pid, STOP_GRACE * 2).await?;
    }
    for pid in old.component_pids() {
        if process::cmdline_contains(pid, &dir) {
            process::terminate_pid(pid, STOP_GRACE).await?;
        }
    }
    Ok(())
}
