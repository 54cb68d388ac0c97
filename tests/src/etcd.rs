//! etcd itself, through its JSON gateway: what the API server would have written, and
//! compaction, for the tests of watches that can no longer resume (410 Gone).

use anyhow::{Context as _, Result};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};

/// The current revision of etcd at `etcd` (any range answer carries it in its header).
pub async fn etcd_revision(http: &reqwest::Client, etcd: &str) -> Result<i64> {
    let range: serde_json::Value = http
        .post(format!("{etcd}/v3/kv/range"))
        .json(&serde_json::json!({"key": B64.encode("/"), "limit": 1}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    range
        .pointer("/header/revision")
        .and_then(|r| r.as_str())
        .context("no revision in etcd's answer")?
        .parse()
        .context("revision")
}

/// Sets `spec.revoked` on the stored AccessSession `ns/name` directly in etcd, through its
/// JSON gateway: a change no watch of the API server can have delivered.
pub async fn revoke_in_etcd(
    http: &reqwest::Client,
    etcd: &str,
    ns: &str,
    name: &str,
) -> Result<()> {
    let key = format!("/registry/access.portcullis.dev/accesssessions/{ns}/{name}");
    let range: serde_json::Value = http
        .post(format!("{etcd}/v3/kv/range"))
        .json(&serde_json::json!({"key": B64.encode(&key)}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let stored = range
        .pointer("/kvs/0/value")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{key} not in etcd: {range}"))?;
    let mut object: serde_json::Value = serde_json::from_slice(&B64.decode(stored)?)?;
    object["spec"]["revoked"] = serde_json::Value::Bool(true);
    http.post(format!("{etcd}/v3/kv/put"))
        .json(&serde_json::json!({
            "key": B64.encode(&key),
            "value": B64.encode(serde_json::to_vec(&object)?),
        }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Compacts etcd's history up to its current revision: no watch can resume from before now.
pub async fn compact_etcd(http: &reqwest::Client, etcd: &str) -> Result<()> {
    let revision = etcd_revision(http, etcd).await?;
    http.post(format!("{etcd}/v3/kv/compaction"))
        .json(&serde_json::json!({"revision": revision.to_string(), "physical": true}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
