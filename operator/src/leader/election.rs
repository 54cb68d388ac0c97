//! Leader election with a `coordination.k8s.io` Lease: every replica serves the stream, only the
//! holder writes (status, Events, session garbage collection). The holder publishes where peers
//! reach it (`--advertise-url`) in annotations on the Lease, in the same update that takes the
//! Lease, so a follower trusts the URL only while that identity still holds it.
//!
//! The election follows client-go's: every update is a `replace` with the `resourceVersion` that
//! was read (optimistic concurrency, so two replicas never both win); the holder renews every
//! [`RENEW_EVERY`] and stops writing if it could not renew for [`RENEW_DEADLINE`], well before
//! another replica may take over; a follower reads the Lease every [`RETRY_EVERY`] and takes it
//! when it is free, or when its record has not changed for its duration *as measured on the
//! follower's own clock* (clock skew between nodes cannot make it take a live lease). On shutdown
//! the holder releases the Lease (clears the holder), so a standby takes over within
//! [`RETRY_EVERY`] instead of after the lease duration.
//!
//! The election task is the replica's right to write: if it ends on its own, the process exits
//! (the caller selects on [`Election::ended`]) rather than carry on as a leader nobody renews.

use crate::metrics::Metrics;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use portcullis_runtime::error_chain;
use std::time::{Duration, Instant};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::record::{
    LEADER_IDENTITY_ANNOTATION, LEADER_URL_ANNOTATION, LEASE_DURATION, Record, Step, decide,
};

/// The holder renews this often.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A holder that has not renewed for this long stops writing: before any follower can have seen
/// the record unchanged for [`LEASE_DURATION`].
pub const RENEW_DEADLINE: Duration = Duration::from_secs(7);
/// A follower reads the Lease this often: how soon a released lease is taken.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A single API request of the election gives up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to hold the Lease and what to publish.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub advertise_url: Option<String>,
}

/// The running election.
pub struct Election {
    task: JoinHandle<()>,
    release: Option<oneshot::Sender<()>>,
}

impl Election {
    /// Resolves only if the election task ended on its own (the process must exit then).
    pub async fn ended(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Stops electing and, if this replica holds the Lease, releases it, within `limit`.
    /// Call it after everything that writes has stopped: a standby may write at once after.
    pub async fn release(mut self, limit: Duration) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            warn!("the Lease was not released in time; a standby takes over when it expires");
            self.task.abort();
        }
    }
}

/// Starts electing. The receiver says whether this replica may write now.
pub fn start(
    client: Client,
    config: LeaseConfig,
    metrics: Metrics,
) -> (watch::Receiver<bool>, Election) {
    let (leading_tx, leading) = watch::channel(false);
    let (release_tx, release_rx) = oneshot::channel();
    let elector = Elector {
        leases: Api::namespaced(client, &config.namespace),
        config,
        metrics,
        leading: leading_tx,
        held: None,
        renewed: None,
        observed: None,
    };
    let task = tokio::spawn(elector.run(release_rx));
    (
        leading,
        Election {
            task,
            release: Some(release_tx),
        },
    )
}

struct Elector {
    leases: Api<Lease>,
    config: LeaseConfig,
    metrics: Metrics,
    leading: watch::Sender<bool>,
    /// The Lease as this replica last wrote it while holding it (renewals start from it).
    held: Option<Lease>,
    /// When the last renewal that succeeded was sent.
    renewed: Option<Instant>,
    /// The record last read and when it was first seen.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    async fn run(mut self, mut release: oneshot::Receiver<()>) {
        loop {
            // A release request cuts a step short: an update it had sent is found by the
            // release, which reads the Lease again.
            tokio::select! {
                () = self.step() => {}
                _ = &mut release => break,
            }
            let pause = if *self.leading.borrow() {
                RENEW_EVERY
            } else {
                RETRY_EVERY
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = &mut release => break,
            }
        }
        self.set_leading(false);
        self.release().await;
    }

    async fn step(&mut self) {
        let started = Instant::now();
        // The holder renews from what it wrote last; anyone else reads first.
        let current = match self.held.clone() {
            Some(lease) => Some(lease),
            None => match self.read().await {
                Ok(lease) => lease,
                Err(()) => return self.check_deadline(started),
            },
        };
        let Some(lease) = current else {
            return self.create().await;
        };
        let record = Record::of(lease.spec.as_ref());
        let unchanged_since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => started,
        };
        self.observed = Some((record.clone(), unchanged_since));
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        let me = &self.config.identity;
        match decide(&record, me, unchanged_since, duration, started) {
            Step::Follow => {
                if *self.leading.borrow() {
                    warn!(holder = ?record.holder(), "another replica holds the Lease: no longer writing");
                }
                self.held = None;
                self.set_leading(false);
            }
            step @ (Step::Renew | Step::Acquire) => {
                let acquiring = step == Step::Acquire || !*self.leading.borrow();
                self.replace(lease, acquiring, started).await;
            }
        }
    }

    /// The Lease as the API server holds it now (`None`: it does not exist); `Err` when it
    /// could not be read (logged).
    async fn read(&self) -> Result<Option<Lease>, ()> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.leases.get_opt(&self.config.name)).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(error)) => {
                warn!(error = %error_chain(&error), "cannot read the Lease");
                Err(())
            }
            Err(_) => {
                warn!("reading the Lease timed out");
                Err(())
            }
        }
    }

    /// Renews or takes `lease` (read at `started`) with a `replace` at its resourceVersion.
    async fn replace(&mut self, lease: Lease, acquiring: bool, started: Instant) {
        let wanted = self.claim(lease, acquiring);
        let written = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.leases
                .replace(&self.config.name, &PostParams::default(), &wanted),
        )
        .await;
        match written {
            Ok(Ok(written)) => return self.hold(written, started),
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                // Someone wrote in between (maybe another replica took it): read again.
                debug!("the Lease changed while updating it");
            }
            Ok(Err(error)) => warn!(error = %error_chain(&error), "cannot update the Lease"),
            Err(_) => warn!("updating the Lease timed out"),
        }
        self.held = None;
        self.check_deadline(started);
    }

    /// The Lease with this replica as holder, renewed now; `acquiring` also sets the acquire
    /// time, counts a transition and publishes the advertise URL.
    fn claim(&self, mut lease: Lease, acquiring: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder_changed = spec.holder_identity.as_deref() != Some(self.config.identity.as_str());
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = i32::try_from(LEASE_DURATION.as_secs()).ok();
        spec.renew_time = Some(now.clone());
        if acquiring {
            spec.acquire_time = Some(now);
            if holder_changed {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            let annotations = lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(
                LEADER_IDENTITY_ANNOTATION.to_owned(),
                self.config.identity.clone(),
            );
            match &self.config.advertise_url {
                Some(url) => {
                    annotations.insert(LEADER_URL_ANNOTATION.to_owned(), url.clone());
                }
                None => {
                    warn!(
                        "no --advertise-url: followers cannot relay their gateways' acknowledgements"
                    );
                    annotations.remove(LEADER_URL_ANNOTATION);
                }
            }
        }
        lease
    }

    /// The Lease does not exist yet: create it held by this replica.
    async fn create(&mut self) {
        let started = Instant::now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let wanted = self.claim(lease, true);
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.leases.create(&PostParams::default(), &wanted),
        )
        .await
        {
            Ok(Ok(written)) => self.hold(written, started),
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                debug!("another replica created the Lease first");
            }
            Ok(Err(error)) => warn!(%error, "cannot create the Lease"),
            Err(_) => warn!("creating the Lease timed out"),
        }
    }

    fn hold(&mut self, written: Lease, sent: Instant) {
        if !*self.leading.borrow() {
            info!(identity = %self.config.identity, "leading: this replica writes status");
        }
        self.observed = Some((Record::of(written.spec.as_ref()), sent));
        self.held = Some(written);
        self.renewed = Some(sent);
        self.set_leading(true);
    }

    /// A holder that could not renew for [`RENEW_DEADLINE`] stops writing.
    fn check_deadline(&mut self, now: Instant) {
        if *self.leading.borrow()
            && self
                .renewed
                .is_none_or(|at| now.saturating_duration_since(at) >= RENEW_DEADLINE)
        {
            warn!(identity = %self.config.identity, "could not renew the Lease in time: no longer writing");
            self.set_leading(false);
        }
    }

    fn set_leading(&self, leading: bool) {
        self.metrics.leader(leading);
        self.leading.send_if_modified(|was| {
            let moved = *was != leading;
            *was = leading;
            moved
        });
    }

    /// Clears the holder if it is this replica, so a standby takes the Lease at once. Retries
    /// a conflicting update (a concurrent read-modify-write) until the caller's limit.
    async fn release(&mut self) {
        loop {
            let lease = match self.held.take() {
                Some(lease) => lease,
                None => match self.leases.get_opt(&self.config.name).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => return,
                    Err(error) => {
                        warn!(%error, "cannot read the Lease to release it");
                        return;
                    }
                },
            };
            if Record::of(lease.spec.as_ref()).holder() != Some(self.config.identity.as_str()) {
                return;
            }
            let mut released = lease;
            released.spec = Some(LeaseSpec {
                lease_transitions: released.spec.as_ref().and_then(|s| s.lease_transitions),
                ..LeaseSpec::default()
            });
            if let Some(annotations) = released.metadata.annotations.as_mut() {
                annotations.remove(LEADER_IDENTITY_ANNOTATION);
                annotations.remove(LEADER_URL_ANNOTATION);
            }
            match self
                .leases
                .replace(&self.config.name, &PostParams::default(), &released)
                .await
            {
                Ok(_) => {
                    info!(identity = %self.config.identity, "released the Lease");
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    debug!("the Lease changed while releasing it; reading it again");
                }
                Err(error) => {
                    warn!(%error, "cannot release the Lease; a standby takes over when it expires");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewing_stops_well_before_a_follower_may_take_over() {
        const { assert!(RENEW_EVERY.as_secs() * 3 <= RENEW_DEADLINE.as_secs()) };
        const { assert!(RENEW_DEADLINE.as_secs() + 3 <= LEASE_DURATION.as_secs()) };
    }
}
