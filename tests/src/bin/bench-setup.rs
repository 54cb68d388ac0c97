//! `bench-setup`: the gateway side of `hack/bench-load.sh`.
//!
//! Starts a real Dex and ONE real `portcullis-gateway` (standalone mode) in front of an upstream
//! that is already running, with two AccessPolicies:
//!
//! * `open.bench.test`: a `Bypass` rule for `127.0.0.0/8` (passthrough: proxied with no login
//!   and no identity);
//! * `app.bench.test`: `Allow` for `@example.com` users.
//!
//! Then it logs alice in to `app.bench.test` through the gateway and Dex exactly as a browser
//! does (redirects, Dex's connector page, callback, hand-off), checks that the session works
//! and that the app host refuses a request without it, writes the ports and the app cookie to
//! a shell-sourceable file, and keeps everything running until SIGINT/SIGTERM.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use portcullis_tests::{
    dex::{self, Connector},
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    pki::Pki,
    process::free_port,
};
use reqwest::{StatusCode, Url, cookie::CookieStore as _};
use tokio::signal::unix::{SignalKind, signal};

const AUTH_HOST: &str = "auth.bench.test";
const OPEN_HOST: &str = "open.bench.test";
const APP_HOST: &str = "app.bench.test";
/// Prefix of the gateway's app-token cookies (`gateway/src/cookies.rs`).
const APP_COOKIE_PREFIX: &str = "__Host-portcullis-app-";
/// What `hello-upstream` answers.
const UPSTREAM_BODY: &str = "Hello, world!";

#[derive(Parser)]
#[command(about = "Dex + one portcullis-gateway with a logged-in session, for load benchmarks")]
struct Cli {
    /// The `portcullis-gateway` executable (a release build for meaningful numbers).
    #[arg(long)]
    gateway_bin: PathBuf,
    /// The running upstream (`hello-upstream`), plain HTTP.
    #[arg(long)]
    upstream: SocketAddr,
    /// Working directory (certificates, keys, policies, logs).
    #[arg(long)]
    dir: PathBuf,
    /// Where to write the shell-sourceable result (ports, cookie) once everything is ready.
    #[arg(long)]
    env_file: PathBuf,
    /// `RUST_LOG` of the gateway.
    #[arg(long, default_value = "warn")]
    gateway_log: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portcullis_tests::tool_main("bench-setup", "warn", run()).await
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;

    // Dex and the gateway are dropped (and so stopped) if the start is interrupted.
    let (mut dex, mut gateway) = tokio::select! {
        started = start(&cli) => started?,
        _ = sigint.recv() => bail!("interrupted during start"),
        _ = sigterm.recv() => bail!("terminated during start"),
    };
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    let stopped = gateway.stop().await;
    dex.stop().await?;
    stopped
}

async fn start(cli: &Cli) -> Result<(DexServer, GatewayProcess)> {
    let dir = &cli.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let dex = DexServer::start(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(AUTH_HOST, port)],
    )
    .await?;
    let mut config = GatewayConfig::new(
        dir.join("gateway"),
        AUTH_HOST,
        &[OPEN_HOST, APP_HOST],
        &manifests(cli.upstream),
    );
    config.port = port;
    config.env = vec![("RUST_LOG".into(), cli.gateway_log.clone())];
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway = GatewayProcess::start(&cli.gateway_bin, config, files).await?;

    let cookie = log_in(&dex, &gateway)
        .await
        .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    check_targets(&gateway, &cookie).await?;
    write_env(&cli.env_file, &gateway, &cookie)?;
    eprintln!(
        "bench-setup: gateway https://127.0.0.1:{} (pid {}), Dex {}, session for alice ready",
        gateway.addr.port(),
        gateway.pid().unwrap_or_default(),
        dex.info.issuer
    );
    Ok((dex, gateway))
}

/// The two policies. The app token lives for an hour so that it cannot expire during a run
/// (the default is five minutes).
fn manifests(upstream: SocketAddr) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: open, namespace: bench }}
spec:
  hosts: [{OPEN_HOST}]
  upstream: {{ url: "http://{upstream}" }}
  rules:
    - action: Bypass
      include: [{{ ipRanges: ["127.0.0.0/8"] }}]
---
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: app, namespace: bench }}
spec:
  hosts: [{APP_HOST}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  session: {{ tokenLifetime: 1h }}
  rules:
    - action: Allow
      include: [{{ emailDomains: [example.com] }}]
"#
    )
}

/// An HTTP client that reaches the gateway's host names at its address and trusts the test CA.
fn client(
    gateway: &GatewayProcess,
    jar: Option<Arc<reqwest::cookie::Jar>>,
) -> Result<reqwest::Client> {
    let mut builder = dex::http_client_builder(&gateway.files.ca_file)?;
    if let Some(jar) = jar {
        builder = builder.cookie_provider(jar);
    }
    for host in [AUTH_HOST, OPEN_HOST, APP_HOST] {
        builder = builder.resolve(host, gateway.addr);
    }
    builder.build().context("building the HTTP client")
}

/// Logs alice in to the app host the way a browser does and returns `name=value` of the app
/// cookie the gateway set.
async fn log_in(dex: &DexServer, gateway: &GatewayProcess) -> Result<String> {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = client(gateway, Some(jar.clone()))?;
    let start = Url::parse(&format!("{}/", gateway.origin(APP_HOST)))?;
    let user = dex.info.user("alice")?.clone();
    let landed = dex::follow_login(&browser, start.clone(), &user, Connector::Header, |url| {
        url.host_str() == Some(APP_HOST) && !url.path().starts_with("/.portcullis/")
    })
    .await
    .with_context(|| format!("logging in; Dex log:\n{}", dex.log_tail()))?;
    ensure!(landed.path() == "/", "the login ended at {landed}");
    let cookies = jar
        .cookies(&start)
        .context("the login set no cookie for the app host")?;
    let cookies = cookies.to_str().context("cookie header")?;
    cookies
        .split(';')
        .map(str::trim)
        .find(|pair| pair.starts_with(APP_COOKIE_PREFIX))
        .map(str::to_owned)
        .with_context(|| format!("no {APP_COOKIE_PREFIX}* cookie among {cookies:?}"))
}

/// The gateway answers both targets with the upstream's body, and refuses the app host
/// without the session: the benchmark measures what it claims to measure.
async fn check_targets(gateway: &GatewayProcess, cookie: &str) -> Result<()> {
    let client = client(gateway, None)?;
    let get = |host: &str, cookie: Option<&str>| {
        let mut req = client.get(format!("{}/", gateway.origin(host)));
        if let Some(cookie) = cookie {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        async move {
            let resp = req.send().await.context("GET")?;
            let status = resp.status();
            let body = resp.text().await.context("reading the body")?;
            anyhow::Ok((status, body))
        }
    };
    for (host, cookie) in [(OPEN_HOST, None), (APP_HOST, Some(cookie))] {
        let (status, body) = get(host, cookie).await?;
        ensure!(
            status == StatusCode::OK && body == UPSTREAM_BODY,
            "{host} answered {status}: {body:?}"
        );
    }
    let (status, _) = get(APP_HOST, None).await?;
    ensure!(
        status.is_redirection() || status == StatusCode::UNAUTHORIZED,
        "{APP_HOST} without the session answered {status}, not a login"
    );
    Ok(())
}

/// Writes the result for `source`, atomically (the script waits for the file to appear).
fn write_env(path: &Path, gateway: &GatewayProcess, cookie: &str) -> Result<()> {
    // A JWT cookie is base64url and dots: nothing a single-quoted shell word cannot hold.
    ensure!(
        !cookie.contains('\''),
        "unexpected quote in the cookie {cookie:?}"
    );
    let body = format!(
        "GATEWAY_PORT={}\nGATEWAY_OPS_PORT={}\nGATEWAY_PID={}\nAUTH_HOST={AUTH_HOST}\n\
         OPEN_HOST={OPEN_HOST}\nAPP_HOST={APP_HOST}\nAPP_COOKIE='{cookie}'\n",
        gateway.addr.port(),
        gateway.ops_addr.port(),
        gateway.pid().unwrap_or_default(),
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
