//! The container images: `hack/build-images.sh` run twice into two directories gives the same
//! digests (reproducible from the commit), each image is what docs/install.md promises (one
//! layer, a static binary, the CA bundle, no shell, user 65532, the OCI labels, the names
//! containerd imports them under), and the Dockerfile builds the same content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn build_images(out: &Path) -> Result<()> {
    let mut command = Command::new(repo().join("hack/build-images.sh"));
    // The variables cargo sets for a test process (CARGO_PKG_*, CARGO_MANIFEST_DIR, the
    // jobserver's MAKEFLAGS, ...) are not the environment of `hack/test.sh`'s own run of the
    // script; some are read by build scripts, and cargo would then rebuild every release crate
    // instead of finding them fresh. The script runs here as a user would run it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let cargo_set = name.starts_with("CARGO_")
            && !matches!(name.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR");
        if cargo_set
            || matches!(
                name.as_ref(),
                "CARGO" | "MAKEFLAGS" | "MFLAGS" | "RUSTC" | "RUSTDOC" | "OUT_DIR"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .arg(out)
        .current_dir(repo())
        .status()
        .context("running hack/build-images.sh")?;
    ensure!(
        status.success(),
        "hack/build-images.sh {} failed",
        out.display()
    );
    Ok(())
}

/// The regular files and directories of a ustar archive: path → (type flag, mode, uid, gid,
/// mtime, data).
type Entries = BTreeMap<String, (u8, u32, u32, u32, u64, Vec<u8>)>;

fn untar(bytes: &[u8]) -> Result<Entries> {
    let field = |h: &[u8], range: std::ops::Range<usize>| -> Result<u64> {
        let text = std::str::from_utf8(&h[range])?
            .trim_end_matches('\0')
            .trim();
        Ok(u64::from_str_radix(text, 8)?)
    };
    let mut out = BTreeMap::new();
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at] != 0 {
        let h = &bytes[at..at + 512];
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..end].to_vec())?;
        let size = usize::try_from(field(h, 124..136)?)?;
        let data = bytes[at + 512..at + 512 + size].to_vec();
        let mode = u32::try_from(field(h, 100..108)?)?;
        let uid = u32::try_from(field(h, 108..116)?)?;
        let gid = u32::try_from(field(h, 116..124)?)?;
        out.insert(name, (h[156], mode, uid, gid, field(h, 136..148)?, data));
        at += 512 + size.next_multiple_of(512);
    }
    Ok(out)
}

fn blob<'a>(entries: &'a Entries, digest: &str) -> Result<&'a [u8]> {
    let path = format!("blobs/{}", digest.replacen(':', "/", 1));
    Ok(&entries.get(&path).with_context(|| format!("no {path}"))?.5)
}

/// An ELF executable without a program interpreter (`PT_INTERP`): statically linked.
fn is_static_elf(bin: &[u8]) -> Result<bool> {
    ensure!(
        bin.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF"
    );
    let u64_at = |o: usize| u64::from_le_bytes(bin[o..o + 8].try_into().expect("8 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(bin[o..o + 2].try_into().expect("2 bytes"));
    let phoff = usize::try_from(u64_at(0x20))?;
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    Ok((0..phnum).all(|i| {
        let kind = u32::from_le_bytes(
            bin[phoff + i * phentsize..phoff + i * phentsize + 4]
                .try_into()
                .expect("4 bytes"),
        );
        kind != 3 // PT_INTERP
    }))
}

fn commit_time() -> Result<u64> {
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(repo())
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Checks one image archive; returns its index digest.
fn check_image(path: &Path, name: &str, binary: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let entries = untar(&bytes)?;
    let index_bytes = &entries.get("index.json").context("no index.json")?.5;
    let index: Value = serde_json::from_slice(index_bytes)?;
    let version = env!("CARGO_PKG_VERSION");
    let m = &index["manifests"][0];
    ensure!(
        m["annotations"]["io.containerd.image.name"]
            == format!("docker.io/portcullis/{name}:{version}"),
        "{name}: containerd name {}",
        m["annotations"]
    );
    ensure!(m["annotations"]["org.opencontainers.image.ref.name"] == version);
    let manifest: Value =
        serde_json::from_slice(blob(&entries, m["digest"].as_str().context("digest")?)?)?;
    let layers = manifest["layers"].as_array().context("layers")?;
    ensure!(layers.len() == 1, "{name}: {} layers", layers.len());
    ensure!(layers[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar");
    let annotations = &manifest["annotations"];
    for key in [
        "source", "revision", "version", "created", "title", "licenses",
    ] {
        ensure!(
            annotations[format!("org.opencontainers.image.{key}")].is_string(),
            "{name}: no org.opencontainers.image.{key}"
        );
    }
    ensure!(annotations["org.opencontainers.image.version"] == version);
    let config: Value = serde_json::from_slice(blob(
        &entries,
        manifest["config"]["digest"].as_str().context("config")?,
    )?)?;
    ensure!(
        config["config"]["User"] == "65532:65532",
        "{name}: user {}",
        config["config"]["User"]
    );
    let entrypoint = format!("/usr/local/bin/{binary}");
    ensure!(config["config"]["Entrypoint"] == serde_json::json!([entrypoint]));
    let epoch = commit_time()?;
    let layer = untar(blob(
        &entries,
        layers[0]["digest"].as_str().context("layer")?,
    )?)?;
    let mut files: Vec<&str> = layer
        .iter()
        .filter(|(_, e)| e.0 == b'0')
        .map(|(p, _)| p.as_str())
        .collect();
    files.sort();
    let mut expected = vec![entrypoint.trim_start_matches('/')];
    if name != "pause" {
        expected.insert(0, "etc/ssl/certs/ca-certificates.crt");
    }
    ensure!(files == expected, "{name}: layer files {files:?}");
    for (path, (_, _, uid, gid, mtime, _)) in &layer {
        ensure!(
            (*uid, *gid) == (0, 0),
            "{name}: {path} owned by {uid}:{gid}"
        );
        ensure!(
            *mtime == epoch,
            "{name}: {path} mtime {mtime}, commit time {epoch}"
        );
    }
    let bin = &layer[entrypoint.trim_start_matches('/')];
    ensure!(bin.1 == 0o755, "{name}: binary mode {:o}", bin.1);
    ensure!(
        is_static_elf(&bin.5)?,
        "{name}: {binary} is dynamically linked"
    );
    Ok(portcullis_images::layout::digest(index_bytes))
}

#[test]
fn the_same_commit_gives_the_same_images_twice() -> Result<()> {
    let scratch = portcullis_tests::fsutil::scratch_dir("images", "twice")?;
    let (a, b) = (scratch.join("a"), scratch.join("b"));
    build_images(&a)?;
    build_images(&b)?;
    let listing = std::fs::read_to_string(a.join("images.txt"))?;
    ensure!(
        listing == std::fs::read_to_string(b.join("images.txt"))?,
        "digests differ"
    );
    ensure!(
        std::fs::read(a.join("SHA256SUMS"))? == std::fs::read(b.join("SHA256SUMS"))?,
        "archives differ"
    );
    for (name, binary) in [
        ("operator", "portcullis-operator"),
        ("gateway", "portcullis-gateway"),
        ("pause", "pause"),
    ] {
        let file = format!("portcullis-{name}.oci.tar");
        let first = check_image(&a.join(&file), name, binary)?;
        let second = check_image(&b.join(&file), name, binary)?;
        ensure!(
            first == second,
            "{name}: index digests {first} and {second}"
        );
        eprintln!(
            "{name}: index {first}, {} bytes",
            std::fs::metadata(a.join(&file))?.len()
        );
    }
    let plugin = std::fs::read(a.join("kubectl-portcullis-linux-amd64"))?;
    ensure!(
        is_static_elf(&plugin)?,
        "the kubectl plugin is dynamically linked"
    );
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// The Dockerfile's `operator` and `gateway` stages: the user, environment, entrypoint and
/// files hack/build-images.sh gives its images.
#[test]
fn the_dockerfile_builds_the_same_content() -> Result<()> {
    let text = std::fs::read_to_string(repo().join("Dockerfile"))?;
    let mut stages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    let mut joined = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        joined.push_str(line.trim_end_matches('\\'));
        if line.ends_with('\\') {
            joined.push(' ');
            continue;
        }
        let instruction = std::mem::take(&mut joined);
        let instruction = instruction.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(rest) = instruction.strip_prefix("FROM ") {
            let words: Vec<&str> = rest.split(' ').collect();
            current = words.last().copied().unwrap_or_default().to_owned();
            // A stage built FROM another inherits its instructions.
            let parent = stages.get(words[0]).cloned().unwrap_or_default();
            stages.insert(current.clone(), parent);
        } else if !instruction.is_empty() {
            stages.entry(current.clone()).or_default().push(instruction);
        }
    }
    for (stage, binary) in [
        ("operator", "portcullis-operator"),
        ("gateway", "portcullis-gateway"),
    ] {
        let lines = stages
            .get(stage)
            .with_context(|| format!("no stage {stage}"))?;
        let has = |wanted: &str| lines.iter().any(|l| l == wanted);
        for wanted in [
            "USER 65532:65532".to_owned(),
            "ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned(),
            format!(r#"ENTRYPOINT ["/usr/local/bin/{binary}"]"#),
            format!("COPY --from=build /out/{binary} /usr/local/bin/{binary}"),
            "COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"
                .to_owned(),
        ] {
            ensure!(has(&wanted), "stage {stage} lacks {wanted:?}: {lines:#?}");
        }
        let copies = lines
            .iter()
            .filter(|l| l.starts_with("COPY") || l.starts_with("ADD"))
            .count();
        ensure!(
            copies == 2,
            "stage {stage} adds {copies} things, the images hold 2 files"
        );
        ensure!(
            !lines.iter().any(|l| l.starts_with("RUN")),
            "stage {stage} runs a command"
        );
    }
    ensure!(
        text.contains("FROM scratch AS base"),
        "the base is not scratch"
    );
    Ok(())
}
