//! The gateway's two listeners — the public one (TLS: the auth host and every app host) and the
//! ops one (health, readiness, metrics) — served until shutdown, both with the configured
//! connection limits.

use crate::{config, gateway::Gateway, http, ops, router, server, shutdown};
use anyhow::Context as _;
use std::{sync::Arc, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};

/// How long open connections may finish their requests after shutdown starts.
const DRAIN: Duration = Duration::from_secs(20);

/// Binds both listeners and serves `gateway` on them until `signal` fires.
pub(super) async fn spawn(
    listen: &config::ListenArgs,
    gateway: Gateway,
    signal: shutdown::Signal,
) -> anyhow::Result<[JoinHandle<()>; 2]> {
    let metrics = gateway.metrics().clone();
    let tls = server::tls_config(
        &listen.tls_cert_file,
        &listen.tls_key_file,
        Box::new(move |at| metrics.certificate_expires(at)),
    )?;
    let main_listener = TcpListener::bind(listen.listen)
        .await
        .with_context(|| format!("binding {}", listen.listen))?;
    let ops_listener = TcpListener::bind(listen.ops_listen)
        .await
        .with_context(|| format!("binding {}", listen.ops_listen))?;
    let router =
        router::app(gateway.clone()).layer(tower_http::timeout::TimeoutLayer::with_status_code(
            ::http::StatusCode::GATEWAY_TIMEOUT,
            listen.request_timeout,
        ));
    let serving = |tls| {
        let settings = gateway.settings().clone();
        let metrics = gateway.metrics().clone();
        server::Serving {
            tls,
            limits: listen.connections.clone(),
            drain: DRAIN,
            peer_extension: http::ClientAddr,
            // A trusted proxy carries many clients; they are limited where they connect.
            unlimited: Arc::new(move |ip| settings.is_trusted_proxy(ip)),
            on_close: Arc::new(move |reason| metrics.connection_closed(reason)),
        }
    };
    let main = tokio::spawn(server::serve(
        main_listener,
        router,
        signal.clone(),
        serving(Some(tls)),
    ));
    let ops = tokio::spawn(server::serve(
        ops_listener,
        ops::router(gateway.clone()),
        signal,
        serving(None),
    ));
    Ok([main, ops])
}
