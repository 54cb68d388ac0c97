//! Secrets in the index: only the service-token keys of every Secret the operator may read are
//! held, and exactly the ones some streamed policy references (and that exist) are streamed.
//!
//! Which Secrets the operator may read is [`SecretScope`]: every namespace, or the namespaces it
//! was given (`--secret-namespaces`); a namespace whose Secrets the API server refuses to list
//! (RBAC) is recorded as such, so the policies there say why their service tokens are missing
//! instead of the operator retrying in silence.

use super::{Index, Key};
use portcullis_protocol::{Frame, SecretEntry};
use std::collections::{BTreeMap, BTreeSet};

/// Which namespaces' Secrets the operator reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretScope {
    /// `None`: every namespace; else only these.
    pub namespaces: Option<BTreeSet<String>>,
    /// Watches the API server refused (403), by namespace (`None`: the cluster-wide one).
    pub forbidden: BTreeSet<Option<String>>,
}

/// Why the Secrets of a namespace cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// The namespace is not among `--secret-namespaces`.
    NotWatched,
    /// The API server refuses the operator's list (RBAC).
    Forbidden,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unreadable::NotWatched => {
                "the namespace is not among its secret namespaces (chart value operator.secretNamespaces)"
            }
            Unreadable::Forbidden => {
                "the API server refuses it (RBAC); grant it with operator.secretNamespaces"
            }
        })
    }
}

impl SecretScope {
    /// Why the Secrets of `namespace` cannot be read, if they cannot.
    pub fn unreadable(&self, namespace: &str) -> Option<Unreadable> {
        match &self.namespaces {
            Some(names) if !names.contains(namespace) => Some(Unreadable::NotWatched),
            Some(_) if self.forbidden.contains(&Some(namespace.to_owned())) => {
                Some(Unreadable::Forbidden)
            }
            None if self.forbidden.contains(&None) => Some(Unreadable::Forbidden),
            _ => None,
        }
    }
}

impl Index {
    /// Reads Secrets only in `namespaces` (`None`: every namespace).
    pub fn with_secret_namespaces(mut self, namespaces: Option<BTreeSet<String>>) -> Self {
        self.secret_scope.namespaces = namespaces;
        self
    }

    pub fn secret_scope(&self) -> &SecretScope {
        &self.secret_scope
    }

    /// The API server refused (or, after a refusal, allowed) the Secret watch of `namespace`
    /// (`None`: the cluster-wide one).
    pub fn set_secrets_forbidden(&mut self, namespace: Option<&str>, forbidden: bool) {
        let key = namespace.map(str::to_owned);
        if forbidden {
            self.secret_scope.forbidden.insert(key);
        } else {
            self.secret_scope.forbidden.remove(&key);
        }
    }

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

    /// After a relist: `secrets` is every Secret that exists; the known ones it lacks
    /// (`vanished`, from [`portcullis_runtime::Relist`]) are forgotten.
    pub fn reset_secrets(
        &mut self,
        secrets: Vec<(Key, BTreeMap<String, String>)>,
        vanished: &[Key],
    ) {
        for key in vanished {
            self.secrets.remove(key);
        }
        for ((namespace, name), data) in secrets {
            self.apply_secret(&namespace, &name, data);
        }
        self.sync_secrets();
    }

    /// The (namespace, name) of every Secret the index holds (what a relist compares against).
    pub fn secret_ids(&self) -> impl Iterator<Item = &Key> {
        self.secrets.keys()
    }

    /// Secrets some streamed policy references, as (namespace, name).
    fn referenced(&self) -> BTreeSet<Key> {
        self.streamed_policies()
            .flat_map(|p| {
                p.spec
                    .service_tokens
                    .iter()
                    .map(|t| (p.namespace.clone(), t.secret_name.clone()))
            })
            .collect()
    }

    /// Streams exactly the referenced Secrets that exist.
    pub(super) fn sync_secrets(&mut self) {
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

    pub(super) fn secret_entry(&self, key: &Key) -> Option<SecretEntry> {
        Some(SecretEntry {
            namespace: key.0.clone(),
            name: key.1.clone(),
            data: self.secrets.get(key)?.clone(),
        })
    }

    /// Key names of every known Secret (only the service-token keys are kept), for validation.
    pub fn secret_keys(&self) -> BTreeMap<Key, BTreeSet<String>> {
        self.secrets
            .iter()
            .map(|(k, data)| (k.clone(), data.keys().cloned().collect()))
            .collect()
    }
}
