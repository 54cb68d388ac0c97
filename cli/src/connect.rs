//! Choosing the cluster the way kubectl does: `--kubeconfig`, else `KUBECONFIG` (a list of
//! files, merged), else `~/.kube/config`, else the in-cluster ServiceAccount; `--context`, else
//! the current context. The context's namespace is the default namespace of policies.

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::cli::ConnectArgs;
use crate::error::Error;

/// Longest wait for one API response.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A client and the namespace the kubeconfig context names.
pub struct Connection {
    pub client: Client,
    /// The context's namespace, else `default` (in a pod: the pod's namespace).
    pub context_namespace: String,
}

/// Connects as kubectl would with the same flags and environment.
pub async fn connect(args: &ConnectArgs) -> Result<Connection, Error> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: None,
        user: None,
    };
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: Some(path.display().to_string()),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: Some(path.display().to_string()),
                    source,
                })?
        }
        None if kubeconfig_present() => Config::from_kubeconfig(&options)
            .await
            .map_err(|source| Error::Kubeconfig { path: None, source })?,
        None if args.context.is_some() => {
            return Err(Error::NoConfig(
                "--context names a kubeconfig context, and there is no kubeconfig".to_owned(),
            ));
        }
        None => Config::incluster().map_err(|e| Error::NoConfig(e.to_string()))?,
    };
    // Nothing here watches: an answer that takes longer than this is a stalled connection.
    config.read_timeout = Some(READ_TIMEOUT);
    // The client's own retry of 429/503/504 backs off up to minutes per request; the plugin
    // retries every transient failure (those, other 5xx, timeouts, refused connections) itself,
    // a few seconds at most, and carries on with the other sessions (`retry.rs`).
    config.default_retry = false;
    let context_namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(Error::Client)?;
    Ok(Connection {
        client,
        context_namespace,
    })
}

/// Whether kubectl would read a kubeconfig: `KUBECONFIG` names a file, or the default one
/// exists.
fn kubeconfig_present() -> bool {
    if let Some(value) = std::env::var_os("KUBECONFIG")
        && std::env::split_paths(&value).any(|p| !p.as_os_str().is_empty())
    {
        return true;
    }
    std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".kube/config"))
        .is_some_and(|path| path.is_file())
}
