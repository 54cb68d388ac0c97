//! `portcullis-operator`: see the crate documentation.

use clap::Parser as _;
use portcullis_operator::{config::Args, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let instance = args.identity();
    let service = portcullis_runtime::telemetry::Service {
        name: "portcullis-operator",
        instance: &instance,
    };
    let traces = portcullis_runtime::telemetry::init(&args.log_format, &service, &args.traces)?;
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let result = startup::run(args).await;
    if let Some(traces) = traces {
        traces.shutdown();
    }
    result
}
