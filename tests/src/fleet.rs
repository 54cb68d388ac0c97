//! An operator and N cluster-mode gateways following it, for the revocation benchmark and the
//! "no revocation is lost" tests: one policy, sessions created directly in the API server (the
//! very object the gateway's `SessionRecorder` writes at a login) and app tokens minted with the
//! gateways' own signing key, so thousands of sessions cost no browser logins while every
//! gateway still judges them exactly as it judges a real one.

use crate::{
    dex::http_client_builder,
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    operator::{OperatorProcess, gateway_token},
    pki::Pki,
    process::free_port,
};
use anyhow::{Context, Result, bail};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use portcullis_core::token::{AppClaims, KeySet, TokenKind};
use portcullis_crds::{
    AccessPolicy, AccessSession,
    session::{IDENTITY_PROVIDER_LABEL, USER_LABEL},
};
use reqwest::StatusCode;
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The gateways' auth host.
pub const AUTH_HOST: &str = "auth.portcullis.test";
/// The policy's name in its namespace.
pub const POLICY: &str = "apps";
/// Prefix of the gateway's app-token cookies (`gateway/src/cookies.rs`).
const APP_COOKIE_PREFIX: &str = "__Host-portcullis-app-";
/// How long minted tokens and created sessions live: longer than any run.
const LIFETIME_SECS: u64 = 8 * 3600;

/// What to start.
pub struct FleetOptions<'a> {
    /// Keys, certificates, logs.
    pub dir: &'a Path,
    pub client: &'a Client,
    pub kubeconfig: &'a Path,
    /// Where the policy, the sessions, the ServiceAccount and the Lease go.
    pub namespace: &'a str,
    pub gateway_bin: &'a Path,
    pub operator_bin: &'a Path,
    /// Gateways to start now (more with [`Fleet::add_gateway`]).
    pub gateways: usize,
    /// Extra environment of every gateway (e.g. `RUST_LOG`).
    pub gateway_env: Vec<(String, String)>,
    /// Extra environment of the operator.
    pub operator_env: Vec<(String, String)>,
}

/// A running operator with its gateways.
pub struct Fleet {
    pub app: String,
    /// `namespace/name`: the `aud` of app tokens.
    pub policy_id: String,
    /// The policy object's uid: the `puid` of app tokens.
    pub policy_uid: String,
    pub operator: OperatorProcess,
    pub gateways: Vec<GatewayProcess>,
    pub dex: DexServer,
    config: GatewayConfig,
    files: GatewayFiles,
    keys: KeySet,
    sessions: Api<AccessSession>,
    gateway_bin: PathBuf,
    /// The gateways' ServiceAccount token and the operator's CA: what a stream client needs.
    stream_token: PathBuf,
    operator_ca: PathBuf,
}

/// The policy `apps` in `namespace` admitting `@example.com` on `app`.
pub fn policy_manifest(namespace: &str, app: &str) -> Result<AccessPolicy> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {
            "hosts": [app], "identityProviders": ["dex"],
            "upstream": {"url": "http://127.0.0.1:9"},
            "rules": [{"action": "Allow", "include": [{"emailDomains": ["example.com"]}]}]
        }
    }))
    .context("building the policy")
}

impl Fleet {
    /// [`Fleet::start`] with the gateway and operator binaries built beside the running test
    /// and no extra environment: the fleet most tests want.
    pub async fn start_plain(
        dir: &Path,
        client: &Client,
        kubeconfig: &Path,
        namespace: &str,
        gateways: usize,
    ) -> Result<Self> {
        Self::start(FleetOptions {
            dir,
            client,
            kubeconfig,
            namespace,
            gateway_bin: &crate::fsutil::sibling_binary("portcullis-gateway")?,
            operator_bin: &crate::fsutil::sibling_binary("portcullis-operator")?,
            gateways,
            gateway_env: Vec::new(),
            operator_env: Vec::new(),
        })
        .await
    }

    /// Creates the policy, starts the operator, one Dex (no login is needed, but the gateways
    /// want a reachable identity provider) and `gateways` gateways, each ready.
    pub async fn start(options: FleetOptions<'_>) -> Result<Self> {
        let FleetOptions {
            dir,
            client,
            kubeconfig,
            namespace,
            gateway_bin,
            operator_bin,
            gateways,
            gateway_env,
            operator_env,
        } = options;
        let app = format!("{namespace}.portcullis.test");
        let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), namespace);
        let created = policies
            .create(&PostParams::default(), &policy_manifest(namespace, &app)?)
            .await
            .context("creating the policy")?;
        let policy_uid = created.metadata.uid.context("policy without uid")?;
        let pki = Pki::generate(&dir.join("pki"))?;
        let token = dir.join("gateway-token");
        let account = gateway_token(client, namespace, "gateway", &token).await?;
        let peer_token = dir.join("operator-token");
        gateway_token(client, namespace, "operator", &peer_token).await?;
        let mut env = vec![
            (
                "PORTCULLIS_PEER_TOKEN_FILE".to_owned(),
                peer_token.display().to_string(),
            ),
            (
                "PORTCULLIS_PEER_CA_FILE".to_owned(),
                pki.ca_cert_path().display().to_string(),
            ),
        ];
        env.extend(operator_env);
        let operator = OperatorProcess::start_with(
            operator_bin,
            &dir.join("operator"),
            &pki,
            kubeconfig,
            namespace,
            std::slice::from_ref(&account),
            env,
        )
        .await?;
        let port = free_port()?;
        let dex = DexServer::start(
            &dir.join("dex"),
            &pki,
            vec![GatewayProcess::redirect_uri(AUTH_HOST, port)],
        )
        .await?;
        let mut config = GatewayConfig::new(dir.join("gateway"), AUTH_HOST, &[app.as_str()], "");
        config.port = port;
        config.public_port = Some(port);
        config.env = vec![
            ("KUBECONFIG".into(), kubeconfig.display().to_string()),
            ("PORTCULLIS_SESSION_NAMESPACE".into(), namespace.into()),
            ("PORTCULLIS_OPERATOR_URL".into(), operator.url()),
            (
                "PORTCULLIS_OPERATOR_CA_FILE".into(),
                pki.ca_cert_path().display().to_string(),
            ),
            (
                "PORTCULLIS_OPERATOR_TOKEN_FILE".into(),
                token.display().to_string(),
            ),
            ("PORTCULLIS_STATE_STALE_AFTER".into(), "30s".into()),
        ];
        config.env.extend(gateway_env);
        config.ready_timeout = Duration::from_secs(60);
        let files = GatewayFiles::write(&config, &pki, &dex.info)?;
        let signing = std::fs::read(&files.signing_key).context("reading the signing key")?;
        let next = std::fs::read(&files.next_signing_key).context("reading the next key")?;
        let keys = KeySet::from_pems(&signing, Some(&next), &[])
            .context("loading the gateways' signing key")?;
        let mut fleet = Self {
            policy_id: format!("{namespace}/{POLICY}"),
            app,
            policy_uid,
            operator,
            gateways: Vec::new(),
            dex,
            config,
            files,
            keys,
            sessions: Api::namespaced(client.clone(), namespace),
            gateway_bin: gateway_bin.to_owned(),
            stream_token: token.clone(),
            operator_ca: pki.ca_cert_path(),
        };
        for _ in 0..gateways {
            fleet.add_gateway().await?;
        }
        Ok(fleet)
    }

    /// Starts one more gateway (the first on the public port, the others on ports of their
    /// own) and waits until it is ready, i.e. holds the operator's state.
    pub async fn add_gateway(&mut self) -> Result<()> {
        self.add_gateway_with(Vec::new()).await
    }

    /// [`Fleet::add_gateway`] with `env` added to (or replacing) the fleet's environment for
    /// this gateway only (e.g. an operator URL through a [`crate::relay::Relay`]).
    pub async fn add_gateway_with(&mut self, env: Vec<(String, String)>) -> Result<()> {
        let mut config = self.config.clone();
        config.env.extend(env);
        if !self.gateways.is_empty() {
            config.port = 0;
        }
        config.ops_port = 0;
        let gateway = GatewayProcess::start(&self.gateway_bin, config, self.files.clone()).await?;
        self.gateways.push(gateway);
        Ok(())
    }

    /// Starts a gateway with the fleet's settings without adding it (for a readiness time).
    pub async fn start_extra_gateway(&self) -> Result<GatewayProcess> {
        let mut config = self.config.clone();
        config.port = 0;
        config.ops_port = 0;
        GatewayProcess::start(&self.gateway_bin, config, self.files.clone()).await
    }

    /// Kills gateway `index` with SIGKILL (no graceful shutdown) and reaps it.
    pub async fn kill_gateway(&mut self, index: usize) -> Result<()> {
        let gateway = self
            .gateways
            .get_mut(index)
            .with_context(|| format!("no gateway {index}"))?;
        if let Some(pid) = gateway.pid().and_then(|p| i32::try_from(p).ok()) {
            // ESRCH (already gone) is fine.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        gateway.stop().await
    }

    /// Starts gateway `index` again on its ports (stopping it first if it still runs) and
    /// waits until it is ready, i.e. holds the operator's state again.
    pub async fn restart_gateway(&mut self, index: usize) -> Result<()> {
        self.relaunch(index, true).await
    }

    /// Starts gateway `index` again on its ports without waiting for readiness (a gateway
    /// restarted while the control plane is away may have to wait for it).
    pub async fn restart_gateway_unready(&mut self, index: usize) -> Result<()> {
        self.relaunch(index, false).await
    }

    async fn relaunch(&mut self, index: usize, wait: bool) -> Result<()> {
        let old = self
            .gateways
            .get_mut(index)
            .with_context(|| format!("no gateway {index}"))?;
        old.stop().await?;
        let mut config = old.config.clone();
        config.port = old.addr.port();
        config.ops_port = old.ops_addr.port();
        let files = self.files.clone();
        *old = if wait {
            GatewayProcess::start(&self.gateway_bin, config, files).await?
        } else {
            GatewayProcess::spawn_unready(&self.gateway_bin, config, files).await?
        };
        Ok(())
    }

    /// Raises the policy's `revocationEpoch` to `epoch` at the API server.
    pub async fn raise_epoch(&self, client: &Client, epoch: i64) -> Result<()> {
        let namespace = self
            .policy_id
            .split_once('/')
            .map(|(ns, _)| ns)
            .context("policy id")?;
        Api::<AccessPolicy>::namespaced(client.clone(), namespace)
            .patch(
                POLICY,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"revocationEpoch": epoch}})),
            )
            .await
            .context("raising the epoch")?;
        Ok(())
    }

    /// Creates the `AccessSession` named `sid` exactly as the gateway's `SessionRecorder`
    /// does at a login (labels, times, `revoked: false`).
    pub async fn create_session(&self, sid: &str) -> Result<()> {
        self.create_session_issued(sid, now()).await
    }

    /// [`Fleet::create_session`] for a login at `now` (unix seconds), which may be in the past.
    pub async fn create_session_issued(&self, sid: &str, now: u64) -> Result<()> {
        let subject = subject_of(sid);
        let object: AccessSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessSession",
            "metadata": {"name": sid, "labels": {
                USER_LABEL: user_label(&subject),
                IDENTITY_PROVIDER_LABEL: "dex",
            }},
            "spec": {
                "subject": subject, "email": format!("{sid}@example.com"), "groups": [],
                "identityProvider": "dex",
                "issuedAt": rfc3339(now)?, "expiresAt": rfc3339(now + LIFETIME_SECS)?,
                "revoked": false,
            }
        }))
        .context("building the session")?;
        self.sessions
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating session {sid}"))?;
        Ok(())
    }

    /// `kubectl patch accesssession SID --type merge -p '{"spec":{"revoked":true}}'`; returns
    /// when the API server has accepted it.
    pub async fn revoke(&self, sid: &str) -> Result<()> {
        self.sessions
            .patch(
                sid,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"revoked": true}})),
            )
            .await
            .with_context(|| format!("revoking session {sid}"))?;
        Ok(())
    }

    /// An app token for session `sid`, as the auth host mints one at the hand-off.
    pub fn app_token(&self, sid: &str) -> Result<String> {
        let now = now();
        let claims = AppClaims {
            iss: format!("https://{AUTH_HOST}:{}", self.config.public_port()),
            aud: self.policy_id.clone(),
            sub: subject_of(sid),
            email: Some(format!("{sid}@example.com")),
            groups: Vec::new(),
            ext: serde_json::Map::new(),
            sid: sid.to_owned(),
            idp: "dex".into(),
            epoch: 0,
            iat: now,
            exp: now + LIFETIME_SECS,
            auth_time: now,
            sexp: Some(now + LIFETIME_SECS),
            puid: Some(self.policy_uid.clone()),
        };
        self.keys
            .sign(TokenKind::App, &claims)
            .context("signing an app token")
    }

    /// Waits until every gateway gives `want` for `token`, polling all of them at once (each
    /// every `pause`, for at most `limit`).
    pub async fn until_everywhere(
        &self,
        token: &str,
        want: Verdict,
        pause: Duration,
        limit: Duration,
    ) -> Result<()> {
        let probes = (0..self.gateways.len())
            .map(|i| self.probe(i))
            .collect::<Result<Vec<_>>>()?;
        futures::future::try_join_all(probes.iter().enumerate().map(|(i, probe)| async move {
            probe
                .until(token, want, pause, limit)
                .await
                .with_context(|| format!("{want:?} at gateway {i}"))
        }))
        .await
        .map(|_| ())
    }

    /// Creates `sids` and waits until every gateway accepts each; returns their app tokens.
    pub async fn live_sessions(
        &self,
        sids: &[&str],
        pause: Duration,
        limit: Duration,
    ) -> Result<Vec<String>> {
        let mut tokens = Vec::new();
        for sid in sids {
            self.create_session(sid).await?;
            let token = self.app_token(sid)?;
            self.until_everywhere(&token, Verdict::Accepted, pause, limit)
                .await
                .with_context(|| format!("session {sid}"))?;
            tokens.push(token);
        }
        Ok(tokens)
    }

    /// A keep-alive client asking gateway `index` (on its own port) about the app session.
    pub fn probe(&self, index: usize) -> Result<Probe> {
        let gateway = self
            .gateways
            .get(index)
            .with_context(|| format!("no gateway {index}"))?;
        let client = http_client_builder(&self.files.ca_file)?
            .resolve(&self.app, gateway.addr)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()
            .context("building a probe client")?;
        Ok(Probe {
            client,
            url: format!(
                "https://{}:{}/.portcullis/session?path=/",
                self.app,
                gateway.addr.port()
            ),
            cookie: format!(
                "{APP_COOKIE_PREFIX}{}",
                hex(&sha256(self.policy_id.as_bytes())[..8])
            ),
        })
    }

    /// How a stream client reaches the operator as one of the gateways
    /// ([`crate::stream_clients`]).
    pub fn stream_access(&self) -> crate::stream_clients::StreamAccess {
        crate::stream_clients::access(self.operator.url(), &self.operator_ca, &self.stream_token)
    }

    /// Stops every process (the Dex, the gateways, the operator).
    pub async fn stop(mut self) -> Result<()> {
        for gateway in &mut self.gateways {
            gateway.stop().await?;
        }
        self.operator.stop().await?;
        self.dex.stop().await
    }
}

/// One gateway's view of a session: its `/.portcullis/session` answer for an app token.
#[derive(Clone)]
pub struct Probe {
    client: reqwest::Client,
    url: String,
    cookie: String,
}

/// What a gateway said about a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
}

impl Probe {
    /// 200 → accepted, 401 → refused; anything else (not ready, an error page) is an error,
    /// never counted as a refusal.
    pub async fn ask(&self, token: &str) -> Result<Verdict> {
        let response = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .header("cookie", format!("{}={token}", self.cookie))
            .send()
            .await
            .with_context(|| format!("asking {}", self.url))?;
        match response.status() {
            StatusCode::OK => Ok(Verdict::Accepted),
            StatusCode::UNAUTHORIZED => Ok(Verdict::Refused),
            other => {
                let body = response.text().await.unwrap_or_default();
                bail!("{} answered {other}: {body}", self.url)
            }
        }
    }

    /// Asks until the verdict is `want`, pausing `pause` between requests; fails after `limit`.
    pub async fn until(
        &self,
        token: &str,
        want: Verdict,
        pause: Duration,
        limit: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.ask(token).await? == want {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{}: not {want:?} within {limit:?}", self.url);
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Resident memory of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS for process {pid}"))?;
    Ok(kib * 1024)
}

fn subject_of(sid: &str) -> String {
    format!("sub-{sid}")
}

/// The value of the user label the gateway writes (`gateway/src/sessions/mod.rs`).
fn user_label(subject: &str) -> String {
    hex(&sha256(subject.as_bytes())[..20])
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn rfc3339(secs: u64) -> Result<String> {
    let secs = i64::try_from(secs).context("time out of range")?;
    Ok(k8s_openapi::jiff::Timestamp::from_second(secs)
        .context("time out of range")?
        .to_string())
}
