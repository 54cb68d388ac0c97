use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

/// A change to a spec, for tables of variants.
type Change = Box<dyn Fn(&mut ImageSpec)>;

fn spec() -> ImageSpec {
    ImageSpec {
        repository: "docker.io/portcullis/gateway".into(),
        tag: "0.1.0".into(),
        files: vec![
            LayerFile {
                path: "/usr/local/bin/portcullis-gateway".into(),
                mode: 0o755,
                data: b"\x7fELF not really".to_vec(),
            },
            LayerFile {
                path: "/etc/ssl/certs/ca-certificates.crt".into(),
                mode: 0o644,
                data: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            },
        ],
        entrypoint: vec!["/usr/local/bin/portcullis-gateway".into()],
        user: "65532:65532".into(),
        env: vec!["PATH=/usr/local/bin".into()],
        labels: BTreeMap::from([
            (
                "org.opencontainers.image.revision".to_owned(),
                "f0d3048d".to_owned(),
            ),
            (
                "org.opencontainers.image.version".to_owned(),
                "0.1.0".to_owned(),
            ),
        ]),
        created_epoch: 1_796_572_788,
    }
}

/// The files of a ustar archive (just enough of a reader for these tests).
fn untar(bytes: &[u8]) -> BTreeMap<String, (u8, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at] != 0 {
        let h = &bytes[at..at + 512];
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..name_end].to_vec()).expect("valid test input");
        let size_text = std::str::from_utf8(&h[124..135]).expect("valid test input");
        let size = usize::from_str_radix(size_text, 8).expect("valid test input");
        let data = bytes[at + 512..at + 512 + size].to_vec();
        out.insert(name, (h[156], data));
        at += 512 + size.next_multiple_of(512);
    }
    out
}

fn blob<'a>(files: &'a BTreeMap<String, (u8, Vec<u8>)>, digest: &str) -> &'a [u8] {
    let path = format!("blobs/{}", digest.replacen(':', "/", 1));
    let data = &files.get(&path).unwrap_or_else(|| panic!("no {path}")).1;
    assert_eq!(super::digest(data), digest, "content of {path}");
    data
}

#[test]
fn the_same_spec_gives_the_same_bytes_and_file_order_does_not_matter() {
    let a = write(&spec()).expect("valid test input");
    let mut reordered = spec();
    reordered.files.reverse();
    let b = write(&reordered).expect("valid test input");
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(a.index_digest, b.index_digest);
}

#[test]
fn every_input_changes_the_manifest_digest() {
    let base = write(&spec()).expect("valid test input").manifest_digest;
    let variants: Vec<Change> = vec![
        Box::new(|s| s.created_epoch += 1),
        Box::new(|s| s.files[0].data.push(0)),
        Box::new(|s| s.files[1].mode = 0o600),
        Box::new(|s| s.user = "0:0".into()),
        Box::new(|s| s.env.push("X=1".into())),
        Box::new(|s| {
            s.labels
                .insert("org.opencontainers.image.revision".into(), "other".into());
        }),
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut s = spec();
        change(&mut s);
        assert_ne!(
            write(&s).expect("valid test input").manifest_digest,
            base,
            "variant {i}"
        );
    }
    // The name is in the index only: the same image under another tag has the same digest.
    let mut renamed = spec();
    renamed.tag = "latest".into();
    let renamed = write(&renamed).expect("valid test input");
    assert_eq!(renamed.manifest_digest, base);
    assert_ne!(
        renamed.index_digest,
        write(&spec()).expect("valid test input").index_digest
    );
}

#[test]
fn the_layout_is_complete_and_consistent() {
    let image = write(&spec()).expect("valid test input");
    let files = untar(&image.bytes);
    assert_eq!(files["oci-layout"].1, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index_bytes = &files["index.json"].1;
    assert_eq!(digest(index_bytes), image.index_digest);
    let index: Value = serde_json::from_slice(index_bytes).expect("valid test input");
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"][CONTAINERD_NAME],
        "docker.io/portcullis/gateway:0.1.0"
    );
    assert_eq!(m["annotations"][REF_NAME], "0.1.0");
    assert_eq!(m["digest"], image.manifest_digest.as_str());
    let manifest_bytes = blob(&files, &image.manifest_digest);
    assert_eq!(m["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(manifest_bytes).expect("valid test input");
    assert_eq!(manifest["annotations"][CREATED], "2026-12-06T15:59:48Z");
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "0.1.0"
    );
    let config: Value = serde_json::from_slice(blob(
        &files,
        manifest["config"]["digest"]
            .as_str()
            .expect("valid test input"),
    ))
    .expect("valid test input");
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("valid test input");
    assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        "f0d3048d"
    );
    let layer = untar(blob(&files, layer_digest));
    let names: Vec<&str> = layer.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/ssl/",
            "etc/ssl/certs/",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/portcullis-gateway",
        ]
    );
    assert_eq!(layer["usr/local/bin/portcullis-gateway"].0, b'0');
    assert_eq!(layer["usr/"].0, b'5');
    assert_eq!(image.layer_size, blob(&files, layer_digest).len());
}

#[test]
fn invalid_specs_are_refused() {
    let variants: Vec<Change> = vec![
        Box::new(|s| s.user = "nonroot".into()),
        Box::new(|s| s.user = "65532".into()),
        Box::new(|s| s.user = "65532:".into()),
        Box::new(|s| s.entrypoint.clear()),
        Box::new(|s| s.entrypoint = vec!["/bin/sh".into()]),
        Box::new(|s| s.files[0].path = "usr/bin/x".into()),
        Box::new(|s| s.files[1].path = "/usr/local/bin/portcullis-gateway".into()),
        Box::new(|s| s.tag.clear()),
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut s = spec();
        change(&mut s);
        assert!(write(&s).is_err(), "variant {i} accepted");
    }
}

#[test]
fn rfc3339_matches_known_dates() {
    for (epoch, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_796_572_788, "2026-12-06T15:59:48Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
    ] {
        assert_eq!(rfc3339(epoch), text);
    }
}
