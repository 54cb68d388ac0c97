//! The watches feeding the index: AccessPolicies in every namespace, the AccessSessions of the
//! session namespace, and Secrets (only their service-token keys are kept).
//!
//! Defensive: objects are watched untyped and converted one by one, so a malformed object is
//! logged and skipped instead of failing the list; a relist (`Init` … `InitDone`) is applied as
//! a reset, removing (or ending) whatever vanished meanwhile.

use crate::{
    index::Index,
    shared::{Shared, Watched, now},
    shutdown::Signal,
};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt as _, watcher},
};
use portcullis_crds::{AccessPolicy, AccessSession};
use serde::de::DeserializeOwned;
use std::{collections::BTreeMap, sync::Arc};
use tracing::{info, warn};

/// The only Secret keys the gateways use (service-token credentials).
const SECRET_KEYS: [&str; 2] = ["client-id", "client-secret"];

/// Starts every watch.
pub fn spawn_all(client: Client, session_namespace: &str, shared: Arc<Shared>, shutdown: Signal) {
    let policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<AccessPolicy>(&()));
    let sessions: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        session_namespace,
        &ApiResource::erase::<AccessSession>(&()),
    );
    let secrets: Api<Secret> = Api::all(client);
    tokio::spawn(run(
        policies,
        shared.clone(),
        shutdown.clone(),
        Watched::Policies,
        Handler::<_, AccessPolicy> {
            convert: typed,
            apply: |index, p, now| index.apply_policy(p, now),
            delete: |index, p, _| {
                if let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) {
                    index.delete_policy(ns, name);
                }
            },
            reset: |index, all, now| index.reset_policies(all, now),
        },
    ));
    tokio::spawn(run(
        sessions,
        shared.clone(),
        shutdown.clone(),
        Watched::Sessions,
        Handler::<_, AccessSession> {
            convert: typed,
            apply: |index, s, now| index.apply_session(s, now),
            delete: |index, s, now| {
                if let Some(name) = &s.metadata.name {
                    index.delete_session(name, now);
                }
            },
            reset: |index, all, now| index.reset_sessions(all, now),
        },
    ));
    tokio::spawn(run(
        secrets,
        shared,
        shutdown,
        Watched::Secrets,
        Handler::<_, Secret> {
            convert: |s: Secret| Ok(s),
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
            reset: |index, all, _| {
                index.reset_secrets(
                    all.iter()
                        .filter_map(secret_parts)
                        .map(|(ns, n, d)| ((ns, n), d))
                        .collect(),
                )
            },
        },
    ));
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
        .filter(|(k, _)| SECRET_KEYS.contains(&k.as_str()))
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

/// How one kind feeds the index: `R` as watched, `T` as the index takes it.
struct Handler<R, T> {
    convert: fn(R) -> Result<T, String>,
    apply: fn(&mut Index, &T, u64),
    delete: fn(&mut Index, &T, u64),
    reset: fn(&mut Index, &[T], u64),
}

/// Follows one watch until shutdown.
async fn run<R, T>(
    api: Api<R>,
    shared: Arc<Shared>,
    mut shutdown: Signal,
    what: Watched,
    handler: Handler<R, T>,
) where
    R: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let kind = match what {
        Watched::Policies => "AccessPolicy",
        Watched::Secrets => "Secret",
        Watched::Sessions => "AccessSession",
    };
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<Vec<T>> = None;
    let convert = |raw: R| match (handler.convert)(raw) {
        Ok(object) => Some(object),
        Err(error) => {
            shared.metrics.skipped(kind);
            warn!(kind, %error, "skipping a malformed object");
            None
        }
    };
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = shutdown.wait() => return,
        };
        let now = now();
        match event {
            None => return,
            Some(Err(error)) => warn!(kind, %error, "watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => relist = Some(Vec::new()),
            Some(Ok(watcher::Event::InitApply(raw))) => {
                if let (Some(list), Some(object)) = (relist.as_mut(), convert(raw)) {
                    list.push(object);
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let all = relist.take().unwrap_or_default();
                shared.update(|index| (handler.reset)(index, &all, now));
                shared.mark_synced(what);
                info!(kind, objects = all.len(), "listed");
            }
            Some(Ok(watcher::Event::Apply(raw))) => {
                if let Some(object) = convert(raw) {
                    shared.update(|index| (handler.apply)(index, &object, now));
                }
            }
            Some(Ok(watcher::Event::Delete(raw))) => {
                if let Some(object) = convert(raw) {
                    shared.update(|index| (handler.delete)(index, &object, now));
                }
            }
        }
    }
}
