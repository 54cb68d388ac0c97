//! The watches feeding the index: AccessPolicies in every namespace, the AccessSessions of the
//! session namespace, Secrets (only their service-token keys are kept), AccessHosts and the
//! labels of Namespaces (who may claim which host).
//!
//! Defensive: objects are watched untyped and converted one by one, so a malformed object is
//! logged and skipped instead of failing the list; a relist (`Init` … `InitDone`) is applied as
//! a reset, removing (or ending) whatever vanished meanwhile ([`Relist`]).

use super::{Index, Key, SharedIndex, Watched};
use crate::{clock::now, metrics::Metrics};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt as _, watcher},
};
use portcullis_core::policy::ServiceTokenRef;
use portcullis_crds::{AccessHost, AccessPolicy, AccessSession};
use portcullis_runtime::{Relist, error_chain, shutdown::Signal};
use serde::de::DeserializeOwned;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};
use tracing::{info, warn};

/// The only Secret keys the gateways use (service-token credentials); validation requires both.
const SERVICE_TOKEN_KEYS: [&str; 2] = ServiceTokenRef::SECRET_KEYS;

/// Starts every watch. Secrets are watched in `secret_namespaces` only (one watch each), or in
/// every namespace when `None`.
pub fn spawn_all(
    client: Client,
    session_namespace: &str,
    secret_namespaces: Option<&BTreeSet<String>>,
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
    let hosts: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<AccessHost>(&()));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let feed = |what, scope: Option<&str>| Feed {
        shared: shared.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        what,
        scope: scope.map(str::to_owned),
        listed_once: false,
    };
    match secret_namespaces {
        None => {
            shared.expect_secret_watches(1);
            let secrets: Api<Secret> = Api::all(client.clone());
            tokio::spawn(feed(Watched::Secrets, None).run(secrets, secret_handler(None)));
        }
        Some(names) => {
            shared.expect_secret_watches(names.len());
            for ns in names {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                let handler = secret_handler(Some(ns.clone()));
                tokio::spawn(feed(Watched::Secrets, Some(ns)).run(secrets, handler));
            }
        }
    }
    tokio::spawn(feed(Watched::Policies, None).run(policies, policy_handler()));
    tokio::spawn(feed(Watched::Sessions, None).run(sessions, session_handler()));
    tokio::spawn(feed(Watched::Hosts, None).run(hosts, host_handler()));
    tokio::spawn(feed(Watched::Namespaces, None).run(namespaces, namespace_handler()));
}

fn host_handler() -> Handler<DynamicObject, AccessHost, String> {
    Handler {
        convert: typed,
        key: |h| h.metadata.name.clone(),
        known: Box::new(|index: &Index| index.host_names().cloned().collect()),
        apply: |index, h, _| index.apply_host(h),
        delete: |index, h, _| {
            if let Some(name) = &h.metadata.name {
                index.delete_host(name);
            }
        },
        reset: |index, all, _, _| index.reset_hosts(all),
    }
}

fn namespace_handler() -> Handler<Namespace, Namespace, String> {
    Handler {
        convert: |n: Namespace| Ok(n),
        key: |n| n.metadata.name.clone(),
        known: Box::new(|index: &Index| index.namespace_names().cloned().collect()),
        apply: |index, n, _| {
            if let Some(name) = &n.metadata.name {
                index.apply_namespace(name, n.metadata.labels.clone().unwrap_or_default());
            }
        },
        delete: |index, n, _| {
            if let Some(name) = &n.metadata.name {
                index.delete_namespace(name);
            }
        },
        reset: |index, all, _, _| {
            let listed = all
                .iter()
                .filter_map(|n| {
                    let labels = n.metadata.labels.clone().unwrap_or_default();
                    Some((n.metadata.name.clone()?, labels))
                })
                .collect();
            index.reset_namespaces(listed);
        },
    }
}

fn policy_handler() -> Handler<DynamicObject, AccessPolicy, Key> {
    Handler {
        convert: typed,
        key: |p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)),
        known: Box::new(|index: &Index| index.policy_keys().cloned().collect()),
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
        known: Box::new(|index: &Index| index.session_ids().cloned().collect()),
        apply: |index, s, now| index.apply_session(s, now),
        delete: |index, s, now| {
            if let Some(name) = &s.metadata.name {
                index.delete_session(name, now);
            }
        },
        reset: |index, all, vanished, now| index.reset_sessions(all, vanished, now),
    }
}

/// The Secrets of `namespace` (every namespace when `None`): a relist of one namespace forgets
/// only what vanished from it.
fn secret_handler(namespace: Option<String>) -> Handler<Secret, Secret, Key> {
    Handler {
        convert: |s: Secret| Ok(s),
        key: |s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)),
        known: Box::new(move |index: &Index| {
            index
                .secret_ids()
                .filter(|(ns, _)| namespace.as_ref().is_none_or(|n| n == ns))
                .cloned()
                .collect()
        }),
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

/// Whether the API server answered 403.
fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(status) if status.is_forbidden())
        }
        watcher::Error::WatchError(status) => status.is_forbidden(),
        watcher::Error::NoResourceVersion => false,
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

/// The keys of one kind (in one watch's scope) the index holds.
type Known<K> = Box<dyn Fn(&Index) -> Vec<K> + Send + Sync>;

/// How one kind feeds the index: `R` as watched, `T` as the index takes it, `K` its key.
struct Handler<R, T, K> {
    convert: fn(R) -> Result<T, String>,
    key: fn(&T) -> Option<K>,
    /// The keys of this kind (in this watch's scope) the index holds.
    known: Known<K>,
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
    /// The namespace watched (`None`: every namespace).
    scope: Option<String>,
    /// Whether this watch has listed (or been refused) once: only the first counts towards
    /// [`SharedIndex::synced`].
    listed_once: bool,
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
                    if self.what == Watched::Secrets && forbidden(&error) {
                        self.refused();
                    }
                }
                Some(Ok(event)) => self.handle(event, &handler, &mut listing),
            }
        }
    }

    /// The API server refuses this Secret watch (RBAC): the policies that need these Secrets
    /// say so in their status, and the rest of the state is served rather than held back
    /// until an administrator grants access (the watch keeps retrying with backoff).
    fn refused(&mut self) {
        let scope = self.scope.clone();
        self.shared
            .update(|index| index.set_secrets_forbidden(scope.as_deref(), true));
        self.mark_listed();
    }

    fn mark_listed(&mut self) {
        if !self.listed_once {
            self.listed_once = true;
            self.shared.mark_synced(self.what);
        }
    }

    fn handle<R, T, K>(
        &mut self,
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
                let scope = self.scope.clone();
                let secrets = self.what == Watched::Secrets;
                self.shared.update(|index| {
                    let vanished = listing.keys.finish((handler.known)(index).iter());
                    (handler.reset)(index, &all, &vanished, now);
                    if secrets {
                        index.set_secrets_forbidden(scope.as_deref(), false);
                    }
                });
                self.mark_listed();
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
