//! The leader's status writer: after every index change (debounced) and every second (acks
//! arrive all the time), it computes the wanted status of every policy and every revoked
//! session, and writes with server-side apply on the status subresource, field manager
//! [`FIELD_MANAGER`], only what differs from what the object carries (or what this leader wrote
//! last). Only the operator's own fields are applied, so the gateways' `status.refresh` on
//! AccessSessions is never touched. A changed `Ready` condition or a new revocation becomes an
//! Event through one recorder.

use super::{
    compute::{self, ConditionType},
    enforced::{self, Enforced, Signature},
    events::{API_VERSION, Events, reference},
    plan::Write,
    validate::{self, Refs},
};
use crate::{
    clock::now,
    index::{Index, SharedIndex},
    leader::Peers,
    metrics::{Metrics, StatusObject},
    stream::Gateways,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use portcullis_crds::{AccessPolicy, AccessPolicyStatus, AccessSession, AccessSessionStatus};
use portcullis_protocol::frame::PolicyEntry;
use portcullis_runtime::{error_chain, shutdown::Signal, telemetry::api_server_span};
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::{Instrument as _, debug, info, warn};

/// Changes arriving within this window are written together.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Acks change counts without changing the index: look this often.
const TICK: Duration = Duration::from_secs(1);
/// A pass on unchanged inputs is skipped, but not for longer than this.
const RECOMPUTE: Duration = Duration::from_secs(30);
/// Field manager of the operator's own writes.
pub const FIELD_MANAGER: &str = "portcullis-operator";

/// What the status is computed from.
#[derive(Clone)]
pub struct Sources {
    pub index: Arc<SharedIndex>,
    pub gateways: Arc<Gateways>,
    pub peers: Arc<Peers>,
    pub metrics: Metrics,
}

/// The leader's status writer.
pub struct Writer {
    client: Client,
    sources: Sources,
    events: Events,
    identity_providers: Option<BTreeSet<String>>,
    session_namespace: String,
    /// What this leader last applied, by object: a policy by its uid, so one deleted and
    /// created again under the same name (as GitOps tools do) is a new object whose status is
    /// written afresh (cleared when it stops leading).
    written_policies: HashMap<String, AccessPolicyStatus>,
    written_sessions: HashMap<String, AccessSessionStatus>,
    /// What the last pass that wrote everything it planned was computed from, and when: a pass
    /// on the same inputs would plan nothing, so it is skipped (a pass walks every revoked
    /// session), except every [`RECOMPUTE`].
    settled: Option<(u64, Signature, Instant)>,
}

impl Writer {
    pub fn new(
        client: Client,
        sources: Sources,
        identity: &str,
        identity_providers: Option<BTreeSet<String>>,
        session_namespace: String,
    ) -> Self {
        Self {
            events: Events::new(client.clone(), identity),
            client,
            sources,
            identity_providers,
            session_namespace,
            written_policies: HashMap::new(),
            written_sessions: HashMap::new(),
            settled: None,
        }
    }

    /// Writes while this replica leads, until shutdown.
    pub async fn run(mut self, mut leading: watch::Receiver<bool>, mut shutdown: Signal) {
        let mut changed = self.sources.index.subscribe();
        let mut ticker = tokio::time::interval(TICK);
        loop {
            if !*leading.borrow_and_update() {
                self.written_policies.clear();
                self.written_sessions.clear();
                self.settled = None;
                tokio::select! {
                    changed = leading.changed() => if changed.is_err() { return },
                    () = shutdown.wait() => return,
                }
                continue;
            }
            self.pass(now(), &leading).await;
            tokio::select! {
                _ = changed.changed() => {}
                _ = ticker.tick() => {}
                _ = leading.changed() => {}
                () = shutdown.wait() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(DEBOUNCE) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// Computes and writes what changed; stops as soon as this replica no longer leads (a
    /// pass can hold thousands of writes after a burst of revocations). Shutdown lets the pass
    /// finish, within the flush time `main` gives it.
    async fn pass(&mut self, now: u64, leading: &watch::Receiver<bool>) {
        // Until every kind has listed, a verdict could rest on half the facts (a policy judged
        // before the AccessHost that refuses it arrived).
        if !self.sources.index.synced() {
            return;
        }
        // Read before the index: an update from here on makes the next pass differ.
        let updates = self.sources.index.updates();
        let Sources {
            index,
            gateways,
            peers,
            ..
        } = &self.sources;
        let facts = enforced::gather(index, gateways, peers, now);
        let inputs = (updates, facts.signature());
        if let Some((u, s, at)) = &self.settled
            && (*u, s) == (inputs.0, &inputs.1)
            && at.elapsed() < RECOMPUTE
        {
            return;
        }
        let writes = self.plan(&facts, now);
        drop(facts);
        self.forget_deleted_policies();
        let span = Write::span(&writes);
        let mut all_written = true;
        for write in writes {
            if !*leading.borrow() {
                debug!("no longer leading: the rest of the pass is left to the new leader");
                self.settled = None;
                return;
            }
            all_written &= self.write(write).instrument(span.clone()).await;
        }
        self.settled = all_written.then(|| (inputs.0, inputs.1, Instant::now()));
    }

    /// Forgets what was written to policy objects that no longer exist.
    fn forget_deleted_policies(&mut self) {
        let index = self.sources.index.lock();
        let live: std::collections::HashSet<&str> =
            index.policies().map(|p| p.uid.as_str()).collect();
        self.written_policies
            .retain(|uid, _| live.contains(uid.as_str()));
    }

    fn plan(&self, facts: &Enforced, now: u64) -> Vec<Write> {
        let index = self.sources.index.lock();
        let mut writes = self.plan_policies(&index, facts, now);
        writes.extend(self.plan_sessions(&index, facts, now));
        writes
    }

    /// The policies whose status differs from what they carry (or what this leader wrote).
    fn plan_policies(&self, index: &Index, facts: &Enforced, now: u64) -> Vec<Write> {
        let objects: Vec<&PolicyEntry> = index.policies().collect();
        let secret_keys = index.secret_keys();
        let verdicts = validate::validate_all(
            &objects,
            &Refs {
                identity_providers: self.identity_providers.as_ref(),
                secret_keys: &secret_keys,
                secret_scope: index.secret_scope(),
                host_refusals: index.host_refusals(),
            },
        );
        let mut writes = Vec::new();
        for entry in index.policies() {
            let key = (entry.namespace.clone(), entry.name.clone());
            let Some(verdict) = verdicts.get(&key) else {
                continue;
            };
            let observed = index.policy_status(&entry.uid);
            let written = self.written_policies.get(&entry.uid);
            let desired = compute::policy_status(entry, written.or(observed), verdict, facts, now);
            if compute::policy_unchanged(observed, &desired)
                || compute::policy_unchanged(written, &desired)
            {
                continue;
            }
            let previous = written
                .or(observed)
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == ConditionType::Ready.as_str())
                })
                .map(|c| (c.status.clone(), c.reason.clone()));
            writes.push(Write::Policy {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                uid: entry.uid.clone(),
                previous,
                status: desired,
            });
        }
        writes
    }

    /// The revoked sessions whose status differs from what they carry (or what this leader
    /// wrote).
    fn plan_sessions(&self, index: &Index, facts: &Enforced, now: u64) -> Vec<Write> {
        let mut writes = Vec::new();
        for (sid, observed) in index.revoked_sessions() {
            let written = self.written_sessions.get(sid);
            // Until the watch shows our write, what we wrote holds the first-seen time.
            let base = match written {
                Some(w) if observed.revoked_at.is_none() => w,
                _ => observed,
            };
            let at_by = (index.session_ended_at(sid), index.revoked_by(sid));
            let desired = compute::session_status(sid, at_by, base, facts, now);
            if compute::session_unchanged(observed, &desired)
                || written.is_some_and(|w| compute::session_unchanged(w, &desired))
            {
                continue;
            }
            writes.push(Write::Session {
                sid: sid.to_owned(),
                first: base.revoked_at.is_none(),
                newly_enforced: compute::enforced(&desired) && !compute::enforced(base),
                status: desired,
            });
        }
        writes
    }

    /// Applies one status; false if it failed (it is planned again next pass).
    async fn write(&mut self, write: Write) -> bool {
        match write {
            Write::Policy {
                namespace,
                name,
                uid,
                previous,
                status,
            } => {
                self.write_policy(namespace, name, &uid, previous, status)
                    .await
            }
            Write::Session {
                sid,
                first,
                newly_enforced,
                status,
            } => {
                self.write_session(sid, (first, newly_enforced), status)
                    .await
            }
        }
    }

    async fn write_policy(
        &mut self,
        namespace: String,
        name: String,
        uid: &str,
        previous: Option<(String, String)>,
        status: AccessPolicyStatus,
    ) -> bool {
        let api: Api<AccessPolicy> = Api::namespaced(self.client.clone(), &namespace);
        let body = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = Patch::Apply(&body);
        let patch = api.patch_status(&name, &params, &body);
        match patch
            .instrument(api_server_span("patch AccessPolicy status"))
            .await
        {
            Ok(_) => {
                self.sources.metrics.status_written(StatusObject::Policy);
                debug!(%namespace, %name, "policy status written");
                let ready = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == ConditionType::Ready.as_str());
                if let Some(ready) = ready
                    && previous.as_ref() != Some(&(ready.status.clone(), ready.reason.clone()))
                {
                    let accepted = ready.status == "True";
                    info!(%namespace, %name, reason = %ready.reason, "policy {}", if accepted { "ready" } else { "not ready" });
                    let reference = reference("AccessPolicy", &namespace, &name, uid);
                    self.events
                        .publish(
                            &reference,
                            accepted,
                            &ready.reason,
                            &ready.message,
                            "Validate",
                        )
                        .await;
                }
                self.written_policies.insert(uid.to_owned(), status);
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(error) => {
                self.sources.metrics.status_failed(StatusObject::Policy);
                warn!(%namespace, %name, error = %error_chain(&error), "cannot write the policy status");
                false
            }
        }
    }

    /// Writes a revoked session's status. `first`: the revocation is new; `newly_enforced`:
    /// every connected gateway acknowledged it now. Each is an Event, and only the second
    /// claims that the gateways refuse the session.
    async fn write_session(
        &mut self,
        sid: String,
        (first, newly_enforced): (bool, bool),
        status: AccessSessionStatus,
    ) -> bool {
        let api: Api<AccessSession> = Api::namespaced(self.client.clone(), &self.session_namespace);
        let body = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "AccessSession",
            "metadata": {"name": sid, "namespace": self.session_namespace},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = Patch::Apply(&body);
        let patch = api.patch_status(&sid, &params, &body);
        match patch
            .instrument(api_server_span("patch AccessSession status"))
            .await
        {
            Ok(written) => {
                self.sources.metrics.status_written(StatusObject::Session);
                let uid = written.metadata.uid.unwrap_or_default();
                let ns = self.session_namespace.clone();
                let reference = reference("AccessSession", &ns, &sid, &uid);
                if first {
                    info!(session = %sid, "revocation recorded");
                }
                if newly_enforced {
                    info!(session = %sid, "revocation enforced by every connected gateway");
                }
                self.events
                    .session_revoked(&reference, first, newly_enforced, &status)
                    .await;
                self.written_sessions.insert(sid, status);
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(error) => {
                self.sources.metrics.status_failed(StatusObject::Session);
                warn!(session = %sid, error = %error_chain(&error), "cannot write the session status");
                false
            }
        }
    }
}
