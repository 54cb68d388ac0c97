//! The manifests the access state is built from, as far as the gateway reads them: policies are
//! `portcullis_crds::AccessPolicy` itself; Secrets are read through [`SecretManifest`], which
//! the directory source parses from YAML and the operator stream fills from its frames.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;

/// The namespace of a manifest that names none, as `kubectl apply` would use.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A Secret manifest, as far as the gateway reads one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretManifest {
    pub metadata: Metadata,
    #[serde(default)]
    pub data: HashMap<String, String>,
    #[serde(default)]
    pub string_data: HashMap<String, String>,
}

/// `metadata` of a manifest.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl SecretManifest {
    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.string_data.get(key) {
            return Some(v.as_bytes().to_vec());
        }
        base64::engine::general_purpose::STANDARD
            .decode(self.data.get(key)?)
            .ok()
    }
}
