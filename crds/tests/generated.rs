//! The committed CRD YAML is exactly what the Rust types generate: an edit to a type without
//! `cargo run -p portcullis-crds --bin crdgen` fails here, not in a cluster.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    for (file, crd) in portcullis_crds::crds() {
        let generated = portcullis_crds::render_yaml(&crd).expect("CRD renders as YAML");
        let committed = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("crds/yaml/{file} is missing ({e}); run crdgen"));
        assert!(
            committed == generated,
            "crds/yaml/{file} differs from the Rust types: run `cargo run -p portcullis-crds --bin crdgen`"
        );
    }
}

#[test]
fn committed_yaml_parses_back_into_the_same_crd() {
    for (file, crd) in portcullis_crds::crds() {
        let yaml = portcullis_crds::render_yaml(&crd).expect("CRD renders as YAML");
        let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
        assert_eq!(parsed, crd, "{file} does not round-trip through YAML");
    }
}
