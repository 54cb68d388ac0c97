//! The leader's status writer: after every index change (debounced) and every second (acks
//! arrive all the time), it computes the wanted status of every policy and every revoked
//! session, and writes with server-side apply on the status subresource, field manager
//! [`FIELD_MANAGER`], only what differs from what the object carries (or what this leader wrote
//! last). Only the operator's own fields are applied, so the gateways' `status.refresh` on
//! AccessSessions is never touched. A changed `Ready` condition or a new revocation becomes an
//! Event through one recorder.

use crate::{
    lease::FIELD_MANAGER,
    shared::{Shared, now},
    shutdown::Signal,
    status::{self, FleetFacts, Signature},
    validate::{self, Refs},
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use portcullis_crds::{AccessPolicy, AccessPolicyStatus, AccessSession, AccessSessionStatus};
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Changes arriving within this window are written together.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Acks change counts without changing the index: look this often.
const TICK: Duration = Duration::from_secs(1);
/// A pass on unchanged inputs is skipped, but not for longer than this.
const RECOMPUTE: Duration = Duration::from_secs(30);
const API_VERSION: &str = "access.portcullis.dev/v1alpha1";

/// What the writer needs besides the shared state.
pub struct Writer {
    client: Client,
    shared: Arc<Shared>,
    recorder: Recorder,
    identity_providers: Option<BTreeSet<String>>,
    session_namespace: String,
    /// What this leader last applied, by object (cleared when it stops leading).
    written_policies: HashMap<(String, String), AccessPolicyStatus>,
    written_sessions: HashMap<String, AccessSessionStatus>,
    /// What the last pass that wrote everything it planned was computed from, and when: a pass
    /// on the same inputs would plan nothing, so it is skipped (a pass walks every revoked
    /// session), except every [`RECOMPUTE`].
    settled: Option<(u64, Signature, Instant)>,
}

enum Write {
    Policy {
        namespace: String,
        name: String,
        uid: String,
        previous: Option<(String, String)>,
        status: AccessPolicyStatus,
    },
    Session {
        sid: String,
        first: bool,
        status: AccessSessionStatus,
    },
}

impl Writer {
    pub fn new(
        client: Client,
        shared: Arc<Shared>,
        identity: &str,
        identity_providers: Option<BTreeSet<String>>,
        session_namespace: String,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "portcullis-operator".into(),
                instance: Some(identity.to_owned()),
            },
        );
        Self {
            client,
            shared,
            recorder,
            identity_providers,
            session_namespace,
            written_policies: HashMap::new(),
            written_sessions: HashMap::new(),
            settled: None,
        }
    }

    /// Writes while this replica leads, until shutdown.
    pub async fn run(mut self, mut leading: watch::Receiver<bool>, mut shutdown: Signal) {
        let mut changed = self.shared.subscribe();
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
        // Read before the index: an update from here on makes the next pass differ.
        let updates = self.shared.updates();
        let fleet = self.shared.fleet_facts(now);
        let inputs = (updates, fleet.signature());
        if let Some((u, s, at)) = &self.settled
            && (*u, s) == (inputs.0, &inputs.1)
            && at.elapsed() < RECOMPUTE
        {
            return;
        }
        let writes = self.plan(&fleet, now);
        drop(fleet);
        let mut all_written = true;
        for write in writes {
            if !*leading.borrow() {
                debug!("no longer leading: the rest of the pass is left to the new leader");
                self.settled = None;
                return;
            }
            all_written &= self.write(write).await;
        }
        self.settled = all_written.then(|| (inputs.0, inputs.1, Instant::now()));
    }

    fn plan(&self, fleet: &FleetFacts, now: u64) -> Vec<Write> {
        let index = self.shared.lock_index();
        let objects: Vec<AccessPolicy> = index
            .policies()
            .map(|p| {
                let mut object = AccessPolicy::new(&p.name, p.spec.clone());
                object.metadata.namespace = Some(p.namespace.clone());
                object.metadata.uid = Some(p.uid.clone());
                object.metadata.generation = Some(p.generation);
                object
            })
            .collect();
        let secret_keys = index.secret_keys();
        let verdicts = validate::validate_all(
            &objects,
            &Refs {
                identity_providers: self.identity_providers.as_ref(),
                secret_keys: &secret_keys,
            },
        );
        let mut writes = Vec::new();
        for entry in index.policies() {
            let key = (entry.namespace.clone(), entry.name.clone());
            let Some(verdict) = verdicts.get(&key) else {
                continue;
            };
            let observed = index.policy_status(&entry.uid);
            let written = self.written_policies.get(&key);
            let desired = status::policy_status(entry, written.or(observed), verdict, fleet, now);
            if status::policy_unchanged(observed, &desired)
                || status::policy_unchanged(written, &desired)
            {
                continue;
            }
            let previous = written
                .or(observed)
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| (c.status.clone(), c.reason.clone()));
            writes.push(Write::Policy {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                uid: entry.uid.clone(),
                previous,
                status: desired,
            });
        }
        for (sid, observed) in index.revoked_sessions() {
            let written = self.written_sessions.get(sid);
            // Until the watch shows our write, what we wrote holds the first-seen time.
            let base = match written {
                Some(w) if observed.revoked_at.is_none() => w,
                _ => observed,
            };
            let desired =
                status::session_status(sid, index.session_ended_at(sid), base, fleet, now);
            if status::session_unchanged(observed, &desired)
                || written.is_some_and(|w| status::session_unchanged(w, &desired))
            {
                continue;
            }
            writes.push(Write::Session {
                sid: sid.to_owned(),
                first: base.revoked_at.is_none(),
                status: desired,
            });
        }
        writes
    }

    /// Applies one status; false if it failed (it is planned again next pass).
    async fn write(&mut self, write: Write) -> bool {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match write {
            Write::Policy {
                namespace,
                name,
                uid,
                previous,
                status,
            } => {
                let api: Api<AccessPolicy> = Api::namespaced(self.client.clone(), &namespace);
                let body = serde_json::json!({
                    "apiVersion": API_VERSION,
                    "kind": "AccessPolicy",
                    "metadata": {"name": name, "namespace": namespace},
                    "status": status,
                });
                match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
                    Ok(_) => {
                        self.shared.metrics.status_written("AccessPolicy");
                        debug!(%namespace, %name, "policy status written");
                        if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready")
                            && previous.as_ref()
                                != Some(&(ready.status.clone(), ready.reason.clone()))
                        {
                            info!(%namespace, %name, reason = %ready.reason, "policy {}", if ready.status == "True" { "ready" } else { "not ready" });
                            let reference = reference("AccessPolicy", &namespace, &name, &uid);
                            self.event(
                                &reference,
                                ready.status == "True",
                                &ready.reason,
                                &ready.message,
                                "Validate",
                            )
                            .await;
                        }
                        self.written_policies.insert((namespace, name), status);
                        true
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => true,
                    Err(error) => {
                        self.shared.metrics.status_failed("AccessPolicy");
                        warn!(%namespace, %name, %error, "cannot write the policy status");
                        false
                    }
                }
            }
            Write::Session { sid, first, status } => {
                let api: Api<AccessSession> =
                    Api::namespaced(self.client.clone(), &self.session_namespace);
                let body = serde_json::json!({
                    "apiVersion": API_VERSION,
                    "kind": "AccessSession",
                    "metadata": {"name": sid, "namespace": self.session_namespace},
                    "status": status,
                });
                match api.patch_status(&sid, &params, &Patch::Apply(&body)).await {
                    Ok(written) => {
                        self.shared.metrics.status_written("AccessSession");
                        if first {
                            info!(session = %sid, "revocation recorded");
                            let uid = written.metadata.uid.unwrap_or_default();
                            let ns = self.session_namespace.clone();
                            let reference = reference("AccessSession", &ns, &sid, &uid);
                            self.event(
                                &reference,
                                true,
                                "Revoked",
                                "the session was revoked; every gateway refuses it",
                                "Revoke",
                            )
                            .await;
                        }
                        self.written_sessions.insert(sid, status);
                        true
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => true,
                    Err(error) => {
                        self.shared.metrics.status_failed("AccessSession");
                        warn!(session = %sid, %error, "cannot write the session status");
                        false
                    }
                }
            }
        }
    }

    async fn event(
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
        if let Err(error) = self.recorder.publish(&event, reference).await {
            warn!(%error, reason, "cannot publish an Event");
        }
    }
}

fn reference(kind: &str, namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: (!uid.is_empty()).then(|| uid.to_owned()),
        ..ObjectReference::default()
    }
}
