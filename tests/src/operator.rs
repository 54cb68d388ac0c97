//! A real `portcullis-operator` process for end-to-end tests, next to
//! [`crate::gateway::GatewayProcess`]: serving certificate from the test CA, the admin
//! kubeconfig, and a ServiceAccount token (TokenRequest, audience `portcullis-operator`) for the
//! gateways that follow it.

use crate::{
    pki::Pki,
    process::{ManagedProcess, free_port},
};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, Client, api::PostParams};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

/// Audience of gateway tokens.
pub const AUDIENCE: &str = "portcullis-operator";

/// A running operator.
pub struct OperatorProcess {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub dir: PathBuf,
    process: ManagedProcess,
    command: Vec<(String, String)>,
    binary: PathBuf,
}

/// Creates ServiceAccount `name` in `namespace` and writes a token for it with the operator
/// audience into `file`; returns the `namespace:name` the operator allows.
pub async fn gateway_token(
    client: &Client,
    namespace: &str,
    name: &str,
    file: &Path,
) -> Result<String> {
    gateway_token_valid_for(client, namespace, name, file, Duration::from_secs(3600)).await
}

/// [`gateway_token`] valid for `lifetime` (at least the API server's 10 minutes): for a
/// long-running gateway that has no kubelet rotating its token, such as the demo's.
pub async fn gateway_token_valid_for(
    client: &Client,
    namespace: &str,
    name: &str,
    file: &Path,
    lifetime: Duration,
) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let mut account = ServiceAccount::default();
    account.metadata.name = Some(name.to_owned());
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("creating the gateway ServiceAccount"),
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AUDIENCE.to_owned()],
            expiration_seconds: Some(
                i64::try_from(lifetime.as_secs()).context("token lifetime out of range")?,
            ),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .context("requesting a gateway token")?;
    let token = issued.status.context("token request without status")?.token;
    crate::fsutil::write_private(file, token.as_bytes())?;
    Ok(format!("{namespace}:{name}"))
}

impl OperatorProcess {
    /// Starts `binary` watching sessions in `session_namespace`, allowing `gateways`
    /// (`namespace:name`), and waits until it is ready.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        pki: &Pki,
        kubeconfig: &Path,
        session_namespace: &str,
        gateways: &[String],
    ) -> Result<Self> {
        Self::start_with(
            binary,
            dir,
            pki,
            kubeconfig,
            session_namespace,
            gateways,
            Vec::new(),
        )
        .await
    }

    /// [`OperatorProcess::start`] with extra environment (set after, so it overrides).
    pub async fn start_with(
        binary: &Path,
        dir: &Path,
        pki: &Pki,
        kubeconfig: &Path,
        session_namespace: &str,
        gateways: &[String],
        extra_env: Vec<(String, String)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = pki.issue_serving("operator", &["localhost".to_owned()])?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let ops_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let env = vec![
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            ("PORTCULLIS_OPERATOR_LISTEN".to_owned(), addr.to_string()),
            ("PORTCULLIS_OPS_LISTEN".to_owned(), ops_addr.to_string()),
            (
                "PORTCULLIS_TLS_CERT_FILE".to_owned(),
                tls.cert.display().to_string(),
            ),
            (
                "PORTCULLIS_TLS_KEY_FILE".to_owned(),
                tls.key.display().to_string(),
            ),
            (
                "PORTCULLIS_SESSION_NAMESPACE".to_owned(),
                session_namespace.to_owned(),
            ),
            (
                "PORTCULLIS_GATEWAY_SERVICE_ACCOUNTS".to_owned(),
                gateways.join(","),
            ),
            (
                "PORTCULLIS_LEASE_NAMESPACE".to_owned(),
                session_namespace.to_owned(),
            ),
            // Its own namespace only (`extra_env` may widen it): the shared cluster runs many
            // operators at once, and each writes the status of every policy it watches.
            (
                "PORTCULLIS_WATCH_NAMESPACES".to_owned(),
                session_namespace.to_owned(),
            ),
            (
                "PORTCULLIS_ADVERTISE_URL".to_owned(),
                format!("https://localhost:{}", addr.port()),
            ),
            ("PORTCULLIS_LOG_FORMAT".to_owned(), "text".to_owned()),
            ("POD_NAME".to_owned(), format!("operator-{}", addr.port())),
        ]
        .into_iter()
        .chain(extra_env)
        .collect::<Vec<_>>();
        let process = spawn(binary, dir, &env, addr.port())?;
        let mut operator = Self {
            addr,
            ops_addr,
            dir: dir.to_owned(),
            process,
            command: env,
            binary: binary.to_owned(),
        };
        operator.wait_ready(Duration::from_secs(30)).await?;
        Ok(operator)
    }

    /// `https://localhost:port`: the name its certificate carries.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let ready = format!("http://{}/readyz", self.ops_addr);
        let deadline = Instant::now() + timeout;
        loop {
            self.process.ensure_running()?;
            if let Ok(resp) = reqwest::get(&ready).await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "operator not ready after {timeout:?}:\n{}",
                    self.process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The replica's identity (its `POD_NAME`), as it appears as the Lease holder.
    pub fn identity(&self) -> String {
        self.command
            .iter()
            .rev()
            .find(|(k, _)| k == "POD_NAME")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Kills the operator with SIGKILL: no graceful release of anything.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(pid) = self.process.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.process.stop(Duration::from_secs(1)).await.map(|_| ())
    }

    /// Stops the operator (SIGTERM, then SIGKILL after the grace).
    pub async fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(5)).await.map(|_| ())
    }

    /// Sends SIGTERM and waits up to `grace` for the exit (SIGKILL after it, which the returned
    /// status shows): how it exited and how long that took.
    pub async fn terminate(&mut self, grace: Duration) -> Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let status = self
            .process
            .stop(grace)
            .await?
            .context("the operator was not running")?;
        Ok((status, started.elapsed()))
    }

    /// Starts it again on the same ports, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.process = spawn(&self.binary, &self.dir, &self.command, self.addr.port())?;
        self.wait_ready(Duration::from_secs(30)).await
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The operator's log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Fails with the log tail if the operator has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }
}

fn spawn(binary: &Path, dir: &Path, env: &[(String, String)], port: u16) -> Result<ManagedProcess> {
    let mut cmd = Command::new(binary);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ManagedProcess::spawn(
        "portcullis-operator",
        cmd,
        &dir.join(format!("operator-{port}.log")),
    )
}
