//! Portcullis test harness: a real control plane on loopback for integration tests.
//!
//! [`stack::Stack`] runs etcd, kube-apiserver, kube-controller-manager and Dex as child
//! processes (real binaries from `hack/build-tools.sh`, never fakes). The `devstack` binary
//! owns one stack for a whole test run or demo; [`cluster::TestCluster::shared`] finds or starts
//! it, installs the CRDs, and hands each test its own namespace.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use portcullis_tests::{TestCluster, dex};
//!
//! let cluster = TestCluster::shared().await;
//! cluster
//!     .with_temp_ns("my-test", |client, ns| async move {
//!         // create objects in `ns` with `client`; a panic or `Err` dumps diagnostics
//!         anyhow::Ok(())
//!     })
//!     .await?;
//! let dex = &cluster.info().dex;
//! let tokens = dex::login(dex, dex.user("alice")?, dex::Connector::Header).await?;
//! # Ok(()) }
//! ```
//!
//! Choices worth knowing:
//!
//! * Everything listens on 127.0.0.1 only; the controller manager listens on nothing.
//! * Dex is served over **HTTPS** with the stack CA (`https://127.0.0.1:PORT/dex`), so the
//!   gateway is tested with the same CA-bundle configuration a real IdP needs and never with
//!   verification switched off or an `http` issuer allowed.
//! * Dex's static users (alice, bob) have groups, so a password login carries them; see
//!   [`dex`] for the test stacks' second, `header` connector.
//! * Keycloak ([`keycloak`]) is the second real identity provider: not part of the stack, but
//!   started by each test that needs a provider with a login session of its own and
//!   `auth_time` in its tokens (a JVM: 20–70 s to start, ~450 MB).
//! * The shared stack outlives the test run (so the next binary and the next run reuse it);
//!   stop it with `devstack down`. Leftover namespaces carry the label
//!   [`cluster::TEST_NAMESPACE_LABEL`].

pub mod cluster;
pub mod demo;
pub mod dex;
pub mod e2e;
pub mod etcd;
pub mod fixtures;
pub mod fleet;
pub mod fsutil;
pub mod gateway;
pub mod gomod;
pub mod installed;
pub mod jaeger;
pub mod keycloak;
pub mod kubeconfig;
pub mod node;
pub mod operator;
pub mod pki;
pub mod process;
pub mod relay;
pub mod stack;
pub mod stream_clients;
pub mod tools;
pub mod upstream;

pub use cluster::{TestCluster, TestNamespace, with_temp_ns};
pub use stack::{Stack, StackConfig, StackInfo};

/// Installs aws-lc-rs as the process-wide rustls provider, once. Every TLS client and server in
/// Portcullis uses this one provider; a second install attempt is harmless and ignored.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The start and end of the harness's command-line programs: logs on stderr at
/// `default_level` (`RUST_LOG` overrides it), the crypto provider, then `run`; an error is
/// printed as one line with its whole cause chain (callers show the end of this output, where
/// a backtrace would push the cause out).
pub async fn tool_main<F>(name: &str, default_level: &str, run: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let level = default_level.to_owned();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    install_crypto_provider();
    match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
