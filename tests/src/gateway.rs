//! A real `portcullis-gateway` process for end-to-end tests, the demo and benchmarks, with its
//! own Dex when asked: TLS certificate from the test CA for the auth and app host names,
//! signing keys, the identity-provider file and a policy directory (standalone mode).
//!
//! Browsers and HTTP clients reach the host names through the loopback address by resolving
//! them explicitly ([`GatewayProcess::client`], Chromium's `--host-resolver-rules`), never
//! through DNS.

use crate::{
    dex::{self, DexInfo},
    fsutil::{write_private, write_public},
    pki::Pki,
    process::{ManagedProcess, free_port},
    stack::components,
};
use anyhow::{Context, Result, bail};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// A Dex of its own, for tests that need to control its redirect URIs or take it down.
pub struct DexServer {
    pub info: DexInfo,
    process: ManagedProcess,
    config: PathBuf,
    secret: String,
}

impl DexServer {
    /// Starts Dex on a free port in `dir`, with the stack's users, serving with a certificate
    /// from `pki`, accepting `redirect_uris`.
    pub async fn start(dir: &Path, pki: &Pki, redirect_uris: Vec<String>) -> Result<Self> {
        Self::start_with_users(dir, pki, redirect_uris, dex::default_users()).await
    }

    /// [`DexServer::start`] with `users` as its static users (e.g. thousands of them for a
    /// benchmark: the password connector issues refresh tokens, one per user and client).
    pub async fn start_with_users(
        dir: &Path,
        pki: &Pki,
        redirect_uris: Vec<String>,
        users: Vec<dex::DexUser>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let issuer = format!("https://127.0.0.1:{port}/dex");
        let tls = pki.issue_serving("dex", &[])?;
        let secret = dex::random_token();
        let secret_file = dir.join("dex-client-secret");
        write_private(&secret_file, secret.as_bytes())?;
        let mut uris = vec![dex::HARNESS_REDIRECT_URI.to_owned()];
        uris.extend(redirect_uris);
        let info = DexInfo {
            issuer: issuer.clone(),
            client_id: dex::CLIENT_ID.to_owned(),
            client_secret_file: secret_file,
            ca_file: pki.ca_cert_path(),
            redirect_uris: uris,
            users,
            trusted_header: true,
        };
        let config = dir.join("dex.yaml");
        dex::write_config(&config, &issuer, &format!("127.0.0.1:{port}"), &tls, &info)?;
        let process = ManagedProcess::spawn(
            "dex",
            components::dex(&config, &secret)?,
            &dir.join("dex.log"),
        )?;
        let mut server = Self {
            info,
            process,
            config,
            secret,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.info.http_client()?;
        let issuer = self.info.issuer.clone();
        self.process
            .wait_ready("discovery", Duration::from_secs(60), || {
                let client = client.clone();
                let issuer = issuer.clone();
                async move { components::dex_ready(&client, &issuer).await }
            })
            .await
    }

    /// Stops Dex (an identity-provider outage).
    pub async fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(5)).await.map(|_| ())
    }

    /// Starts it again with the same configuration (Dex's memory storage starts empty: every
    /// refresh token it issued before is gone, as after a real IdP reset).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        let log = self.process.log_path().to_owned();
        self.process =
            ManagedProcess::spawn("dex", components::dex(&self.config, &self.secret)?, &log)?;
        self.wait_ready().await
    }

    /// The end of Dex's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Dex's process id while it runs (benchmarks read its CPU time and memory).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// How to run a gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where its keys, certificates, configuration and log go.
    pub dir: PathBuf,
    /// The auth host's name.
    pub auth_host: String,
    /// The app host names it serves (for its certificate).
    pub app_hosts: Vec<String>,
    /// Port to listen on, which is also the public port in its URLs unless `public_port` says
    /// otherwise (0: a free one).
    pub port: u16,
    /// Port browsers use when a load balancer in front of several replicas listens there rather
    /// than on `port`: the replicas' URLs and token issuer must name the port browsers see, and
    /// must agree with each other. `None`: `port`.
    pub public_port: Option<u16>,
    /// Port of the operations listener (0: a free one).
    pub ops_port: u16,
    /// Policy (and Secret) manifests written into its policy directory.
    pub manifests: String,
    /// Peers whose forwarding headers it believes.
    pub trusted_proxies: Vec<String>,
    /// Extra environment (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
    /// Settings added to (or replacing those of) the `dex` identity-provider entry, e.g.
    /// `refreshInterval`.
    pub idp_options: serde_json::Map<String, serde_json::Value>,
}

impl GatewayConfig {
    pub fn new(
        dir: impl Into<PathBuf>,
        auth_host: &str,
        app_hosts: &[&str],
        manifests: &str,
    ) -> Self {
        Self {
            dir: dir.into(),
            auth_host: auth_host.to_owned(),
            app_hosts: app_hosts.iter().map(|h| (*h).to_owned()).collect(),
            port: 0,
            public_port: None,
            ops_port: 0,
            manifests: manifests.to_owned(),
            trusted_proxies: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            idp_options: serde_json::Map::new(),
        }
    }

    /// The port in the gateway's URLs: `public_port`, else `port`.
    pub fn public_port(&self) -> u16 {
        self.public_port.unwrap_or(self.port)
    }
}

/// The files a gateway is configured with, shared by its replicas.
#[derive(Clone, Debug)]
pub struct GatewayFiles {
    pub policy_dir: PathBuf,
    pub idp_config: PathBuf,
    pub signing_key: PathBuf,
    pub next_signing_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub ca_file: PathBuf,
    /// The key refresh tokens are sealed with (used in cluster mode).
    pub session_key: PathBuf,
}

impl GatewayFiles {
    /// Writes keys, certificate, identity-provider file and policies for `config`, trusting
    /// `dex` as the identity provider named `dex`.
    pub fn write(config: &GatewayConfig, pki: &Pki, dex: &DexInfo) -> Result<Self> {
        let entry = serde_json::json!({
            "name": "dex",
            "displayName": "Dex (test)",
            "issuer": dex.issuer,
            "clientId": dex.client_id,
            "clientSecretFile": dex.client_secret_file,
            "scopes": ["openid", "email", "profile", "groups", "offline_access"],
            // Tests restart Dex (new signing keys) and log in again within seconds.
            "jwksRefreshCooldown": "1s",
            // Dex sends no auth_time, and asks for credentials on every authorization
            // (it keeps no login session of its own).
            "requireAuthTime": false,
            // Dex answers a refresh token it no longer knows with `invalid_request`.
            "refreshRejectionErrors": ["invalid_grant", "invalid_request"],
        });
        Self::write_with_provider(config, pki, entry)
    }

    /// [`GatewayFiles::write`] with `entry` as the one entry of the identity-provider file
    /// (e.g. [`crate::keycloak::KeycloakInfo::gateway_entry`]), `config.idp_options` added.
    pub fn write_with_provider(
        config: &GatewayConfig,
        pki: &Pki,
        mut entry: serde_json::Value,
    ) -> Result<Self> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir.join("policies")).context("creating the policy directory")?;
        let key = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("generating a signing key")?
                .serialize_pem();
            write_private(&path, pem.as_bytes())?;
            Ok(path)
        };
        let signing_key = key("signing-key.pem")?;
        let next_signing_key = key("next-signing-key.pem")?;
        let mut names = vec![config.auth_host.clone()];
        names.extend(config.app_hosts.iter().cloned());
        let tls = pki.issue_serving("gateway", &names)?;
        let idp_config = dir.join("identity-providers.yaml");
        if let Some(entry) = entry.as_object_mut() {
            entry.extend(config.idp_options.clone());
        }
        let idps = serde_json::json!({ "identityProviders": [entry] });
        let session_key = dir.join("session-key");
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut key);
        // Base64 text, as `openssl rand -base64 32` writes it.
        let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        write_private(&session_key, text.as_bytes())?;
        write_public(&idp_config, serde_json::to_string_pretty(&idps)?.as_bytes())?;
        let files = Self {
            policy_dir: dir.join("policies"),
            idp_config,
            signing_key,
            next_signing_key,
            tls_cert: tls.cert,
            tls_key: tls.key,
            ca_file: pki.ca_cert_path(),
            session_key,
        };
        files.write_policies(&config.manifests)?;
        Ok(files)
    }

    /// Replaces the policy manifests (the gateway reloads them within a second).
    pub fn write_policies(&self, manifests: &str) -> Result<()> {
        let tmp = self.policy_dir.join(".policies.yaml.tmp");
        write_public(&tmp, manifests.as_bytes())?;
        std::fs::rename(&tmp, self.policy_dir.join("policies.yaml")).context("installing policies")
    }
}

/// A running gateway.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub files: GatewayFiles,
    pub config: GatewayConfig,
    process: ManagedProcess,
}

impl GatewayProcess {
    /// The redirect URI the gateway on `port` registers at its identity provider.
    pub fn redirect_uri(auth_host: &str, port: u16) -> String {
        format!("https://{auth_host}:{port}/.portcullis/callback")
    }

    /// Starts `binary` (the `portcullis-gateway` executable) with `files`, and waits until it
    /// is ready.
    pub async fn start(binary: &Path, config: GatewayConfig, files: GatewayFiles) -> Result<Self> {
        Self::launch(binary, config, files, true).await
    }

    /// Starts `binary` like [`GatewayProcess::start`] without waiting for readiness (for tests
    /// of a gateway that must stay not ready).
    pub async fn spawn_unready(
        binary: &Path,
        config: GatewayConfig,
        files: GatewayFiles,
    ) -> Result<Self> {
        Self::launch(binary, config, files, false).await
    }

    async fn launch(
        binary: &Path,
        mut config: GatewayConfig,
        files: GatewayFiles,
        wait: bool,
    ) -> Result<Self> {
        if config.port == 0 {
            config.port = free_port()?;
        }
        if config.ops_port == 0 {
            config.ops_port = free_port()?;
        }
        let addr: SocketAddr = ([127, 0, 0, 1], config.port).into();
        let ops_addr: SocketAddr = ([127, 0, 0, 1], config.ops_port).into();
        let mut cmd = Command::new(binary);
        cmd.env("PORTCULLIS_LISTEN", addr.to_string())
            .env("PORTCULLIS_OPS_LISTEN", ops_addr.to_string())
            .env("PORTCULLIS_TLS_CERT_FILE", &files.tls_cert)
            .env("PORTCULLIS_TLS_KEY_FILE", &files.tls_key)
            .env("PORTCULLIS_UPSTREAM_CA_FILE", &files.ca_file)
            .env("PORTCULLIS_AUTH_HOST", &config.auth_host)
            .env("PORTCULLIS_PUBLIC_PORT", config.public_port().to_string())
            .env("PORTCULLIS_IDP_CONFIG", &files.idp_config)
            .env("PORTCULLIS_SIGNING_KEY_FILE", &files.signing_key)
            .env("PORTCULLIS_NEXT_SIGNING_KEY_FILE", &files.next_signing_key)
            .env("PORTCULLIS_SESSION_KEY_FILE", &files.session_key)
            .env("PORTCULLIS_LOG_FORMAT", "text");
        // Cluster mode (an operator URL in `env`) takes no policy directory.
        if !config
            .env
            .iter()
            .any(|(k, _)| k == "PORTCULLIS_OPERATOR_URL")
        {
            cmd.env("PORTCULLIS_POLICY_DIR", &files.policy_dir);
        }
        // Only when there are some: the gateway rejects the empty list item of an empty value.
        if !config.trusted_proxies.is_empty() {
            cmd.env(
                "PORTCULLIS_TRUSTED_PROXIES",
                config.trusted_proxies.join(","),
            );
        }
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        let log = config.dir.join(format!("gateway-{}.log", config.port));
        let process = ManagedProcess::spawn("portcullis-gateway", cmd, &log)?;
        let mut gateway = Self {
            addr,
            ops_addr,
            files,
            config,
            process,
        };
        if wait {
            gateway.wait_ready().await?;
        }
        Ok(gateway)
    }

    /// Waits until `/readyz` answers 200 (up to the configured timeout).
    async fn wait_ready(&mut self) -> Result<()> {
        let Self {
            ops_addr,
            config,
            process,
            ..
        } = self;
        let ready = format!("http://{ops_addr}/readyz");
        let deadline = Instant::now() + config.ready_timeout;
        loop {
            process.ensure_running()?;
            if let Ok(resp) = reqwest::get(&ready).await
                && resp.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway not ready after {:?}:\n{}",
                    config.ready_timeout,
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts another replica of this gateway: the same files (signing keys, certificate,
    /// identity providers, policy directory) and settings, on ports of its own. Put a load
    /// balancer on the public port ([`GatewayConfig::public_port`]) in front of both.
    pub async fn start_replica(&self, binary: &Path) -> Result<Self> {
        let mut config = self.config.clone();
        config.public_port = Some(config.public_port());
        config.port = 0;
        config.ops_port = 0;
        Self::start(binary, config, self.files.clone()).await
    }

    /// The process id, while it runs (to check that it is gone after a shutdown).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `https://host:port`, with the public port.
    pub fn origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.config.public_port())
    }

    /// A cookie-keeping HTTP client that resolves the gateway's host names to it (or to the
    /// load balancer on its public port) and trusts the test CA; redirects are not followed.
    pub fn browser(&self) -> Result<reqwest::Client> {
        self.browser_with_jar(std::sync::Arc::new(reqwest::cookie::Jar::default()))
    }

    /// [`GatewayProcess::browser`] with a cookie jar the test can read and seed (to "delete" a
    /// cookie, copy the others into a fresh jar).
    pub fn browser_with_jar(
        &self,
        jar: std::sync::Arc<reqwest::cookie::Jar>,
    ) -> Result<reqwest::Client> {
        let mut builder = dex::http_client_builder(&self.files.ca_file)?.cookie_provider(jar);
        // reqwest connects to the port in the URL, which `origin` makes the public port.
        let public = SocketAddr::new(self.addr.ip(), self.config.public_port());
        for host in std::iter::once(&self.config.auth_host).chain(&self.config.app_hosts) {
            builder = builder.resolve(host, public);
        }
        builder.build().context("building the browser client")
    }

    /// `https://host:port` with this process's own port: with several replicas behind one
    /// public port, the URL that reaches this one (reqwest connects to the URL's port whatever
    /// `resolve` says).
    pub fn direct_origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.addr.port())
    }

    /// [`GatewayProcess::browser_with_jar`] connected to this process itself rather than to
    /// the public port; use it with URLs from [`GatewayProcess::direct_origin`].
    pub fn direct_browser_with_jar(
        &self,
        jar: std::sync::Arc<reqwest::cookie::Jar>,
    ) -> Result<reqwest::Client> {
        let mut builder = dex::http_client_builder(&self.files.ca_file)?.cookie_provider(jar);
        for host in std::iter::once(&self.config.auth_host).chain(&self.config.app_hosts) {
            builder = builder.resolve(host, self.addr);
        }
        builder.build().context("building the browser client")
    }

    /// The state version the gateway reports on `/readyz`.
    pub async fn state_version(&self) -> Result<u64> {
        let text = reqwest::get(format!("http://{}/readyz", self.ops_addr))
            .await?
            .text()
            .await?;
        // "ok: state version N", in cluster mode followed by "; source …; age …".
        text.split_once("state version ")
            .and_then(|(_, rest)| rest.split(';').next())
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("unexpected /readyz answer {text:?}"))
    }

    /// Replaces the policies and waits until the gateway enforces them.
    pub async fn update_policies(&self, manifests: &str) -> Result<()> {
        let before = self.state_version().await?;
        self.files.write_policies(manifests)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state_version().await? <= before {
            if Instant::now() > deadline {
                bail!(
                    "the gateway did not reload its policies within 10s:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The end of the gateway's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The gateway's log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Fails with the log tail if the gateway has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }

    /// Stops the gateway.
    pub async fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(5)).await.map(|_| ())
    }

    /// Stops the gateway and starts `binary` again with the same files and settings on the same
    /// ports (a restarted pod behind the same Service), waiting until it is ready.
    pub async fn restart(&mut self, binary: &Path) -> Result<()> {
        self.stop().await?;
        let mut config = self.config.clone();
        config.port = self.addr.port();
        config.ops_port = self.ops_addr.port();
        *self = Self::start(binary, config, self.files.clone()).await?;
        Ok(())
    }
}

/// Where a gateway under test records its logins.
#[derive(Clone, Debug)]
pub enum SessionRecords {
    /// `AccessSession`s in `namespace` of the cluster behind `kubeconfig`.
    Cluster {
        kubeconfig: PathBuf,
        namespace: String,
    },
    /// Standalone mode: the gateway's own store file.
    Local { file: PathBuf },
}

impl SessionRecords {
    fn env(&self) -> Vec<(String, String)> {
        match self {
            Self::Cluster {
                kubeconfig,
                namespace,
            } => vec![
                ("KUBECONFIG".into(), kubeconfig.display().to_string()),
                ("PORTCULLIS_SESSION_NAMESPACE".into(), namespace.clone()),
            ],
            Self::Local { file } => vec![(
                "PORTCULLIS_SESSION_STORE_FILE".into(),
                file.display().to_string(),
            )],
        }
    }
}

/// A gateway recording logins as `AccessSession`s in `namespace` of the cluster behind
/// `kubeconfig`, with a Dex of its own (so a test may stop or restart it). `tweak` adjusts the
/// configuration before the files are written (identity-provider options, timeouts, env).
pub async fn start_with_sessions(
    binary: &Path,
    dir: &Path,
    kubeconfig: &Path,
    namespace: &str,
    hosts: (&str, &[&str]),
    manifests: &str,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Result<(GatewayProcess, DexServer)> {
    let records = SessionRecords::Cluster {
        kubeconfig: kubeconfig.to_owned(),
        namespace: namespace.to_owned(),
    };
    start_recording(binary, dir, &records, hosts, manifests, tweak).await
}

/// [`start_with_sessions`] with either kind of session records.
pub async fn start_recording(
    binary: &Path,
    dir: &Path,
    records: &SessionRecords,
    hosts: (&str, &[&str]),
    manifests: &str,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Result<(GatewayProcess, DexServer)> {
    let (auth_host, app_hosts) = hosts;
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let dex = DexServer::start(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(auth_host, port)],
    )
    .await?;
    let mut config = GatewayConfig::new(dir.join("gateway"), auth_host, app_hosts, manifests);
    config.port = port;
    config.env = records.env();
    tweak(&mut config);
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway = GatewayProcess::start(binary, config, files).await?;
    Ok((gateway, dex))
}
