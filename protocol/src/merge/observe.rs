//! Objects read from the API server itself, merged into the same state as the stream's frames:
//! the gateway's fallback while the operator's stream is unavailable, and sessions the request
//! path confirms. The rules at the top of [`super`] hold for them as for frames: a session ends
//! for good, an epoch only goes up per object, a relist (which may come from a lagging API
//! server) removes only what it lacks and revives nothing revoked.
//!
//! From policies only what narrows access is taken (a raised epoch, a deletion): a policy
//! created or edited meanwhile waits for the operator, which validates it first.

use super::{Applied, Epoch, FleetState, ObjectKey, epoch_key};
use crate::frame::{PolicyEntry, SessionEntry};
use crate::session;
use portcullis_crds::AccessPolicy;
use std::collections::HashSet;

impl FleetState {
    /// One observation of a session object.
    pub fn observe_session(&mut self, seen: &SessionEntry, now: u64) -> Applied {
        if self.upsert_session(std::borrow::Cow::Borrowed(seen), now) {
            Applied::Sessions
        } else {
            Applied::Unchanged
        }
    }

    /// Session `sid` was deleted, or a complete list lacks it: it has ended.
    pub fn end_session(&mut self, sid: &str) -> Applied {
        if session::end(&mut self.sessions, sid) {
            Applied::Sessions
        } else {
            Applied::Unchanged
        }
    }

    /// The ids of every session held (what a relist compares against).
    pub fn session_ids(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// Drops sessions past their latest expiry plus skew, when one is due.
    pub fn collect_expired(&mut self, now: u64) -> Applied {
        self.collect(now)
    }

    /// One observation of a policy object at `now`, for what it revokes: a higher
    /// `revocationEpoch` of an object the state holds is taken (epochs only go up); its spec
    /// otherwise, and objects the state does not hold, wait for the operator, which validates
    /// them first (a policy created or edited during an outage must not bypass that). The raise
    /// time is the one the status records for that epoch; else the one already known; else
    /// `now` (the later time is the safe side: more SSO sessions must log in again).
    pub fn observe_policy(&mut self, object: &AccessPolicy, now: u64) -> Applied {
        let Some(mut entry) = policy_entry(object) else {
            return Applied::Unchanged;
        };
        let key = (entry.namespace.clone(), entry.name.clone());
        if self.removed_uids.contains(&entry.uid)
            || self
                .policies
                .get(&key)
                .is_none_or(|held| held.uid != entry.uid)
        {
            return Applied::Unchanged;
        }
        let epoch = entry.spec.revocation_epoch;
        if epoch > 0 && entry.epoch_raised_at == 0 {
            entry.epoch_raised_at = match self.epochs.get(&epoch_key(&entry)) {
                Some(Epoch {
                    epoch: known,
                    raised_at,
                }) if *known == epoch => *raised_at,
                _ => now,
            };
        }
        if self.raise_epoch(&entry) {
            Applied::Policies
        } else {
            Applied::Unchanged
        }
    }

    /// Policy object `uid` was deleted: it never comes back.
    pub fn policy_deleted(&mut self, namespace: &str, name: &str, uid: &str) -> Applied {
        if self.remove_policy(namespace.to_owned(), name.to_owned(), uid.to_owned(), true) {
            Applied::Policies
        } else {
            Applied::Unchanged
        }
    }

    /// A complete list of policies named `listed`: the known ones it lacks are removed (no
    /// tombstone: a lagging server's list may lack a new one that a later event brings back).
    pub fn policies_listed(&mut self, listed: &HashSet<ObjectKey>) -> Applied {
        let gone: Vec<(ObjectKey, String)> = self
            .policies
            .iter()
            .filter(|(key, _)| !listed.contains(*key))
            .map(|(key, p)| (key.clone(), p.uid.clone()))
            .collect();
        let mut applied = Applied::Unchanged;
        for ((namespace, name), uid) in gone {
            if self.remove_policy(namespace, name, uid, false) {
                applied = Applied::Policies;
            }
        }
        applied
    }
}

/// A policy object as the stream would carry it; the raise time only when its status records
/// one for its current epoch (0 otherwise).
pub fn policy_entry(object: &AccessPolicy) -> Option<PolicyEntry> {
    let status = object.status.as_ref();
    let epoch = object.spec.revocation_epoch;
    let recorded = status
        .filter(|s| s.raised_epoch == Some(epoch))
        .and_then(|s| s.epoch_raised_at.as_ref())
        .and_then(|t| u64::try_from(t.0.as_second()).ok());
    Some(PolicyEntry {
        namespace: object.metadata.namespace.clone()?,
        name: object.metadata.name.clone()?,
        uid: object.metadata.uid.clone()?,
        generation: object.metadata.generation.unwrap_or(0),
        spec: object.spec.clone(),
        epoch_raised_at: if epoch <= 0 { 0 } else { recorded.unwrap_or(0) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    const NOW: u64 = 1_000_000;

    fn object(uid: &str, generation: i64, epoch: i64, raised: Option<(i64, &str)>) -> AccessPolicy {
        let mut value = serde_json::json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "apps", "namespace": "ns", "uid": uid, "generation": generation},
            "spec": {"hosts": ["app.example.test"], "identityProviders": ["dex"],
                     "rules": [{"action": "Allow", "include": [{"everyone": true}]}],
                     "revocationEpoch": epoch},
        });
        if let Some((raised_epoch, at)) = raised {
            value["status"] = serde_json::json!({"raisedEpoch": raised_epoch, "epochRaisedAt": at});
        }
        serde_json::from_value(value).expect("valid policy")
    }

    fn session(sid: &str, ended: bool) -> SessionEntry {
        SessionEntry {
            sid: sid.into(),
            subject: "alice".into(),
            expires_at: NOW + 3600,
            ended,
            refresh_failing_since: None,
            refreshed_at: None,
            email: None,
            groups: Vec::new(),
        }
    }

    fn epoch(state: &FleetState) -> Option<(i64, u64)> {
        state
            .policies()
            .next()
            .map(|p| (p.spec.revocation_epoch, p.epoch_raised_at))
    }

    #[test]
    fn no_observation_or_relist_from_the_api_server_revives_a_revoked_session() {
        let mut state = FleetState::new(30);
        state.observe_session(&session("s1", true), NOW);
        // A lagging server's object that still reads live, in every order.
        assert_eq!(
            state.observe_session(&session("s1", false), NOW),
            Applied::Unchanged
        );
        assert_eq!(state.end_session("s1"), Applied::Unchanged);
        assert!(state.sessions().get("s1").is_some_and(|s| s.ended));
        // A live one ends when deleted, and stays ended.
        state.observe_session(&session("s2", false), NOW);
        assert_eq!(state.end_session("s2"), Applied::Sessions);
        state.observe_session(&session("s2", false), NOW);
        assert!(state.sessions().get("s2").is_some_and(|s| s.ended));
        // The stream's snapshot after the fallback keeps what the fallback ended.
        let snapshot = Frame::Snapshot {
            instance: "op".into(),
            version: 1,
            policies: vec![],
            secrets: vec![],
            sessions: vec![session("s1", false), session("s2", false)],
        };
        state.apply(snapshot, NOW).expect("snapshot");
        assert!(state.sessions().values().all(|s| s.ended));
    }

    /// The state after the operator's snapshot held policy `u1` at epoch 0.
    fn streamed() -> FleetState {
        let mut state = FleetState::new(30);
        let entry = policy_entry(&object("u1", 1, 0, None)).expect("entry");
        let snapshot = Frame::Snapshot {
            instance: "op".into(),
            version: 1,
            policies: vec![entry],
            secrets: vec![],
            sessions: vec![],
        };
        state.apply(snapshot, NOW).expect("snapshot");
        state
    }

    #[test]
    fn epochs_read_from_the_api_server_only_go_up_and_keep_a_known_raise_time() {
        let mut state = streamed();
        let raised = Some((3, "1970-01-02T00:00:00Z"));
        assert_eq!(
            state.observe_policy(&object("u1", 2, 3, raised), NOW),
            Applied::Policies
        );
        assert_eq!(epoch(&state), Some((3, 86_400)));
        // An older object (lower epoch, older generation) does not lower it.
        assert_eq!(
            state.observe_policy(&object("u1", 1, 1, None), NOW),
            Applied::Unchanged
        );
        assert_eq!(epoch(&state), Some((3, 86_400)));
        // The same epoch without a recorded raise time keeps the known one.
        state.observe_policy(&object("u1", 2, 3, None), NOW + 50);
        assert_eq!(epoch(&state), Some((3, 86_400)));
        // A new epoch nobody recorded yet: raised now.
        state.observe_policy(&object("u1", 3, 4, None), NOW + 60);
        assert_eq!(epoch(&state), Some((4, NOW + 60)));
    }

    #[test]
    fn only_what_narrows_access_is_taken_from_policies_read_at_the_api_server() {
        let mut state = streamed();
        // A new object (created during the outage, or created again under the same name)
        // waits for the operator's validation.
        assert_eq!(
            state.observe_policy(&object("u9", 1, 0, None), NOW),
            Applied::Unchanged
        );
        assert_eq!(
            state.policies().map(|p| p.uid).collect::<Vec<_>>(),
            vec!["u1"]
        );
        // An edited spec waits too; only its epoch counts.
        let mut edited = object("u1", 2, 0, None);
        edited.spec.hosts = vec!["other.example.test".into()];
        assert_eq!(state.observe_policy(&edited, NOW), Applied::Unchanged);
        assert_eq!(
            state.policies().next().map(|p| p.spec.hosts),
            Some(vec!["app.example.test".into()])
        );
        // Deleted: gone, and never back.
        assert_eq!(state.policy_deleted("ns", "apps", "u1"), Applied::Policies);
        assert_eq!(
            state.observe_policy(&object("u1", 1, 5, None), NOW),
            Applied::Unchanged
        );
        assert_eq!(epoch(&state), None);
    }

    #[test]
    fn a_relist_removes_the_policies_it_lacks() {
        let mut state = streamed();
        let listed: HashSet<ObjectKey> = [("ns".to_owned(), "apps".to_owned())].into();
        assert_eq!(state.policies_listed(&listed), Applied::Unchanged);
        assert_eq!(state.policies_listed(&HashSet::new()), Applied::Policies);
        assert_eq!(epoch(&state), None);
    }
}
