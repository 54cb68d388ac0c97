//! An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) holding one image with
//! one uncompressed layer, as a single tar archive that `ctr images import`, `skopeo copy
//! oci-archive:` and `crane push` accept.
//!
//! Every byte is a function of the [`ImageSpec`]: the layer is a [`crate::tar`] archive with the
//! spec's time and owner, JSON objects have sorted keys, `created` is the spec's time. So the
//! same binaries and the same commit give the same digests, on any machine.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::tar::{self, Entry, Stamp};

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The name containerd gives an imported image.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in an index (the tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The OCI annotation holding the creation time.
pub const CREATED: &str = "org.opencontainers.image.created";

/// Why an image cannot be written.
#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("layer: {0}")]
    Layer(#[from] tar::TarError),
    #[error("{0}")]
    Spec(String),
}

/// A file of the image's single layer.
#[derive(Clone, Debug)]
pub struct LayerFile {
    /// Absolute path in the image, e.g. `/usr/local/bin/portcullis-gateway`.
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Everything that determines the image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Fully qualified repository, e.g. `docker.io/portcullis/gateway`.
    pub repository: String,
    /// Tag, e.g. `0.1.0`.
    pub tag: String,
    pub files: Vec<LayerFile>,
    pub entrypoint: Vec<String>,
    /// `uid:gid`, numeric (the image has no `/etc/passwd`).
    pub user: String,
    pub env: Vec<String>,
    /// `org.opencontainers.image.*` and other labels; also the manifest's annotations.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch (the commit time): every file's mtime too.
    pub created_epoch: u64,
}

/// The written archive and what names it.
#[derive(Clone, Debug)]
pub struct ImageArchive {
    /// The OCI layout as one tar archive.
    pub bytes: Vec<u8>,
    /// `sha256:…` of the image manifest: what a digest reference pins.
    pub manifest_digest: String,
    /// `sha256:…` of `index.json`.
    pub index_digest: String,
    /// Size of the uncompressed layer in bytes.
    pub layer_size: usize,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes the image described by `spec` as an OCI layout archive.
pub fn write(spec: &ImageSpec) -> Result<ImageArchive, LayoutError> {
    validate(spec)?;
    let stamp = Stamp {
        mtime: spec.created_epoch,
        uid: 0,
        gid: 0,
    };
    let layer = tar::archive(layer_entries(&spec.files), stamp)?;
    let created = rfc3339(spec.created_epoch);
    let config = to_json(&config_json(spec, &digest(&layer), &created));
    let mut annotations = spec.labels.clone();
    annotations.insert(CREATED.to_owned(), created);
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config),
        "layers": [descriptor(MEDIA_LAYER, &layer)],
        "annotations": annotations,
    }));
    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &manifest);
    manifest_descriptor["annotations"] = json!({
        CONTAINERD_NAME: format!("{}:{}", spec.repository, spec.tag),
        REF_NAME: spec.tag,
    });
    manifest_descriptor["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest_descriptor],
    }));
    let mut entries = vec![
        dir("blobs"),
        dir("blobs/sha256"),
        file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        file("index.json", index.clone()),
    ];
    for blob in [&layer, &config, &manifest] {
        entries.push(file(&blob_path(blob), blob.clone()));
    }
    Ok(ImageArchive {
        bytes: tar::archive(entries, stamp)?,
        manifest_digest: digest(&manifest),
        index_digest: digest(&index),
        layer_size: layer.len(),
    })
}

fn validate(spec: &ImageSpec) -> Result<(), LayoutError> {
    let fail = |m: String| Err(LayoutError::Spec(m));
    if spec.entrypoint.is_empty() {
        return fail("the image needs an entrypoint".into());
    }
    if !spec.files.iter().any(|f| f.path == spec.entrypoint[0]) {
        return fail(format!(
            "entrypoint {} is not in the layer",
            spec.entrypoint[0]
        ));
    }
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match spec.user.split_once(':') {
        Some((uid, gid)) if numeric(uid) && numeric(gid) => {}
        _ => return fail(format!("user {:?} is not numeric uid:gid", spec.user)),
    }
    if spec.repository.is_empty() || spec.tag.is_empty() {
        return fail("repository and tag are required".into());
    }
    if let Some(f) = spec.files.iter().find(|f| !f.path.starts_with('/')) {
        return fail(format!("layer path {} is not absolute", f.path));
    }
    Ok(())
}

/// The layer's files and every parent directory (0755), paths relative to the root.
fn layer_entries(files: &[LayerFile]) -> Vec<Entry> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for f in files {
        let path = f.path.trim_start_matches('/');
        let mut parent = std::path::Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        entries.push(Entry::File {
            path: path.to_owned(),
            mode: f.mode,
            data: f.data.clone(),
        });
    }
    entries.extend(
        dirs.into_iter()
            .map(|path| Entry::Dir { path, mode: 0o755 }),
    );
    entries
}

fn config_json(spec: &ImageSpec, layer_digest: &str, created: &str) -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": spec.user,
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "WorkingDir": "/",
            "Labels": spec.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": "hack/build-images.sh"}],
    })
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(blob), "size": blob.len()})
}

fn blob_path(blob: &[u8]) -> String {
    format!("blobs/{}", digest(blob).replacen(':', "/", 1))
}

/// Canonical JSON: `serde_json` maps keep sorted keys, no whitespace.
fn to_json(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode: 0o755,
    }
}

fn file(path: &str, data: Vec<u8>) -> Entry {
    Entry::File {
        path: path.into(),
        mode: 0o644,
        data,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (proleptic Gregorian, UTC).
pub fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
