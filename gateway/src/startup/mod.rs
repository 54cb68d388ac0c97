//! Wiring: turns the configuration into a running gateway (keys, identity providers, the
//! access state from its source, session services, the servers) and runs it until shutdown.

use crate::{
    config,
    gateway::{Gateway, Settings},
    http,
    idp::Providers,
    metrics::Metrics,
    ops,
    proxy::{Proxy, ProxyConfig},
    router, server, shutdown,
    state::directory,
};
use anyhow::Context as _;
use portcullis_core::{Host, token::KeySet};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tracing::info;

/// How long open connections may finish their requests after shutdown starts.
const DRAIN: Duration = Duration::from_secs(20);

/// Runs the gateway configured by `args` until a shutdown signal.
pub async fn run(args: config::Args) -> anyhow::Result<()> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let current = read(&args.keys.signing_key_file)?;
    let next = args
        .keys
        .next_signing_key_file
        .as_deref()
        .map(read)
        .transpose()?;
    let previous = args
        .keys
        .previous_signing_key_files
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let previous: Vec<&[u8]> = previous.iter().map(Vec::as_slice).collect();
    let keys = Arc::new(
        KeySet::from_pems(&current, next.as_deref(), &previous).context("loading signing keys")?,
    );
    info!(kid = keys.current_kid(), "signing keys loaded");

    let auth_host =
        Host::parse(&args.auth.auth_host).map_err(|e| anyhow::anyhow!("--auth-host: {e}"))?;
    let settings = Settings {
        auth_host,
        public_port: args.auth.public_port,
        sso_lifetime: args.auth.sso_lifetime,
        trusted_proxies: args.listen.trusted_proxies(),
    };

    let extra_ca = args
        .listen
        .upstream_ca_file
        .as_deref()
        .map(read)
        .transpose()?;
    let idp_file: config::IdpFile = serde_saphyr::from_str(
        &std::fs::read_to_string(&args.auth.idp_config)
            .with_context(|| format!("reading {}", args.auth.idp_config.display()))?,
    )
    .with_context(|| format!("parsing {}", args.auth.idp_config.display()))?;
    let http = idp_http_client(extra_ca.as_deref())?;
    let redirect = format!("{}/.portcullis/callback", settings.issuer());
    let providers = Providers::new(idp_file.identity_providers, &redirect, http)?;
    let proxy = Proxy::new(ProxyConfig {
        extra_roots_pem: extra_ca,
        ..ProxyConfig::default()
    })?;

    let (trigger, signal) = shutdown::channel();
    let known = providers.clone();
    let known_idps = Arc::new(move |name: &str| known.contains(name));
    let (state, records) = match &args.policy_dir {
        Some(dir) => standalone(&args, dir, known_idps, signal.clone()).await?,
        None => cluster(&args, known_idps, signal.clone()).await?,
    };
    let metrics = Metrics::new();
    let mut refresh_task = None;
    let sessions = match records {
        Some((recorder, index)) => {
            let refresher = match &args.auth.session_key_file {
                Some(path) => {
                    use crate::sessions::seal::{KeyRing, SessionKey};
                    let load = |path: &std::path::PathBuf| {
                        SessionKey::from_file_content(&read(path)?)
                            .with_context(|| format!("loading {}", path.display()))
                    };
                    let previous = args
                        .auth
                        .previous_session_key_files
                        .iter()
                        .map(load)
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let key = KeyRing::new(load(path)?, previous);
                    info!(
                        key = key.current_id(),
                        previous = ?key.previous_ids().collect::<Vec<_>>(),
                        "refresh tokens are sealed and sessions confirmed"
                    );
                    let refresher = crate::sessions::refresh::Refresher::new(
                        recorder.clone(),
                        Arc::new(key),
                        providers.clone(),
                        holder_identity(),
                        metrics.clone(),
                    );
                    refresh_task = Some(tokio::spawn(refresher.clone().run(signal.clone())));
                    Some(refresher)
                }
                None => {
                    tracing::warn!(
                        "no --session-key-file: refresh tokens are not kept and sessions are \
                         not confirmed with the identity provider"
                    );
                    None
                }
            };
            Some(crate::gateway::SessionServices {
                recorder,
                index,
                refresher,
            })
        }
        None => None,
    };
    let gateway =
        Gateway::with_sessions(settings, state, keys, providers, proxy, metrics, sessions);

    let tls = server::tls_config(&args.listen.tls_cert_file, &args.listen.tls_key_file)?;
    let main_listener = TcpListener::bind(args.listen.listen)
        .await
        .with_context(|| format!("binding {}", args.listen.listen))?;
    let ops_listener = TcpListener::bind(args.listen.ops_listen)
        .await
        .with_context(|| format!("binding {}", args.listen.ops_listen))?;
    let router =
        router::app(gateway.clone()).layer(tower_http::timeout::TimeoutLayer::with_status_code(
            ::http::StatusCode::GATEWAY_TIMEOUT,
            args.listen.request_timeout,
        ));
    let main = tokio::spawn(server::serve(
        main_listener,
        Some(tls),
        router,
        signal.clone(),
        DRAIN,
        http::ClientAddr,
    ));
    let ops = tokio::spawn(server::serve(
        ops_listener,
        None,
        ops::router(gateway),
        signal,
        DRAIN,
        http::ClientAddr,
    ));

    portcullis_runtime::shutdown::os_signal().await;
    info!("shutting down");
    trigger.fire();
    let _ = tokio::join!(main, ops);
    // A refresh under way writes its outcome (perhaps a rotated refresh token) before the
    // process ends.
    if let Some(task) = refresh_task {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    Ok(())
}

/// This replica's name as a refresh-claim holder: the pod name in a cluster.
fn holder_identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|name| format!("{name}/{}", std::process::id()))
        .unwrap_or_else(|_| format!("gateway/{}", std::process::id()))
}

type Sessions = Option<(
    crate::sessions::SessionRecorder,
    tokio::sync::watch::Receiver<Arc<crate::state::session_index::SessionIndex>>,
)>;
type StateSource = (
    tokio::sync::watch::Receiver<Arc<crate::state::Snapshot>>,
    Sessions,
);

/// Standalone mode: policies from a directory; with `--session-namespace`, logins recorded and
/// sessions followed with the gateway's own watch.
async fn standalone(
    args: &config::Args,
    dir: &std::path::Path,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
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
            let index =
                crate::state::session_index::watch_sessions(client.clone(), namespace, signal);
            Some((
                crate::sessions::SessionRecorder::new(write_client().await?, namespace),
                index,
            ))
        }
        (None, Some(file)) => {
            let store = crate::sessions::file_store::LocalStore::open(Some(file.clone()))?;
            info!(file = %file.display(), "recording logins in the gateway's own session store");
            let index = store.index();
            Some((crate::sessions::SessionRecorder::local(store), index))
        }
        (None, None) => None,
    };
    Ok((state, sessions))
}

/// Cluster mode: policies and sessions from the operator's stream; logins recorded as
/// AccessSessions.
async fn cluster(
    args: &config::Args,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
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
    let (state, index) = crate::state::operator_stream::spawn(
        crate::state::operator_stream::StreamConfig {
            urls: args.operator.operator_url.clone(),
            ca_pem,
            token_file: args.operator.operator_token_file.clone(),
            gateway_id: args.operator.gateway_id(),
            stale_after: args.operator.state_stale_after,
        },
        known_idps,
        signal,
    )?;
    info!(
        namespace,
        operators = args.operator.operator_url.len(),
        "cluster mode: following the operator"
    );
    Ok((
        state,
        Some((
            crate::sessions::SessionRecorder::new(write_client().await?, namespace),
            index,
        )),
    ))
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

/// HTTP client for identity providers: no redirects (they would open SSRF), aws-lc-rs TLS with
/// the system roots plus the configured extra CA.
fn idp_http_client(extra_ca: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_ca {
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.context("reading the extra CA")?)
                .context("adding the extra CA")?;
        }
    }
    let tls = portcullis_runtime::client_tls::config(roots)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?)
}
