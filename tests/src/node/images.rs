//! The images the node runs, imported into containerd with `ctr` (there is no registry): the
//! archives `hack/build-images.sh` wrote (pause, operator, gateway) and a CoreDNS image made
//! here from the CoreDNS binary `hack/build-tools.sh` built, with the same writer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use portcullis_images::layout::{self, ImageSpec, LayerFile};

use super::net::run;

/// Environment variable naming the folder with the image archives.
pub const IMAGES_DIR_ENV: &str = "PORTCULLIS_IMAGES_DIR";
/// Repository prefix of every image `hack/build-images.sh` writes.
pub const PREFIX: &str = "docker.io/portcullis";
/// Tag of the CoreDNS image (its version).
pub const COREDNS_TAG: &str = "1.15.0";

/// `$PORTCULLIS_IMAGES_DIR`, else `<target dir>/images` (where `hack/build-images.sh` writes).
pub fn images_dir() -> PathBuf {
    std::env::var_os(IMAGES_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cluster::workspace_target_dir().join("images"))
}

/// The archive of image `name` (`pause`, `operator`, `gateway`), or how to build it.
pub fn archive(name: &str) -> Result<PathBuf> {
    let path = images_dir().join(format!("portcullis-{name}.oci.tar"));
    if !path.is_file() {
        bail!(
            "{} missing: run `hack/build-images.sh` (or set {IMAGES_DIR_ENV})",
            path.display()
        );
    }
    Ok(path)
}

/// The name containerd gives an archive, read from its `index.json` annotation.
pub fn image_name(archive: &Path) -> Result<String> {
    let listing = run(
        "tar",
        &["-xOf", &archive.display().to_string(), "index.json"],
    )?;
    let index: serde_json::Value = serde_json::from_str(&listing).context("parsing index.json")?;
    index["manifests"][0]["annotations"][layout::CONTAINERD_NAME]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} names no image", archive.display()))
}

/// Writes the CoreDNS image from the built binary into `dir`; returns its archive and name.
pub fn coredns(dir: &Path, binary: &Path) -> Result<(PathBuf, String)> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let spec = ImageSpec {
        repository: format!("{PREFIX}/coredns"),
        tag: COREDNS_TAG.to_owned(),
        files: vec![LayerFile {
            path: "/coredns".into(),
            mode: 0o755,
            data,
        }],
        entrypoint: vec!["/coredns".into()],
        user: "65532:65532".into(),
        env: Vec::new(),
        labels: [(
            "org.opencontainers.image.version".to_owned(),
            COREDNS_TAG.to_owned(),
        )]
        .into(),
        created_epoch: 0,
    };
    let image = layout::write(&spec)?;
    let path = dir.join("coredns.oci.tar");
    std::fs::write(&path, &image.bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, format!("{}:{}", spec.repository, spec.tag)))
}

/// `ctr -n k8s.io images import` of each archive into the node's containerd.
pub fn import(socket: &Path, archives: &[PathBuf]) -> Result<()> {
    let socket = socket.display().to_string();
    for archive in archives {
        run(
            "ctr",
            &[
                "--address",
                &socket,
                "-n",
                "k8s.io",
                "images",
                "import",
                &archive.display().to_string(),
            ],
        )
        .with_context(|| format!("importing {}", archive.display()))?;
    }
    Ok(())
}
