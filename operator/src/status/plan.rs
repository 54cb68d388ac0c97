//! One status write the writer planned, and the trace span of a pass of them.

use portcullis_crds::{AccessPolicyStatus, AccessSessionStatus};

/// A status to apply, with what its Events need.
pub enum Write {
    Policy {
        namespace: String,
        name: String,
        uid: String,
        /// The `Ready` condition's status and reason before this write.
        previous: Option<(String, String)>,
        status: AccessPolicyStatus,
    },
    Session {
        sid: String,
        /// The revocation is new.
        first: bool,
        /// The gateways' acknowledgements show every connected gateway refusing the session,
        /// and the status did not say so yet.
        newly_enforced: bool,
        status: AccessSessionStatus,
    },
}

impl Write {
    /// The trace span of a pass that writes `writes`, whose status writes and Events are its
    /// children; none for a pass that writes nothing (a pass runs every second).
    pub fn span(writes: &[Write]) -> tracing::Span {
        if writes.is_empty() {
            return tracing::Span::none();
        }
        let policies = writes
            .iter()
            .filter(|w| matches!(w, Write::Policy { .. }))
            .count();
        tracing::info_span!(
            target: portcullis_runtime::telemetry::TARGET,
            "reconcile",
            policies,
            sessions = writes.len() - policies,
        )
    }
}
