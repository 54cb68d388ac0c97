//! The seed story (issue #7) in a real browser: Debian's Chromium, driven by playwright-core
//! (`e2e/seed-story.mjs`), against the demo that `hack/demo.sh` runs: a real control plane,
//! Dex, the operator, two gateway replicas following it behind one load balancer, two sample
//! apps. Its revocations (step 4: a session, step 5: a policy's epoch) are `kubectl patch`es
//! that reach the gateways only through the operator's stream.
//!
//! The test starts `devstack up --demo` on a state directory and port of its own (as
//! `tests/tests/demo.rs` does) with the demo policies' token lifetime at 10 s and their idle
//! timeout at 1 min (the smallest the CRD allows), so the story's "several token lifetimes" and
//! "idle past the timeout" take a minute each rather than an hour. It then runs the script with
//! the demo's URLs, CA, kubeconfig and an artifact directory in its environment and asserts its
//! exit status; the script's output (each step, PASS or FAIL with the reason) and, on failure,
//! the end of every demo process's log are printed. Screenshots of every step land in
//! `target/tmp/seed-story/`.
//!
//! Needs, besides what every test needs: `/usr/bin/chromium` and `certutil` (Debian's
//! `chromium` and `libnss3-tools`; `.ci/run` installs them), Node.js, and
//! `e2e/node_modules` (`npm ci --prefix e2e`; `hack/test.sh` runs it), and `portcullis-gateway`
//! and `portcullis-operator` next to `devstack` (`cargo build --workspace --bins`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use portcullis_tests::demo::{
    APPS_HOST, AUTH_HOST, DemoInfo, EXPRESS_HOST, GATEWAY_BIN, OPERATOR_BIN,
};
use portcullis_tests::e2e::Browser;
use portcullis_tests::fsutil::tail;
use portcullis_tests::process::{ManagedProcess, free_port};
use portcullis_tests::stack::StackInfo;

/// The control plane's first start on a busy 2-core machine takes a minute or two.
const READY_TIMEOUT: Duration = Duration::from_secs(360);
/// devstack stops the demo, then four components with up to 10 s each.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// App-token lifetime of the demo policies for this run.
const TOKEN_LIFETIME: &str = "10s";
/// Idle timeout of the demo policies for this run.
const IDLE_TIMEOUT: &str = "1m";
/// Lines of each demo log printed when the story fails.
const LOG_LINES: usize = 60;

/// A directory removed when the test ends.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn seed_story_in_chromium() -> Result<()> {
    portcullis_tests::install_crypto_provider();
    let browser = Browser::preflight()?;

    let dir = std::env::temp_dir().join(format!("portcullis-browser-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let _cleanup = TempDir(dir.clone());
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("seed-story");

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
        .arg("--demo-token-lifetime")
        .arg(TOKEN_LIFETIME)
        .arg("--demo-idle-timeout")
        .arg(IDLE_TIMEOUT)
        .arg("--detach-ready-file")
        .arg(&ready);
    let devstack_log = dir.join("devstack.log");
    // Dropped (SIGTERM, then SIGKILL) if the test fails before the orderly stop below.
    let mut devstack = ManagedProcess::spawn("devstack up --demo", cmd, &devstack_log)?;
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

    let origin = |host: &str| OsString::from(format!("https://{host}:{port}"));
    let env = [
        ("PORTCULLIS_E2E_APPS_ORIGIN", origin(APPS_HOST)),
        ("PORTCULLIS_E2E_EXPRESS_ORIGIN", origin(EXPRESS_HOST)),
        ("PORTCULLIS_E2E_AUTH_ORIGIN", origin(AUTH_HOST)),
        ("PORTCULLIS_E2E_DEX_ISSUER", stack.dex.issuer.clone().into()),
        ("PORTCULLIS_E2E_CA_FILE", info.ca_file.clone().into()),
        (
            "PORTCULLIS_E2E_NAMESPACE",
            portcullis_tests::demo::NAMESPACE.into(),
        ),
        ("KUBECONFIG", info.kubeconfig.clone().into()),
    ];
    let outcome = browser.run(&env, &artifacts).await?;
    println!("{}", outcome.output);

    if !outcome.passed {
        // The logs go with the screenshots, for a CI run that is gone afterwards.
        let logs = artifacts.join("logs");
        std::fs::create_dir_all(&logs)?;
        eprintln!("devstack log:\n{}", devstack.log_tail());
        for process in &info.processes {
            eprintln!(
                "--- {} ({}):\n{}",
                process.name,
                process.log.display(),
                tail(&process.log, LOG_LINES)
            );
            if let Some(name) = process.log.file_name() {
                let _ = std::fs::copy(&process.log, logs.join(name));
            }
        }
    }

    let status = devstack
        .stop(STOP_TIMEOUT)
        .await?
        .context("devstack was already stopped")?;
    ensure!(
        outcome.passed,
        "the seed story failed in Chromium; the steps and the reason are above, screenshots \
         and logs in {}",
        artifacts.display()
    );
    ensure!(
        status.success(),
        "devstack exited with {status}:\n{}",
        tail(&devstack_log, LOG_LINES)
    );
    println!("screenshots: {}", artifacts.display());
    Ok(())
}
