//! `sample-app`: an upstream app for the demo and the end-to-end tests that shows what the
//! gateway told it about the user.
//!
//! An app behind Portcullis receives the identity twice: as plain `X-Auth-Request-User`,
//! `-Email` and `-Groups` headers (which it can only trust because nothing but the gateway
//! reaches it), and as the signed `Portcullis-Jwt-Assertion`, which it can verify itself with
//! the gateway's JWKS. This app does the second the way a real app should: ES256 only, the
//! `typ` of an assertion, the gateway's issuer, and its own origin as audience (an assertion
//! minted for another app is refused).
//!
//! Under each `--prefix` (none: the root) it serves:
//!
//! * `<prefix>/` (and every other path): an HTML page with the identity and whether the
//!   assertion verified (`assertion verified`, or why not);
//! * `<prefix>/api/whoami`: the same as JSON;
//! * `<prefix>/poll` (with `--poll-page`): a page that calls `<prefix>/api/whoami` with `fetch`
//!   every few seconds, as a single-page app does, and shows the result. When the gateway
//!   answers 401 with `{"error": …, "login_url": …}` it shows "session ended" and the login
//!   link. Elements for browser tests: `#status` (`ok`, `session ended`, `error`), `#email`,
//!   `#count` (successful calls), `#issued` (the assertion's `iat`), `#login` (the link).
//!
//! `/healthz` answers 200 for the demo's readiness check.

mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use clap::Parser;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// `typ` header of a Portcullis assertion (see `portcullis_core::token::TokenKind`).
const ASSERTION_TYP: &str = "portcullis-assertion+jwt";
/// A JWKS that lacks a token's key is fetched again at most this often (keys rotate rarely; a
/// flood of tokens with made-up key ids must not become a flood of JWKS requests).
const JWKS_REFETCH: Duration = Duration::from_secs(10);
/// How often the poll page calls the API.
const POLL_SECONDS: u32 = 3;

#[derive(Parser)]
#[command(about = "Sample upstream app that shows and verifies the identity Portcullis sends")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SAMPLE_APP_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Name shown on the pages.
    #[arg(long, env = "SAMPLE_APP_NAME", default_value = "Sample app")]
    name: String,
    /// Path prefixes the app is published under (repeatable or comma-separated); none: `/`.
    #[arg(long = "prefix", env = "SAMPLE_APP_PREFIXES", value_delimiter = ',')]
    prefixes: Vec<String>,
    /// The app's public origin(s), e.g. `https://apps.portcullis.localhost:8443`: the audience
    /// an assertion for this app carries.
    #[arg(
        long = "origin",
        env = "SAMPLE_APP_ORIGINS",
        value_delimiter = ',',
        required = true
    )]
    origins: Vec<String>,
    /// The gateway's token issuer, e.g. `https://auth.portcullis.localhost:8443`.
    #[arg(long, env = "SAMPLE_APP_ISSUER")]
    issuer: String,
    /// JWKS URL; default `<issuer>/.well-known/jwks.json`.
    #[arg(long, env = "SAMPLE_APP_JWKS_URL")]
    jwks_url: Option<String>,
    /// CA certificate (PEM) the gateway's certificate chains to.
    #[arg(long, env = "SAMPLE_APP_CA_FILE")]
    ca_file: PathBuf,
    /// Connect to this address for the JWKS host instead of resolving its name (the demo's
    /// load balancer; `*.localhost` needs no DNS, but this keeps the app off any resolver).
    #[arg(long, env = "SAMPLE_APP_GATEWAY_ADDR")]
    gateway_addr: Option<SocketAddr>,
    /// Also serve `<prefix>/poll`, the background-refresh page.
    #[arg(long, env = "SAMPLE_APP_POLL_PAGE")]
    poll_page: bool,
}

/// The claims of an assertion this app reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct AssertionClaims {
    iss: String,
    aud: String,
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    iat: u64,
    exp: u64,
}

/// What the app knows about the request's user.
#[derive(Debug, Serialize)]
struct Whoami {
    app: String,
    prefix: String,
    /// `X-Auth-Request-User`.
    user: Option<String>,
    /// `X-Auth-Request-Email`.
    email: Option<String>,
    /// `X-Auth-Request-Groups`, split.
    groups: Vec<String>,
    assertion: AssertionStatus,
}

#[derive(Debug, Serialize)]
struct AssertionStatus {
    present: bool,
    verified: bool,
    /// Why it did not verify.
    error: Option<String>,
    /// The verified claims.
    claims: Option<AssertionClaims>,
    /// Whether the verified claims name the same user as the plain headers.
    matches_headers: Option<bool>,
}

struct App {
    name: String,
    prefixes: Vec<String>,
    origins: Vec<String>,
    issuer: String,
    poll_page: bool,
    jwks: Jwks,
}

/// The gateway's keys, fetched on first use and again when a token names an unknown key.
struct Jwks {
    url: String,
    http: reqwest::Client,
    cache: Mutex<Option<(HashMap<String, DecodingKey>, Instant)>>,
}

impl Jwks {
    async fn key(&self, kid: &str) -> Result<DecodingKey> {
        let mut cache = self.cache.lock().await;
        if let Some((keys, fetched)) = cache.as_ref() {
            if let Some(key) = keys.get(kid) {
                return Ok(key.clone());
            }
            if fetched.elapsed() < JWKS_REFETCH {
                bail!("unknown key id {kid:?}");
            }
        }
        let keys = self.fetch().await?;
        let key = keys.get(kid).cloned();
        *cache = Some((keys, Instant::now()));
        key.ok_or_else(|| anyhow!("unknown key id {kid:?}"))
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("fetching the JWKS from {}", self.url))?
            .json()
            .await
            .context("parsing the JWKS")?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let Some(kid) = &jwk.common.key_id {
                keys.insert(
                    kid.clone(),
                    DecodingKey::from_jwk(jwk).with_context(|| format!("JWK {kid}"))?,
                );
            }
        }
        Ok(keys)
    }
}

impl App {
    /// Verifies an assertion for `origin`'s audience.
    async fn verify(&self, token: &str) -> Result<AssertionClaims> {
        let header = jsonwebtoken::decode_header(token).context("malformed token")?;
        if header.alg != Algorithm::ES256 {
            bail!("algorithm {:?} is not ES256", header.alg);
        }
        if header.typ.as_deref() != Some(ASSERTION_TYP) {
            bail!("typ {:?} is not {ASSERTION_TYP}", header.typ);
        }
        let kid = header.kid.ok_or_else(|| anyhow!("no key id"))?;
        let key = self.jwks.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.origins);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AssertionClaims>(token, &key, &validation)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(data.claims)
    }

    /// The prefix `path` is under, and the rest of the path.
    fn split<'p>(&self, path: &'p str) -> (String, &'p str) {
        for prefix in &self.prefixes {
            if let Some(rest) = path.strip_prefix(prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return (prefix.clone(), rest);
            }
        }
        (String::new(), path)
    }

    async fn whoami(&self, prefix: String, headers: &axum::http::HeaderMap) -> Whoami {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let user = header("x-auth-request-user");
        let email = header("x-auth-request-email");
        let groups = header("x-auth-request-groups")
            .map(|g| g.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let assertion = match header("portcullis-jwt-assertion") {
            None => AssertionStatus {
                present: false,
                verified: false,
                error: Some("no Portcullis-Jwt-Assertion header".into()),
                claims: None,
                matches_headers: None,
            },
            Some(token) => match self.verify(&token).await {
                Ok(claims) => AssertionStatus {
                    present: true,
                    verified: true,
                    error: None,
                    matches_headers: Some(
                        user.as_deref() == Some(&claims.sub) && email == claims.email,
                    ),
                    claims: Some(claims),
                },
                Err(error) => {
                    warn!(error = %format!("{error:#}"), "assertion rejected");
                    AssertionStatus {
                        present: true,
                        verified: false,
                        error: Some(format!("{error:#}")),
                        claims: None,
                        matches_headers: None,
                    }
                }
            },
        };
        Whoami {
            app: self.name.clone(),
            prefix,
            user,
            email,
            groups,
            assertion,
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // The demo sends this log to a file: colour codes only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for every TLS connection, as in the gateway.
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample-app: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A client trusting only the CA in `ca_file` (the gateway's), redirects not followed.
fn http_client_builder(ca_file: &std::path::Path) -> Result<reqwest::ClientBuilder> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let ca = reqwest::Certificate::from_pem(&pem).context("parsing --ca-file")?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none()))
}

async fn run(args: Args) -> Result<()> {
    let jwks_url = args
        .jwks_url
        .clone()
        .unwrap_or_else(|| format!("{}/.well-known/jwks.json", args.issuer));
    let mut http = http_client_builder(&args.ca_file)?.timeout(Duration::from_secs(10));
    if let Some(addr) = args.gateway_addr {
        let url = url::Url::parse(&jwks_url).context("--jwks-url")?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("--jwks-url has no host"))?;
        http = http.resolve(host, addr);
    }
    let mut prefixes: Vec<String> = args
        .prefixes
        .iter()
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    // Longest first, so `/a/b` wins over `/a`.
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let app = Arc::new(App {
        name: args.name,
        prefixes,
        origins: args.origins,
        issuer: args.issuer,
        poll_page: args.poll_page,
        jwks: Jwks {
            url: jwks_url,
            http: http.build().context("building the JWKS client")?,
            cache: Mutex::new(None),
        },
    });
    let router = Router::new().fallback(handle).with_state(app);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    info!(listen = %args.listen, "serving");
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        })
        .await
        .context("serving")
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return "ok\n".into_response();
    }
    let (prefix, rest) = app.split(&path);
    match rest {
        "/api/whoami" => Json(app.whoami(prefix, req.headers()).await).into_response(),
        "/poll" if app.poll_page => Html(pages::poll_page(&app, &prefix)).into_response(),
        _ => {
            let whoami = app.whoami(prefix, req.headers()).await;
            Html(pages::identity_page(&app, &whoami, &path)).into_response()
        }
    }
}
