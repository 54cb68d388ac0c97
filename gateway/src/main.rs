//! `portcullis-gateway`: see the crate documentation.

use clap::Parser as _;
use portcullis_gateway::{config, startup};

/// mimalloc rather than the system allocator: a request allocates and frees dozens of small
/// buffers (headers, futures, TLS records), and glibc's malloc spent a seventh of the request
/// path's CPU time on them (`BENCHMARKS.md`, the gateway's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = config::Args::parse();
    let instance = args.operator.gateway_id();
    let service = portcullis_runtime::telemetry::Service {
        name: "portcullis-gateway",
        instance: &instance,
    };
    let traces = portcullis_runtime::telemetry::init(&args.log.log_format, &service, &args.traces)?;
    // Exactly one crypto provider for rustls (server, proxy, identity providers) and
    // jsonwebtoken: aws-lc-rs.
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let result = startup::run(args).await;
    if let Some(traces) = traces {
        traces.shutdown();
    }
    result
}
