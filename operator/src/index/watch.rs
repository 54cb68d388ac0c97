//! The watches feeding the index: AccessPolicies in every namespace, the AccessSessions of the
//! session namespace, and Secrets (only their service-token keys are kept).
//!
//! Defensive: objects are watched untyped and converted one by one, so a malformed object is
//! logged and skipped instead of failing the list; a relist (`Init` … `InitDone`) is applied as
//! a reset, removing (or ending) whatever vanished meanwhile ([`Relist`]).

use super::{Index, Key, SharedIndex, Watched};
use crate::{clock::now, metrics::Metrics};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt as _, watcher},
};
use portcullis_core::policy::ServiceTokenRef;
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_runtime::{Relist, error_chain, shutdown::Signal};
use serde::de::DeserializeOwned;
use std::{collections::BTreeMap, sync::Arc};
use tracing::{info, warn};

/// The only Secret keys the gateways use (service-token credentials); validation requires both.
const SERVICE_TOKEN_KEYS: [&str; 2] = ServiceTokenRef::SECRET_KEYS;

/// Starts every watch.
pub fn spawn_all(
    client: Client,
    session_namespace: &str,
    shared: Arc<SharedIndex>,
    metrics: Metrics,
    shutdown: Signal,
) {
    let policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<AccessPolicy>(&()));
    let sessions: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        session_namespace,
        &ApiResource::erase::<AccessSession>(&()),
    );
    let secrets: Api<Secret> = Api::all(client);
    let feed = |what| Feed {
        shared: shared.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        what,
    };
    tokio::spawn(feed(Watched::Policies).run(policies, policy_handler()));
    tokio::spawn(feed(Watched::Sessions).run(sessions, session_handler()));
    tokio::spawn(feed(Watched::Secrets).run(secrets, secret_handler()));
}

fn policy_handler() -> Handler<DynamicObject, AccessPolicy, Key> {
    Handler {
        convert: typed,
        key: |p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)),
        known: |index| index.policy_keys().cloned().collect(),
        apply: |index, p, now| index.apply_policy(p, now),
        delete: |index, p, _| {
            if let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) {
                index.delete_policy(ns, name);
            }
        },
        reset: |index, all, vanished, now| index.reset_policies(all, vanished, now),
    }
}

fn session_handler() -> Handler<DynamicObject, AccessSession, String> {
    Handler {
        convert: typed,
        key: |s| s.metadata.name.clone(),
        known: |index| index.session_ids().cloned().collect(),
        apply: |index, s, now| index.apply_session(s, now),
        delete: |index, s, now| {
            if let Some(name) = &s.metadata.name {
                index.delete_session(name, now);
            }
        },
        reset: |index, all, vanished, now| index.reset_sessions(all, vanished, now),
    }
}

fn secret_handler() -> Handler<Secret, Secret, Key> {
    Handler {
        convert: |s: Secret| Ok(s),
        key: |s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)),
        known: |index| index.secret_ids().cloned().collect(),
        apply: |index, s, _| {
            if let Some((ns, name, data)) = secret_parts(s) {
                index.apply_secret(&ns, &name, data);
            }
        },
        delete: |index, s, _| {
            if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                index.delete_secret(ns, name);
            }
        },
        reset: |index, all, vanished, _| {
            let listed = all
                .iter()
                .filter_map(secret_parts)
                .map(|(ns, n, d)| ((ns, n), d))
                .collect();
            index.reset_secrets(listed, vanished);
        },
    }
}

fn typed<T: DeserializeOwned>(object: DynamicObject) -> Result<T, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn secret_parts(secret: &Secret) -> Option<(String, String, BTreeMap<String, String>)> {
    use base64::Engine as _;
    let data = secret
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| SERVICE_TOKEN_KEYS.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(&v.0),
            )
        })
        .collect();
    Some((
        secret.metadata.namespace.clone()?,
        secret.metadata.name.clone()?,
        data,
    ))
}

/// How one kind feeds the index: `R` as watched, `T` as the index takes it, `K` its key.
struct Handler<R, T, K> {
    convert: fn(R) -> Result<T, String>,
    key: fn(&T) -> Option<K>,
    /// The keys of this kind the index holds.
    known: fn(&Index) -> Vec<K>,
    apply: fn(&mut Index, &T, u64),
    delete: fn(&mut Index, &T, u64),
    /// Everything listed, and what vanished.
    reset: fn(&mut Index, &[T], &[K], u64),
}

/// One watch's way into the index.
struct Feed {
    shared: Arc<SharedIndex>,
    metrics: Metrics,
    shutdown: Signal,
    what: Watched,
}

/// A relist under way: the objects listed so far and their keys.
struct Listing<T, K> {
    objects: Vec<T>,
    keys: Relist<K>,
}

impl Feed {
    /// Follows one watch until shutdown.
    async fn run<R, T, K>(mut self, api: Api<R>, handler: Handler<R, T, K>)
    where
        R: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        K: Eq + std::hash::Hash + Clone,
    {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing = Listing {
            objects: Vec::new(),
            keys: Relist::default(),
        };
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = self.shutdown.wait() => return,
            };
            match event {
                None => return,
                Some(Err(error)) => {
                    warn!(kind = self.what.kind(), error = %error_chain(&error), "watch failed; retrying");
                }
                Some(Ok(event)) => self.handle(event, &handler, &mut listing),
            }
        }
    }

    fn handle<R, T, K>(
        &self,
        event: watcher::Event<R>,
        handler: &Handler<R, T, K>,
        listing: &mut Listing<T, K>,
    ) where
        K: Eq + std::hash::Hash + Clone,
    {
        let now = now();
        match event {
            watcher::Event::Init => {
                listing.objects.clear();
                listing.keys.start();
            }
            watcher::Event::InitApply(raw) => {
                if let Some(object) = self.convert(handler, raw)
                    && listing.keys.is_running()
                {
                    if let Some(key) = (handler.key)(&object) {
                        listing.keys.listed(key);
                    }
                    listing.objects.push(object);
                }
            }
            watcher::Event::InitDone => {
                let all = std::mem::take(&mut listing.objects);
                self.shared.update(|index| {
                    let vanished = listing.keys.finish((handler.known)(index).iter());
                    (handler.reset)(index, &all, &vanished, now);
                });
                self.shared.mark_synced(self.what);
                info!(kind = self.what.kind(), objects = all.len(), "listed");
            }
            watcher::Event::Apply(raw) => {
                if let Some(object) = self.convert(handler, raw) {
                    self.shared
                        .update(|index| (handler.apply)(index, &object, now));
                }
            }
            watcher::Event::Delete(raw) => {
                if let Some(object) = self.convert(handler, raw) {
                    self.shared
                        .update(|index| (handler.delete)(index, &object, now));
                }
            }
        }
    }

    fn convert<R, T, K>(&self, handler: &Handler<R, T, K>, raw: R) -> Option<T> {
        match (handler.convert)(raw) {
            Ok(object) => Some(object),
            Err(error) => {
                self.metrics.skipped(self.what.kind());
                warn!(kind = self.what.kind(), %error, "skipping a malformed object");
                None
            }
        }
    }
}
