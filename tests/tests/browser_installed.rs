//! The seed story in a real browser, against the in-cluster demo (`hack/demo.sh --in-cluster`,
//! `portcullis_tests::installed::demo`) as a person on this machine uses it: the chart installed
//! with `helm install` on the test node with the built images, Dex and the demo's two sample apps
//! as Deployments, Traefik (built from its Go module) in front, every name under
//! `portcullis.localhost` (which Chromium resolves to this machine by itself) and a relay from
//! the demo's port to Traefik. `e2e/seed-story.mjs` runs twice, at the same time, with two
//! users:
//!
//! - alice through Traefik to the gateway in its **reverse-proxy mode**;
//! - bob through Traefik's **forward-auth** (`examples/ingress/traefik/forwardauth.yaml`). The
//!   renewed app cookie reaches the browser only through the example's
//!   `addAuthCookiesToResponse`: the story's background-refresh step fails without it.
//!
//! Each run has its own policies (so the epoch raise of one leaves the other alone) and its own
//! user (Dex keeps one refresh token per user and client: a second login of the same user would
//! end the first session at its next refresh). Both share the auth host, the gateways and the
//! operator. The policies' token lifetime is 10 s and their idle timeout 1 min, as in
//! `tests/tests/browser.rs`. Screenshots and the output land in `target/tmp/seed-installed-*`.
//!
//! Needs what `tests/tests/ingress.rs` and `tests/tests/browser.rs` need: root, the node's
//! packages, the images (`hack/build-images.sh`), Traefik, nginx and Dex (`hack/build-tools.sh`),
//! Chromium, certutil, Node.js and `e2e/node_modules`.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Result, ensure};
use portcullis_tests::e2e::{Browser, Outcome};
use portcullis_tests::installed::demo::{self, ClusterDemo};
use portcullis_tests::installed::seed::{Published, Session};
use portcullis_tests::node::shared::TestNode;
use portcullis_tests::process::free_port;

#[tokio::test]
async fn the_seed_story_in_chromium_against_the_in_cluster_demo() {
    let node = TestNode::shared().await;
    let kubeconfig = node.cluster().info().kubeconfig.clone();
    let result = stories(&kubeconfig, node).await;
    if result.is_err() {
        eprintln!(
            "{}",
            node.pod_logs(portcullis_tests::node::config::DEMO_NAMESPACE, 80)
        );
    }
    // Whatever happened, the next run (or the next test on this node) starts without it.
    let removed = demo::remove(&kubeconfig);
    result.expect("the seed story in Chromium against the in-cluster demo");
    removed.expect("removing the in-cluster demo");
}

async fn stories(kubeconfig: &Path, node: &TestNode) -> Result<()> {
    let browser = Browser::preflight()?;
    let session = Session {
        token_lifetime: "10s".into(),
        idle_timeout: "1m".into(),
    };
    let started = std::time::Instant::now();
    let demo = ClusterDemo::install(kubeconfig, node.info(), free_port()?, &session).await?;
    eprintln!(
        "browser_installed: the demo is installed and Ready after {:?}",
        started.elapsed()
    );
    let release = &demo.release;
    let seed = &demo.seed;

    let mut hosts = seed.hosts();
    hosts.extend([release.auth.clone(), release.dex.clone()]);
    let rules: Vec<String> = hosts.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
    let origin = |host: &str| OsString::from(release.origin(host));
    let common = [
        ("PORTCULLIS_E2E_AUTH_ORIGIN", origin(&release.auth)),
        ("PORTCULLIS_E2E_DEX_ISSUER", release.issuer().into()),
        (
            "PORTCULLIS_E2E_CA_FILE",
            seed.installed.dex.ca_file.clone().into(),
        ),
        ("PORTCULLIS_E2E_NAMESPACE", release.ns.clone().into()),
        ("PORTCULLIS_E2E_HOST_RULES", rules.join(", ").into()),
        ("KUBECONFIG", kubeconfig.into()),
    ];
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let run = |published: &Published, user: &str| {
        let mut env = common.to_vec();
        env.extend([
            ("PORTCULLIS_E2E_APPS_ORIGIN", origin(&published.apps)),
            ("PORTCULLIS_E2E_EXPRESS_ORIGIN", origin(&published.express)),
            ("PORTCULLIS_E2E_POLICY", published.policy.clone().into()),
            ("PORTCULLIS_E2E_USER", user.into()),
        ]);
        let dir = artifacts.join(format!("seed-installed-{}", published.mode));
        let browser = browser.clone();
        async move { browser.run(&env, &dir).await }
    };
    let (proxied, forwarded) = tokio::join!(
        run(&seed.proxy, "alice@example.com"),
        run(&seed.forward, "bob@example.com")
    );
    // Both runs are reported before either failure is returned.
    let proxied = report(&seed.proxy, proxied?);
    let forwarded = report(&seed.forward, forwarded?);
    proxied.and(forwarded)
}

/// Prints a run's steps and tells whether it passed.
fn report(published: &Published, outcome: Outcome) -> Result<()> {
    println!(
        "--- the seed story through {}:\n{}",
        published.mode, outcome.output
    );
    ensure!(
        outcome.passed,
        "the seed story through {} failed; its steps and the reason are above",
        published.mode
    );
    Ok(())
}
