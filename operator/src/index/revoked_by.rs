//! Who revoked a session, as the API server says: the field manager that owns `spec.revoked`
//! in `metadata.managedFields` (`kubectl-patch`, `kubectl-portcullis`, the gateway's client
//! for a logout, …), the user in `spec.revokedBy` (the chart's ValidatingAdmissionPolicy
//! admits only the requesting user's own name there) and `spec.revocationReason`. Taken from
//! the object the watch delivers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use portcullis_crds::AccessSession;

/// The attribution of one revocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevokedBy {
    /// The field manager of `spec.revoked`, if the API server recorded one.
    pub manager: Option<String>,
    /// `spec.revokedBy`: the user who revoked it.
    pub user: Option<String>,
    /// `spec.revocationReason`.
    pub reason: Option<String>,
}

impl RevokedBy {
    pub fn of(session: &AccessSession) -> Self {
        let entries = session
            .metadata
            .managed_fields
            .as_deref()
            .unwrap_or_default();
        Self {
            manager: revoked_field_manager(entries),
            user: session.spec.revoked_by.clone().filter(|u| !u.is_empty()),
            reason: session
                .spec
                .revocation_reason
                .as_ref()
                .filter(|r| !r.is_empty())
                .cloned(),
        }
    }

    /// `spec.revoked set by alice with kubectl-portcullis (reason: …)`, for the `Revoked`
    /// condition and Event.
    pub fn describe(&self) -> String {
        let mut text = match (&self.user, &self.manager) {
            (Some(user), Some(manager)) => format!("spec.revoked set by {user} with {manager}"),
            (Some(user), None) => format!("spec.revoked set by {user}"),
            (None, Some(manager)) => format!("spec.revoked set by {manager}"),
            (None, None) => "spec.revoked is set".to_owned(),
        };
        if let Some(reason) = &self.reason {
            text.push_str(&format!(" (reason: {reason})"));
        }
        text
    }
}

/// The manager owning `spec.revoked` on the main resource (status writes are a subresource and
/// never own spec fields); if several do (the same value applied twice), the latest.
pub fn revoked_field_manager(entries: &[ManagedFieldsEntry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.subresource.as_deref().is_none_or(str::is_empty))
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:revoked"))
                .is_some()
        })
        .max_by(|a, b| {
            a.time
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.time.as_ref().map(|t| t.0))
        })
        .and_then(|e| e.manager.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, Time};

    fn entry(
        manager: &str,
        at: i64,
        subresource: Option<&str>,
        fields: serde_json::Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            subresource: subresource.map(str::to_owned),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(at).unwrap_or_default(),
            )),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn revoked() -> serde_json::Value {
        serde_json::json!({"f:spec": {"f:revoked": {}, "f:revocationReason": {}}})
    }

    #[test]
    fn the_owner_of_spec_revoked_is_named() {
        let entries = [
            entry(
                "portcullis-gateway",
                10,
                None,
                serde_json::json!({"f:spec": {"f:subject": {}}}),
            ),
            entry("kubectl-patch", 20, None, revoked()),
            entry(
                "portcullis-operator",
                30,
                Some("status"),
                serde_json::json!({"f:status": {}}),
            ),
        ];
        assert_eq!(
            revoked_field_manager(&entries).as_deref(),
            Some("kubectl-patch")
        );
    }

    #[test]
    fn the_latest_of_several_owners_wins_and_status_writes_never_count() {
        let entries = [
            entry("kubectl-portcullis", 50, None, revoked()),
            entry("creator", 10, None, revoked()),
            entry("odd", 90, Some("status"), revoked()),
        ];
        assert_eq!(
            revoked_field_manager(&entries).as_deref(),
            Some("kubectl-portcullis")
        );
    }

    #[test]
    fn no_owner_no_name() {
        assert_eq!(revoked_field_manager(&[]), None);
        let entries = [entry("x", 1, None, serde_json::json!({"f:metadata": {}}))];
        assert_eq!(revoked_field_manager(&entries), None);
        let by = RevokedBy::default();
        assert_eq!(by.describe(), "spec.revoked is set");
    }

    #[test]
    fn the_reason_is_described() {
        let by = RevokedBy {
            manager: Some("kubectl-patch".into()),
            user: None,
            reason: Some("laptop stolen".into()),
        };
        assert_eq!(
            by.describe(),
            "spec.revoked set by kubectl-patch (reason: laptop stolen)"
        );
    }

    #[test]
    fn the_user_is_named_before_the_tool() {
        let by = RevokedBy {
            manager: Some("kubectl-portcullis".into()),
            user: Some("alice@example.com".into()),
            reason: None,
        };
        assert_eq!(
            by.describe(),
            "spec.revoked set by alice@example.com with kubectl-portcullis"
        );
        let by = RevokedBy {
            manager: None,
            ..by
        };
        assert_eq!(by.describe(), "spec.revoked set by alice@example.com");
    }
}
