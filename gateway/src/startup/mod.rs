//! Wiring: turns the configuration into a running gateway (keys, identity providers, the
//! access state from its source, session services, the servers) and runs it until shutdown.

mod keys;
mod reload;
mod servers;
mod source;

use crate::{
    config,
    gateway::{Gateway, SessionServices, Settings},
    idp::Providers,
    metrics::Metrics,
    proxy::{Proxy, ProxyConfig},
    sessions::refresh::Refresher,
    shutdown,
};
use anyhow::Context as _;
use portcullis_core::Host;
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tracing::info;

/// Runs the gateway configured by `args` until a shutdown signal.
pub async fn run(args: config::Args) -> anyhow::Result<()> {
    let auth_host =
        Host::parse(&args.auth.auth_host).map_err(|e| anyhow::anyhow!("--auth-host: {e}"))?;
    let settings = Settings {
        auth_host,
        public_port: args.auth.public_port,
        sso_lifetime: args.auth.sso_lifetime,
        trusted_proxies: args.listen.trusted_proxies(),
        access_log: args.log.access_log(),
        login_rate: args.login_rate.rate(),
    };
    let extra_ca = args
        .listen
        .upstream_ca_file
        .as_deref()
        .map(keys::read)
        .transpose()?;
    let providers = providers(&args, &settings, extra_ca.as_deref())?;
    providers.check_discovery().await?;
    let (keys, signing_follower) = keys::signing(&args.keys, &settings.issuer())?;
    let mut followers = vec![signing_follower];
    followers.extend(providers.all().cloned().map(keys::client_secret));
    let proxy = Proxy::new(ProxyConfig {
        extra_roots_pem: extra_ca,
        ..ProxyConfig::default()
    })?;

    let (trigger, signal) = shutdown::channel();
    let known = providers.clone();
    let (state, records) = source::open(
        &args,
        Arc::new(move |name: &str| known.contains(name)),
        signal.clone(),
    )
    .await?;
    let metrics = Metrics::new();
    metrics.initialize(providers.names());
    metrics.initialize_backchannel(&providers);
    let (sessions, refresh_task) = session_services(
        &args.auth,
        records,
        (&providers, &metrics, &signal),
        &mut followers,
    )?;
    let reload = reload::spawn(
        followers,
        args.keys.key_reload_interval,
        metrics.clone(),
        signal.clone(),
    );
    let gateway =
        Gateway::with_sessions(settings, state, keys, providers, proxy, metrics, sessions);
    let servers = servers::spawn(&args.listen, gateway, signal).await?;
    portcullis_runtime::shutdown::os_signal().await;
    info!("shutting down");
    trigger.fire();
    drain(servers, refresh_task).await;
    let _ = reload.await;
    Ok(())
}

/// Session services when logins are recorded: the recorder, the index, and background refresh
/// (spawned here) when a session key is configured; the session keys' follower joins
/// `followers`.
fn session_services(
    auth: &config::AuthArgs,
    records: source::Sessions,
    (providers, metrics, signal): (&Providers, &Metrics, &shutdown::Signal),
    followers: &mut Vec<reload::Follower>,
) -> anyhow::Result<(Option<SessionServices>, Option<JoinHandle<()>>)> {
    let Some((recorder, index)) = records else {
        return Ok((None, None));
    };
    let refresher = match &auth.session_key_file {
        Some(path) => {
            let (ring, follower) = keys::session(path, &auth.previous_session_key_files)?;
            followers.push(follower);
            Some(Refresher::new(
                recorder.clone(),
                ring,
                providers.clone(),
                holder_identity(),
                metrics.clone(),
            ))
        }
        None => {
            tracing::warn!(
                "no --session-key-file: refresh tokens are not kept and sessions are \
                 not confirmed with the identity provider"
            );
            None
        }
    };
    let task = refresher
        .clone()
        .map(|refresher| tokio::spawn(refresher.run(signal.clone())));
    let services = SessionServices {
        recorder,
        index,
        refresher,
    };
    Ok((Some(services), task))
}

/// Waits for the servers to drain and for a refresh under way to write its outcome (perhaps a
/// rotated refresh token) before the process ends.
async fn drain(servers: [JoinHandle<()>; 2], refresh_task: Option<JoinHandle<()>>) {
    let [main, ops] = servers;
    let _ = tokio::join!(main, ops);
    if let Some(task) = refresh_task {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
}

/// The configured identity providers, with their callback on this gateway's auth host.
fn providers(
    args: &config::Args,
    settings: &Settings,
    extra_ca: Option<&[u8]>,
) -> anyhow::Result<Providers> {
    let idp_file: config::IdpFile = serde_saphyr::from_str(
        &std::fs::read_to_string(&args.auth.idp_config)
            .with_context(|| format!("reading {}", args.auth.idp_config.display()))?,
    )
    .with_context(|| format!("parsing {}", args.auth.idp_config.display()))?;
    let http = idp_http_client(extra_ca)?;
    let redirect = format!("{}/.portcullis/callback", settings.issuer());
    Ok(Providers::new(
        idp_file.identity_providers,
        &redirect,
        http,
    )?)
}

/// This replica's name as a refresh-claim holder: the pod name in a cluster.
fn holder_identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|name| format!("{name}/{}", std::process::id()))
        .unwrap_or_else(|_| format!("gateway/{}", std::process::id()))
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
