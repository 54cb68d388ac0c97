//! The user behind a request, as the gateway knows it after verifying an app token.

use serde::{Deserialize, Serialize};

/// A verified user. Built from a verified app token (or, at login, a verified ID token), never
/// from anything a client can set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The identity provider's `sub`: the key of the user everywhere.
    pub subject: String,
    /// Verified email; `None` when the identity provider did not verify one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Further ID-token claims that `claim` selectors may test (e.g. Google's `hd`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
}
