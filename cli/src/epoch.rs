//! `revoke policy`: the "revoke existing tokens" button. The policy's `revocationEpoch` is
//! raised by exactly one with the object's `resourceVersion` as a precondition: a write based on
//! a stale read fails with 409 and is decided again from a fresh read, so two people pressing the
//! button at once raise it by two and neither raise is lost.

use std::io::Write;

use kube::Api;
use kube::api::{Patch, PatchParams};
use portcullis_crds::AccessPolicy;
use serde_json::json;

use crate::cli::RevokePolicyArgs;
use crate::error::{Error, Target, is_conflict};
use crate::printer::Printer;
use crate::retry::{self, MAX_CONFLICTS};
use crate::revoke::FIELD_MANAGER;
use crate::wait;

/// Annotation recording why the epoch was last raised with the plugin (`epoch N: reason`); the
/// AccessPolicy has no field for it.
pub const REASON_ANNOTATION: &str = "access.portcullis.dev/revocation-reason";

/// The merge patch raising `epoch` to `epoch + 1`, valid only at `resource_version`.
pub fn raise_patch(resource_version: &str, next: i64, reason: Option<&str>) -> serde_json::Value {
    let mut metadata = json!({ "resourceVersion": resource_version });
    if let Some(reason) = reason {
        metadata["annotations"] = json!({ REASON_ANNOTATION: format!("epoch {next}: {reason}") });
    }
    json!({ "metadata": metadata, "spec": { "revocationEpoch": next } })
}

/// `revoke policy NAME`.
pub async fn revoke_policy(
    out: &mut Printer<impl Write>,
    client: kube::Client,
    namespace: &str,
    args: &RevokePolicyArgs,
) -> Result<(), Error> {
    let api: Api<AccessPolicy> = Api::namespaced(client, namespace);
    let name = args.name.as_str();
    let target = |verb| Target {
        verb,
        resource: "accesspolicies",
        kind: "AccessPolicy",
        namespace: Some(namespace),
        name: Some(name),
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    for attempt in 0..MAX_CONFLICTS {
        let policy =
            retry::transient(|| async { api.get(name).await.map_err(|e| target("get").error(e)) })
                .await?;
        let old = policy.spec.revocation_epoch;
        let (version, next) = raise_from(&policy, name, namespace)?;
        let patch = raise_patch(version, next, args.options.reason.as_deref());
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(written) => {
                let written_epoch = written.spec.revocation_epoch;
                out.line(format_args!(
                    "accesspolicy/{name} revocationEpoch {old} → {written_epoch} (namespace \
                     {namespace}): every session and token issued under it before now is revoked"
                ));
                return match args.options.wait {
                    Some(timeout) => {
                        wait::policy(
                            out,
                            &api,
                            target("get"),
                            written.metadata.uid.as_deref(),
                            written_epoch,
                            timeout,
                        )
                        .await
                    }
                    None => Ok(()),
                };
            }
            Err(e) if is_conflict(&e) => retry::after_conflict(attempt).await,
            Err(e) => return Err(target("patch").error(e)),
        }
    }
    Err(Error::TooManyConflicts {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        attempts: MAX_CONFLICTS,
    })
}

/// The `resourceVersion` a raise of `policy` as read is conditional on, and the epoch it raises
/// to: refused at the maximum epoch, and without a resourceVersion.
fn raise_from<'p>(
    policy: &'p AccessPolicy,
    name: &str,
    namespace: &str,
) -> Result<(&'p str, i64), Error> {
    let next = policy
        .spec
        .revocation_epoch
        .checked_add(1)
        .ok_or_else(|| Error::Refused {
            verb: "patch",
            target: format!("accesspolicy/{name} in namespace {namespace}"),
            code: 422,
            reason: "Invalid".to_owned(),
            message: "the revocation epoch is at its maximum".to_owned(),
        })?;
    // Without a resourceVersion the write would not be conditional: refuse rather than
    // risk losing a concurrent raise (the API server always sets one).
    let Some(version) = policy.metadata.resource_version.as_deref() else {
        return Err(Error::Refused {
            verb: "get",
            target: format!("accesspolicy/{name} in namespace {namespace}"),
            code: 500,
            reason: "NoResourceVersion".to_owned(),
            message: "the API server returned the policy without a resourceVersion".to_owned(),
        });
    };
    Ok((version, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_is_conditional_on_the_version_read() {
        assert_eq!(
            raise_patch("42", 3, None),
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"revocationEpoch": 3}})
        );
        assert_eq!(
            raise_patch("42", 3, Some("leaked token")),
            json!({
                "metadata": {
                    "resourceVersion": "42",
                    "annotations": {REASON_ANNOTATION: "epoch 3: leaked token"}
                },
                "spec": {"revocationEpoch": 3}
            })
        );
    }
}
