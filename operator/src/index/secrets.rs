//! Secrets in the index: only the service-token keys of every Secret are held, and exactly the
//! ones some policy references (and that exist) are streamed.

use super::{Index, Key};
use portcullis_protocol::{Frame, SecretEntry};
use std::collections::{BTreeMap, BTreeSet};

impl Index {
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
