//! The policy watch: every `AccessPolicy` of the installation's namespaces ([`Namespaces`]),
//! merged into the fleet state (epochs only go up per object; a deleted object never comes
//! back). The fallback's relist also removes what it lacks; the always-on revocation watch's
//! does not ([`Relists`]).

use super::Listed;
use crate::{shutdown::Signal, state::merger::Shared};
use kube::{Api, runtime::watcher};
use portcullis_crds::AccessPolicy;
use portcullis_protocol::Applied;
use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

/// The namespaces whose policies this gateway takes: its installation's (the operator's
/// `--watch-namespaces`), or every namespace. Watched cluster-wide and filtered here, so one
/// watch serves any list and the gateway's RBAC does not depend on it; what is filtered out
/// never reaches the state, so a relist cannot remove what it never listed.
#[derive(Clone, Debug, Default)]
pub struct Namespaces(Option<Arc<BTreeSet<String>>>);

impl Namespaces {
    /// The non-empty names of `names`; none: every namespace.
    pub fn new(names: &[String]) -> Self {
        let set: BTreeSet<String> = names
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        Self((!set.is_empty()).then(|| Arc::new(set)))
    }

    /// Whether `policy` is one of this installation's.
    fn admits(&self, policy: &AccessPolicy) -> bool {
        match (&self.0, policy.metadata.namespace.as_deref()) {
            (None, _) => true,
            (Some(set), Some(ns)) => set.contains(ns),
            (Some(_), None) => false,
        }
    }
}

/// What a complete list does beyond merging what it lists.
pub(super) enum Relists {
    /// The fallback, the state's only source meanwhile: a list removes the policies it lacks,
    /// and marks the policies listed.
    RemoveMissing(Arc<Listed>),
    /// The always-on revocation watch, beside the stream: a list removes nothing (a lagging
    /// server's list may lack a policy the stream just brought).
    Keep,
}

/// Follows every policy of `namespaces` into `shared` until shutdown (or the watch ends).
pub(super) async fn follow(
    api: Api<AccessPolicy>,
    config: watcher::Config,
    (shared, namespaces): (Shared, Namespaces),
    relists: Relists,
    mut shutdown: Signal,
) {
    let mut watch = crate::state::Watch::new(api, config, "policies");
    let mut relist: Option<HashSet<(String, String)>> = None;
    while let Some(event) = watch.next(&mut shutdown).await {
        if let watcher::Event::InitApply(policy)
        | watcher::Event::Apply(policy)
        | watcher::Event::Delete(policy) = &event
            && !namespaces.admits(policy)
        {
            continue;
        }
        let now = crate::clock::now();
        let mut merger = shared.lock();
        let fleet = merger.fleet_mut();
        let applied = match event {
            watcher::Event::Init => {
                relist = Some(HashSet::new());
                Applied::Unchanged
            }
            watcher::Event::InitApply(policy) => {
                if let (Some(keys), Some(ns), Some(name)) = (
                    relist.as_mut(),
                    policy.metadata.namespace.clone(),
                    policy.metadata.name.clone(),
                ) {
                    keys.insert((ns, name));
                }
                // Published with the whole list.
                fleet.observe_policy(&policy, now);
                continue;
            }
            watcher::Event::InitDone => {
                let keys = relist.take().unwrap_or_default();
                if let Relists::RemoveMissing(listed) = &relists {
                    fleet.policies_listed(&keys);
                    listed.set(Listed::POLICIES);
                }
                Applied::Policies
            }
            watcher::Event::Apply(policy) => fleet.observe_policy(&policy, now),
            watcher::Event::Delete(policy) => match (
                policy.metadata.namespace.as_deref(),
                policy.metadata.name.as_deref(),
                policy.metadata.uid.as_deref(),
            ) {
                (Some(ns), Some(name), Some(uid)) => fleet.policy_deleted(ns, name, uid),
                _ => Applied::Unchanged,
            },
        };
        merger.publish(applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(namespace: Option<&str>) -> AccessPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "apps", "namespace": namespace},
            "spec": {"hosts": ["app.example.com"], "rules": []}
        }))
        .expect("a policy")
    }

    #[test]
    fn only_the_installations_namespaces_are_taken() {
        let scoped = Namespaces::new(&[" team-a".into(), String::new(), "team-b".into()]);
        assert!(scoped.admits(&policy(Some("team-a"))));
        assert!(scoped.admits(&policy(Some("team-b"))));
        assert!(!scoped.admits(&policy(Some("team-c"))));
        assert!(!scoped.admits(&policy(None)));
    }

    #[test]
    fn no_namespaces_means_every_namespace() {
        for every in [Namespaces::new(&[]), Namespaces::new(&[String::new()])] {
            assert!(every.admits(&policy(Some("team-c"))));
        }
    }
}
