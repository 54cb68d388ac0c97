//! `portcullis-operator`: see the crate documentation.

use clap::Parser as _;
use portcullis_operator::{config::Args, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    portcullis_runtime::init_tracing(&args.log_format);
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    startup::run(args).await
}
