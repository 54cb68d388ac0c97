//! Background confirmation of active sessions with their identity provider.
//!
//! Every gateway notes which sessions it serves (cheaply: a `try_lock`, never waiting on the
//! request path). A task wakes each second and, for each noted session whose provider's
//! `refreshInterval` has passed, asks for the session's refresh claim
//! ([`SessionRecorder::acquire_refresh`]). Exactly one gateway of the fleet gets it; that one
//! redeems the sealed refresh token at the provider and writes the outcome back:
//!
//! - confirmed: the rotated token is stored, `lastRefreshedAt` moves, and a changed email or
//!   group list is written to the session (identity is re-read at every refresh, not only at
//!   login, so a removed group or a changed email reaches the request path);
//! - refused (`invalid_grant`, or a code listed in `refreshRejectionErrors`): the session is
//!   revoked, which every gateway enforces at once;
//! - transient (unreachable, 5xx): `failingSince` is set, the attempt retried after a pause, and
//!   meanwhile each policy's `refreshFailure` decides whether the session is still let in.
//!
//! Sessions nobody uses are not refreshed: they end by their idle timeout, and a user coming
//! back within it is confirmed again within a second of the first request.

mod redeem;

use super::{
    claim::{Claimed, RefreshClaim, RefreshOutcome},
    record::SessionRecorder,
    seal::KeyRing,
};
use crate::{
    audit,
    idp::Providers,
    metrics::{Confirmation, Metrics},
    shutdown::Signal,
};
use futures::StreamExt as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;
use tracing::warn;

/// The session keys of a refresher: a fixed ring, or a channel the reloader publishes new rings
/// on.
pub struct KeyRingSource(watch::Receiver<Arc<KeyRing>>);

impl From<Arc<KeyRing>> for KeyRingSource {
    fn from(ring: Arc<KeyRing>) -> Self {
        // The sender is dropped: the ring stays readable and never changes.
        Self(watch::channel(ring).1)
    }
}

impl From<watch::Receiver<Arc<KeyRing>>> for KeyRingSource {
    fn from(receiver: watch::Receiver<Arc<KeyRing>>) -> Self {
        Self(receiver)
    }
}

/// How long a refresh claim is held. The provider call gets the claim minus [`WRITE_BACK`]
/// (its HTTP client gives up after 10 s per call anyway), and the whole attempt is cut off at
/// the claim's end, so no gateway acts on a claim that may have passed to another.
const CLAIM: Duration = Duration::from_secs(90);
/// The share of a claim kept for writing the outcome back.
const WRITE_BACK: Duration = Duration::from_secs(30);
/// Pause after a transient failure or a deferral before the next attempt (capped by the
/// provider's interval, see [`retry_delay`]).
const RETRY: Duration = Duration::from_secs(15);
/// Refreshes run concurrently per tick.
const CONCURRENCY: usize = 8;

/// A session this gateway has served.
#[derive(Clone, Debug)]
struct Active {
    idp: String,
    last_seen: u64,
    /// Not before this time (unix seconds) is the session looked at again.
    next_check: u64,
}

/// The background refresher of one gateway.
pub struct Refresher {
    recorder: SessionRecorder,
    /// The session keys, replaced as a whole when their files change.
    key: watch::Receiver<Arc<KeyRing>>,
    providers: Providers,
    holder: String,
    metrics: Metrics,
    active: Mutex<HashMap<String, Active>>,
}

impl Refresher {
    pub fn new(
        recorder: SessionRecorder,
        key: impl Into<KeyRingSource>,
        providers: Providers,
        holder: String,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            recorder,
            key: key.into().0,
            providers,
            holder,
            metrics,
            active: Mutex::new(HashMap::new()),
        })
    }

    /// The keys refresh tokens are sealed with now. Read once per seal or open: a new token is
    /// sealed with the key that is current when it is sealed.
    pub fn key(&self) -> Arc<KeyRing> {
        self.key.borrow().clone()
    }

    /// Notes that session `sid` (logged in through `idp`) was used at `now`; whether it did.
    /// Never blocks: if the table is busy this request is simply not counted (the next one
    /// will be).
    pub fn touch(&self, sid: &str, idp: &str, now: u64) -> bool {
        let Ok(mut active) = self.active.try_lock() else {
            return false;
        };
        match active.get_mut(sid) {
            Some(entry) => entry.last_seen = now,
            None => {
                active.insert(
                    sid.to_owned(),
                    Active {
                        idp: idp.to_owned(),
                        last_seen: now,
                        next_check: now,
                    },
                );
            }
        }
        true
    }

    /// Number of sessions currently tracked (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.active.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Runs until `shutdown`. A refresh under way when the signal comes is finished (its
    /// outcome — perhaps a rotated token — written) before this returns; no new one starts.
    pub async fn run(self: Arc<Self>, mut shutdown: Signal) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.wait() => return,
            }
            let due = self.due(crate::clock::now());
            futures::stream::iter(due)
                .for_each_concurrent(CONCURRENCY, |(sid, idp)| {
                    let this = self.clone();
                    async move {
                        // Bounded: a hung API server or provider never stalls the others for
                        // longer than a claim.
                        let next = tokio::time::timeout(CLAIM, this.refresh_one(&sid, &idp))
                            .await
                            .unwrap_or_else(|_| {
                                warn!(sid, idp, "refresh timed out");
                                Some(crate::clock::now() + 5)
                            });
                        this.schedule(&sid, next);
                    }
                })
                .await;
        }
    }

    /// Sessions to look at now; forgets the ones not requested here for longer than
    /// [`still_served`] allows (nobody is using them, so nobody needs them confirmed).
    fn due(&self, now: u64) -> Vec<(String, String)> {
        let Ok(mut active) = self.active.lock() else {
            return Vec::new();
        };
        active.retain(|_, a| {
            let interval = self.interval(&a.idp).unwrap_or_default().as_secs();
            still_served(a.last_seen, interval, now)
        });
        active
            .iter()
            .filter(|(_, a)| a.next_check <= now)
            .map(|(sid, a)| (sid.clone(), a.idp.clone()))
            .collect()
    }

    fn schedule(&self, sid: &str, next: Option<u64>) {
        if let Ok(mut active) = self.active.lock() {
            match next {
                Some(at) => {
                    if let Some(a) = active.get_mut(sid) {
                        a.next_check = at;
                    }
                }
                None => {
                    active.remove(sid);
                }
            }
        }
    }

    fn interval(&self, idp: &str) -> Option<Duration> {
        self.providers
            .get(idp)
            .ok()
            .map(|p| p.config().refresh_interval)
    }

    /// One attempt; returns when to look at the session again, `None` to stop tracking it.
    async fn refresh_one(&self, sid: &str, idp: &str) -> Option<u64> {
        let interval = self.interval(idp).filter(|i| !i.is_zero())?;
        let claimed = match self.claim(sid, interval).await {
            Ok(claimed) => claimed,
            Err(next) => return next,
        };
        let redeemed = self.redeem_in_time(sid, idp, &claimed).await;
        let now = crate::clock::now();
        let outcome = redeemed.unwrap_or_else(|(error, rotated)| {
            audit::refresh_failed(sid, idp, &error.to_string());
            RefreshOutcome::Failed {
                error: error.to_string(),
                since: claimed.failing_since.unwrap_or(now),
                retry_at: now + retry_delay(interval),
                sealed_token: rotated,
            }
        });
        if let RefreshOutcome::Rejected { reason } = &outcome {
            audit::ended_by_provider(sid, idp, reason);
        }
        let (confirmation, next) = match self
            .recorder
            .finish_refresh(sid, &self.holder, &claimed.held, &outcome)
            .await
        {
            Ok(()) => written(sid, idp, &outcome, now, interval),
            Err(error) => {
                // Keep tracking it: a refusal not yet recorded is recorded at the next try.
                warn!(%error, sid, "could not record the refresh outcome");
                (Confirmation::Unrecorded, Some(now + 5))
            }
        };
        self.metrics.session_confirmation(idp, confirmation);
        next
    }

    /// Takes the session's refresh claim, or says when to look at it again (`None`: never).
    async fn claim(&self, sid: &str, interval: Duration) -> Result<Claimed, Option<u64>> {
        let claim = self
            .recorder
            .acquire_refresh(sid, &self.holder, interval, CLAIM)
            .await;
        match claim {
            Ok(RefreshClaim::Acquired(claimed)) => Ok(claimed),
            Ok(RefreshClaim::NotDue { at }) => Err(Some(at.max(crate::clock::now() + 1))),
            Ok(RefreshClaim::Ended | RefreshClaim::NoToken) => Err(None),
            Err(error) => {
                warn!(%error, sid, "cannot read the session for its refresh; retrying");
                Err(Some(crate::clock::now() + 5))
            }
        }
    }
}

/// How a written outcome is counted, and when to look at the session again (`None`: never).
fn written(
    sid: &str,
    idp: &str,
    outcome: &RefreshOutcome,
    now: u64,
    interval: Duration,
) -> (Confirmation, Option<u64>) {
    match outcome {
        RefreshOutcome::Confirmed { .. } => {
            (Confirmation::Confirmed, Some(now + interval.as_secs()))
        }
        RefreshOutcome::Rejected { .. } => (Confirmation::Rejected, None),
        RefreshOutcome::Failed { retry_at, .. } => (Confirmation::Failed, Some(*retry_at)),
        RefreshOutcome::Deferred { reason } => {
            warn!(
                sid,
                idp, reason, "left to a replica that has the session key"
            );
            (Confirmation::Deferred, Some(now + retry_delay(interval)))
        }
    }
}

/// The pause before the next attempt after a failure or a deferral: [`RETRY`], or the
/// provider's interval when that is shorter.
fn retry_delay(interval: Duration) -> u64 {
    RETRY.min(interval).as_secs()
}

/// Whether a session last requested here at `last_seen` is still this gateway's to confirm at
/// `now`: for one `interval`, at least a minute, after that request, and for the rest of the
/// reservation a confirmation leaves its gateway (the claim's first half, see
/// `claim::reserved_for`). A user whose requests alternate between gateways, one of them
/// before the last confirmation and the next after the following one came due, is then
/// confirmed again by the gateway holding the reservation, with one write; otherwise that
/// gateway would forget the session, and the other would wait the reservation out and write a
/// claim besides the outcome. The cost: a session idle everywhere may be confirmed up to
/// `interval` (at least a minute) plus half a claim after its last request, not `interval`,
/// and its idle deadline then counts from that confirmation.
fn still_served(last_seen: u64, interval: u64, now: u64) -> bool {
    interval > 0 && last_seen + interval.max(60) + CLAIM.as_secs() / 2 >= now
}

#[cfg(test)]
mod tests;
