//! The README's first command, end to end: `devstack up --demo` (what `hack/demo.sh` runs) on
//! its own state directory and port, driven the way a person would use it: log in once through
//! Dex's real login form, see the identity and a verified assertion on the sample app, reach the
//! second app and the second host without Dex, then walk the seed story's revocations with the
//! exact `kubectl` commands the demo prints (one session, every session of a user, a policy's
//! `revocationEpoch`) and see each enforced by both gateway replicas, which learn of them only
//! through the operator. Finally stop the demo with SIGTERM and find nothing left running.
//!
//! Needs `portcullis-gateway`, `portcullis-operator` and `sample-app` next to `devstack`
//! (`target/<profile>/`): run `cargo build --workspace --bins` first (`hack/test.sh` builds every
//! target). Cargo builds this crate's own binaries (`devstack`, `demo-lb`) for the test by itself.
//!
//! The test's client opens a new connection for every request, so the load balancer spreads
//! the login's steps over both gateway replicas: it passes only if they share their keys and
//! receive the same policies from the operator.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kube::api::Api;
use portcullis_crds::AccessPolicy;
use portcullis_tests::demo::{
    self, APPS_HOST, AUTH_HOST, DemoInfo, EXPRESS_HOST, GATEWAY_BIN, OPERATOR_BIN, REVOKE_POLICY,
    REVOKE_SESSION, REVOKE_USER,
};
use portcullis_tests::dex::{self, Connector};
use portcullis_tests::process::{ManagedProcess, free_port, pid_alive};
use portcullis_tests::stack::StackInfo;
use portcullis_tests::tools::Tool;
use reqwest::{StatusCode, Url, header};

/// The control plane's first start on a busy 2-core machine takes a minute or two.
const READY_TIMEOUT: Duration = Duration::from_secs(360);
/// devstack stops the demo, then four components with up to 10 s each.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// A directory removed when the test ends.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn demo_logs_in_once_serves_every_app_and_stops_cleanly() -> Result<()> {
    portcullis_tests::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("portcullis-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let _cleanup = TempDir(dir.clone());
    let state = dir.join("state");
    let ready = dir.join("ready");
    let port = free_port()?;

    let devstack = Path::new(env!("CARGO_BIN_EXE_devstack"));
    for binary in [GATEWAY_BIN, OPERATOR_BIN] {
        let path = devstack.with_file_name(binary);
        ensure!(
            path.is_file(),
            "{} is missing: run `cargo build --workspace --bins` before this test",
            path.display()
        );
    }
    let mut cmd = Command::new(devstack);
    cmd.arg("up")
        .arg("--state-dir")
        .arg(&state)
        .arg("--demo")
        .arg("--demo-port")
        .arg(port.to_string())
        .arg("--detach-ready-file")
        .arg(&ready);
    let log = dir.join("devstack.log");
    // Dropped (SIGTERM, then SIGKILL) if the test fails before the orderly stop below.
    let mut devstack = ManagedProcess::spawn("devstack up --demo", cmd, &log)?;

    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready.exists() {
        devstack.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "the demo was not ready after {READY_TIMEOUT:?}:\n{}",
                devstack.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stack = StackInfo::load(&state)?;
    let info = DemoInfo::load(&state)?;

    let outcome = exercise(&stack, &info, port).await;
    if outcome.is_err() {
        eprintln!("devstack log:\n{}", devstack.log_tail());
        for process in &info.processes {
            eprintln!(
                "--- {} ({}):\n{}",
                process.name,
                process.log.display(),
                portcullis_tests::fsutil::tail(&process.log, 40)
            );
        }
    }
    outcome?;

    // Both replicas served: the load balancer sent connections to each.
    let lb_log = info
        .processes
        .iter()
        .find(|p| p.name == "demo-lb")
        .map(|p| std::fs::read_to_string(&p.log))
        .context("no demo-lb in demo.json")??;
    let gateways = info
        .processes
        .iter()
        .filter(|p| p.name.starts_with("portcullis-gateway"));
    for gateway in gateways {
        ensure!(
            lb_log.contains(&format!("backend={}", gateway.addr)),
            "no connection reached {} ({}):\n{lb_log}",
            gateway.name,
            gateway.addr
        );
    }

    operator_outage(&info, port, &mut devstack).await?;

    let pids: Vec<(String, u32)> = info
        .processes
        .iter()
        .map(|p| (p.name.clone(), p.pid))
        .chain(
            stack
                .component_pids()
                .into_iter()
                .map(|pid| ("stack component".to_owned(), pid)),
        )
        .collect();
    let status = devstack
        .stop(STOP_TIMEOUT)
        .await?
        .context("devstack was already stopped")?;
    ensure!(
        status.success(),
        "devstack exited with {status}:\n{}",
        devstack.log_tail()
    );
    let log_text = std::fs::read_to_string(&log)?;
    ensure!(
        !log_text.contains("SIGKILL"),
        "something had to be killed:\n{}",
        devstack.log_tail()
    );
    let alive: Vec<_> = pids.iter().filter(|(_, pid)| pid_alive(*pid)).collect();
    ensure!(
        alive.is_empty(),
        "still running after the demo stopped: {alive:?}"
    );
    ensure!(!ready.exists(), "the ready file outlived the demo");
    Ok(())
}

/// The demo survives its operator: stopped, the demo goes on (devstack says so once and keeps
/// running) and the gateways keep answering through the load balancer.
async fn operator_outage(info: &DemoInfo, port: u16, devstack: &mut ManagedProcess) -> Result<()> {
    let operator = info
        .processes
        .iter()
        .find(|p| p.name == "portcullis-operator")
        .context("no operator in demo.json")?;
    let status = Command::new("kill")
        .args(["-TERM", &operator.pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM {} failed", operator.pid);
    // Past devstack's health check (every 5 s), which used to take the whole demo down.
    tokio::time::sleep(Duration::from_secs(8)).await;
    devstack.ensure_running()?;
    let lb = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut builder = dex::http_client_builder(&info.ca_file)?;
    for host in [AUTH_HOST, APPS_HOST, EXPRESS_HOST] {
        builder = builder.resolve(host, lb);
    }
    let browser = builder.build()?;
    for url in &info.urls {
        let answer = browser
            .get(url)
            .header("accept", "text/html")
            .send()
            .await?;
        ensure!(
            answer.status().is_redirection(),
            "{url} answered {} with the operator gone",
            answer.status()
        );
    }
    ensure!(
        std::fs::read_to_string(devstack.log_path())?.contains("the operator is gone"),
        "devstack did not say the operator is gone:\n{}",
        devstack.log_tail()
    );
    Ok(())
}

/// Everything a person does with the running demo.
async fn exercise(stack: &StackInfo, info: &DemoInfo, port: u16) -> Result<()> {
    let origin = |host: &str| format!("https://{host}:{port}");
    ensure!(
        info.urls
            == vec![
                format!("{}/wordpress/", origin(APPS_HOST)),
                format!("{}/express/", origin(APPS_HOST)),
                format!("{}/", origin(EXPRESS_HOST)),
            ],
        "demo URLs: {:?}",
        info.urls
    );

    // The policies are in the cluster, as `kubectl get accesspolicies` shows them.
    let policies: Api<AccessPolicy> = Api::namespaced(stack.client().await?, demo::NAMESPACE);
    let apps = policies.get("apps").await.context("AccessPolicy apps")?;
    ensure!(
        apps.spec.hosts == vec![APPS_HOST.to_owned()],
        "{:?}",
        apps.spec.hosts
    );
    let express = policies
        .get("express")
        .await
        .context("AccessPolicy express")?;
    ensure!(
        express.spec.hosts == vec![EXPRESS_HOST.to_owned()],
        "{:?}",
        express.spec.hosts
    );

    let lb = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let browser = |cookies: bool| -> Result<reqwest::Client> {
        let mut builder = dex::http_client_builder(&info.ca_file)?
            .cookie_store(cookies)
            // A new connection per request: consecutive requests alternate between replicas.
            .pool_max_idle_per_host(0);
        for host in [AUTH_HOST, APPS_HOST, EXPRESS_HOST] {
            builder = builder.resolve(host, lb);
        }
        Ok(builder.build()?)
    };
    let alice = stack.dex.user("alice")?.clone();
    let bob = (stack.dex.user("bob")?.clone(), browser(true)?);
    let dex_origin = Url::parse(&stack.dex.issuer)?.origin();

    // An API call without a session gets the JSON the poll page turns into "session ended".
    let anonymous = browser(false)?;
    let response = anonymous
        .get(format!("{}/wordpress/api/whoami", origin(APPS_HOST)))
        .header(header::ACCEPT, "application/json")
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::UNAUTHORIZED,
        "{}",
        response.status()
    );
    let problem: serde_json::Value = response.json().await?;
    ensure!(
        problem["login_url"]
            .as_str()
            // The login starts on the app host, which binds it to this browser.
            .is_some_and(|u| u.starts_with(&format!("{}/.portcullis/begin?", origin(APPS_HOST)))),
        "{problem}"
    );

    // The demo's Dex has only the password connector: nobody logs in to the demo by asserting
    // an identity in a header (the control: the same scripted login with a password works).
    ensure!(
        !stack.dex.trusted_header,
        "the demo's Dex runs the trusted-header connector"
    );
    let forged = dex::login(&stack.dex, &alice, Connector::Header).await;
    ensure!(
        forged.is_err(),
        "a trusted-header login to the demo's Dex succeeded"
    );
    dex::login(&stack.dex, &alice, Connector::Password).await?;

    // Log in once, through Dex's real password form.
    let browser = browser(true)?;
    let start = Url::parse(&info.urls[0])?;
    let landed = dex::follow_login(
        &browser,
        start.clone(),
        &alice,
        Connector::Password,
        |url| url.host_str() == Some(APPS_HOST) && !url.path().starts_with("/.portcullis/"),
    )
    .await?;
    ensure!(landed == start, "landed on {landed}, not {start}");
    let (page, _) = visit(&browser, landed).await?;
    shows_alice(&page, "/wordpress/")?;

    // The second app on the same host, and the second host: single sign-on, no Dex.
    for url in [&info.urls[1], &info.urls[2]] {
        let (page, seen) = visit(&browser, Url::parse(url)?).await?;
        ensure!(
            seen.iter().all(|u| u.origin() != dex_origin),
            "{url} went through Dex: {seen:?}"
        );
        shows_alice(&page, url)?;
    }

    // The apps' API: the same identity, the assertion verified for each app's own origin.
    for (url, aud) in [
        (
            format!("{}/express/api/whoami", origin(APPS_HOST)),
            origin(APPS_HOST),
        ),
        (
            format!("{}/api/whoami", origin(EXPRESS_HOST)),
            origin(EXPRESS_HOST),
        ),
    ] {
        let whoami: serde_json::Value = browser
            .get(&url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ensure!(whoami["email"] == "alice@example.com", "{url}: {whoami}");
        ensure!(
            whoami["groups"] == serde_json::json!(["engineering", "admins"]),
            "{url}: {whoami}"
        );
        ensure!(whoami["assertion"]["verified"] == true, "{url}: {whoami}");
        ensure!(
            whoami["assertion"]["matches_headers"] == true,
            "{url}: {whoami}"
        );
        ensure!(
            whoami["assertion"]["claims"]["aud"] == aud.as_str(),
            "{url}: {whoami}"
        );
        ensure!(
            whoami["assertion"]["claims"]["iss"] == origin(AUTH_HOST).as_str(),
            "{url}: {whoami}"
        );
    }

    // The background-refresh page a browser test drives.
    let (poll, _) = visit(
        &browser,
        Url::parse(&format!("{}/wordpress/poll", origin(APPS_HOST)))?,
    )
    .await?;
    ensure!(
        poll.contains("/wordpress/api/whoami") && poll.contains("id=\"status\""),
        "{poll}"
    );

    groups(info, &bob.0, &bob.1).await?;
    revocations(stack, info, &browser, &alice, port).await
}

/// The second host admits the `engineering` group only: bob (sales), logged in with his email
/// and password, is refused there and served on the first host.
async fn groups(info: &DemoInfo, bob: &dex::DexUser, browser: &reqwest::Client) -> Result<()> {
    let start = Url::parse(&info.urls[2])?;
    let landed = dex::follow_login(browser, start.clone(), bob, Connector::Password, |url| {
        url.host_str() == Some(EXPRESS_HOST) && !url.path().starts_with("/.portcullis/")
    })
    .await?;
    ensure!(landed == start, "landed on {landed}, not {start}");
    let response = browser
        .get(landed)
        .header(header::ACCEPT, "text/html")
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "bob (sales) on the engineering host: {}",
        response.status()
    );
    let (page, _) = visit(browser, Url::parse(&info.urls[0])?).await?;
    ensure!(
        page.contains("bob@example.com") && page.contains("sales"),
        "the first host does not show bob in sales:\n{page}"
    );
    Ok(())
}

/// The seed story's revocations, each with the command the demo prints, each enforced by both
/// replicas: one session, every session of a user, every session of a policy (epoch raise).
async fn revocations(
    stack: &StackInfo,
    info: &DemoInfo,
    browser: &reqwest::Client,
    alice: &dex::DexUser,
    port: u16,
) -> Result<()> {
    let origin = |host: &str| format!("https://{host}:{port}");
    let apps_api = format!("{}/wordpress/api/whoami", origin(APPS_HOST));
    let express_api = format!("{}/api/whoami", origin(EXPRESS_HOST));

    // One session: its name is what the session endpoint says.
    let sid = session_id(browser, &origin(APPS_HOST)).await?;
    kubectl_sh(info, &REVOKE_SESSION.replace("NAME", &sid))?;
    refused(browser, &apps_api, "session_revoked").await?;
    refused(browser, &express_api, "session_revoked").await?;
    lands_on_dex(browser, &info.urls[0], stack).await?;

    // Every session of a user: the subject the app was told.
    let second = log_in(browser, info, alice).await?;
    ensure!(second != sid, "no new session after logging in again");
    let me = whoami(browser, &apps_api).await?;
    let subject = me["user"]
        .as_str()
        .with_context(|| format!("no user in {me}"))?
        .to_owned();
    kubectl_sh(info, &REVOKE_USER.replace("SUBJECT", &subject))?;
    refused(browser, &apps_api, "session_revoked").await?;
    refused(browser, &express_api, "session_revoked").await?;

    // Every session of the `apps` policy: its apps need a new login, the other host does not.
    let third = log_in(browser, info, alice).await?;
    ensure!(third != second, "no new session after logging in again");
    // The other host's app token of the revoked session is gone: a navigation gets a new one
    // from the single-sign-on session, without Dex.
    let (page, seen) = visit(browser, Url::parse(&info.urls[2])?).await?;
    let dex_origin = Url::parse(&stack.dex.issuer)?.origin();
    ensure!(
        seen.iter().all(|u| u.origin() != dex_origin),
        "the other host went through Dex: {seen:?}"
    );
    shows_alice(&page, &info.urls[2])?;
    whoami(browser, &express_api).await?;
    kubectl_sh(info, &REVOKE_POLICY.replace("EPOCH", "1"))?;
    refused(browser, &apps_api, "policy_revoked").await?;
    refused(
        browser,
        &format!("{}/express/api/whoami", origin(APPS_HOST)),
        "policy_revoked",
    )
    .await?;
    lands_on_dex(browser, &info.urls[1], stack).await?;
    for _ in 0..4 {
        whoami(browser, &express_api)
            .await
            .context("the express policy's epoch was not raised, its sessions must go on")?;
    }
    Ok(())
}

/// Runs a command line the demo prints with `sh`, kubectl on `PATH` and the demo's kubeconfig.
fn kubectl_sh(info: &DemoInfo, line: &str) -> Result<()> {
    let kubectl = Tool::Kubectl.path()?;
    let dir = kubectl.parent().context("kubectl has no directory")?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(dir.to_owned()).chain(std::env::split_paths(&path)))?;
    let output = Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("PATH", path)
        .env("KUBECONFIG", &info.kubeconfig)
        .output()
        .with_context(|| format!("running {line}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success() && stdout.contains("patched"),
        "{line}: {}\n{stdout}{stderr}",
        output.status
    );
    Ok(())
}

/// The browser's session, as the gateway's session endpoint names it.
async fn session_id(browser: &reqwest::Client, origin: &str) -> Result<String> {
    let body: serde_json::Value = browser
        .get(format!("{origin}/.portcullis/session?path=/wordpress"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["session"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no session in {body}"))
}

async fn whoami(browser: &reqwest::Client, url: &str) -> Result<serde_json::Value> {
    Ok(browser
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Waits (the operator's stream takes a moment) until `url` answers 401, then asks four more
/// times, each on a new connection (so both replicas): every answer a 401 JSON with `error`
/// (when given) and a login URL.
async fn refused(browser: &reqwest::Client, url: &str, error: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut confirmed = 0;
    while confirmed < 5 {
        let response = browser
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            let problem: serde_json::Value = response.json().await?;
            ensure!(
                error.is_empty() || problem["error"] == error,
                "{url}: {problem}, not {error}"
            );
            ensure!(problem["login_url"].is_string(), "{url}: {problem}");
            confirmed += 1;
            continue;
        }
        ensure!(
            confirmed == 0,
            "{url}: {status} after {confirmed} refusals (one replica does not enforce it)"
        );
        ensure!(
            Instant::now() < deadline,
            "{url}: still {status} 15s after the kubectl command"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Navigating to `url` leads to Dex's login page (not to the app).
async fn lands_on_dex(browser: &reqwest::Client, url: &str, stack: &StackInfo) -> Result<()> {
    let dex = Url::parse(&stack.dex.issuer)?.origin();
    let mut url = Url::parse(url)?;
    for _ in 0..10 {
        if url.origin() == dex {
            return Ok(());
        }
        let response = browser
            .get(url.clone())
            .header(header::ACCEPT, "text/html")
            .send()
            .await?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(location) if status.is_redirection() => url = url.join(&location)?,
            _ => bail!("{url} answered {status} instead of leading to Dex"),
        }
    }
    bail!("too many redirects before reaching Dex")
}

/// Logs in through Dex (the app sends the browser there); returns the new session.
async fn log_in(browser: &reqwest::Client, info: &DemoInfo, user: &dex::DexUser) -> Result<String> {
    let start = Url::parse(&info.urls[0])?;
    let landed = dex::follow_login(browser, start.clone(), user, Connector::Password, |url| {
        url.host_str() == Some(APPS_HOST) && !url.path().starts_with("/.portcullis/")
    })
    .await?;
    ensure!(landed == start, "landed on {landed}, not {start}");
    let (page, _) = visit(browser, landed).await?;
    shows_alice(&page, "/wordpress/ after logging in again")?;
    session_id(browser, &start.origin().ascii_serialization()).await
}

fn shows_alice(page: &str, url: &str) -> Result<()> {
    ensure!(
        page.contains("alice@example.com") && page.contains("assertion verified"),
        "{url} does not show alice with a verified assertion:\n{page}"
    );
    Ok(())
}

/// Follows redirects by hand like a browser navigating; returns the final page (which must be
/// 200) and every URL visited.
async fn visit(browser: &reqwest::Client, start: Url) -> Result<(String, Vec<Url>)> {
    let mut url = start;
    let mut seen = vec![url.clone()];
    for _ in 0..10 {
        let response = browser
            .get(url.clone())
            .header(header::ACCEPT, "text/html")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .context("redirect without Location")?;
            url = url.join(location)?;
            seen.push(url.clone());
            continue;
        }
        let body = response.text().await?;
        ensure!(status == StatusCode::OK, "{status} from {url}: {body}");
        return Ok((body, seen));
    }
    bail!("too many redirects: {seen:?}")
}
