//! `devstack`: runs the Portcullis development/test control plane (etcd, kube-apiserver,
//! kube-controller-manager, Dex) on loopback until interrupted.
//!
//! `devstack up` is what the README demo and the shared test cluster start; `devstack down`
//! stops a running one; `devstack env` prints shell exports for it. `devstack up --demo` adds
//! the demo on top (see [`portcullis_tests::demo`]): sample policies, sample apps, the operator,
//! two gateway replicas in cluster mode and a load balancer on one public port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use portcullis_tests::cluster::{default_state_dir, install_crds};
use portcullis_tests::demo::{self, Demo, DemoConfig};
use portcullis_tests::installed::demo::ClusterDemo;
use portcullis_tests::installed::seed::Session;
use portcullis_tests::node::{Node, NodeInfo, node_dir, stop_leftovers as stop_node_leftovers};
use portcullis_tests::process::{pid_alive, terminate_pid};
use portcullis_tests::stack::{Stack, StackConfig, StackInfo, stop_leftovers};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    about = "Real control plane (etcd, kube-apiserver, controller manager, Dex) on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the stack and keep it running until SIGINT/SIGTERM.
    Up(UpArgs),
    /// Add a node (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS) to the running
    /// stack and keep it until SIGINT/SIGTERM; needs root and the images of
    /// `hack/build-images.sh`.
    Node(NodeArgs),
    /// Install the in-cluster demo on the running node (the chart, Dex, the sample apps and
    /// Traefik; `hack/demo.sh --in-cluster`) and relay its public port to the ingress until
    /// SIGINT/SIGTERM.
    DemoCluster(DemoClusterArgs),
    /// Stop the stack (and its node) recorded in the state directory.
    Down(StateDir),
    /// Print shell exports (KUBECONFIG, Dex issuer, ...) for the running stack.
    Env(StateDir),
}

#[derive(Args)]
struct StateDir {
    /// State directory (certificates, etcd data, logs, kubeconfig, stack.json). Default:
    /// <workspace>/target/portcullis-stack.
    #[arg(long, env = "PORTCULLIS_STACK_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn resolve(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
    }
}

#[derive(Args)]
struct NodeArgs {
    #[command(flatten)]
    state: StateDir,
    /// File created once the node is Ready and CoreDNS serves.
    #[arg(long, env = "PORTCULLIS_NODE_READY_FILE")]
    detach_ready_file: Option<PathBuf>,
}

#[derive(Args)]
struct DemoClusterArgs {
    #[command(flatten)]
    state: StateDir,
    /// The port in every demo URL, relayed to the ingress.
    #[arg(long, env = "PORTCULLIS_DEMO_PORT", default_value_t = demo::DEFAULT_PORT)]
    port: u16,
    /// File created once the demo is installed and Ready.
    #[arg(long)]
    detach_ready_file: Option<PathBuf>,
    /// App-token lifetime of the demo policies, instead of 5m: short ones show background
    /// renewal within a minute.
    #[arg(long, env = "PORTCULLIS_DEMO_TOKEN_LIFETIME")]
    token_lifetime: Option<String>,
    /// Idle timeout of the demo policies, instead of 1h.
    #[arg(long, env = "PORTCULLIS_DEMO_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    state: StateDir,
    /// File created once everything is ready (for a parent process waiting on the stack).
    #[arg(long, env = "PORTCULLIS_READY_FILE")]
    detach_ready_file: Option<PathBuf>,
    /// Fixed kube-apiserver port (default: a free port).
    #[arg(long, env = "PORTCULLIS_API_PORT")]
    api_port: Option<u16>,
    /// Fixed Dex port (default: a free port).
    #[arg(long, env = "PORTCULLIS_DEX_PORT")]
    dex_port: Option<u16>,
    /// Fixed etcd client port (default: a free port).
    #[arg(long, env = "PORTCULLIS_ETCD_PORT")]
    etcd_port: Option<u16>,
    /// Extra redirect URI of the `portcullis` Dex client (repeatable or comma-separated).
    #[arg(
        long = "redirect-uri",
        env = "PORTCULLIS_REDIRECT_URIS",
        value_delimiter = ','
    )]
    redirect_uris: Vec<String>,
    /// Extra DNS name or IP for the serving certificates (repeatable or comma-separated).
    #[arg(
        long = "dns-name",
        env = "PORTCULLIS_EXTRA_DNS_NAMES",
        value_delimiter = ','
    )]
    dns_names: Vec<String>,
    /// Seconds each component may take to become ready.
    #[arg(long, env = "PORTCULLIS_READY_TIMEOUT_SECS", default_value_t = 120)]
    ready_timeout_secs: u64,
    #[command(flatten)]
    demo: DemoArgs,
}

/// The demo (`hack/demo.sh`).
#[derive(Args)]
struct DemoArgs {
    /// Also run the demo: the demo policies, two sample apps, the operator, two gateway
    /// replicas following it and a load balancer in front of them, all on 127.0.0.1.
    #[arg(long)]
    demo: bool,
    /// Port of the demo's load balancer, which is the port in every demo URL.
    #[arg(long, env = "PORTCULLIS_DEMO_PORT", default_value_t = demo::DEFAULT_PORT)]
    demo_port: u16,
    /// Directory holding `portcullis-gateway`, `portcullis-operator`, `demo-lb` and
    /// `sample-app`. Default: the directory of this executable (cargo builds them all into
    /// `target/<profile>/`).
    #[arg(long, env = "PORTCULLIS_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// App-token lifetime of the demo policies (`spec.session.tokenLifetime`, 10s to 24h),
    /// instead of the manifest's 5m: short ones show background renewal within a minute.
    #[arg(long, env = "PORTCULLIS_DEMO_TOKEN_LIFETIME")]
    demo_token_lifetime: Option<String>,
    /// Idle timeout of the demo policies (`spec.session.idleTimeout`, 1m to 90 days), instead
    /// of the manifest's 1h.
    #[arg(long, env = "PORTCULLIS_DEMO_IDLE_TIMEOUT")]
    demo_idle_timeout: Option<String>,
}

impl DemoArgs {
    fn config(&self) -> Result<Option<DemoConfig>> {
        if !self.demo {
            return Ok(None);
        }
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .context("locating devstack")?
                .parent()
                .context("devstack has no directory")?
                .to_owned(),
        };
        let mut config = DemoConfig::new(self.demo_port, bin_dir);
        config.token_lifetime = self.demo_token_lifetime.clone();
        config.idle_timeout = self.demo_idle_timeout.clone();
        Ok(Some(config))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portcullis_tests::tool_main("devstack", "info", run()).await
}

async fn run() -> Result<()> {
    match Cli::parse().command {
        Cmd::Up(args) => up(args).await,
        Cmd::Node(args) => node(args).await,
        Cmd::DemoCluster(args) => demo_cluster(args).await,
        Cmd::Down(dir) => down(&dir.resolve()).await,
        Cmd::Env(dir) => {
            let info = running(&dir.resolve())?;
            print!("{}", info.shell_exports());
            Ok(())
        }
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let state_dir = args.state.resolve();
    let mut config = StackConfig::new(&state_dir);
    config.apiserver_port = args.api_port;
    config.dex_port = args.dex_port;
    config.etcd_port = args.etcd_port;
    config.redirect_uris = args.redirect_uris;
    config.extra_dns_names = args.dns_names;
    config.ready_timeout = Duration::from_secs(args.ready_timeout_secs);
    let demo_config = args.demo.config()?;
    if let Some(demo) = &demo_config {
        demo.preflight(&state_dir).await?;
        config.redirect_uris.push(demo.redirect_uri());
        // A person logs in to the demo: only with a password, never by asserting a header.
        config.trusted_header = false;
    }
    // Listen before starting, so a signal during the minute-long start still stops cleanly
    // (the Stack is dropped, which kills its children).
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;

    let stack = tokio::select! {
        stack = Stack::start(config) => stack?,
        _ = sigint.recv() => anyhow::bail!("interrupted during start"),
        _ = sigterm.recv() => anyhow::bail!("terminated during start"),
    };
    // Dropping a half-started demo (and the stack) kills what it started.
    let mut demo = tokio::select! {
        demo = after_start(&stack, demo_config.as_ref()) => demo?,
        _ = sigint.recv() => anyhow::bail!("interrupted during start"),
        _ = sigterm.recv() => anyhow::bail!("terminated during start"),
    };
    print_summary(stack.info());
    if let Some(demo) = &demo {
        print!("{}", demo.summary());
    }
    if let Some(ready) = &args.detach_ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", ready.display()))?;
    }

    let mut health = tokio::time::interval(Duration::from_secs(5));
    let mut stack = stack;
    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = health.tick() => {
                // A component that dies takes the stack down loudly instead of leaving tests
                // to time out against half a control plane.
                if let Err(e) = stack.ensure_running() {
                    break Err(e);
                }
                if let Some(Err(e)) = demo.as_mut().map(Demo::ensure_running) {
                    break Err(e);
                }
            }
        }
    };
    if let Some(ready) = &args.detach_ready_file {
        let _ = std::fs::remove_file(ready);
    }
    eprintln!("devstack: stopping");
    // The demo's gateways, operator and apps first: they are clients of the stack.
    let demo_stopped = match demo {
        Some(demo) => demo.stop().await,
        None => Ok(()),
    };
    stack.stop().await?;
    demo_stopped?;
    outcome
}

/// Runs once the stack is ready, before the ready file is written: installs what every user
/// of the stack expects. Installs the CRDs exactly like the shared test cluster does, then
/// starts the demo when asked.
async fn after_start(stack: &Stack, demo: Option<&DemoConfig>) -> Result<Option<Demo>> {
    install_crds(&stack.client().await?).await?;
    match demo {
        Some(config) => Ok(Some(Demo::start(stack.info(), config).await?)),
        None => Ok(None),
    }
}

fn print_summary(info: &StackInfo) {
    println!(
        "Portcullis devstack is ready (state in {})",
        info.state_dir.display()
    );
    println!("  kube-apiserver  {}", info.apiserver_url());
    println!(
        "  etcd            {}",
        info.etcd.url.as_deref().unwrap_or_default()
    );
    println!("  dex issuer      {}", info.dex.issuer);
    println!(
        "  dex client      {} (secret in {})",
        info.dex.client_id,
        info.dex.client_secret_file.display()
    );
    println!("  CA              {}", info.ca_file.display());
    println!(
        "  logs            {}",
        info.state_dir.join("logs").display()
    );
    for user in &info.dex.users {
        println!(
            "  user            {} / {}  groups {:?}",
            user.email, user.password, user.groups
        );
    }
    println!();
    print!("{}", info.shell_exports());
    println!("\nStop with Ctrl-C or `devstack down`.");
}

fn running(dir: &Path) -> Result<StackInfo> {
    let info = StackInfo::load(dir)?;
    anyhow::ensure!(
        pid_alive(info.owner_pid),
        "the stack in {} is not running (owner pid {} is gone)",
        dir.display(),
        info.owner_pid
    );
    Ok(info)
}

/// Runs a node for the stack in the state directory until a signal, or until the stack's owner
/// or a node process dies; then removes its pods and undoes its changes to the machine.
async fn node(args: NodeArgs) -> Result<()> {
    let state_dir = args.state.resolve();
    let info = running(&state_dir)?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let started = tokio::select! {
        node = Node::start(&info) => node,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted during start")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated during start")),
    };
    let mut node = match started {
        Ok(node) => node,
        Err(e) => {
            // A half-started node is dropped (its processes killed); undo the rest.
            if let Err(cleanup) = stop_node_leftovers(&node_dir(&state_dir)).await {
                eprintln!("devstack node: cleanup after the failed start: {cleanup:#}");
            }
            return Err(e);
        }
    };
    println!(
        "Portcullis node {} is Ready (state in {})",
        portcullis_tests::node::NODE_NAME,
        node.info().dir.display()
    );
    if let Some(ready) = &args.detach_ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    let mut health = tokio::time::interval(Duration::from_secs(5));
    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = health.tick() => {
                if !pid_alive(info.owner_pid) {
                    break Err(anyhow::anyhow!("the stack's owner {} is gone", info.owner_pid));
                }
                if let Err(e) = node.ensure_running() {
                    break Err(e);
                }
            }
        }
    };
    if let Some(ready) = &args.detach_ready_file {
        let _ = std::fs::remove_file(ready);
    }
    eprintln!("devstack node: stopping");
    node.stop().await?;
    outcome
}

/// Installs the in-cluster demo on the node of the stack in the state directory, then keeps
/// its relay until a signal or until the node's owner is gone.
async fn demo_cluster(args: DemoClusterArgs) -> Result<()> {
    let state_dir = args.state.resolve();
    let info = running(&state_dir)?;
    let node = NodeInfo::load(&node_dir(&state_dir))
        .context("no node for this stack: start `devstack node` first")?;
    anyhow::ensure!(pid_alive(node.owner_pid), "the stack's node is not running");
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut session = Session::demo();
    if let Some(lifetime) = args.token_lifetime {
        session.token_lifetime = lifetime;
    }
    if let Some(idle) = args.idle_timeout {
        session.idle_timeout = idle;
    }
    let demo = tokio::select! {
        demo = ClusterDemo::install(&info.kubeconfig, &node, args.port, &session) => demo?,
        _ = sigint.recv() => anyhow::bail!("interrupted during the install"),
        _ = sigterm.recv() => anyhow::bail!("terminated during the install"),
    };
    print!("{}", demo.summary());
    println!("\nStop with Ctrl-C (hack/demo.sh then stops the node and the stack).");
    if let Some(ready) = &args.detach_ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    let mut health = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = health.tick() => {
                anyhow::ensure!(pid_alive(node.owner_pid), "the node's owner is gone");
                demo.ensure_running()?;
            }
        }
    }
}

async fn down(dir: &Path) -> Result<()> {
    // The node first: it is a client of the stack and removes its pods through it.
    let node = node_dir(dir);
    if let Ok(info) = NodeInfo::load(&node)
        && pid_alive(info.owner_pid)
    {
        terminate_pid(info.owner_pid, Duration::from_secs(90)).await?;
    }
    if node.exists() {
        stop_node_leftovers(&node).await?;
    }
    match StackInfo::load(dir) {
        Ok(info) => {
            if pid_alive(info.owner_pid) {
                // The owner stops its children cleanly on SIGTERM; give it their grace too.
                terminate_pid(info.owner_pid, Duration::from_secs(30)).await?;
            }
            stop_leftovers(dir).await?;
            eprintln!("devstack: stopped the stack in {}", dir.display());
        }
        Err(_) => eprintln!("devstack: no stack recorded in {}", dir.display()),
    }
    Ok(())
}
