//! The local demo (`hack/demo.sh`, `devstack up --demo`): on top of a running [`Stack`], the
//! demo policies applied to the cluster, two sample apps, the `portcullis-operator`, two
//! `portcullis-gateway` replicas in cluster mode following it, and a round-robin TCP load
//! balancer in front of the gateways on one public port (8443 by default), everything on
//! 127.0.0.1.
//!
//! Browsers reach the demo as `https://<name>.portcullis.localhost:<port>`: `*.localhost`
//! resolves to loopback in Chromium and curl without DNS. Tests resolve the names explicitly.
//!
//! It runs the way a platform team runs Portcullis in a cluster: the policies exist once, as
//! `AccessPolicy` objects in the API server, and reach the gateways only through the operator's
//! state stream (`--operator-url`; the gateways have no policy directory). The operator serves
//! the stream with a certificate from the stack's CA and admits the gateways' ServiceAccount
//! (`default:portcullis-gateway`), whose token (TokenRequest, audience `portcullis-operator`)
//! the gateways read from a file as they would a projected one. Nothing rotates that file, so
//! the token is requested for [`GATEWAY_TOKEN_LIFETIME`], longer than any demo runs. Every
//! login becomes an `AccessSession` in the demo namespace; revoking one, revoking every session
//! of a user or raising a policy's `revocationEpoch` with `kubectl` ([`REVOKE_SESSION`],
//! [`REVOKE_USER`], [`REVOKE_POLICY`]) reaches both replicas through the operator.
//!
//! The operator and the gateways talk to the API server with the stack's admin kubeconfig (a
//! cluster gives each its own ServiceAccount with the RBAC in `charts/portcullis`).
//!
//! [`Stack`]: crate::Stack

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kube::api::{Api, Patch, PatchParams};
use portcullis_crds::AccessPolicy;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_public;
use crate::gateway::{GatewayConfig, GatewayFiles, GatewayProcess};
use crate::operator::{OperatorProcess, gateway_token_valid_for};
use crate::pki::Pki;
use crate::process::{self, ManagedProcess, STOP_GRACE, free_port};
use crate::stack::StackInfo;

/// The auth host (login, callback, JWKS).
pub const AUTH_HOST: &str = "auth.portcullis.localhost";
/// The host with two apps, `/wordpress` and `/express`.
pub const APPS_HOST: &str = "apps.portcullis.localhost";
/// The second host.
pub const EXPRESS_HOST: &str = "express.portcullis.localhost";
/// The demo's public port unless told otherwise.
pub const DEFAULT_PORT: u16 = 8443;
/// The demo policies (`examples/demo/policy.yaml`); each `upstream.url` is replaced by the
/// address of the sample app started for it.
pub const POLICY_MANIFEST: &str = include_str!("../../examples/demo/policy.yaml");
/// Namespace of the demo policies.
pub const NAMESPACE: &str = "default";
/// File in the demo directory describing the running demo.
pub const DEMO_JSON: &str = "demo.json";
/// Field manager of the demo's server-side applies.
const FIELD_MANAGER: &str = "portcullis-demo";
/// The gateway binary.
pub const GATEWAY_BIN: &str = "portcullis-gateway";
/// The operator binary.
pub const OPERATOR_BIN: &str = "portcullis-operator";
/// The gateways' ServiceAccount in [`NAMESPACE`], which the operator admits to its stream.
pub const GATEWAY_SERVICE_ACCOUNT: &str = "portcullis-gateway";
/// How long the gateways' operator token is valid. In a cluster the kubelet rotates a
/// projected token; the demo's is a file nobody rewrites, so it must outlast the demo.
pub const GATEWAY_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Revokes one session: `NAME` is the AccessSession (`sid` of the app token,
/// `session` of `/.portcullis/session`).
pub const REVOKE_SESSION: &str =
    r#"kubectl patch accesssession NAME --type merge -p '{"spec":{"revoked":true}}'"#;
/// Revokes every session of a user: `SUBJECT` is `X-Auth-Request-User` on the sample app's page.
pub const REVOKE_USER: &str = r#"kubectl get accesssessions --field-selector spec.subject=SUBJECT -o name | xargs -r -I{} kubectl patch {} --type merge -p '{"spec":{"revoked":true}}'"#;
/// Ends every session of the `apps` policy ("revoke existing tokens"): `EPOCH` is one more
/// than its current `spec.revocationEpoch` (0 in a fresh demo).
pub const REVOKE_POLICY: &str =
    r#"kubectl patch accesspolicy apps --type merge -p '{"spec":{"revocationEpoch":EPOCH}}'"#;
/// The load balancer binary (`tests/src/bin/demo-lb.rs`).
pub const LB_BIN: &str = "demo-lb";
/// The sample app binary (`images/src/bin/sample-app/`).
pub const SAMPLE_APP_BIN: &str = "sample-app";

/// One sample app, serving the policy of the same name.
struct SampleApp {
    policy: &'static str,
    name: &'static str,
    host: &'static str,
    prefixes: &'static [&'static str],
    poll_page: bool,
}

const SAMPLE_APPS: [SampleApp; 2] = [
    SampleApp {
        policy: "apps",
        name: "Sample app",
        host: APPS_HOST,
        prefixes: &["/wordpress", "/express"],
        poll_page: true,
    },
    SampleApp {
        policy: "express",
        name: "Express host sample app",
        host: EXPRESS_HOST,
        prefixes: &[],
        poll_page: false,
    },
];

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Port of the load balancer, which is the port in every demo URL.
    pub public_port: u16,
    /// Directory holding `portcullis-gateway`, `portcullis-operator`, `demo-lb` and
    /// `sample-app`.
    pub bin_dir: PathBuf,
    /// Replaces `spec.session.tokenLifetime` of every demo policy (`10s`): a browser test sees
    /// several token lifetimes pass within a minute. `None`: the manifest's 5 minutes.
    pub token_lifetime: Option<String>,
    /// Replaces `spec.session.idleTimeout` of every demo policy (`1m`). `None`: the manifest's.
    pub idle_timeout: Option<String>,
}

impl DemoConfig {
    /// The demo on `public_port` with binaries from `bin_dir`.
    pub fn new(public_port: u16, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            public_port,
            bin_dir: bin_dir.into(),
            token_lifetime: None,
            idle_timeout: None,
        }
    }

    /// The callback the gateways register at Dex; the stack's Dex client must accept it.
    pub fn redirect_uri(&self) -> String {
        GatewayProcess::redirect_uri(AUTH_HOST, self.public_port)
    }

    /// `https://host:port`.
    pub fn origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.public_port)
    }

    fn binary(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build the binaries first (`cargo build -p portcullis-gateway -p portcullis-operator -p portcullis-tests --bins`, or `cargo build --workspace --bins`)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Checks, before the minute-long stack start, what would make the demo fail after it:
    /// missing binaries, a busy public port. Stops what a killed earlier demo in `state_dir`
    /// left running first.
    pub async fn preflight(&self, state_dir: &Path) -> Result<()> {
        for name in [GATEWAY_BIN, OPERATOR_BIN, LB_BIN, SAMPLE_APP_BIN] {
            self.binary(name)?;
        }
        stop_leftovers(state_dir, self).await?;
        TcpListener::bind(("127.0.0.1", self.public_port)).with_context(|| {
            format!(
                "port {} is in use (another demo?); choose another with --demo-port",
                self.public_port
            )
        })?;
        Ok(())
    }
}

/// A process of the demo, as recorded in `demo.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoProcess {
    pub name: String,
    pub pid: u32,
    /// The executable, to recognise the process after a crash of its owner.
    pub binary: PathBuf,
    pub log: PathBuf,
    /// Where it serves (HTTPS for gateways and the operator's stream, HTTP for apps, TCP for the
    /// load balancer).
    pub addr: SocketAddr,
}

/// What `demo.json` says about a running demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoInfo {
    /// The load balancer's port.
    pub public_port: u16,
    /// The demo's directory (gateway files, logs).
    pub dir: PathBuf,
    /// The URLs to open.
    pub urls: Vec<String>,
    /// The operator's stream API, which the gateways follow.
    pub operator_url: String,
    /// The gateways' ServiceAccount token for the operator.
    pub gateway_token_file: PathBuf,
    /// The CA every demo certificate chains to.
    pub ca_file: PathBuf,
    /// Admin kubeconfig of the stack.
    pub kubeconfig: PathBuf,
    /// Every demo process.
    pub processes: Vec<DemoProcess>,
}

impl DemoInfo {
    /// Reads `demo.json` from the stack's state directory.
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = demo_dir(state_dir).join(DEMO_JSON);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Where the demo keeps its files: `<state dir>/demo`.
pub fn demo_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("demo")
}

/// The running demo. Dropping it kills its processes; [`Demo::stop`] stops them in order.
pub struct Demo {
    info: DemoInfo,
    // Stop order: the load balancer (no new connections), gateways, the operator they follow,
    // then apps.
    lb: ManagedProcess,
    gateways: Vec<GatewayProcess>,
    operator: OperatorProcess,
    apps: Vec<ManagedProcess>,
    /// The operator died (killed to try an outage): said once, and the demo goes on.
    operator_gone: bool,
}

impl Demo {
    /// Starts the demo on the running stack `stack`: sample apps, policies (in the cluster), the
    /// operator, two gateway replicas following it and the load balancer; returns once both
    /// gateways hold the operator's state and a request through the load balancer is answered.
    pub async fn start(stack: &StackInfo, config: &DemoConfig) -> Result<Self> {
        let dir = demo_dir(&stack.state_dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lb_addr: SocketAddr = ([127, 0, 0, 1], config.public_port).into();
        let issuer = config.origin(AUTH_HOST);

        let mut apps = Vec::new();
        let mut upstreams = Vec::new();
        let app_bin = config.binary(SAMPLE_APP_BIN)?;
        for app in &SAMPLE_APPS {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            let mut cmd = Command::new(&app_bin);
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--name")
                .arg(app.name)
                .arg("--origin")
                .arg(config.origin(app.host))
                .arg("--issuer")
                .arg(&issuer)
                .arg("--ca-file")
                .arg(&stack.ca_file)
                .arg("--gateway-addr")
                .arg(lb_addr.to_string());
            for prefix in app.prefixes {
                cmd.arg("--prefix").arg(prefix);
            }
            if app.poll_page {
                cmd.arg("--poll-page");
            }
            let log = dir.join(format!("sample-app-{}.log", app.policy));
            let mut process =
                ManagedProcess::spawn(&format!("sample-app {}", app.policy), cmd, &log)?;
            let health = format!("http://{addr}/healthz");
            process
                .wait_ready("GET /healthz", Duration::from_secs(30), || {
                    let health = health.clone();
                    async move { Ok(reqwest::get(&health).await?.status().is_success()) }
                })
                .await?;
            apps.push(process);
            upstreams.push((app.policy, addr));
        }

        let policies = policies(&upstreams, config)?;
        let client = stack.client().await?;
        apply_policies(&client, &policies).await?;

        let pki = Pki::load(&stack.state_dir.join("pki"))?;
        let token_file = dir.join("gateway-token");
        let account = gateway_token_valid_for(
            &client,
            NAMESPACE,
            GATEWAY_SERVICE_ACCOUNT,
            &token_file,
            GATEWAY_TOKEN_LIFETIME,
        )
        .await?;
        let operator_bin = config.binary(OPERATOR_BIN)?;
        // Every namespace, as the chart installs it: the demo stack is the operator's alone.
        let operator = OperatorProcess::start_with(
            &operator_bin,
            &dir.join("operator"),
            &pki,
            &stack.kubeconfig,
            NAMESPACE,
            &[account],
            vec![("PORTCULLIS_WATCH_NAMESPACES".into(), String::new())],
        )
        .await?;

        // No policy manifests: in cluster mode the policies come only from the operator.
        let mut gateway_config = GatewayConfig::new(
            dir.join("gateway"),
            AUTH_HOST,
            &[APPS_HOST, EXPRESS_HOST],
            "",
        );
        gateway_config.public_port = Some(config.public_port);
        // Every login becomes an AccessSession in the demo namespace; the operator streams the
        // policies and the sessions' ends to both replicas.
        gateway_config.env = vec![
            ("KUBECONFIG".into(), stack.kubeconfig.display().to_string()),
            ("PORTCULLIS_SESSION_NAMESPACE".into(), NAMESPACE.into()),
            ("PORTCULLIS_OPERATOR_URL".into(), operator.url()),
            (
                "PORTCULLIS_OPERATOR_CA_FILE".into(),
                pki.ca_cert_path().display().to_string(),
            ),
            (
                "PORTCULLIS_OPERATOR_TOKEN_FILE".into(),
                token_file.display().to_string(),
            ),
        ];
        let files = GatewayFiles::write(&gateway_config, &pki, &stack.dex)?;
        let gateway_bin = config.binary(GATEWAY_BIN)?;
        // Ready (`/readyz`) only once the operator's first snapshot is applied.
        let first = GatewayProcess::start(&gateway_bin, gateway_config, files).await?;
        let second = first.start_replica(&gateway_bin).await?;
        let gateways = vec![first, second];

        let lb_bin = config.binary(LB_BIN)?;
        let mut cmd = Command::new(&lb_bin);
        cmd.arg("--listen").arg(lb_addr.to_string());
        for gateway in &gateways {
            cmd.arg("--backend").arg(gateway.addr.to_string());
        }
        let mut lb = ManagedProcess::spawn("demo-lb", cmd, &dir.join("demo-lb.log"))?;
        let client = crate::dex::http_client_builder(&stack.ca_file)?
            .resolve(AUTH_HOST, lb_addr)
            .build()
            .context("building a client")?;
        let jwks = format!("{issuer}/.well-known/jwks.json");
        lb.wait_ready(
            "JWKS through the load balancer",
            Duration::from_secs(30),
            || {
                let request = client.get(&jwks).send();
                async move { Ok(request.await?.status().is_success()) }
            },
        )
        .await?;

        let mut processes = Vec::new();
        let mut record =
            |name: String, process: Option<u32>, binary: &Path, log: &Path, addr: SocketAddr| {
                if let Some(pid) = process {
                    processes.push(DemoProcess {
                        name,
                        pid,
                        binary: binary.to_owned(),
                        log: log.to_owned(),
                        addr,
                    });
                }
            };
        record("demo-lb".into(), lb.pid(), &lb_bin, lb.log_path(), lb_addr);
        record(
            "portcullis-operator".into(),
            operator.pid(),
            &operator_bin,
            operator.log_path(),
            operator.addr,
        );
        for (i, gateway) in gateways.iter().enumerate() {
            let name = format!("portcullis-gateway-{i}");
            record(
                name,
                gateway.pid(),
                &gateway_bin,
                gateway.log_path(),
                gateway.addr,
            );
        }
        for (app, (_, addr)) in apps.iter().zip(&upstreams) {
            record(
                app.name().to_owned(),
                app.pid(),
                &app_bin,
                app.log_path(),
                *addr,
            );
        }
        let info = DemoInfo {
            public_port: config.public_port,
            dir: dir.clone(),
            urls: vec![
                format!("{}/wordpress/", config.origin(APPS_HOST)),
                format!("{}/express/", config.origin(APPS_HOST)),
                format!("{}/", config.origin(EXPRESS_HOST)),
            ],
            operator_url: operator.url(),
            gateway_token_file: token_file,
            ca_file: stack.ca_file.clone(),
            kubeconfig: stack.kubeconfig.clone(),
            processes,
        };
        let body = serde_json::to_vec_pretty(&info).context("serializing demo.json")?;
        write_public(&dir.join(DEMO_JSON), &body)?;
        Ok(Self {
            info,
            lb,
            gateways,
            operator,
            apps,
            operator_gone: false,
        })
    }

    /// What `demo.json` says.
    pub fn info(&self) -> &DemoInfo {
        &self.info
    }

    /// Fails with the log tail of the first demo process that has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.lb.ensure_running()?;
        for gateway in &mut self.gateways {
            gateway.ensure_running()?;
        }
        // The demo shows static stability: a dead operator takes nothing down. It is said once.
        if !self.operator_gone
            && let Err(error) = self.operator.ensure_running()
        {
            self.operator_gone = true;
            eprintln!(
                "devstack: the operator is gone ({error:#}).\n  The gateways stay Ready and \
                 keep serving; revocations still reach them at once (each watches them at the \
                 API server), and within seconds they follow the API server for the rest \
                 (/readyz says `source api_server`). Restart the demo to bring the operator \
                 back."
            );
        }
        for app in &mut self.apps {
            app.ensure_running()?;
        }
        Ok(())
    }

    /// Stops the load balancer, the gateways, the operator, then the apps.
    pub async fn stop(mut self) -> Result<()> {
        let mut first_error = self.lb.stop(STOP_GRACE).await.err();
        for gateway in &mut self.gateways {
            if let Err(e) = gateway.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = self.operator.stop().await
            && !self.operator_gone
        {
            first_error.get_or_insert(e);
        }
        for app in &mut self.apps {
            if let Err(e) = app.stop(STOP_GRACE).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// What to tell the person who ran `hack/demo.sh`.
    pub fn summary(&self) -> String {
        let info = &self.info;
        let ca = info.ca_file.display();
        let port = info.public_port;
        let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let mut out = String::new();
        out.push_str(
            "\nPortcullis demo: the operator, two gateway replicas following it behind one load\n\
             balancer, two sample apps\n\n",
        );
        out.push_str("Open (https only; *.localhost needs no DNS):\n");
        for url in &info.urls {
            out.push_str(&format!("  {url}\n"));
        }
        out.push_str(&format!(
            "  https://{APPS_HOST}:{port}/wordpress/poll   (calls the app's API every few seconds)\n"
        ));
        out.push_str(&format!(
            "Logins pass through the auth host, https://{AUTH_HOST}:{port}/, on to Dex.\n\n"
        ));
        let users: Vec<String> = crate::dex::default_users()
            .iter()
            .map(|u| format!("{} (groups: {})", u.email, u.groups.join(", ")))
            .collect();
        out.push_str(&format!(
            "Log in as {}, password `{}`.\n\
             https://{EXPRESS_HOST}:{port}/ admits the engineering group only: bob is refused there.\n\n",
            users.join(" or "),
            crate::dex::PASSWORD
        ));
        out.push_str(&format!(
            "Every certificate (gateways, operator, Dex) comes from the demo CA, made afresh on each start:\n  {ca}\n"
        ));
        out.push_str(&format!(
            "  curl:     curl --cacert {ca} -i https://{APPS_HOST}:{port}/wordpress/\n"
        ));
        out.push_str(&format!(
            "  Chromium: certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n portcullis-demo-{port} -i {ca}\n"
        ));
        out.push_str("            (libnss3-tools; remove with `certutil -d sql:$HOME/.pki/nssdb -D -n portcullis-demo-PORT`)\n\n");
        out.push_str(
            "The cluster (the policies live only here; the operator streams them to the gateways):\n",
        );
        out.push_str(&format!("  export KUBECONFIG={}\n", q(&info.kubeconfig)));
        out.push_str("  kubectl get accesspolicies\n  kubectl get accesssessions\n\n");
        out.push_str(
            "Revoking (each reaches both gateway replicas through the operator within a second):\n",
        );
        out.push_str(
            "  # one session (NAME: `sid` in the assertion claims on the sample app's page)\n",
        );
        out.push_str(&format!("  {REVOKE_SESSION}\n"));
        out.push_str(
            "  # every session of a user (SUBJECT: X-Auth-Request-User on the sample app's page)\n",
        );
        out.push_str(&format!(
            "  {}\n",
            REVOKE_USER.replace(" | ", " \\\n    | ")
        ));
        out.push_str(
            "  # every session of a policy (\"revoke existing tokens\"; EPOCH: one more than now)\n",
        );
        out.push_str(&format!("  {}\n\n", REVOKE_POLICY.replace("EPOCH", "1")));
        out.push_str(&self.outage_summary());
        out.push_str(&format!(
            "Operator: {}; the gateways authenticate to it as the\n\
             ServiceAccount {NAMESPACE}/{GATEWAY_SERVICE_ACCOUNT} (token in {}, valid {} days).\n",
            info.operator_url,
            info.gateway_token_file.display(),
            GATEWAY_TOKEN_LIFETIME.as_secs() / (24 * 3600),
        ));
        out.push_str(&format!(
            "Logs: {} (the operator's in operator/, the gateways' in gateway/*.log)\n\
             Stop everything with Ctrl-C.\n",
            info.dir.display()
        ));
        out
    }
}

impl Demo {
    /// How to try an operator outage: the demo is built to survive it.
    fn outage_summary(&self) -> String {
        let operator = self
            .info
            .processes
            .iter()
            .find(|p| p.name == "portcullis-operator")
            .map_or_else(|| "<operator pid>".to_owned(), |p| p.pid.to_string());
        let mut out =
            String::from("Static stability (kill the operator; nothing else goes down):\n");
        out.push_str(&format!("  kill -9 {operator}\n"));
        for gateway in &self.gateways {
            out.push_str(&format!(
                "  curl -s http://{}/readyz   # stays 200; `source api_server` within ~10 s\n",
                gateway.ops_addr
            ));
        }
        out.push_str(
            "  # then revoke as above: both gateways refuse the session within seconds, read\n\
             \x20 # straight from the API server; a new login works too\n\n",
        );
        out
    }
}

/// The demo policies with each `spec.upstream.url` pointing at its sample app, and the session
/// lifetimes `config` overrides. The API server validates the durations when they are applied.
fn policies(
    upstreams: &[(&str, SocketAddr)],
    config: &DemoConfig,
) -> Result<Vec<serde_json::Value>> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(POLICY_MANIFEST)
        .context("parsing examples/demo/policy.yaml")?;
    let mut policies = Vec::new();
    for mut document in documents.into_iter().filter(|d| !d.is_null()) {
        let name = document
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| anyhow!("a demo policy without metadata.name"))?
            .to_owned();
        let (_, addr) = upstreams
            .iter()
            .find(|(policy, _)| *policy == name)
            .ok_or_else(|| anyhow!("no sample app for the demo policy {name:?}"))?;
        let url = document
            .pointer_mut("/spec/upstream/url")
            .ok_or_else(|| anyhow!("the demo policy {name:?} has no spec.upstream.url"))?;
        *url = serde_json::Value::String(format!("http://{addr}"));
        let session = document
            .pointer_mut("/spec/session")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(|| anyhow!("the demo policy {name:?} has no spec.session"))?;
        for (field, value) in [
            ("tokenLifetime", &config.token_lifetime),
            ("idleTimeout", &config.idle_timeout),
        ] {
            if let Some(value) = value {
                session.insert(field.into(), serde_json::Value::String(value.clone()));
            }
        }
        policies.push(document);
    }
    Ok(policies)
}

/// Applies the policies to the cluster (server-side apply, so a restarted demo takes over).
async fn apply_policies(client: &kube::Client, policies: &[serde_json::Value]) -> Result<()> {
    let api: Api<AccessPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for document in policies {
        // Typed, so a manifest that does not match the CRD fails here with the field's name.
        let policy: AccessPolicy = serde_json::from_value(document.clone())
            .context("the demo policy does not fit the CRD")?;
        let name = policy
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow!("a demo policy without metadata.name"))?;
        api.patch(&name, &params, &Patch::Apply(&policy))
            .await
            .with_context(|| format!("applying AccessPolicy {NAMESPACE}/{name}"))?;
    }
    Ok(())
}

/// Stops demo processes recorded in `demo.json` that outlived their owner (a `kill -9`ed
/// devstack); a live owner was already stopped, with its children, by the stack's own
/// leftover handling. Only processes still running the recorded binary are signalled.
async fn stop_leftovers(state_dir: &Path, config: &DemoConfig) -> Result<()> {
    crate::stack::stop_leftovers(state_dir).await?;
    let Ok(old) = DemoInfo::load(state_dir) else {
        return Ok(());
    };
    for process in old.processes {
        let binary = process.binary.display().to_string();
        if process.binary.starts_with(&config.bin_dir)
            && process::cmdline_contains(process.pid, &binary)
        {
            process::terminate_pid(process.pid, STOP_GRACE).await?;
        }
    }
    Ok(())
}
