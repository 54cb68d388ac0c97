//! The access state this replica streams to gateways: a synchronous index fed by the watches
//! (`apply` / `delete` / `reset` per kind), turning every change into a delta with the next
//! version, kept in a bounded log so that a reconnecting gateway resumes instead of reloading.
//!
//! Sessions are monotonic here too: a deleted (or vanished) session that has not expired stays
//! in the index as ended until its expiry plus clock skew, so snapshots carry it.

use portcullis_crds::{AccessPolicy, AccessPolicyStatus, AccessSession, AccessSessionStatus};
use portcullis_protocol::{Frame, PolicyEntry, SecretEntry, SessionEntry};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// Seconds an ended entry is kept past its expiry (clock skew between API server and gateways).
pub const CLOCK_SKEW_SECS: u64 = 30;

/// (namespace, name).
pub type Key = (String, String);

/// A session and the version that ended it.
#[derive(Clone, Debug)]
struct Session {
    entry: SessionEntry,
    ended_at: Option<u64>,
    /// The AccessSession object still exists (not deleted, not being deleted).
    exists: bool,
}

/// The index. Not thread-safe by itself: the operator holds it in a mutex.
#[derive(Debug)]
pub struct Index {
    instance: String,
    version: u64,
    log: VecDeque<Frame>,
    log_capacity: usize,
    policies: BTreeMap<Key, (PolicyEntry, u64)>,
    /// First time this replica saw each (uid, epoch), when the status does not record it.
    epoch_seen: HashMap<(String, i64), u64>,
    /// Data of every Secret in the cluster that some policy may reference, by key.
    secrets: BTreeMap<Key, BTreeMap<String, String>>,
    /// Secrets currently streamed (referenced by a policy and present).
    streamed_secrets: BTreeSet<Key>,
    sessions: HashMap<String, Session>,
    /// Ended sessions by the version that ended them, so "what did a gateway that acknowledged
    /// version b newly enforce since a" is a range, not a scan of every session.
    ended_log: BTreeMap<u64, String>,
    /// AccessSessions that still exist although the index forgot them (past expiry plus skew),
    /// with their expiry: what session garbage collection deletes, found without listing every
    /// session.
    lingering: HashMap<String, u64>,
    /// The status each policy carries now (by uid), as the watch last delivered it: the
    /// status writer compares against it, so it writes only what changed, and keeps first-seen
    /// times (`epochRaisedAt`) across leader changes.
    policy_status: HashMap<String, AccessPolicyStatus>,
    /// The status of every existing revoked session (without `refresh`, which the gateways
    /// own); only revoked sessions get a status from the operator.
    revoked_status: HashMap<String, AccessSessionStatus>,
}

impl Index {
    pub fn new(instance: String, log_capacity: usize) -> Self {
        Self {
            instance,
            version: 0,
            log: VecDeque::new(),
            log_capacity,
            policies: BTreeMap::new(),
            epoch_seen: HashMap::new(),
            secrets: BTreeMap::new(),
            streamed_secrets: BTreeSet::new(),
            sessions: HashMap::new(),
            ended_log: BTreeMap::new(),
            lingering: HashMap::new(),
            policy_status: HashMap::new(),
            revoked_status: HashMap::new(),
        }
    }

    /// The status a policy carries now.
    pub fn policy_status(&self, uid: &str) -> Option<&AccessPolicyStatus> {
        self.policy_status.get(uid)
    }

    /// Existing revoked sessions and the status they carry now (`refresh` left out).
    pub fn revoked_sessions(&self) -> impl Iterator<Item = (&str, &AccessSessionStatus)> {
        self.revoked_status.iter().map(|(sid, s)| (sid.as_str(), s))
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The whole state now.
    pub fn snapshot(&self) -> Frame {
        Frame::Snapshot {
            instance: self.instance.clone(),
            version: self.version,
            policies: self.policies.values().map(|(p, _)| p.clone()).collect(),
            secrets: self
                .streamed_secrets
                .iter()
                .filter_map(|key| self.secret_entry(key))
                .collect(),
            sessions: self.sessions.values().map(|s| s.entry.clone()).collect(),
        }
    }

    /// The deltas after `version`, if the log still holds all of them.
    pub fn deltas_since(&self, version: u64) -> Option<Vec<Frame>> {
        if version > self.version {
            return None;
        }
        if version == self.version {
            return Some(Vec::new());
        }
        let first = self.log.front()?.version();
        if first > version + 1 {
            return None;
        }
        // The log is ordered by version: find the first newer delta by bisection rather than
        // scanning every retained delta, once per change and per connected gateway, under the
        // index lock (a burst of revocations with a long log made that quadratic).
        let start = self.log.partition_point(|f| f.version() <= version);
        Some(self.log.range(start..).cloned().collect())
    }

    /// Policy facts a gateway gained by acknowledging `upto` after `after` (everything up to
    /// `upto` when `after` is `None`): uid → (generation, epoch) of each policy whose current
    /// form is in that range.
    pub fn policy_facts(&self, after: Option<u64>, upto: u64) -> BTreeMap<String, (i64, i64)> {
        let newer = |v: u64| after.is_none_or(|a| v > a) && v <= upto;
        self.policies
            .values()
            .filter(|(_, v)| newer(*v))
            .map(|(p, _)| (p.uid.clone(), (p.generation, p.spec.revocation_epoch)))
            .collect()
    }

    /// Sessions ended after version `after` (from the start when `None`) up to `upto`: what a
    /// gateway that acknowledged `upto` newly enforces. Sessions already forgotten (expired) are
    /// not listed.
    pub fn ended_between(&self, after: Option<u64>, upto: u64) -> impl Iterator<Item = &str> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let range = if from <= upto {
            Some(self.ended_log.range(from..=upto))
        } else {
            None
        };
        range.into_iter().flatten().map(|(_, sid)| sid.as_str())
    }

    /// Version at which session `sid` was ended.
    pub fn session_ended_at(&self, sid: &str) -> Option<u64> {
        self.sessions.get(sid).and_then(|s| s.ended_at)
    }

    pub fn policies(&self) -> impl Iterator<Item = &PolicyEntry> {
        self.policies.values().map(|(p, _)| p)
    }

    fn push(&mut self, frame: impl FnOnce(u64) -> Frame) -> u64 {
        self.version += 1;
        self.log.push_back(frame(self.version));
        while self.log.len() > self.log_capacity {
            self.log.pop_front();
        }
        self.version
    }

    // ----- policies -----

    /// Adds or updates a policy. `now` is used for the raise time of an epoch the status does
    /// not record yet.
    pub fn apply_policy(&mut self, policy: &AccessPolicy, now: u64) {
        let Some(entry) = self.policy_entry(policy, now) else {
            return;
        };
        self.policy_status
            .insert(entry.uid.clone(), policy.status.clone().unwrap_or_default());
        let key = (entry.namespace.clone(), entry.name.clone());
        if self.policies.get(&key).is_some_and(|(p, _)| *p == entry) {
            return;
        }
        let version = self.push(|version| Frame::Policy {
            version,
            policy: Box::new(entry.clone()),
        });
        self.policies.insert(key, (entry, version));
        self.sync_secrets();
    }

    pub fn delete_policy(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some((entry, _)) = self.policies.remove(&key) {
            self.policy_status.remove(&entry.uid);
            self.push(|version| Frame::PolicyRemoved {
                version,
                namespace: entry.namespace,
                name: entry.name,
                uid: entry.uid,
            });
            self.sync_secrets();
        }
    }

    /// After a relist: `policies` is everything that exists.
    pub fn reset_policies(&mut self, policies: &[AccessPolicy], now: u64) {
        let listed: HashSet<Key> = policies.iter().filter_map(key_of).collect();
        let vanished: Vec<Key> = self
            .policies
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in vanished {
            self.delete_policy(&namespace, &name);
        }
        for policy in policies {
            self.apply_policy(policy, now);
        }
    }

    fn policy_entry(&mut self, policy: &AccessPolicy, now: u64) -> Option<PolicyEntry> {
        let namespace = policy.metadata.namespace.clone()?;
        let name = policy.metadata.name.clone()?;
        let uid = policy.metadata.uid.clone()?;
        let epoch = policy.spec.revocation_epoch;
        let recorded = crate::status::recorded_epoch_raise(policy);
        let epoch_raised_at = match recorded {
            _ if epoch <= 0 => 0,
            Some(at) => at,
            None => *self.epoch_seen.entry((uid.clone(), epoch)).or_insert(now),
        };
        Some(PolicyEntry {
            namespace,
            name,
            uid,
            generation: policy.metadata.generation.unwrap_or(0),
            spec: policy.spec.clone(),
            epoch_raised_at,
        })
    }

    // ----- secrets -----

    pub fn apply_secret(&mut self, namespace: &str, name: &str, data: BTreeMap<String, String>) {
        let key = (namespace.to_owned(), name.to_owned());
        if self.secrets.get(&key) == Some(&data) {
            return;
        }
        self.secrets.insert(key.clone(), data);
        if self.streamed_secrets.contains(&key) {
            if let Some(secret) = self.secret_entry(&key) {
                self.push(|version| Frame::Secret { version, secret });
            }
        } else {
            self.sync_secrets();
        }
    }

    pub fn delete_secret(&mut self, namespace: &str, name: &str) {
        if self
            .secrets
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
        {
            self.sync_secrets();
        }
    }

    pub fn reset_secrets(&mut self, secrets: Vec<(Key, BTreeMap<String, String>)>) {
        let listed: HashSet<Key> = secrets.iter().map(|(k, _)| k.clone()).collect();
        self.secrets.retain(|k, _| listed.contains(k));
        for ((namespace, name), data) in secrets {
            self.apply_secret(&namespace, &name, data);
        }
        self.sync_secrets();
    }

    /// Secrets some policy references, as (namespace, name).
    fn referenced(&self) -> BTreeSet<Key> {
        self.policies
            .values()
            .flat_map(|(p, _)| {
                p.spec
                    .service_tokens
                    .iter()
                    .map(|t| (p.namespace.clone(), t.secret_name.clone()))
            })
            .collect()
    }

    /// Streams exactly the referenced Secrets that exist.
    fn sync_secrets(&mut self) {
        let wanted: BTreeSet<Key> = self
            .referenced()
            .into_iter()
            .filter(|k| self.secrets.contains_key(k))
            .collect();
        let gone: Vec<Key> = self.streamed_secrets.difference(&wanted).cloned().collect();
        let new: Vec<Key> = wanted.difference(&self.streamed_secrets).cloned().collect();
        for (namespace, name) in gone {
            self.push(|version| Frame::SecretRemoved {
                version,
                namespace,
                name,
            });
        }
        for key in new {
            if let Some(secret) = self.secret_entry(&key) {
                self.push(|version| Frame::Secret { version, secret });
            }
        }
        self.streamed_secrets = wanted;
    }

    fn secret_entry(&self, key: &Key) -> Option<SecretEntry> {
        Some(SecretEntry {
            namespace: key.0.clone(),
            name: key.1.clone(),
            data: self.secrets.get(key)?.clone(),
        })
    }

    /// Whether a Secret is referenced by a policy (for validation).
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&BTreeMap<String, String>> {
        self.secrets.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Key names of every known Secret (only the service-token keys are kept), for validation.
    pub fn secret_keys(&self) -> BTreeMap<Key, BTreeSet<String>> {
        self.secrets
            .iter()
            .map(|(k, data)| (k.clone(), data.keys().cloned().collect()))
            .collect()
    }

    // ----- sessions -----

    pub fn apply_session(&mut self, session: &AccessSession, now: u64) {
        let Some(sid) = session.metadata.name.clone() else {
            return;
        };
        if session.spec.revoked && session.metadata.deletion_timestamp.is_none() {
            let mut status = session.status.clone().unwrap_or_default();
            status.refresh = None;
            self.revoked_status.insert(sid.clone(), status);
        } else {
            self.revoked_status.remove(&sid);
        }
        let entry = SessionEntry {
            sid: sid.clone(),
            subject: session.spec.subject.clone(),
            expires_at: u64::try_from(session.spec.expires_at.0.as_second()).unwrap_or(0),
            ended: session.spec.revoked || session.metadata.deletion_timestamp.is_some(),
            refresh_failing_since: session
                .status
                .as_ref()
                .and_then(|s| s.refresh.as_ref())
                .and_then(|r| r.failing_since.as_ref())
                .and_then(|t| u64::try_from(t.0.as_second()).ok()),
            email: session.spec.email.clone(),
            groups: session.spec.groups.clone(),
        };
        let exists = session.metadata.deletion_timestamp.is_none();
        if exists && entry.expires_at + CLOCK_SKEW_SECS <= now {
            self.lingering.insert(sid, entry.expires_at);
        } else {
            self.lingering.remove(&sid);
        }
        self.upsert_session(entry, exists, now);
    }

    fn upsert_session(&mut self, mut entry: SessionEntry, exists: bool, now: u64) {
        if entry.expires_at + CLOCK_SKEW_SECS <= now {
            let Some(gone) = self.sessions.remove(&entry.sid) else {
                return;
            };
            if let Some(v) = gone.ended_at {
                self.ended_log.remove(&v);
            }
            // Its expiry was moved into the past while gateways still hold it as live (an
            // administrator ending it that way): tell them, or they would accept it until its
            // original expiry.
            if entry.expires_at < gone.entry.expires_at && !gone.entry.ended {
                entry.ended = true;
                entry.subject = gone.entry.subject;
                self.push(|version| Frame::Session {
                    version,
                    session: entry,
                });
            }
            return;
        }
        if let Some(known) = self.sessions.get(&entry.sid) {
            // Monotonic, as on the gateway: ended stays ended, expiry only moves earlier.
            entry.ended |= known.entry.ended || known.entry.subject != entry.subject;
            entry.subject = known.entry.subject.clone();
            entry.expires_at = entry.expires_at.min(known.entry.expires_at);
            if known.entry == entry {
                if let Some(known) = self.sessions.get_mut(&entry.sid) {
                    known.exists = exists;
                }
                return;
            }
        }
        let was_ended = self.sessions.get(&entry.sid).and_then(|s| s.ended_at);
        let sid = entry.sid.clone();
        let ended = entry.ended;
        let version = self.push(|version| Frame::Session {
            version,
            session: entry.clone(),
        });
        if was_ended.is_none() && ended {
            self.ended_log.insert(version, sid.clone());
        }
        self.sessions.insert(
            sid,
            Session {
                entry,
                ended_at: was_ended.or(ended.then_some(version)),
                exists,
            },
        );
    }

    /// A deleted session: ended until its expiry.
    pub fn delete_session(&mut self, sid: &str, now: u64) {
        self.revoked_status.remove(sid);
        self.lingering.remove(sid);
        if let Some(known) = self.sessions.get(sid) {
            let mut entry = known.entry.clone();
            entry.ended = true;
            self.upsert_session(entry, false, now);
        }
    }

    /// Up to `limit` existing AccessSessions that expired before `cutoff` (unix seconds).
    pub fn expired_before(&self, cutoff: u64, limit: usize) -> Vec<String> {
        let lingering = self
            .lingering
            .iter()
            .filter(|(_, expires_at)| **expires_at < cutoff)
            .map(|(sid, _)| sid.clone());
        let known = self
            .sessions
            .iter()
            .filter(|(_, s)| s.exists && s.entry.expires_at < cutoff)
            .map(|(sid, _)| sid.clone());
        lingering.chain(known).take(limit).collect()
    }

    /// Session garbage collection found `sid` gone.
    pub fn forget_lingering(&mut self, sid: &str) {
        self.lingering.remove(sid);
    }

    /// After a relist: sessions that vanished are ended.
    pub fn reset_sessions(&mut self, sessions: &[AccessSession], now: u64) {
        let listed: HashSet<&str> = sessions
            .iter()
            .filter_map(|s| s.metadata.name.as_deref())
            .collect();
        let vanished: Vec<String> = self
            .sessions
            .keys()
            .filter(|k| !listed.contains(k.as_str()))
            .cloned()
            .collect();
        for sid in vanished {
            self.delete_session(&sid, now);
        }
        self.lingering
            .retain(|sid, _| listed.contains(sid.as_str()));
        for session in sessions {
            self.apply_session(session, now);
        }
    }

    /// Drops sessions past expiry plus skew (gateways forget them on their own).
    pub fn collect(&mut self, now: u64) {
        let ended_log = &mut self.ended_log;
        let lingering = &mut self.lingering;
        self.sessions.retain(|sid, s| {
            let keep = s.entry.expires_at + CLOCK_SKEW_SECS > now;
            if !keep {
                if let Some(v) = s.ended_at {
                    ended_log.remove(&v);
                }
                if s.exists {
                    lingering.insert(sid.clone(), s.entry.expires_at);
                }
            }
            keep
        });
        let sessions = &self.sessions;
        self.revoked_status
            .retain(|sid, _| sessions.contains_key(sid));
    }
}

fn key_of(policy: &AccessPolicy) -> Option<Key> {
    Some((
        policy.metadata.namespace.clone()?,
        policy.metadata.name.clone()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use portcullis_tests::fixtures::session;

    fn expiring(name: &str, expires_at: u64) -> AccessSession {
        let mut s = session(name, false, expires_at - 3600);
        s.metadata.uid = Some(format!("uid-{name}"));
        s
    }

    #[test]
    fn garbage_collection_candidates_are_the_existing_sessions_expired_before_the_cutoff() {
        let now = 1_800_000_000;
        let mut index = Index::new("i".into(), 1000);
        // Listed long expired, expired a while ago, live; one deleted.
        index.reset_sessions(
            &[
                expiring("old", now - 7200),
                expiring("old-deleted", now - 7200),
                expiring("recent", now - 60),
                expiring("live", now + 600),
            ],
            now,
        );
        index.delete_session("old-deleted", now);
        let mut got = index.expired_before(now - 3600, 100);
        got.sort();
        assert_eq!(got, ["old"]);
        let mut got = index.expired_before(now, 100);
        got.sort();
        assert_eq!(got, ["old", "recent"]);
        assert_eq!(index.expired_before(now, 1).len(), 1, "bounded");

        // A live session the index forgets at expiry stays a candidate while it exists; a
        // deleted one does not.
        index.apply_session(&expiring("soon", now + 10), now);
        index.apply_session(&expiring("soon-deleted", now + 10), now);
        index.delete_session("soon-deleted", now);
        index.collect(now + 100);
        let mut got = index.expired_before(now + 100, 100);
        got.sort();
        assert_eq!(got, ["old", "recent", "soon"]);
        // Deleted by the collector (the watch says so), or vanished in a relist.
        index.delete_session("recent", now + 100);
        index.reset_sessions(
            &[expiring("soon", now + 10), expiring("live", now + 600)],
            now + 100,
        );
        assert_eq!(index.expired_before(now + 100, 100), ["soon"]);
        index.forget_lingering("soon");
        assert!(index.expired_before(now + 100, 100).is_empty());
    }

    #[test]
    fn an_expiry_moved_into_the_past_is_streamed_as_an_end() {
        let now = 1_800_000_000;
        let mut index = Index::new("i".into(), 1000);
        index.apply_session(&session("a", false, now - 600), now);
        let before = index.version();
        // An administrator moved expiresAt a minute into the past (after issuedAt).
        let mut shortened = session("a", false, now - 600);
        shortened.spec.expires_at = Time(
            k8s_openapi::jiff::Timestamp::from_second(i64::try_from(now - 60).expect("fits"))
                .expect("time"),
        );
        index.apply_session(&shortened, now);
        let deltas = index.deltas_since(before).expect("in the log");
        match deltas.as_slice() {
            [Frame::Session { session, .. }] => {
                assert!(session.ended, "streamed as ended: {session:?}");
                assert_eq!(session.expires_at, now - 60);
            }
            other => panic!("expected one session frame, got {other:?}"),
        }
        // Applying the same object again streams nothing more.
        index.apply_session(&shortened, now);
        assert_eq!(index.deltas_since(before).expect("in the log").len(), 1);
    }

    #[test]
    fn ended_sessions_are_found_by_version_range_and_forgotten_with_their_session() {
        let now = 1_800_000_000;
        let mut index = Index::new("i".into(), 1000);
        index.apply_session(&session("a", false, now), now);
        let before = index.version();
        index.apply_session(&session("a", true, now), now);
        let ended_a = index.version();
        index.apply_session(&session("b", true, now), now);
        let all: Vec<&str> = index.ended_between(None, index.version()).collect();
        assert_eq!(all, ["a", "b"]);
        assert_eq!(
            index
                .ended_between(Some(before), ended_a)
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            index
                .ended_between(Some(ended_a), index.version())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            index
                .ended_between(Some(index.version()), index.version())
                .count(),
            0
        );
        assert_eq!(index.ended_between(Some(10), 3).count(), 0);
        // Ending again changes nothing; expiry forgets it.
        index.delete_session("a", now);
        assert_eq!(index.session_ended_at("a"), Some(ended_a));
        index.collect(now + 3600 + CLOCK_SKEW_SECS);
        assert_eq!(index.ended_between(None, index.version()).count(), 0);
    }

    #[test]
    fn deltas_since_returns_exactly_the_newer_deltas_and_gives_up_past_the_log() {
        let now = 1_800_000_000;
        let mut index = Index::new("i".into(), 50);
        for n in 0..40 {
            index.apply_session(&session(&format!("s{n}"), false, now), now);
        }
        for n in 0..40 {
            index.apply_session(&session(&format!("s{n}"), true, now), now);
        }
        let top = index.version();
        for from in [top - 30, top - 1] {
            let deltas = index.deltas_since(from).expect("within the log");
            let versions: Vec<u64> = deltas.iter().map(Frame::version).collect();
            assert_eq!(
                versions,
                ((from + 1)..=top).collect::<Vec<_>>(),
                "from {from}"
            );
        }
        assert_eq!(index.deltas_since(top).map(|d| d.len()), Some(0));
        // Older than what the log keeps: the caller must send a snapshot.
        assert!(index.deltas_since(top - 60).is_none());
        assert!(index.deltas_since(top + 1).is_none());
    }
}
