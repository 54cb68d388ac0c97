//! Kubeconfig files for the stack, readable by both kubectl and kube-rs.

use std::path::Path;

use anyhow::{Context, Result};

use crate::pki::CertFiles;

/// Name of the cluster, user and context in every kubeconfig the harness writes.
pub const CONTEXT: &str = "portcullis-test";

/// Writes a kubeconfig that reaches `server` trusting `ca_file` and authenticating with the
/// client certificate `identity`. Paths, not inline data, so the files stay the single truth.
pub fn write(path: &Path, server: &str, ca_file: &Path, identity: &CertFiles) -> Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": { "server": server, "certificate-authority": ca_file },
        }],
        "users": [{
            "name": CONTEXT,
            "user": { "client-certificate": identity.cert, "client-key": identity.key },
        }],
        "contexts": [{
            "name": CONTEXT,
            "context": { "cluster": CONTEXT, "user": CONTEXT, "namespace": "default" },
        }],
        "current-context": CONTEXT,
    });
    let yaml = serde_saphyr::to_string(&doc).context("serializing kubeconfig")?;
    // It names a key file, not the key; still keep it private like any credential pointer.
    crate::fsutil::write_private(path, yaml.as_bytes())
}

/// A kube-rs client configuration from a kubeconfig file written by [`write`].
pub async fn client_config(path: &Path) -> Result<kube::Config> {
    crate::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))
}
