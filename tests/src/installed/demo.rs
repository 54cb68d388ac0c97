//! The in-cluster demo (`hack/demo.sh --in-cluster`): the seed set-up ([`super::seed`]) installed
//! with `helm install` on a node of the demo's own control plane, as a cluster runs it, and
//! reachable from a browser on this machine without any DNS set-up.
//!
//! Every public name is under `portcullis.localhost`, which browsers and curl resolve to this
//! machine. A relay on `127.0.0.1:PORT` passes each TCP stream to Traefik's Service (TLS is
//! end to end: the relay sees ciphertext). Dex is public too, at `dex.portcullis.localhost`:
//! Traefik passes its TLS through by name, and pods reach the same URL because the node's DNS
//! answers that one name with Dex's Service (`crate::node::config::DEMO_DEX`), as a cluster's
//! DNS names its identity provider.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use tokio::task::JoinHandle;

use super::Release;
use super::seed::{self, Seed, Session};
use crate::node::NodeInfo;
use crate::node::config::{DEMO_DOMAIN, DEMO_NAMESPACE};

/// The demo, installed, with its relay running.
pub struct ClusterDemo {
    pub release: Release,
    pub seed: Seed,
    relay: JoinHandle<()>,
}

impl ClusterDemo {
    /// Installs the demo in its namespace (an earlier one is removed first) with the policies'
    /// session lifetimes `session` ([`Session::demo`] for a person), and relays
    /// `127.0.0.1:port` to the ingress.
    pub async fn install(
        kubeconfig: &Path,
        node: &NodeInfo,
        port: u16,
        session: &Session,
    ) -> Result<Self> {
        remove(kubeconfig)?;
        let config = crate::kubeconfig::client_config(kubeconfig).await?;
        let client = kube::Client::try_from(config).context("API client")?;
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE},
        });
        let scratch = crate::fsutil::scratch_dir("demo", DEMO_NAMESPACE)?;
        let file = scratch.join("namespace.json");
        std::fs::write(&file, serde_json::to_vec(&namespace)?)?;
        crate::node::components::kubectl_apply(kubeconfig, &file)?;
        let release = Release::public(DEMO_NAMESPACE, DEMO_DOMAIN, port);
        let seed = seed::install(&client, &release, (kubeconfig, node), session).await?;
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let relay = crate::node::relay::start(listen, SocketAddr::new(seed.traefik, 443)).await?;
        Ok(Self {
            release,
            seed,
            relay,
        })
    }

    /// Fails once the relay stopped (its listener failed).
    pub fn ensure_running(&self) -> Result<()> {
        ensure!(!self.relay.is_finished(), "the demo's relay stopped");
        Ok(())
    }

    /// What to open, and how to trust the demo's certificates.
    pub fn summary(&self) -> String {
        let r = &self.release;
        let (proxy, forward) = (&self.seed.proxy, &self.seed.forward);
        let ca = self.seed.installed.dex.ca_file.display();
        let users: Vec<String> = self
            .seed
            .installed
            .dex
            .users
            .iter()
            .map(|u| format!("{} / {}", u.email, u.password))
            .collect();
        format!(
            "\nPortcullis is installed in namespace {ns} (helm release {ns}), Traefik in front:\n\
             \n  through the gateway's reverse-proxy mode:\n    {}/wordpress/   {}/express/   {}/\n\
             \n  through Traefik's forward-auth:\n    {}/wordpress/   {}/express/   {}/\n\
             \n  the auth host (log in, log out): {}\n  Dex: {}\n  users: {}\n\
             \nTrust the demo CA in your browser: {ca}\n  \
             curl --cacert {ca} -i {}/wordpress/\n\
             \nkubectl -n {ns} get pods,accesspolicies,accesssessions\n",
            r.origin(&proxy.apps),
            r.origin(&proxy.apps),
            r.origin(&proxy.express),
            r.origin(&forward.apps),
            r.origin(&forward.apps),
            r.origin(&forward.express),
            r.origin(&r.auth),
            r.issuer(),
            users.join(", "),
            r.origin(&proxy.apps),
            ns = r.ns,
        )
    }
}

/// Uninstalls the demo's release and deletes its namespace, if there are any: the chart's
/// cluster-scoped objects are named after the release, so a second install needs the first
/// one gone.
pub fn remove(kubeconfig: &Path) -> Result<()> {
    let scratch = crate::fsutil::scratch_dir("demo-remove", DEMO_NAMESPACE)?;
    crate::tools::helm(
        &[
            "uninstall",
            DEMO_NAMESPACE,
            "-n",
            DEMO_NAMESPACE,
            "--ignore-not-found",
            "--wait",
        ],
        kubeconfig,
        &scratch,
    )?;
    let kubectl = crate::tools::Tool::Kubectl.path()?.display().to_string();
    crate::node::net::run(
        &kubectl,
        &[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "delete",
            "namespace",
            DEMO_NAMESPACE,
            "--ignore-not-found",
            "--wait",
            "--timeout=180s",
        ],
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

impl Drop for ClusterDemo {
    fn drop(&mut self) {
        self.relay.abort();
    }
}
