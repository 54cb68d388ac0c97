//! The policy watch: every `AccessPolicy`, merged into the fleet state (epochs only go up per
//! object; a deleted object never comes back). The fallback's relist also removes what it
//! lacks; the always-on revocation watch's does not ([`Relists`]).

use super::Listed;
use crate::{shutdown::Signal, state::merger::Shared};
use kube::{Api, runtime::watcher};
use portcullis_crds::AccessPolicy;
use portcullis_protocol::Applied;
use std::{collections::HashSet, sync::Arc};

/// What a complete list does beyond merging what it lists.
pub(super) enum Relists {
    /// The fallback, the state's only source meanwhile: a list removes the policies it lacks,
    /// and marks the policies listed.
    RemoveMissing(Arc<Listed>),
    /// The always-on revocation watch, beside the stream: a list removes nothing (a lagging
    /// server's list may lack a policy the stream just brought).
    Keep,
}

/// Follows every policy into `shared` until shutdown (or the watch ends).
pub(super) async fn follow(
    api: Api<AccessPolicy>,
    config: watcher::Config,
    shared: Shared,
    relists: Relists,
    mut shutdown: Signal,
) {
    let mut watch = crate::state::Watch::new(api, config, "policies");
    let mut relist: Option<HashSet<(String, String)>> = None;
    while let Some(event) = watch.next(&mut shutdown).await {
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
