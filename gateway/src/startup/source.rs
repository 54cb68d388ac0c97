//! Where the access state and the session records come from: a policy directory (standalone,
//! with optional session records in the cluster or in the gateway's own file), or the
//! operator's stream (cluster mode).

use crate::{
    config,
    sessions::SessionRecorder,
    shutdown,
    state::{self, Snapshot, directory, session_index::SessionIndex},
};
use anyhow::Context as _;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use tracing::info;

/// The names of the configured identity providers, for validating policies.
pub(super) type KnownIdps = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Where logins are recorded, and the index of the sessions accepted on every request.
pub(super) type Sessions = Option<(SessionRecorder, watch::Receiver<Arc<SessionIndex>>)>;
/// The access state, and the sessions when logins are recorded.
pub(super) type StateSource = (watch::Receiver<Arc<Snapshot>>, Sessions);

/// The state source `args` configure.
pub(super) async fn open(
    args: &config::Args,
    known_idps: KnownIdps,
    signal: shutdown::Signal,
) -> anyhow::Result<StateSource> {
    match &args.policy_dir {
        Some(dir) => standalone(args, dir, known_idps, signal).await,
        None => cluster(args, known_idps, signal).await,
    }
}

/// Standalone mode: policies from a directory; with `--session-namespace`, logins recorded and
/// sessions followed with the gateway's own watch.
async fn standalone(
    args: &config::Args,
    dir: &std::path::Path,
    known_idps: KnownIdps,
    signal: shutdown::Signal,
) -> anyhow::Result<StateSource> {
    let state = directory::watch_directory(
        dir.to_owned(),
        known_idps,
        Duration::from_secs(1),
        signal.clone(),
    )?;
    // Where logins are recorded: AccessSessions in the cluster, or the gateway's own store.
    let sessions = match (&args.session_namespace, &args.session_store_file) {
        (Some(namespace), _) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            info!(namespace, "recording logins as AccessSessions");
            let index = state::session_index::watch_sessions(client.clone(), namespace, signal);
            Some((
                SessionRecorder::new(write_client().await?, namespace),
                index,
            ))
        }
        (None, Some(file)) => {
            let store = crate::sessions::file_store::LocalStore::open(Some(file.clone()))?;
            info!(file = %file.display(), "recording logins in the gateway's own session store");
            let index = store.index();
            Some((SessionRecorder::local(store), index))
        }
        (None, None) => None,
    };
    Ok((state, sessions))
}

/// Cluster mode: policies and sessions from the operator's stream; logins recorded as
/// AccessSessions.
async fn cluster(
    args: &config::Args,
    known_idps: KnownIdps,
    signal: shutdown::Signal,
) -> anyhow::Result<StateSource> {
    let namespace = args
        .session_namespace
        .as_deref()
        .context("--operator-url needs --session-namespace (where logins are recorded)")?;
    let ca_file = args
        .operator
        .operator_ca_file
        .as_deref()
        .context("--operator-url needs --operator-ca-file")?;
    let ca_pem =
        std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let receivers = state::operator_stream::spawn(
        state::operator_stream::StreamConfig {
            urls: args.operator.operator_url.clone(),
            ca_pem,
            token_file: args.operator.operator_token_file.clone(),
            gateway_id: args.operator.gateway_id(),
            stale_after: args.operator.state_stale_after,
            refuse_stale: args.operator.refuse_stale_state,
        },
        known_idps,
        signal.clone(),
    )?;
    state::api_fallback::spawn(
        watch_client().await?,
        state::api_fallback::FallbackConfig {
            namespace: namespace.to_owned(),
            after: args.operator.api_fallback_after,
            jitter: args.operator.api_fallback_jitter,
            policy_namespaces: state::api_fallback::Namespaces::new(
                &args.operator.watch_namespaces,
            ),
        },
        receivers.shared,
        receivers.feed,
        signal,
    );
    info!(
        namespace,
        operators = args.operator.operator_url.len(),
        "cluster mode: following the operator (the API server while it is unavailable)"
    );
    Ok((
        receivers.state,
        Some((
            SessionRecorder::new(write_client().await?, namespace),
            receivers.index,
        )),
    ))
}

/// The Kubernetes client of the API-server fallback's watches: reads time out a little after
/// the server ends each watch (`api_fallback`), so a silently dead connection is found within
/// seconds, not minutes.
async fn watch_client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer()
        .await
        .context("configuring the Kubernetes client")?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    config.write_timeout = Some(Duration::from_secs(15));
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The Kubernetes client session records are written with: every call bounded, so a silently
/// dead connection fails (and is retried) instead of stalling a login or a refresh. (Watches
/// use a client without a read timeout: they wait for events by design.)
async fn write_client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer()
        .await
        .context("configuring the Kubernetes client")?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    config.write_timeout = Some(Duration::from_secs(15));
    kube::Client::try_from(config).context("building the Kubernetes client")
}
