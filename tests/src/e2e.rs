//! The seed story in a real browser (`e2e/seed-story.mjs`: Debian's Chromium driven by
//! playwright-core), run by the tests that have something to run it against: the loopback demo
//! (`tests/tests/browser.rs`) and the chart installed behind a real ingress
//! (`tests/tests/browser_installed.rs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};

use crate::tools::{Tool, repo};

/// The story takes about four minutes (a minute of polling, a minute of idling, logins); a
/// hung browser must not hang the test run.
const STORY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Where Debian installs Chromium; `PORTCULLIS_E2E_CHROMIUM` overrides it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// What a story needs besides its targets: the browser, kubectl, and the script's packages.
#[derive(Clone, Debug)]
pub struct Browser {
    pub chromium: PathBuf,
    pub kubectl: PathBuf,
}

/// How one run of the story ended, with its output (each step, PASS or FAIL with the reason).
#[derive(Debug)]
pub struct Outcome {
    pub passed: bool,
    pub output: String,
}

impl Browser {
    /// Checks for everything the story needs, naming the way to get what is missing.
    pub fn preflight() -> Result<Self> {
        let chromium = std::env::var_os("PORTCULLIS_E2E_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| CHROMIUM.into());
        ensure!(
            chromium.is_file(),
            "{} not found: install Debian's Chromium (`apt-get install chromium libnss3-tools`; \
             .ci/run does) or point PORTCULLIS_E2E_CHROMIUM at a Chromium binary",
            chromium.display()
        );
        let found = |program: &str| {
            Command::new(program)
                .arg(if program == "certutil" {
                    "-H"
                } else {
                    "--version"
                })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        ensure!(
            found("certutil"),
            "certutil not found: install Debian's libnss3-tools (.ci/run does); Chromium trusts \
             the test CA through an NSS database it creates"
        );
        ensure!(
            found("node"),
            "node not found: Node.js runs e2e/seed-story.mjs"
        );
        ensure!(
            e2e_dir()
                .join("node_modules/playwright-core/package.json")
                .is_file(),
            "{} has no playwright-core: run `npm ci --prefix e2e` (hack/test.sh does)",
            e2e_dir().display()
        );
        Ok(Self {
            chromium,
            kubectl: Tool::Kubectl.path()?,
        })
    }

    /// Runs the story with `env` (see the top of `e2e/seed-story.mjs`) besides the browser,
    /// kubectl and `artifacts` (screenshots, and the output as `seed-story.log`).
    pub async fn run(&self, env: &[(&str, OsString)], artifacts: &Path) -> Result<Outcome> {
        let _ = std::fs::remove_dir_all(artifacts);
        std::fs::create_dir_all(artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        let mut story = tokio::process::Command::new("node");
        story
            .arg(e2e_dir().join("seed-story.mjs"))
            .current_dir(e2e_dir())
            .env("PORTCULLIS_E2E_ARTIFACTS", artifacts)
            .env("PORTCULLIS_E2E_KUBECTL", &self.kubectl)
            .env("PORTCULLIS_E2E_CHROMIUM", &self.chromium)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = story.spawn().context("starting node e2e/seed-story.mjs")?;
        let outcome = tokio::time::timeout(STORY_TIMEOUT, child.wait_with_output()).await;
        let output = match outcome {
            Ok(output) => output.context("running node e2e/seed-story.mjs")?,
            Err(_) => bail!("the seed story did not finish within {STORY_TIMEOUT:?}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(artifacts.join("seed-story.log"), &text)?;
        Ok(Outcome {
            passed: output.status.success(),
            output: text,
        })
    }
}

fn e2e_dir() -> PathBuf {
    repo().join("e2e")
}
