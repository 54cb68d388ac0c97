//! How each watched kind feeds the index: its conversion, its key, and what a relist of its
//! scope resets.

use super::super::{Index, Key};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::DynamicObject;
use portcullis_core::policy::ServiceTokenRef;
use portcullis_crds::{AccessHost, AccessPolicy, AccessSession};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The only Secret keys the gateways use (service-token credentials); validation requires both.
const SERVICE_TOKEN_KEYS: [&str; 2] = ServiceTokenRef::SECRET_KEYS;

pub(super) fn host_handler() -> Handler<DynamicObject, AccessHost, String> {
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

pub(super) fn namespace_handler() -> Handler<Namespace, Namespace, String> {
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

/// The AccessPolicies of `namespace` (every namespace when `None`): a relist of one namespace
/// forgets only what vanished from it.
pub(super) fn policy_handler(
    namespace: Option<String>,
) -> Handler<DynamicObject, AccessPolicy, Key> {
    Handler {
        convert: typed,
        key: |p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)),
        known: Box::new(move |index: &Index| {
            index
                .policy_keys()
                .filter(|(ns, _)| namespace.as_ref().is_none_or(|n| n == ns))
                .cloned()
                .collect()
        }),
        apply: |index, p, now| index.apply_policy(p, now),
        delete: |index, p, _| {
            if let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) {
                index.delete_policy(ns, name);
            }
        },
        reset: |index, all, vanished, now| index.reset_policies(all, vanished, now),
    }
}

pub(super) fn session_handler() -> Handler<DynamicObject, AccessSession, String> {
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
pub(super) fn secret_handler(namespace: Option<String>) -> Handler<Secret, Secret, Key> {
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
pub(super) type Known<K> = Box<dyn Fn(&Index) -> Vec<K> + Send + Sync>;

/// How one kind feeds the index: `R` as watched, `T` as the index takes it, `K` its key.
pub(super) struct Handler<R, T, K> {
    pub(super) convert: fn(R) -> Result<T, String>,
    pub(super) key: fn(&T) -> Option<K>,
    /// The keys of this kind (in this watch's scope) the index holds.
    pub(super) known: Known<K>,
    pub(super) apply: fn(&mut Index, &T, u64),
    pub(super) delete: fn(&mut Index, &T, u64),
    /// Everything listed, and what vanished.
    pub(super) reset: fn(&mut Index, &[T], &[K], u64),
}
