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
//!
//! With `--oauth2-proxy-bin` (`hack/bench-peers.sh`) it also starts a stock oauth2-proxy on the
//! same Dex (the same client, its own registered redirect URI), serving HTTPS with a certificate
//! of the same test CA in front of the same upstream, logs alice in to it through Dex the same
//! way, checks that its session works (`/` and `/oauth2/auth`) and that it refuses a request
//! without it, and writes its port and session cookie too. `--trusted-proxies` lets nginx's
//! `X-Original-URL` in (forward-auth from `auth_request`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use portcullis_tests::{
    dex::{self, Connector},
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    pki::Pki,
    process::{ManagedProcess, free_port},
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
    /// Also start this oauth2-proxy executable and log alice in to it.
    #[arg(long)]
    oauth2_proxy_bin: Option<PathBuf>,
    /// Peers whose forwarding headers the gateway believes (comma-separated CIDRs).
    #[arg(long, value_delimiter = ',')]
    trusted_proxies: Vec<String>,
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
    let (mut dex, mut gateway, mut oauth2_proxy) = tokio::select! {
        started = start(&cli) => started?,
        _ = sigint.recv() => bail!("interrupted during start"),
        _ = sigterm.recv() => bail!("terminated during start"),
    };
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    let stopped = gateway.stop().await;
    if let Some(proxy) = oauth2_proxy.as_mut() {
        proxy.stop(Duration::from_secs(5)).await?;
    }
    dex.stop().await?;
    stopped
}

async fn start(cli: &Cli) -> Result<(DexServer, GatewayProcess, Option<ManagedProcess>)> {
    let dir = &cli.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let oauth2_proxy_port = free_port()?;
    let mut redirect_uris = vec![GatewayProcess::redirect_uri(AUTH_HOST, port)];
    if cli.oauth2_proxy_bin.is_some() {
        redirect_uris.push(oauth2_proxy_redirect_uri(oauth2_proxy_port));
    }
    let dex = DexServer::start(&dir.join("dex"), &pki, redirect_uris).await?;
    let mut config = GatewayConfig::new(
        dir.join("gateway"),
        AUTH_HOST,
        &[OPEN_HOST, APP_HOST],
        &manifests(cli.upstream),
    );
    config.port = port;
    config.env = vec![("RUST_LOG".into(), cli.gateway_log.clone())];
    config.trusted_proxies = cli.trusted_proxies.clone();
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let gateway = GatewayProcess::start(&cli.gateway_bin, config, files).await?;

    let cookie = log_in(&dex, &gateway)
        .await
        .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    check_targets(&gateway, &cookie).await?;
    let mut env = env_lines(&gateway, &cookie)?;
    let oauth2_proxy = match &cli.oauth2_proxy_bin {
        Some(bin) => {
            let (process, cookie) =
                start_oauth2_proxy(bin, cli, &pki, &dex, oauth2_proxy_port).await?;
            ensure!(
                !cookie.contains('\''),
                "unexpected quote in the cookie {cookie:?}"
            );
            env.push_str(&format!(
                "OAUTH2_PROXY_PORT={oauth2_proxy_port}\nOAUTH2_PROXY_PID={}\n\
                 OAUTH2_PROXY_COOKIE='{cookie}'\n",
                process.pid().unwrap_or_default()
            ));
            Some(process)
        }
        None => None,
    };
    write_env(&cli.env_file, &env)?;
    eprintln!(
        "bench-setup: gateway https://127.0.0.1:{} (pid {}), Dex {}, session for alice ready",
        gateway.addr.port(),
        gateway.pid().unwrap_or_default(),
        dex.info.issuer
    );
    Ok((dex, gateway, oauth2_proxy))
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

/// The gateway's part of the result for `source`.
fn env_lines(gateway: &GatewayProcess, cookie: &str) -> Result<String> {
    // A JWT cookie is base64url and dots: nothing a single-quoted shell word cannot hold.
    ensure!(
        !cookie.contains('\''),
        "unexpected quote in the cookie {cookie:?}"
    );
    Ok(format!(
        "GATEWAY_PORT={}\nGATEWAY_OPS_PORT={}\nGATEWAY_PID={}\nAUTH_HOST={AUTH_HOST}\n\
         OPEN_HOST={OPEN_HOST}\nAPP_HOST={APP_HOST}\nAPP_COOKIE='{cookie}'\n\
         TLS_CERT='{}'\nTLS_KEY='{}'\nCA_FILE='{}'\n",
        gateway.addr.port(),
        gateway.ops_addr.port(),
        gateway.pid().unwrap_or_default(),
        gateway.files.tls_cert.display(),
        gateway.files.tls_key.display(),
        gateway.files.ca_file.display(),
    ))
}

/// Writes the result for `source`, atomically (the script waits for the file to appear).
fn write_env(path: &Path, body: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Where Dex sends a browser back to oauth2-proxy.
fn oauth2_proxy_redirect_uri(port: u16) -> String {
    format!("https://127.0.0.1:{port}/oauth2/callback")
}

/// Starts a stock oauth2-proxy with documented options only: Dex as its OIDC provider (the
/// test CA trusted), HTTPS with a certificate of the test CA, the upstream, `@example.com`
/// users allowed, request logging off (the gateway logs no request either, at `warn`). Then
/// logs alice in through Dex and checks the session; returns the process and the `Cookie`
/// header of the session.
async fn start_oauth2_proxy(
    bin: &Path,
    cli: &Cli,
    pki: &Pki,
    dex: &DexServer,
    port: u16,
) -> Result<(ManagedProcess, String)> {
    let dir = cli.dir.join("oauth2-proxy");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tls = pki.issue_serving("oauth2-proxy", &[])?;
    // 32 bytes of a random token: an AES-256 key for its cookie.
    let cookie_secret: String = dex::random_token().chars().take(32).collect();
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(format!("--http-address=127.0.0.1:{}", free_port()?))
        .arg(format!("--https-address=127.0.0.1:{port}"))
        .arg(format!("--tls-cert-file={}", tls.cert.display()))
        .arg(format!("--tls-key-file={}", tls.key.display()))
        .arg("--provider=oidc")
        .arg(format!("--oidc-issuer-url={}", dex.info.issuer))
        .arg(format!("--provider-ca-file={}", dex.info.ca_file.display()))
        .arg(format!("--client-id={}", dex.info.client_id))
        .arg(format!(
            "--client-secret-file={}",
            dex.info.client_secret_file.display()
        ))
        .arg(format!(
            "--redirect-url={}",
            oauth2_proxy_redirect_uri(port)
        ))
        .arg(format!("--upstream=http://{}/", cli.upstream))
        .arg("--email-domain=example.com")
        .arg("--scope=openid email profile")
        .arg("--skip-provider-button=true")
        // Its default (force) makes Dex show its approval page; a browser user would click
        // through it once, `auto` is the documented way to skip it.
        .arg("--approval-prompt=auto")
        .arg("--request-logging=false")
        // The identity in /oauth2/auth's answer, for nginx's auth_request_set (its docs).
        .arg("--set-xauthrequest=true")
        .env("OAUTH2_PROXY_COOKIE_SECRET", cookie_secret);
    let mut process = ManagedProcess::spawn("oauth2-proxy", cmd, &dir.join("oauth2-proxy.log"))?;
    let origin = format!("https://127.0.0.1:{port}");
    let probe = dex::http_client_builder(&dex.info.ca_file)?.build()?;
    let ping = format!("{origin}/ping");
    process
        .wait_ready("/ping", Duration::from_secs(60), || {
            let probe = probe.clone();
            let ping = ping.clone();
            async move { Ok(probe.get(&ping).send().await?.status().is_success()) }
        })
        .await?;

    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = dex::http_client_builder(&dex.info.ca_file)?
        .cookie_provider(jar.clone())
        .build()?;
    let start = Url::parse(&format!("{origin}/"))?;
    let user = dex.info.user("alice")?.clone();
    let landed = dex::follow_login(&browser, start.clone(), &user, Connector::Header, |url| {
        url.port() == Some(port) && !url.path().starts_with("/oauth2/")
    })
    .await
    .with_context(|| {
        format!(
            "logging in to oauth2-proxy; its log:\n{}\nDex log:\n{}",
            process.log_tail(),
            dex.log_tail()
        )
    })?;
    ensure!(
        landed.path() == "/",
        "the oauth2-proxy login ended at {landed}"
    );
    let cookie = jar
        .cookies(&start)
        .context("the oauth2-proxy login set no cookie")?
        .to_str()
        .context("cookie header")?
        .to_owned();
    ensure!(
        cookie.contains("_oauth2_proxy="),
        "no _oauth2_proxy session cookie among {cookie:?}"
    );
    for (path, with_cookie, expected) in [
        ("/", true, StatusCode::OK),
        ("/oauth2/auth", true, StatusCode::ACCEPTED),
        ("/oauth2/auth", false, StatusCode::UNAUTHORIZED),
    ] {
        let mut req = probe.get(format!("{origin}{path}"));
        if with_cookie {
            req = req.header(reqwest::header::COOKIE, &cookie);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.text().await.context("reading the body")?;
        ensure!(
            status == expected && (path != "/" || body == UPSTREAM_BODY),
            "oauth2-proxy {path} (cookie: {with_cookie}) answered {status}, not {expected}: {body:?}"
        );
    }
    Ok((process, cookie))
}
