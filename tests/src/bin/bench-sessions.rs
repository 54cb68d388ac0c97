//! `bench-sessions`: the API-server and etcd write load of confirming active sessions with the
//! identity provider. Run by `hack/bench-sessions.sh`.
//!
//! Starts a private control plane (etcd, kube-apiserver, controller manager) in `--dir`, a real
//! Dex (memory storage, refresh tokens through `offline_access`) and two real
//! `portcullis-gateway` processes recording sessions as AccessSessions in the API server, with
//! `refreshInterval` set to `--interval`. Then:
//!
//! 1. logs `--sessions` distinct users in through the first gateway and Dex as a browser does
//!    (Dex's trusted-header connector: no password form per login), `--concurrency` at a time,
//!    and checks that each login's app cookie is accepted and that one AccessSession exists
//!    per login;
//! 2. keeps every session active: in every interval each session makes one request through
//!    each gateway (half an interval apart, the gateway going first alternating by session and
//!    round), spread evenly over the interval; a refused request fails the run;
//! 3. after `--warmup` intervals (the first round after a login also writes a claim), measures
//!    over `--windows` intervals: the API server's requests to `accesssessions` by verb (its
//!    `/metrics`, with the admin certificate), etcd's puts and database size (its `/metrics`),
//!    the confirmations both gateways counted, and the CPU seconds and RSS of the gateways,
//!    Dex, the API server and etcd;
//! 4. prints a Markdown report: writes per confirmation, writes per active session per hour
//!    at the measured interval and scaled to others, etcd puts/s, the size of one
//!    AccessSession (as JSON from the API server, as stored in etcd, and etcd's in-use database
//!    growth per 1000 sessions).
//!
//! It fails (and reports nothing) when a login does not work, a request is refused, the
//! driver falls far behind its schedule, or the confirmations or writes are not observed.

use anyhow::{Context, Result, bail, ensure};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, ListParams};
use portcullis_crds::AccessSession;
use portcullis_tests::{
    StackConfig,
    cluster::{create_namespace, install_crds},
    dex::{self, Connector, DexUser},
    fleet::rss_bytes,
    gateway::{DexServer, GatewayConfig, GatewayFiles, GatewayProcess},
    pki::Pki,
    process::free_port,
    stack::Stack,
    upstream,
};
use reqwest::{Url, cookie::CookieStore};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

const NAMESPACE: &str = "bench";
const AUTH: &str = "auth.bench.test";
const APP: &str = "app.bench.test";
/// The write verbs of `apiserver_request_total`.
const WRITE_VERBS: [&str; 5] = ["CREATE", "POST", "PATCH", "UPDATE", "APPLY"];

#[derive(Parser)]
#[command(about = "API-server and etcd writes of confirming N active sessions")]
struct Cli {
    /// The `portcullis-gateway` executable (a release build for meaningful CPU figures).
    #[arg(long)]
    gateway_bin: PathBuf,
    /// Working directory: the private control plane, Dex, gateways, logs.
    #[arg(long)]
    dir: PathBuf,
    /// Active sessions (distinct users, one login each).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// The gateways' `refreshInterval`, in seconds.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Intervals of activity before the measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Intervals measured.
    #[arg(long, default_value_t = 3)]
    windows: u32,
    /// Concurrent logins.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Concurrent requests of the activity driver.
    #[arg(long, default_value_t = 64)]
    request_concurrency: usize,
    /// `RUST_LOG` of the gateways.
    #[arg(long, default_value = "warn")]
    log: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portcullis_tests::tool_main("bench-sessions", "warn", run()).await
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    ensure!(cli.sessions > 0, "--sessions must be positive");
    ensure!(cli.interval >= 2, "--interval must be at least 2 (seconds)");
    ensure!(cli.windows > 0, "--windows must be positive");
    std::fs::create_dir_all(&cli.dir).context("creating the working directory")?;
    eprintln!("starting a private control plane in {}", cli.dir.display());
    let stack = Stack::start(StackConfig::new(cli.dir.join("stack"))).await?;
    let result = bench(&cli, &stack).await;
    stack.stop().await?;
    result
}

fn manifests(upstream: &str) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: app, namespace: bench }}
spec:
  hosts: [{APP}]
  paths: ["/"]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
  session: {{ refreshFailure: {{ mode: FailClosed }} }}
"#
    )
}

/// The admin's HTTP client for the API server's and etcd's `/metrics`.
fn admin_client(stack: &Stack) -> Result<reqwest::Client> {
    let info = stack.info();
    let mut pem = std::fs::read(&info.admin.cert).context("reading the admin certificate")?;
    pem.extend(std::fs::read(&info.admin.key).context("reading the admin key")?);
    let identity = reqwest::Identity::from_pem(&pem).context("admin identity")?;
    dex::http_client_builder(&info.ca_file)?
        .identity(identity)
        .build()
        .context("building the admin client")
}

struct Setup<'a> {
    stack: &'a Stack,
    admin: reqwest::Client,
    apiserver: String,
    etcd: String,
    sessions: Api<AccessSession>,
    gateways: [GatewayProcess; 2],
    dex: DexServer,
}

async fn bench(cli: &Cli, stack: &Stack) -> Result<()> {
    let client = stack.client().await?;
    install_crds(&client).await?;
    create_namespace(&client, NAMESPACE, &[]).await?;
    let echo = upstream::echo().await?;
    let dir = cli.dir.join("gateways");
    let pki = Pki::generate(&dir.join("pki"))?;
    let port = free_port()?;
    let dex = DexServer::start_with_users(
        &dir.join("dex"),
        &pki,
        vec![GatewayProcess::redirect_uri(AUTH, port)],
        (0..cli.sessions).map(user).collect(),
    )
    .await?;
    let mut config = GatewayConfig::new(
        dir.join("gateway"),
        AUTH,
        &[APP],
        &manifests(&echo.to_string()),
    );
    config.port = port;
    config.idp_options.insert(
        "refreshInterval".into(),
        format!("{}s", cli.interval).into(),
    );
    config.env = vec![
        (
            "KUBECONFIG".into(),
            stack.info().kubeconfig.display().to_string(),
        ),
        ("PORTCULLIS_SESSION_NAMESPACE".into(), NAMESPACE.into()),
        ("RUST_LOG".into(), cli.log.clone()),
        // Every simulated browser comes from 127.0.0.1: one client to the per-client login
        // rate limit.
        ("PORTCULLIS_LOGIN_RATE_LIMIT".into(), "1000000".into()),
        ("PORTCULLIS_LOGIN_RATE_BURST".into(), "1000000".into()),
    ];
    config.ready_timeout = Duration::from_secs(120);
    let files = GatewayFiles::write(&config, &pki, &dex.info)?;
    let first = GatewayProcess::start(&cli.gateway_bin, config, files).await?;
    let second = first.start_replica(&cli.gateway_bin).await?;
    let etcd = stack
        .info()
        .etcd
        .url
        .clone()
        .context("no etcd URL in the stack description")?;
    let setup = Setup {
        stack,
        admin: admin_client(stack)?,
        apiserver: stack.info().apiserver_url().to_owned(),
        etcd,
        sessions: Api::namespaced(client, NAMESPACE),
        gateways: [first, second],
        dex,
    };
    let result = measure(cli, &setup).await;
    let Setup {
        gateways: [mut first, mut second],
        mut dex,
        ..
    } = setup;
    if result.is_err() {
        eprintln!(
            "gateway logs:\n{}\n{}\nDex log:\n{}",
            first.log_tail(),
            second.log_tail(),
            dex.log_tail()
        );
    }
    first.stop().await?;
    second.stop().await?;
    dex.stop().await?;
    result
}

/// Static user `index` of the benchmark's Dex. Each session is a different user: Dex keeps one
/// refresh token per user and client, and a second login of the same user would invalidate
/// the first session's. The password connector, not the trusted-header one: Dex issues
/// refresh tokens only through connectors that can refresh.
fn user(index: usize) -> DexUser {
    DexUser {
        email: format!("user{index}@example.com"),
        username: format!("user{index}"),
        user_id: format!("bench-user-{index}"),
        password: dex::PASSWORD.into(),
        groups: vec!["bench".into()],
    }
}

/// One logged-in session: its browser's cookies (the gateway renews the app cookie on a
/// response now and then, as it would a browser's).
struct Session {
    jar: Arc<reqwest::cookie::Jar>,
}

fn app_url(gateway: &GatewayProcess) -> Result<Url> {
    Url::parse(&format!("{}/", gateway.direct_origin(APP))).context("app URL")
}

async fn login(setup: &Setup<'_>, index: usize) -> Result<Session> {
    let gateway = &setup.gateways[0];
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = gateway.direct_browser_with_jar(jar.clone())?;
    let app = app_url(gateway)?;
    dex::follow_login(
        &browser,
        app.clone(),
        &user(index),
        Connector::Password,
        |u| u.host_str() == Some(APP) && u.path() == "/",
    )
    .await
    .with_context(|| format!("login {index}"))?;
    let answer = browser
        .get(app.clone())
        .header("accept", "application/json")
        .send()
        .await
        .with_context(|| format!("first request of login {index}"))?;
    ensure!(
        answer.status() == 200,
        "login {index}: the app answered {} after the login",
        answer.status()
    );
    ensure!(
        jar.cookies(&app).is_some(),
        "login {index}: no cookie for the app"
    );
    Ok(Session { jar })
}

/// Counters read at one moment.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    at: Option<Instant>,
    /// `apiserver_request_total` for accesssessions, by verb and code class.
    requests: BTreeMap<(String, String), f64>,
    etcd_puts: f64,
    etcd_db_in_use: f64,
    confirmations: BTreeMap<String, f64>,
    /// CPU seconds by component.
    cpu: BTreeMap<&'static str, f64>,
}

impl Snapshot {
    fn writes(&self, success_only: bool) -> f64 {
        self.requests
            .iter()
            .filter(|((verb, code), _)| {
                WRITE_VERBS.contains(&verb.as_str()) && (!success_only || code.starts_with('2'))
            })
            .map(|(_, n)| n)
            .sum()
    }

    fn confirmed(&self) -> f64 {
        self.confirmations.get("confirmed").copied().unwrap_or(0.0)
    }
}

async fn text(client: &reqwest::Client, url: &str) -> Result<String> {
    client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("reading {url}"))
}

/// `name{labels} value` → (labels, value), for the lines of metric `name`.
fn samples<'t>(metrics: &'t str, name: &str) -> Vec<(&'t str, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

fn label<'t>(labels: &'t str, name: &str) -> Option<&'t str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')?;
    Some(&labels[start..start + end])
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the command.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("no CPU times in /proc/PID/stat")
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_second)
}

fn clock_ticks() -> Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing getconf CLK_TCK")
}

/// The processes whose CPU time and memory are reported.
fn processes(setup: &Setup<'_>) -> Result<Vec<(&'static str, u32)>> {
    let info = setup.stack.info();
    let pid = |what: &str, pid: Option<u32>| pid.with_context(|| format!("{what} is not running"));
    Ok(vec![
        ("gateway 1", pid("gateway 1", setup.gateways[0].pid())?),
        ("gateway 2", pid("gateway 2", setup.gateways[1].pid())?),
        ("dex", pid("dex", setup.dex.pid())?),
        ("kube-apiserver", pid("kube-apiserver", info.apiserver.pid)?),
        ("etcd", pid("etcd", info.etcd.pid)?),
    ])
}

async fn snapshot(setup: &Setup<'_>, ticks: f64) -> Result<Snapshot> {
    let mut snap = Snapshot {
        at: Some(Instant::now()),
        ..Snapshot::default()
    };
    let api = text(&setup.admin, &format!("{}/metrics", setup.apiserver)).await?;
    for (labels, value) in samples(&api, "apiserver_request_total") {
        if label(labels, "resource") != Some("accesssessions") {
            continue;
        }
        let verb = label(labels, "verb").unwrap_or_default().to_owned();
        let code = label(labels, "code").unwrap_or_default();
        let class = format!("{}xx", code.chars().next().unwrap_or('?'));
        *snap.requests.entry((verb, class)).or_default() += value;
    }
    let etcd = text(&setup.admin, &format!("{}/metrics", setup.etcd)).await?;
    snap.etcd_puts = ["etcd_mvcc_put_total", "etcd_debugging_mvcc_put_total"]
        .iter()
        .find_map(|name| samples(&etcd, name).first().map(|s| s.1))
        .context("etcd reports no etcd_mvcc_put_total")?;
    snap.etcd_db_in_use = samples(&etcd, "etcd_mvcc_db_total_size_in_use_in_bytes")
        .first()
        .map(|s| s.1)
        .context("etcd reports no etcd_mvcc_db_total_size_in_use_in_bytes")?;
    for gateway in &setup.gateways {
        let metrics = text(
            &setup.admin,
            &format!("http://{}/metrics", gateway.ops_addr),
        )
        .await?;
        for (labels, value) in samples(&metrics, "portcullis_gateway_session_confirmations_total") {
            let outcome = label(labels, "outcome").unwrap_or_default().to_owned();
            *snap.confirmations.entry(outcome).or_default() += value;
        }
    }
    for (name, pid) in processes(setup)? {
        snap.cpu.insert(name, cpu_seconds(pid, ticks)?);
    }
    Ok(snap)
}

/// Drives every session through both gateways for `rounds` intervals from `start`.
async fn keep_active(
    cli: &Cli,
    setup: &Setup<'_>,
    clients: &[reqwest::Client; 2],
    sessions: &[Session],
    start: tokio::time::Instant,
    rounds: std::ops::Range<u32>,
) -> Result<Activity> {
    let total_rounds = rounds.len();
    let interval = Duration::from_secs(cli.interval);
    let n = sessions.len();
    let urls = [app_url(&setup.gateways[0])?, app_url(&setup.gateways[1])?];
    let mut schedule = Vec::with_capacity(n * 2 * rounds.len());
    for round in rounds {
        for half in 0..2u32 {
            for (i, session) in sessions.iter().enumerate() {
                let offset = interval * round
                    + interval * half / 2
                    + interval.mul_f64(i as f64 / n as f64 / 2.0);
                let which = (i + round as usize + half as usize) % 2;
                schedule.push((offset, which, i, session));
            }
        }
    }
    schedule.sort_by_key(|(offset, ..)| *offset);
    let retried = &std::sync::atomic::AtomicU64::new(0);
    let lateness = stream::iter(schedule)
        .map(|(offset, which, i, session)| {
            let url = urls[which].clone();
            let client = clients[which].clone();
            async move {
                let due = start + offset;
                tokio::time::sleep_until(due).await;
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                let cookie = session
                    .jar
                    .cookies(&url)
                    .with_context(|| format!("session {i} lost its cookies"))?;
                let request = || {
                    client
                        .get(url.clone())
                        .header(reqwest::header::COOKIE, cookie.clone())
                        .header("accept", "application/json")
                        .send()
                };
                // A keep-alive connection the gateway closed just as the request went out (it
                // closes HTTP/1 connections idle for its header-read timeout) is retried once
                // on a new one, as browsers do; an answer is never retried.
                let answer = match request().await {
                    Ok(answer) => answer,
                    Err(e) if e.is_request() || e.is_connect() => {
                        retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        request().await.with_context(|| {
                            format!("request of session {i} to gateway {}", which + 1)
                        })?
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("request of session {i} to gateway {}", which + 1)));
                    }
                };
                ensure!(
                    answer.status() == 200,
                    "session {i} refused by gateway {} ({})",
                    which + 1,
                    answer.status()
                );
                let mut renewed = answer
                    .headers()
                    .get_all(reqwest::header::SET_COOKIE)
                    .iter()
                    .peekable();
                if renewed.peek().is_some() {
                    session.jar.set_cookies(&mut renewed, &url);
                }
                Ok::<_, anyhow::Error>(late)
            }
        })
        .buffer_unordered(cli.request_concurrency)
        .try_fold(Duration::ZERO, |max, late| async move { Ok(max.max(late)) })
        .await?;
    ensure!(
        lateness < interval / 4,
        "the activity driver fell {lateness:?} behind its schedule (interval {interval:?}): \
         sessions may have looked idle; use fewer sessions or a longer interval"
    );
    Ok(Activity {
        lateness,
        requests: n * 2 * total_rounds,
        retried: retried.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// How the activity driver kept to its schedule.
struct Activity {
    /// The latest a request started after its scheduled time.
    lateness: Duration,
    requests: usize,
    /// Requests sent again after the connection failed under them.
    retried: u64,
}

async fn measure(cli: &Cli, setup: &Setup<'_>) -> Result<()> {
    let ticks = clock_ticks()?;
    let before_logins = snapshot(setup, ticks).await?;
    eprintln!(
        "logging {} users in, {} at a time",
        cli.sessions, cli.concurrency
    );
    let login_started = Instant::now();
    let sessions: Vec<Session> = stream::iter(0..cli.sessions)
        .map(|i| async move {
            let session = login(setup, i).await;
            if (i + 1) % 1000 == 0 {
                eprintln!("  {} logins", i + 1);
            }
            session
        })
        .buffered(cli.concurrency)
        .try_collect()
        .await?;
    let login_time = login_started.elapsed();
    let stored = setup
        .sessions
        .list(&ListParams::default())
        .await
        .context("listing the AccessSessions")?
        .items;
    ensure!(
        stored.len() == cli.sessions,
        "{} AccessSessions for {} logins",
        stored.len(),
        cli.sessions
    );
    let after_logins = snapshot(setup, ticks).await?;
    eprintln!(
        "{} logins in {:.0} s ({:.1}/s); keeping them active",
        cli.sessions,
        login_time.as_secs_f64(),
        cli.sessions as f64 / login_time.as_secs_f64()
    );

    // One client per gateway, connections kept alive, no cookie store of its own: each
    // request carries its session's cookies.
    let client = |gateway: &GatewayProcess| -> Result<reqwest::Client> {
        dex::http_client_builder(&gateway.files.ca_file)?
            .resolve(APP, gateway.addr)
            // Below the gateway's 10 s limit on an idle HTTP/1 keep-alive connection.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .context("building the activity client")
    };
    let clients = [client(&setup.gateways[0])?, client(&setup.gateways[1])?];
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs(cli.interval);
    let total = cli.warmup + cli.windows;
    let driver = keep_active(cli, setup, &clients, &sessions, start, 0..total);
    let measurement = async {
        tokio::time::sleep_until(start + interval * cli.warmup).await;
        let first = snapshot(setup, ticks).await?;
        eprintln!("warm-up over; measuring {} intervals", cli.windows);
        tokio::time::sleep_until(start + interval * total).await;
        let last = snapshot(setup, ticks).await?;
        let mut rss = BTreeMap::new();
        for (name, pid) in processes(setup)? {
            rss.insert(name, rss_bytes(pid)?);
        }
        Ok::<_, anyhow::Error>((first, last, rss))
    };
    let (activity, (first, last, rss)) = tokio::try_join!(driver, measurement)?;

    let one = stored.first().context("no AccessSession")?;
    let name = one
        .metadata
        .name
        .clone()
        .context("an AccessSession without a name")?;
    let object_json = object_size(setup, &name).await?;
    let object_etcd = etcd_value_size(setup, &name).await?;
    let sealed = setup
        .sessions
        .get(&name)
        .await?
        .status
        .and_then(|s| s.refresh)
        .and_then(|r| r.sealed_token)
        .is_some();
    ensure!(
        sealed,
        "session {name} has no sealed refresh token: Dex issued none?"
    );

    report(
        cli,
        &Measured {
            before_logins,
            after_logins,
            first,
            last,
            rss,
            login_time,
            activity,
            object_json,
            object_etcd,
        },
    )
}

/// The AccessSession as JSON from the API server, in bytes.
async fn object_size(setup: &Setup<'_>, name: &str) -> Result<usize> {
    let url = format!(
        "{}/apis/access.portcullis.dev/v1alpha1/namespaces/{NAMESPACE}/accesssessions/{name}",
        setup.apiserver
    );
    Ok(text(&setup.admin, &url).await?.len())
}

/// The stored value of the AccessSession in etcd, in bytes (through etcd's JSON gateway).
async fn etcd_value_size(setup: &Setup<'_>, name: &str) -> Result<usize> {
    let key = format!("/registry/access.portcullis.dev/accesssessions/{NAMESPACE}/{name}");
    let range: serde_json::Value = setup
        .admin
        .post(format!("{}/v3/kv/range", setup.etcd))
        .json(&serde_json::json!({ "key": B64.encode(&key) }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let value = range
        .pointer("/kvs/0/value")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{key} not in etcd"))?;
    Ok(B64.decode(value).context("etcd value")?.len())
}

struct Measured {
    before_logins: Snapshot,
    after_logins: Snapshot,
    first: Snapshot,
    last: Snapshot,
    rss: BTreeMap<&'static str, u64>,
    login_time: Duration,
    activity: Activity,
    object_json: usize,
    object_etcd: usize,
}

fn seconds_between(a: &Snapshot, b: &Snapshot) -> Result<f64> {
    match (a.at, b.at) {
        (Some(a), Some(b)) => Ok(b.duration_since(a).as_secs_f64()),
        _ => bail!("a snapshot without a time"),
    }
}

fn report(cli: &Cli, m: &Measured) -> Result<()> {
    let (first, last) = (&m.first, &m.last);
    let n = cli.sessions as f64;
    let window = seconds_between(first, last)?;
    let confirmations = last.confirmed() - first.confirmed();
    let expected = n * f64::from(cli.windows);
    ensure!(
        confirmations >= 0.8 * expected,
        "only {confirmations} confirmations over {} intervals of {} sessions (expected about \
         {expected}): sessions are not being confirmed",
        cli.windows,
        cli.sessions
    );
    let other_outcomes: f64 = last
        .confirmations
        .iter()
        .filter(|(k, _)| k.as_str() != "confirmed")
        .map(|(k, v)| v - first.confirmations.get(k).copied().unwrap_or(0.0))
        .sum();
    ensure!(
        other_outcomes == 0.0,
        "confirmations that did not succeed during the window: {:?} → {:?}",
        first.confirmations,
        last.confirmations
    );
    let writes = last.writes(false) - first.writes(false);
    let successful = last.writes(true) - first.writes(true);
    ensure!(
        successful > 0.0,
        "no API-server writes to accesssessions observed during the window"
    );
    let per_confirmation = writes / confirmations;
    let per_session_hour = writes / n / window * 3600.0;
    let etcd_puts = (last.etcd_puts - first.etcd_puts) / window;
    let login_growth = m.after_logins.etcd_db_in_use - m.before_logins.etcd_db_in_use;

    println!(
        "{} sessions (distinct users, one login each through gateway 1 and Dex), \
         `refreshInterval: {}s`, 2 gateways; every session requested through each gateway once per \
         interval ({} requests, all answered 200, {} sent again on a new connection after the \
         gateway closed an idle one under them; driver at most {:.1} s late); measured over {} \
         intervals ({:.0} s) after {} of warm-up. Logins took {:.0} s ({:.1}/s).",
        cli.sessions,
        cli.interval,
        m.activity.requests,
        m.activity.retried,
        m.activity.lateness.as_secs_f64(),
        cli.windows,
        window,
        cli.warmup,
        m.login_time.as_secs_f64(),
        n / m.login_time.as_secs_f64()
    );
    println!();
    println!("| measured | value |");
    println!("|---|---:|");
    println!(
        "| confirmations (both gateways, `outcome=\"confirmed\"`) | {confirmations:.0} ({:.2} per session per interval) |",
        confirmations / expected
    );
    println!("| API-server write requests to accesssessions | {writes:.0} ({successful:.0} 2xx) |");
    println!("| all API-server requests to accesssessions, by verb and answer: | |");
    for ((verb, class), value) in &last.requests {
        let delta = value
            - first
                .requests
                .get(&(verb.clone(), class.clone()))
                .copied()
                .unwrap_or(0.0);
        if delta > 0.0 {
            println!("| &nbsp;&nbsp;{verb} {class} | {delta:.0} |");
        }
    }
    println!("| **writes per confirmation** | **{per_confirmation:.3}** |");
    println!(
        "| **writes per active session per hour** at {}s | **{per_session_hour:.1}** |",
        cli.interval
    );
    println!(
        "| etcd puts/s (all keys) at {} sessions | {etcd_puts:.1} |",
        cli.sessions
    );
    println!(
        "| one AccessSession: JSON from the API server / value in etcd (bytes) | {} / {} |",
        m.object_json, m.object_etcd
    );
    println!(
        "| etcd in-use database growth per 1000 logins (with history, before compaction) | {:.0} KiB |",
        login_growth / n * 1000.0 / 1024.0
    );
    println!();
    println!(
        "| process | CPU seconds in the window | CPU share (% of one core) | RSS at the end (MiB) |"
    );
    println!("|---|---:|---:|---:|");
    for (name, cpu) in &last.cpu {
        let used = cpu - first.cpu.get(name).copied().unwrap_or(0.0);
        println!(
            "| {name} | {used:.1} | {:.0} | {:.0} |",
            used / window * 100.0,
            m.rss.get(name).copied().unwrap_or(0) as f64 / 1024.0 / 1024.0
        );
    }
    println!();
    println!(
        "Scaled (writes per confirmation × sessions ÷ interval: every active session is confirmed \
         once per interval):"
    );
    println!();
    println!(
        "| active sessions | writes/s at 1 min | at 5 min | at 15 min | writes per session per hour at 1 / 5 / 15 min |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for sessions in [1_000.0, 10_000.0, 100_000.0] {
        let rate = |minutes: f64| sessions * per_confirmation / (minutes * 60.0);
        println!(
            "| {sessions:.0} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} |",
            rate(1.0),
            rate(5.0),
            rate(15.0),
            per_confirmation * 60.0,
            per_confirmation * 12.0,
            per_confirmation * 4.0
        );
    }
    Ok(())
}
