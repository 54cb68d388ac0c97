//! The watches feeding the index: AccessPolicies in every namespace (or in the watched ones),
//! the AccessSessions of the session namespace, Secrets (only their service-token keys are
//! kept), AccessHosts and the labels of Namespaces (who may claim which host).
//!
//! Defensive: objects are watched untyped and converted one by one, so a malformed object is
//! logged and skipped instead of failing the list; a relist (`Init` … `InitDone`) is applied as
//! a reset, removing (or ending) whatever vanished meanwhile ([`Relist`]).

mod handlers;

use super::{SharedIndex, Watched};
use crate::{clock::now, metrics::Metrics};
use futures::StreamExt as _;
use handlers::{
    Handler, host_handler, namespace_handler, policy_handler, secret_handler, session_handler,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt as _, watcher},
};
use portcullis_crds::{AccessHost, AccessPolicy, AccessSession};
use portcullis_runtime::{Relist, error_chain, shutdown::Signal};
use serde::de::DeserializeOwned;
use std::{collections::BTreeSet, sync::Arc};
use tracing::{info, warn};

/// Which namespaces the watches cover.
pub struct Scope<'a> {
    /// Where the AccessSessions live.
    pub sessions: &'a str,
    /// The namespaces whose AccessPolicies are served (one watch each); `None`: every namespace.
    pub policies: Option<&'a BTreeSet<String>>,
    /// The namespaces whose Secrets are read (one watch each); `None`: every namespace.
    pub secrets: Option<&'a BTreeSet<String>>,
}

/// Starts every watch.
pub fn spawn_all(
    client: Client,
    scope: &Scope<'_>,
    shared: Arc<SharedIndex>,
    metrics: Metrics,
    shutdown: Signal,
) {
    let sessions: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        scope.sessions,
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
    match scope.secrets {
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
    let policy_kind = ApiResource::erase::<AccessPolicy>(&());
    match scope.policies {
        None => {
            shared.expect_policy_watches(1);
            let policies: Api<DynamicObject> = Api::all_with(client.clone(), &policy_kind);
            tokio::spawn(feed(Watched::Policies, None).run(policies, policy_handler(None)));
        }
        Some(names) => {
            shared.expect_policy_watches(names.len());
            for ns in names {
                let policies: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &policy_kind);
                let handler = policy_handler(Some(ns.clone()));
                tokio::spawn(feed(Watched::Policies, Some(ns)).run(policies, handler));
            }
        }
    }
    tokio::spawn(feed(Watched::Sessions, None).run(sessions, session_handler()));
    tokio::spawn(feed(Watched::Hosts, None).run(hosts, host_handler()));
    tokio::spawn(feed(Watched::Namespaces, None).run(namespaces, namespace_handler()));
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
