//! Background confirmation of active sessions with their identity provider.
//!
//! Every gateway notes which sessions it serves (cheaply: a `try_lock`, never waiting on the
//! request path). A task wakes each second and, for each noted session whose provider's
//! `refreshInterval` has passed, asks for the session's refresh lease
//! ([`SessionRecorder::acquire_refresh`]). Exactly one gateway of the fleet gets it; that one
//! redeems the sealed refresh token at the provider and writes the outcome back:
//!
//! - confirmed: the rotated token is stored, `lastRefreshedAt` moves, and a changed email or
//!   group list is written to the session (security rule 15: identity is re-read on refresh);
//! - refused (`invalid_grant`, or a code listed in `refreshRejectionErrors`): the session is
//!   revoked, which every gateway enforces at once;
//! - transient (unreachable, 5xx): `failingSince` is set, the attempt retried after a pause, and
//!   meanwhile each policy's `refreshFailure` decides whether the session is still let in.
//!
//! Sessions nobody uses are not refreshed: they end by their idle timeout, and a user coming
//! back within it is confirmed again within a second of the first request.

use crate::{
    idp::{Providers, RefreshError},
    metrics::Metrics,
    sessions::{Lease, RefreshOutcome, SessionRecorder, seal::KeyRing},
    shutdown::Signal,
};
use futures::StreamExt as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::{info, warn};

/// How long a refresh lease is held. The provider call gets the lease minus [`WRITE_BACK`]
/// (its HTTP client gives up after 10 s per call anyway), and the whole attempt is cut off at
/// the lease's end, so no gateway acts on a lease that may have passed to another.
const LEASE: Duration = Duration::from_secs(90);
/// The share of a lease kept for writing the outcome back.
const WRITE_BACK: Duration = Duration::from_secs(30);
/// Pause after a transient failure before the next attempt (capped by the provider's interval).
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
    key: Arc<KeyRing>,
    providers: Providers,
    holder: String,
    metrics: Metrics,
    active: Mutex<HashMap<String, Active>>,
}

impl Refresher {
    pub fn new(
        recorder: SessionRecorder,
        key: Arc<KeyRing>,
        providers: Providers,
        holder: String,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            recorder,
            key,
            providers,
            holder,
            metrics,
            active: Mutex::new(HashMap::new()),
        })
    }

    /// The keys refresh tokens are sealed with.
    pub fn key(&self) -> &KeyRing {
        &self.key
    }

    /// Notes that session `sid` (logged in through `idp`) was used at `now`. Never blocks: if
    /// the table is busy this request is simply not counted (the next one will be).
    pub fn touch(&self, sid: &str, idp: &str, now: u64) {
        let Ok(mut active) = self.active.try_lock() else {
            return;
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
                        // longer than a lease.
                        let next = tokio::time::timeout(LEASE, this.refresh_one(&sid, &idp))
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

    /// Sessions to look at now; forgets the ones idle for longer than their provider's
    /// interval (nobody is using them, so nobody needs them confirmed).
    fn due(&self, now: u64) -> Vec<(String, String)> {
        let Ok(mut active) = self.active.lock() else {
            return Vec::new();
        };
        active.retain(|_, a| {
            let interval = self.interval(&a.idp).unwrap_or_default().as_secs();
            interval > 0 && a.last_seen + interval.max(60) >= now
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
        let lease = match self
            .recorder
            .acquire_refresh(sid, &self.holder, interval, LEASE)
            .await
        {
            Ok(lease) => lease,
            Err(error) => {
                warn!(%error, sid, "cannot read the session for its refresh; retrying");
                return Some(crate::clock::now() + 5);
            }
        };
        let (held, sealed, subject, email, groups, failing_since) = match lease {
            Lease::Acquired {
                held,
                sealed_token,
                subject,
                email,
                groups,
                failing_since,
                ..
            } => (held, sealed_token, subject, email, groups, failing_since),
            Lease::NotDue { at } => return Some(at.max(crate::clock::now() + 1)),
            Lease::Ended | Lease::NoToken => return None,
        };
        // The provider gets what is left of the lease after the write-back's share.
        let budget = Duration::from_secs(held.until.saturating_sub(crate::clock::now()))
            .saturating_sub(WRITE_BACK);
        let redeemed = tokio::time::timeout(
            budget,
            self.redeem(sid, idp, &sealed, &subject, (&email, &groups)),
        )
        .await
        .unwrap_or_else(|_| {
            Err((
                RefreshError::Transient("the provider took too long".into()),
                None,
            ))
        });
        let now = crate::clock::now();
        let outcome = match redeemed {
            Ok(outcome) => outcome,
            Err((error, rotated)) => {
                let retry = RETRY.min(interval).as_secs();
                warn!(%error, sid, idp, "refresh failed; the policy's refreshFailure applies");
                RefreshOutcome::Failed {
                    error: error.to_string(),
                    since: failing_since.unwrap_or(now),
                    retry_at: now + retry,
                    sealed_token: rotated,
                }
            }
        };
        if let RefreshOutcome::Rejected { reason } = &outcome {
            info!(sid, idp, reason, "the identity provider ended the session");
        }
        match self
            .recorder
            .finish_refresh(sid, &self.holder, &held, &outcome)
            .await
        {
            Ok(()) => match &outcome {
                RefreshOutcome::Confirmed { .. } => {
                    self.metrics.session_confirmation(idp, "confirmed");
                    Some(now + interval.as_secs())
                }
                RefreshOutcome::Rejected { .. } => {
                    self.metrics.session_confirmation(idp, "rejected");
                    None
                }
                RefreshOutcome::Failed { retry_at, .. } => {
                    self.metrics.session_confirmation(idp, "failed");
                    Some(*retry_at)
                }
                RefreshOutcome::Deferred { reason } => {
                    self.metrics.session_confirmation(idp, "deferred");
                    warn!(
                        sid,
                        idp, reason, "left to a replica that has the session key"
                    );
                    Some(now + RETRY.min(interval).as_secs())
                }
            },
            Err(error) => {
                // Keep tracking it: a refusal not yet recorded is recorded at the next try.
                self.metrics.session_confirmation(idp, "unrecorded");
                warn!(%error, sid, "could not record the refresh outcome");
                Some(now + 5)
            }
        }
    }

    /// Redeems the session's refresh token. An error carries the rotated token, sealed, when
    /// the provider issued one before the failure.
    async fn redeem(
        &self,
        sid: &str,
        idp: &str,
        sealed: &str,
        subject: &str,
        (email, groups): (&Option<String>, &Vec<String>),
    ) -> Result<RefreshOutcome, (RefreshError, Option<String>)> {
        let provider = self
            .providers
            .get(idp)
            .map_err(|e| (RefreshError::Transient(e.to_string()), None))?;
        // A token that does not open (tampering) cannot be redeemed by anyone: the session can
        // never be confirmed again.
        let token = match self.key.open(sid, sealed) {
            Ok(token) => token,
            // Sealed by a replica with another key (mid-rotation): not this gateway's to judge,
            // and no failure either (a FailClosed policy would refuse the session everywhere).
            Err(error @ crate::sessions::seal::SealError::UnknownKey(_)) => {
                return Ok(RefreshOutcome::Deferred {
                    reason: error.to_string(),
                });
            }
            Err(error) => {
                return Ok(RefreshOutcome::Rejected {
                    reason: error.to_string(),
                });
            }
        };
        let refreshed = match provider.refresh(&token, subject, crate::clock::now()).await {
            Ok(refreshed) => refreshed,
            Err(RefreshError::Rejected(code)) => {
                return Ok(RefreshOutcome::Rejected { reason: code });
            }
            Err(error) => return Err((error, None)),
        };
        // A rotated token is sealed and stored; so is an unchanged one still sealed with a
        // previous key, so that the previous key can be retired after one refresh interval.
        let to_store = match &refreshed.refresh_token {
            Some(new) if new != &token => Some(new.as_str()),
            _ if self.key.is_stale(sealed) => Some(token.as_str()),
            _ => None,
        };
        let sealed_token = match to_store.map(|t| self.key.seal(sid, t)) {
            Some(Ok(sealed)) => Some(sealed),
            Some(Err(error)) => return Err((RefreshError::Transient(error.to_string()), None)),
            None => None,
        };
        match refreshed.identity {
            Ok(identity) => Ok(RefreshOutcome::Confirmed {
                sealed_token,
                identity: identity
                    .filter(|i| (&i.email, &i.groups) != (email, groups))
                    .map(|i| (i.email, i.groups)),
            }),
            Err(RefreshError::Rejected(reason)) => Ok(RefreshOutcome::Rejected { reason }),
            Err(error) => Err((error, sealed_token)),
        }
    }
}
