//! Revoking one session: a JSON merge patch carrying the `resourceVersion` it was decided on,
//! decided again from a fresh read after a conflict and retried after a transient failure.

use kube::api::{Patch, PatchParams};
use portcullis_crds::AccessSession;
use serde_json::json;

use crate::error::{Error, is_conflict};
use crate::retry::{self, MAX_CONFLICTS, TRANSIENT_ATTEMPTS};
use crate::sessions::Sessions;

/// Field manager of the plugin's writes (visible in `managedFields` and audit logs).
pub const FIELD_MANAGER: &str = "kubectl-portcullis";

/// What one revocation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// This command set `spec.revoked` (or a write of it whose answer was lost got through).
    Now,
    /// It was revoked already; nothing written.
    Already,
}

/// Revokes `current` (as last read): after a conflict it is read again and decided again; after
/// a transient failure too (the write may or may not have landed), up to
/// [`TRANSIENT_ATTEMPTS`] times.
pub async fn revoke(
    sessions: &Sessions,
    mut current: AccessSession,
    reason: Option<&str>,
) -> Result<Revoked, Error> {
    let name = current.metadata.name.clone().unwrap_or_default();
    let target = sessions.target("patch", Some(&name));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut conflicts = 0;
    let mut failures = 0;
    loop {
        if current.spec.revoked {
            // After a lost answer, the write that revoked it may well be ours.
            return Ok(if failures > 0 {
                Revoked::Now
            } else {
                Revoked::Already
            });
        }
        let patch = revocation_patch(&current, reason, sessions.revoker.as_deref());
        match sessions
            .api
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Revoked::Now),
            Err(e) if is_conflict(&e) => {
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(too_many_conflicts(sessions, &name));
                }
                retry::after_conflict(conflicts).await;
            }
            Err(e) => {
                let e = target.error(e);
                failures += 1;
                if !e.is_transient() || failures >= TRANSIENT_ATTEMPTS {
                    return Err(e);
                }
                retry::after_transient(failures - 1).await;
            }
        }
        current = sessions.get(&name).await?.ok_or_else(|| Error::NotFound {
            kind: "AccessSession",
            name: name.clone(),
            namespace: sessions.namespace.clone(),
        })?;
    }
}

/// The merge patch setting `spec.revoked` (and the reason, and who), valid only at the
/// `resourceVersion` `current` was read at.
fn revocation_patch(
    current: &AccessSession,
    reason: Option<&str>,
    by: Option<&str>,
) -> serde_json::Value {
    let mut spec = json!({ "revoked": true });
    if let Some(reason) = reason {
        spec["revocationReason"] = json!(reason);
    }
    if let Some(by) = by {
        spec["revokedBy"] = json!(by);
    }
    let mut patch = json!({ "spec": spec });
    if let Some(version) = &current.metadata.resource_version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    patch
}

/// Who the API server says this client is (a `SelfSubjectReview`), for `spec.revokedBy`. A
/// cluster that cannot say (older than 1.28, or the review refused) still gets the revocation,
/// without the name: nothing here may stand between an administrator and a revocation.
pub async fn requester(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let reviews: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    match reviews
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
    {
        Ok(review) => review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|name| !name.is_empty()),
        Err(e) => {
            crate::warn(&format!(
                "warning: the API server did not say who you are ({e}); revoking without spec.revokedBy"
            ));
            None
        }
    }
}

fn too_many_conflicts(sessions: &Sessions, name: &str) -> Error {
    Error::Refused {
        verb: "patch",
        target: format!("accesssession/{name} in namespace {}", sessions.namespace),
        code: 409,
        reason: "Conflict".to_owned(),
        message: format!("{MAX_CONFLICTS} conflicting writes in a row; try again"),
    }
}
