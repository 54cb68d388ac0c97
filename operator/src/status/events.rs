//! The leader's Events, through one recorder: a changed `Ready` of a policy, a new revocation,
//! and a revocation every connected gateway acknowledged. Only the last claims enforcement:
//! an Event is read as a fact, so it says what the acknowledgements show, never what is
//! expected.

use super::compute::{ConditionType, Reason};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use portcullis_crds::AccessSessionStatus;
use portcullis_runtime::telemetry::api_server_span;
use tracing::{Instrument as _, warn};

/// The API version of the objects Events are about.
pub const API_VERSION: &str = "access.portcullis.dev/v1alpha1";

/// Publishes Events as this replica.
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, identity: &str) -> Self {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "portcullis-operator".into(),
                instance: Some(identity.to_owned()),
            },
        );
        Self { recorder }
    }

    /// A `Normal` (or `Warning`) Event on `reference`; a failure is logged.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        normal: bool,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        let event = Event {
            type_: if normal {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        };
        // A new Event is created; one the recorder has sent before is patched (its series).
        let published = self.recorder.publish(&event, reference);
        if let Err(error) = published.instrument(api_server_span("publish Event")).await {
            warn!(%error, reason, "cannot publish an Event");
        }
    }
}

impl Events {
    /// The Events of a revoked session's status write: `first` (the revocation is new: it is
    /// propagating) and `newly_enforced` (every connected gateway acknowledged it now).
    pub async fn session_revoked(
        &self,
        reference: &ObjectReference,
        first: bool,
        newly_enforced: bool,
        status: &AccessSessionStatus,
    ) {
        if first {
            // The `Revoked` condition names who revoked it (the field manager of spec.revoked).
            let revoked = status
                .conditions
                .iter()
                .find(|c| c.type_ == ConditionType::Revoked.as_str())
                .map_or("the session was revoked", |c| c.message.as_str());
            let note = format!("{revoked}; waiting for the gateways to acknowledge");
            self.publish(reference, true, Reason::Revoked.as_str(), &note, "Revoke")
                .await;
        }
        if newly_enforced {
            let summary = status
                .enforcement
                .as_ref()
                .map(|e| e.summary.as_str())
                .unwrap_or_default();
            let note = format!(
                "every connected gateway acknowledged the revocation and refuses the session \
                 ({summary})"
            );
            let reason = Reason::EnforcedByAllGateways.as_str();
            self.publish(reference, true, reason, &note, "Revoke").await;
        }
    }
}

/// A reference to one of our objects.
pub fn reference(kind: &str, namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: (!uid.is_empty()).then(|| uid.to_owned()),
        ..ObjectReference::default()
    }
}
