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
    tool_image(dir, "coredns", COREDNS_TAG, binary, "/coredns", &[])
}

/// Writes an image of a third-party binary from the tools cache into `dir`: the binary at
/// `path` with the shared libraries it loads (a cgo build, like Dex's, is not static), run as
/// 65532 with `args`. Returns the archive and the image's name.
pub fn tool_image(
    dir: &Path,
    name: &str,
    tag: &str,
    binary: &Path,
    path: &str,
    args: &[&str],
) -> Result<(PathBuf, String)> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let mut files = vec![LayerFile {
        path: path.into(),
        mode: 0o755,
        data,
    }];
    for library in shared_libraries(binary)? {
        let data =
            std::fs::read(&library).with_context(|| format!("reading {}", library.display()))?;
        files.push(LayerFile {
            path: library.display().to_string(),
            mode: 0o755,
            data,
        });
    }
    let spec = ImageSpec {
        repository: format!("{PREFIX}/{name}"),
        tag: tag.to_owned(),
        files,
        entrypoint: std::iter::once(path)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect(),
        user: "65532:65532".into(),
        env: Vec::new(),
        labels: [(
            "org.opencontainers.image.version".to_owned(),
            tag.to_owned(),
        )]
        .into(),
        created_epoch: 0,
    };
    let image = layout::write(&spec)?;
    let archive = dir.join(format!("{name}.oci.tar"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&archive, &image.bytes)
        .with_context(|| format!("writing {}", archive.display()))?;
    Ok((archive, format!("{}:{}", spec.repository, spec.tag)))
}

/// The shared libraries (and the program interpreter) `binary` loads, as `ldd` resolves them
/// on this machine: none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    // ldd exits 1 with "not a dynamic executable" for a static binary.
    if !out.status.success() {
        return Ok(Vec::new());
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut libraries = Vec::new();
    for line in listing.lines() {
        if line.contains("not found") {
            bail!("{}: a library is missing: {line}", binary.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)";
        // the vDSO has no file.
        let file = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|f| f.starts_with('/'));
        libraries.extend(file.map(PathBuf::from));
    }
    Ok(libraries)
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
