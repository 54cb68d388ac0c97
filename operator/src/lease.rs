//! Leader election with a `coordination.k8s.io` Lease: every replica serves the stream, only the
//! holder writes (status, Events, session garbage collection). The holder publishes where peers
//! reach it (`--advertise-url`) in annotations on the Lease, next to its identity, so a follower
//! trusts the URL only while that identity still holds the Lease.
//!
//! The lease task is the replica's right to write: if it ends, the process exits (the caller
//! selects on the returned handle) rather than carry on as a leader nobody renews.

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// Annotation naming the holder that published [`LEADER_URL_ANNOTATION`].
pub const LEADER_IDENTITY_ANNOTATION: &str = "access.portcullis.dev/leader-identity";
/// Annotation with the holder's `--advertise-url`.
pub const LEADER_URL_ANNOTATION: &str = "access.portcullis.dev/leader-url";
/// Field manager of the operator's own writes.
pub const FIELD_MANAGER: &str = "portcullis-operator";
/// How long a lease is valid without renewal: a killed leader is replaced within about this.
pub const LEASE_DURATION_SECS: u64 = 10;
/// The holder renews this long before expiry (also the tolerated clock skew).
pub const LEASE_GRACE_SECS: u64 = 3;

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot set up the Lease: {0}")]
    Manager(#[from] LeaseManagerError),
}

/// Where to hold the Lease and what to publish.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub advertise_url: Option<String>,
}

/// Starts electing. The receiver says whether this replica leads now; the handle ends only if
/// the election itself ended (the process must exit then).
pub async fn start(
    client: Client,
    config: LeaseConfig,
    metrics: crate::metrics::Metrics,
) -> Result<(watch::Receiver<bool>, JoinHandle<()>), LeaseError> {
    let manager = LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(LEASE_GRACE_SECS)
        .build()
        .await?;
    let (mut elected, election) = manager.watch().await;
    let (leading_tx, leading) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let task = tokio::spawn(async move {
        let mut election = election;
        loop {
            let is_leader = *elected.borrow_and_update();
            metrics.leader(is_leader);
            let was_leader = leading_tx.send_replace(is_leader);
            if is_leader && !was_leader {
                info!(identity = %config.identity, "leading: this replica writes status");
                publish(&leases, &config).await;
            } else if was_leader && !is_leader {
                warn!(identity = %config.identity, "lost the lease: no longer writing");
            }
            tokio::select! {
                changed = elected.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                ended = &mut election => {
                    match ended {
                        Ok(Ok(_)) => warn!("lease election ended"),
                        Ok(Err(error)) => warn!(%error, "lease election failed"),
                        Err(error) => warn!(%error, "lease election task died"),
                    }
                    break;
                }
                // Nobody follows leadership any more: shutting down.
                () = leading_tx.closed() => {
                    drop(elected);
                    // Dropping the receiver makes the manager release the Lease.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), election).await;
                    return;
                }
            }
        }
        metrics.leader(false);
        leading_tx.send_replace(false);
    });
    Ok((leading, task))
}

/// Writes this replica's identity and URL onto the Lease, retrying until it lands or the
/// replica stops leading (the URL is what followers relay to).
async fn publish(leases: &Api<Lease>, config: &LeaseConfig) {
    let Some(url) = &config.advertise_url else {
        warn!("no --advertise-url: followers cannot relay their gateways' acknowledgements");
        return;
    };
    let patch = serde_json::json!({"metadata": {"annotations": {
        LEADER_IDENTITY_ANNOTATION: config.identity,
        LEADER_URL_ANNOTATION: url,
    }}});
    for attempt in 0..10u32 {
        match leases
            .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(error) => {
                warn!(%error, attempt, "cannot publish the leader URL on the Lease; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(
                    200 * (1 << attempt.min(4)),
                ))
                .await;
            }
        }
    }
}

/// The leader's URL if another replica holds the Lease and published it.
pub async fn leader_url(
    leases: &Api<Lease>,
    name: &str,
    me: &str,
) -> Result<Option<String>, kube::Error> {
    let Some(lease) = leases.get_opt(name).await? else {
        return Ok(None);
    };
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let annotations = lease.metadata.annotations.unwrap_or_default();
    let published = annotations.get(LEADER_IDENTITY_ANNOTATION);
    Ok(match (holder, published) {
        (Some(holder), Some(published)) if holder == *published && holder != me => {
            annotations.get(LEADER_URL_ANNOTATION).cloned()
        }
        _ => None,
    })
}
