//! Command lines and readiness checks of the four components.
//!
//! Every listener binds 127.0.0.1 only; the controller manager serves nothing at all.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{Layout, Ports};
use crate::tools::Tool;

/// Service IP range of the cluster; the `kubernetes` Service would get its first address.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";

/// Controllers the controller manager runs: enough for namespaces to finish deleting,
/// ownerReferences to cascade and default ServiceAccounts (and their legacy token secrets) to
/// appear. Nothing that needs nodes or pods.
pub const CONTROLLERS: &str = "namespace-controller,garbage-collector-controller,\
serviceaccount-controller,serviceaccount-token-controller";

pub fn etcd(layout: &Layout, ports: &Ports) -> Result<Command> {
    let mut cmd = Command::new(Tool::Etcd.path()?);
    let client = format!("http://127.0.0.1:{}", ports.etcd);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    cmd.arg("--name=portcullis")
        .arg(format!("--data-dir={}", layout.etcd_data.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=portcullis={peer}"))
        .arg("--initial-cluster-state=new")
        // Test data is thrown away; skipping fsync makes a 2-core CI machine several times
        // faster. It does not weaken what the tests check: etcd itself is never restarted.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    Ok(cmd)
}

pub fn apiserver(layout: &Layout, ports: &Ports) -> Result<Command> {
    let mut cmd = Command::new(Tool::KubeApiserver.path()?);
    let pki = &layout.pki;
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", ports.apiserver))
        .arg(format!(
            "--cert-dir={}",
            layout.root.join("apiserver-certs").display()
        ))
        .arg(format!(
            "--tls-cert-file={}",
            pki.join("apiserver.crt").display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.join("apiserver.key").display()
        ))
        .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-account-issuer={}", apiserver_url(ports)))
        .arg(format!(
            "--service-account-key-file={}",
            pki.join("sa.pub").display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.join("sa.key").display()
        ))
        .arg(format!(
            "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
        ))
        // The `kubernetes` Endpoints would point at 127.0.0.1, which Endpoints validation
        // rejects; nothing in the tests routes through that Service.
        .arg("--endpoint-reconciler-type=none")
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(cmd)
}

pub fn controller_manager(layout: &Layout) -> Result<Command> {
    let mut cmd = Command::new(Tool::KubeControllerManager.path()?);
    let pki = &layout.pki;
    cmd.arg(format!("--kubeconfig={}", layout.kcm_kubeconfig.display()))
        .arg(format!("--controllers={CONTROLLERS}"))
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.join("sa.key").display()
        ))
        .arg(format!("--root-ca-file={}", pki.join("ca.crt").display()))
        .arg("--leader-elect=false")
        // Each controller acts as its own ServiceAccount with its bootstrap RBAC role, as in a
        // real cluster; the controller manager's own user may only mint those tokens.
        .arg("--use-service-account-credentials=true")
        // 0 disables its HTTPS endpoint: the controller manager listens on nothing.
        .arg("--secure-port=0")
        .arg("--v=1");
    Ok(cmd)
}

pub fn dex(config: &Path, client_secret: &str) -> Result<Command> {
    let mut cmd = Command::new(Tool::Dex.path()?);
    cmd.arg("serve")
        .arg(config)
        .env(crate::dex::CLIENT_SECRET_ENV, client_secret);
    Ok(cmd)
}

pub fn apiserver_url(ports: &Ports) -> String {
    format!("https://127.0.0.1:{}", ports.apiserver)
}

pub fn dex_issuer(ports: &Ports) -> String {
    format!("https://127.0.0.1:{}/dex", ports.dex)
}

/// etcd answers `/health` with `"health":"true"`.
pub async fn etcd_healthy(ports: &Ports) -> Result<bool> {
    let body = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", ports.etcd))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .context("GET /health")?
        .text()
        .await
        .context("reading /health")?;
    Ok(body.contains("\"health\":\"true\""))
}

/// The API server answers `/readyz` with 200 to the admin certificate.
pub async fn apiserver_ready(admin: &reqwest::Client, url: &str) -> Result<bool> {
    let resp = admin
        .get(format!("{url}/readyz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .context("GET /readyz")?;
    Ok(resp.status().is_success())
}

/// Dex serves its discovery document with the expected issuer.
pub async fn dex_ready(client: &reqwest::Client, issuer: &str) -> Result<bool> {
    let resp = client
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .context("GET discovery")?;
    if !resp.status().is_success() {
        return Ok(false);
    }
    let doc: serde_json::Value = resp.json().await.context("parsing discovery")?;
    Ok(doc["issuer"] == issuer)
}

/// A reqwest client presenting the admin certificate and trusting the stack CA.
pub fn admin_http_client(layout: &Layout) -> Result<reqwest::Client> {
    let pki = &layout.pki;
    let mut pem = std::fs::read(pki.join("admin.crt")).context("reading admin.crt")?;
    pem.extend(std::fs::read(pki.join("admin.key")).context("reading admin.key")?);
    let identity = reqwest::Identity::from_pem(&pem).context("admin identity")?;
    crate::dex::http_client_builder(&pki.join("ca.crt"))?
        .identity(identity)
        .build()
        .context("building admin HTTP client")
}
