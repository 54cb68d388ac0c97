//! Host ownership in the index: the `AccessHost` grants and the namespace labels their
//! selectors read. Every change is judged again by the one rule
//! ([`portcullis_core::tenancy::Ownership`]) and what the gateways hold follows
//! ([`Index::sync_ownership`]).

use super::{Index, Key};
use portcullis_core::tenancy::{Claim, HostGrant, Labels, Ownership, Refusal};
use portcullis_crds::AccessHost;
use std::collections::BTreeMap;

impl Index {
    pub fn apply_host(&mut self, host: &AccessHost) {
        let Some(name) = host.metadata.name.clone() else {
            return;
        };
        let grant = HostGrant::from(host);
        if self.host_grants.get(&name) != Some(&grant) {
            self.host_grants.insert(name, grant);
            self.sync_ownership();
        }
    }

    pub fn delete_host(&mut self, name: &str) {
        if self.host_grants.remove(name).is_some() {
            self.sync_ownership();
        }
    }

    /// After a relist: `hosts` is every AccessHost that exists.
    pub fn reset_hosts(&mut self, hosts: &[AccessHost]) {
        let grants: BTreeMap<String, HostGrant> = hosts
            .iter()
            .filter_map(|h| Some((h.metadata.name.clone()?, HostGrant::from(h))))
            .collect();
        if grants != self.host_grants {
            self.host_grants = grants;
            self.sync_ownership();
        }
    }

    /// The names of every AccessHost the index holds.
    pub fn host_names(&self) -> impl Iterator<Item = &String> {
        self.host_grants.keys()
    }

    pub fn apply_namespace(&mut self, name: &str, labels: Labels) {
        if self.namespace_labels.get(name) != Some(&labels) {
            self.namespace_labels.insert(name.to_owned(), labels);
            self.sync_ownership_if_selected();
        }
    }

    pub fn delete_namespace(&mut self, name: &str) {
        if self.namespace_labels.remove(name).is_some() {
            self.sync_ownership_if_selected();
        }
    }

    /// After a relist: `namespaces` is the labels of every namespace that exists.
    pub fn reset_namespaces(&mut self, namespaces: BTreeMap<String, Labels>) {
        if namespaces != self.namespace_labels {
            self.namespace_labels = namespaces;
            self.sync_ownership_if_selected();
        }
    }

    /// The names of every namespace the index holds.
    pub fn namespace_names(&self) -> impl Iterator<Item = &String> {
        self.namespace_labels.keys()
    }

    /// The policies that may not claim their hosts, and why.
    pub fn host_refusals(&self) -> &BTreeMap<Key, Refusal> {
        &self.refused
    }

    /// Namespace labels matter only to selector grants.
    fn sync_ownership_if_selected(&mut self) {
        use portcullis_core::tenancy::Admits;
        if self
            .host_grants
            .values()
            .any(|g| matches!(g.admits, Admits::Selector(_)))
        {
            self.sync_ownership();
        }
    }

    /// The refused claims among every policy held.
    pub(super) fn judge_claims(&self) -> BTreeMap<Key, Refusal> {
        let claims: Vec<Claim> = self.policies.values().map(|s| s.claim.clone()).collect();
        let grants: Vec<HostGrant> = self.host_grants.values().cloned().collect();
        let labels = |ns: &str| self.namespace_labels.get(ns);
        Ownership {
            grants: &grants,
            labels: &labels,
            unclaimed: self.unclaimed,
        }
        .refusals(&claims)
        .into_iter()
        .map(|(id, refusal)| ((id.namespace, id.name), refusal))
        .collect()
    }
}
