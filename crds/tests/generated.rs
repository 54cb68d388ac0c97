//! The committed CRD YAML and CRD reference are exactly what the Rust types generate: an edit to
//! a type without `cargo run -p portcullis-crds --bin crdgen` fails here, not in a cluster.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::path::Path;

#[test]
fn committed_files_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, generated) in portcullis_crds::generated_files().expect("CRDs render") {
        let committed = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|e| panic!("{file} is missing ({e}); run crdgen"));
        assert!(
            committed == generated,
            "{file} differs from the Rust types: run `cargo run -p portcullis-crds --bin crdgen`"
        );
    }
}

#[test]
fn committed_yaml_parses_back_into_the_same_crd() {
    for (file, crd) in portcullis_crds::crds() {
        let yaml = portcullis_crds::render_yaml(&crd).expect("CRD renders as YAML");
        let parsed: CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
        assert_eq!(parsed, crd, "{file} does not round-trip through YAML");
    }
}

#[test]
fn every_field_is_documented() {
    for (file, crd) in portcullis_crds::crds() {
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let mut undocumented = Vec::new();
        walk(schema, "", &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "{file}: fields without a doc comment: {undocumented:?}"
        );
    }
}

fn walk(
    schema: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
    path: &str,
    undocumented: &mut Vec<String>,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray;
    for (name, child) in schema.properties.iter().flatten() {
        let child_path = format!("{path}.{name}");
        // apiVersion/kind/metadata are Kubernetes' own.
        if !path.is_empty() && child.description.is_none() {
            undocumented.push(child_path.clone());
        }
        walk(child, &child_path, undocumented);
        if let Some(JSONSchemaPropsOrArray::Schema(item)) = &child.items {
            walk(item, &format!("{child_path}[]"), undocumented);
        }
    }
}
