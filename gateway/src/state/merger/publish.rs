//! Turning the merged fleet state into what the request path reads: the session index after a
//! session change, the access snapshot (and the index with it) after a policy change.

use super::Merger;
use crate::state::{self, Metadata, SecretManifest, Snapshot, session_index::SessionIndex};
use std::{collections::HashMap, sync::Arc};
use tracing::warn;

impl Merger {
    /// Publishes the session index: the merged map itself, cloned in O(1). A revocation costs
    /// no more with 100k sessions than with ten.
    pub(super) fn publish_sessions(&self) {
        self.index_tx.send_replace(Arc::new(SessionIndex {
            synced: true,
            entries: self.fleet.sessions().clone(),
            feed: Some(self.feed.clone()),
            learner: self.learner.clone(),
        }));
    }

    /// Builds and publishes the access snapshot (policies compiled into the route table) and
    /// the session index from the merged state.
    pub(super) fn publish_policies(&mut self) {
        self.published += 1;
        let mut policies = Vec::new();
        let mut raised: HashMap<(String, String), u64> = HashMap::new();
        for entry in self.fleet.policies() {
            raised.insert(
                (entry.namespace.clone(), entry.name.clone()),
                entry.epoch_raised_at,
            );
            policies.push(entry);
        }
        let mut snapshot = state::build(
            self.published,
            &policies,
            &self.secret_manifests(),
            self.known_idps.as_ref(),
        );
        // The raise time the operator recorded: the same at every gateway.
        snapshot.epochs_raised_at(|id| {
            raised
                .get(&(id.namespace.clone(), id.name.clone()))
                .copied()
                .unwrap_or(0)
        });
        self.warn_new_problems(&snapshot);
        let snapshot = Arc::new(snapshot);
        // Sessions first: a request that sees the new policies also sees the new sessions.
        self.publish_sessions();
        self.state_tx.send_replace(snapshot.clone());
        self.previous = Some(snapshot);
    }

    /// The stream's Secrets as the manifests [`state::build()`] reads.
    fn secret_manifests(&self) -> HashMap<(String, String), SecretManifest> {
        self.fleet
            .secrets()
            .map(|s| {
                (
                    (s.namespace.clone(), s.name.clone()),
                    SecretManifest {
                        metadata: Metadata {
                            name: Some(s.name.clone()),
                            namespace: Some(s.namespace.clone()),
                        },
                        data: s.data.clone().into_iter().collect(),
                        string_data: HashMap::new(),
                    },
                )
            })
            .collect()
    }

    /// Logs each problem of `snapshot` once, not again on every later publication.
    fn warn_new_problems(&self, snapshot: &Snapshot) {
        for problem in &snapshot.problems {
            if self
                .previous
                .as_ref()
                .is_none_or(|p| !p.problems.contains(problem))
            {
                warn!(problem = %problem, "policy not applied as written");
            }
        }
    }
}
