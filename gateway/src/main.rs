//! `portcullis-gateway`: see the crate documentation.

use clap::Parser as _;
use portcullis_gateway::{config, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = config::Args::parse();
    portcullis_runtime::init_tracing(&args.log.log_format);
    // Exactly one crypto provider for rustls (server, proxy, identity providers) and
    // jsonwebtoken: aws-lc-rs.
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    startup::run(args).await
}
