//! `oci-image`: writes one single-layer image as an OCI image-layout tar archive, every byte a
//! function of the arguments and the files' contents (never their mtimes or owners).
//!
//! ```text
//! oci-image --repository docker.io/portcullis/gateway --tag 0.1.0 \
//!   --file /usr/local/bin/portcullis-gateway=target/…/portcullis-gateway:0755 \
//!   --entrypoint /usr/local/bin/portcullis-gateway --user 65532:65532 \
//!   --created-epoch "$SOURCE_DATE_EPOCH" --label org.opencontainers.image.revision=… \
//!   --out target/images/portcullis-gateway.oci.tar
//! ```
//! Prints the manifest digest (what a digest reference pins) on stdout.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use portcullis_images::layout::{self, ImageSpec, LayerFile};

#[derive(Parser)]
#[command(about = "Write a single-layer OCI image layout archive, deterministically")]
struct Cli {
    /// Fully qualified repository (`docker.io/portcullis/gateway`): with the tag, the name
    /// `ctr images import` gives the image.
    #[arg(long, env = "OCI_IMAGE_REPOSITORY")]
    repository: String,
    /// Tag.
    #[arg(long, env = "OCI_IMAGE_TAG")]
    tag: String,
    /// A file of the layer: `IMAGE_PATH=HOST_PATH:MODE` (octal mode). Repeatable.
    #[arg(
        long = "file",
        env = "OCI_IMAGE_FILES",
        value_delimiter = ',',
        required = true
    )]
    files: Vec<String>,
    /// Entrypoint and its fixed arguments (repeatable, in order).
    #[arg(
        long = "entrypoint",
        env = "OCI_IMAGE_ENTRYPOINT",
        value_delimiter = ',',
        required = true
    )]
    entrypoint: Vec<String>,
    /// Numeric `uid:gid` the image runs as.
    #[arg(long, env = "OCI_IMAGE_USER", default_value = "65532:65532")]
    user: String,
    /// An environment variable `NAME=value` of the image. Repeatable.
    #[arg(long = "env", env = "OCI_IMAGE_ENV")]
    env: Vec<String>,
    /// A label `key=value`, also a manifest annotation. Repeatable.
    #[arg(long = "label", env = "OCI_IMAGE_LABELS")]
    labels: Vec<String>,
    /// Creation time and every file's mtime, seconds since the epoch.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    created_epoch: u64,
    /// Where the archive goes.
    #[arg(long, env = "OCI_IMAGE_OUT")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oci-image: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let files = cli
        .files
        .iter()
        .map(|f| layer_file(f))
        .collect::<Result<Vec<_>>>()?;
    let mut labels = BTreeMap::new();
    for label in &cli.labels {
        let Some((key, value)) = label.split_once('=') else {
            bail!("label {label:?} is not key=value");
        };
        labels.insert(key.to_owned(), value.to_owned());
    }
    let spec = ImageSpec {
        repository: cli.repository,
        tag: cli.tag,
        files,
        entrypoint: cli.entrypoint,
        user: cli.user,
        env: cli.env,
        labels,
        created_epoch: cli.created_epoch,
    };
    let image = layout::write(&spec)?;
    std::fs::write(&cli.out, &image.bytes)
        .with_context(|| format!("writing {}", cli.out.display()))?;
    println!("{}", image.manifest_digest);
    Ok(())
}

/// `IMAGE_PATH=HOST_PATH:MODE`.
fn layer_file(arg: &str) -> Result<LayerFile> {
    let (path, rest) = arg
        .split_once('=')
        .with_context(|| format!("--file {arg:?} is not IMAGE_PATH=HOST_PATH:MODE"))?;
    let (host, mode) = rest
        .rsplit_once(':')
        .with_context(|| format!("--file {arg:?} has no :MODE"))?;
    let mode = u32::from_str_radix(mode, 8).with_context(|| format!("mode {mode:?} of {arg:?}"))?;
    let data = std::fs::read(host).with_context(|| format!("reading {host}"))?;
    Ok(LayerFile {
        path: path.to_owned(),
        mode,
        data,
    })
}
