//! The refresh claim: the single-flight right of one gateway to redeem a session's refresh
//! token. Identity providers rotate refresh tokens, so two gateways redeeming the same one
//! would get the session revoked.
//!
//! A claim is a write of `status.refresh.holder` and `status.refresh.leaseUntil` (the CRD's
//! names: the claim runs until `leaseUntil`) conditioned on the resourceVersion just read: of two
//! gateways racing, exactly one write succeeds. It is not the operator's leader-election `Lease`
//! object, which has nothing to do with sessions.
//!
//! One write per confirmation: the write of a confirmed outcome also claims the next round for
//! the same gateway (`leaseUntil` one interval plus one claim ahead), so while that gateway
//! keeps serving the session it redeems the token at the next due time without writing a claim
//! first, and the others see the session as not due. Two writes per confirmation (a claim, then
//! the outcome) made the API server's write load twice the confirmation rate; see
//! `docs/scale.md`. If the holder stops serving the session or dies, another gateway claims it
//! once the reservation runs out: one claim's length after the due time.

use super::{
    record::{BACKOFF, RecordError, SessionRecorder, retry, truncate},
    store::{Clear, SessionPatch, StoreError, time, unix},
};
use portcullis_crds::{AccessSession, session::RefreshStatus};
use std::{ops::ControlFlow, time::Duration};
use tracing::warn;

/// A refresh claim this gateway holds: until when, and the object's resourceVersion after the
/// claim was written (the outcome is written conditioned on it).
#[derive(Clone, Debug)]
pub struct HeldClaim {
    pub until: u64,
    resource_version: Option<String>,
    /// How far past a confirmation the holder reserves the next round: the interval plus
    /// one claim.
    reserve: Duration,
}

/// A refresh claim this gateway holds, with what redeeming the session's token needs.
#[derive(Debug)]
pub struct Claimed {
    pub held: HeldClaim,
    pub sealed_token: String,
    pub subject: String,
    pub identity_provider: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// Set while the provider was failing, kept until a success.
    pub failing_since: Option<u64>,
}

/// The answer to asking for the refresh claim of a session.
#[derive(Debug)]
pub enum RefreshClaim {
    /// This gateway holds the claim: redeem the token and report with
    /// [`SessionRecorder::finish_refresh`] before `held.until`.
    Acquired(Claimed),
    /// Confirmed recently, or another gateway holds the claim, or a failed attempt waits for
    /// its retry: look again at `at` (unix seconds).
    NotDue { at: u64 },
    /// Revoked, expired or gone: stop tracking it.
    Ended,
    /// The session has no refresh token (the provider issued none, or no session key is
    /// configured): nothing to confirm.
    NoToken,
}

/// How a refresh went, to be written back.
#[derive(Debug)]
pub enum RefreshOutcome {
    Confirmed {
        /// A rotated refresh token, sealed.
        sealed_token: Option<String>,
        /// The new ID token of the refresh, sealed: the newest is the `id_token_hint` of a
        /// logout.
        sealed_id_token: Option<String>,
        /// The identity as the provider states it now, when it changed.
        identity: Option<(Option<String>, Vec<String>)>,
    },
    Rejected {
        reason: String,
    },
    Failed {
        error: String,
        since: u64,
        retry_at: u64,
        /// A token the provider rotated before the failure (its ID token did not verify):
        /// stored all the same, or the session could never be confirmed again.
        sealed_token: Option<String>,
    },
    /// Not this gateway's to judge (the token is sealed with a session key it does not have,
    /// mid-rotation): the claim is given back and nothing else is written, so the session is
    /// neither marked failing nor refused while a replica with the key confirms it.
    Deferred {
        reason: String,
    },
}

/// Why the outcome of a refresh was not written.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Another gateway holds the claim now (this one took too long); its outcome wins.
    #[error("the refresh claim was lost before the outcome was written")]
    LostClaim,
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl SessionRecorder {
    /// Takes the refresh claim of `sid` for `holder` when the session is due (`interval` after
    /// its last confirmation). Of two gateways racing, the one whose write fails sees `NotDue`.
    /// The claim lasts `claim_for` from the moment it is written — longer than the caller lets
    /// the provider call and the write-back take — so a holder that dies frees it.
    pub async fn acquire_refresh(
        &self,
        sid: &str,
        holder: &str,
        interval: Duration,
        claim_for: Duration,
    ) -> Result<RefreshClaim, StoreError> {
        let Some(session) = self.store.get(sid).await? else {
            return Ok(RefreshClaim::Ended);
        };
        let now = crate::clock::now();
        let (refresh, sealed_token) = match claimable(&session, holder, interval, now) {
            ControlFlow::Continue(claimable) => claimable,
            ControlFlow::Break(answer) => return Ok(answer),
        };
        let reserve = interval + claim_for;
        let claimed = |held: HeldClaim| {
            RefreshClaim::Acquired(Claimed {
                held,
                sealed_token,
                subject: session.spec.subject.clone(),
                identity_provider: session.spec.identity_provider.clone(),
                email: session.spec.email.clone(),
                groups: session.spec.groups.clone(),
                failing_since: refresh.failing_since.as_ref().map(unix),
            })
        };
        if let Some(until) = reserved_for(&refresh, holder, claim_for, now) {
            // This gateway's own reservation from its last confirmation: no write needed.
            return Ok(claimed(HeldClaim {
                until,
                resource_version: session.metadata.resource_version.clone(),
                reserve,
            }));
        }
        let until = crate::clock::now() + claim_for.as_secs();
        let claim = RefreshStatus {
            holder: Some(holder.to_owned()),
            lease_until: Some(time(until)),
            ..RefreshStatus::default()
        };
        let patch = SessionPatch::refresh(claim, Clear::default())
            .if_version(session.metadata.resource_version.clone());
        match self.store.patch(sid, &patch).await {
            Ok(resource_version) => Ok(claimed(HeldClaim {
                until,
                resource_version,
                reserve,
            })),
            // Someone else wrote first (another gateway's claim, a revocation): look again soon.
            Err(StoreError::Conflict) => Ok(RefreshClaim::NotDue { at: now + 1 }),
            Err(StoreError::NotFound) => Ok(RefreshClaim::Ended),
            Err(error) => Err(error),
        }
    }

    /// Writes the outcome of a refresh this gateway holds the claim `held` for.
    ///
    /// The refresh status — above all a rotated refresh token, which is the only one the
    /// provider still accepts — is written first, conditioned on the claim still being ours:
    /// after a conflict (the operator wrote its status, say) the object is read again and the
    /// write repeated as long as `holder` still holds this very claim; transient failures are
    /// retried until the claim runs out. A refusal revokes the session before anything else; a
    /// changed identity is written last.
    pub async fn finish_refresh(
        &self,
        sid: &str,
        holder: &str,
        held: &HeldClaim,
        outcome: &RefreshOutcome,
    ) -> Result<(), FinishError> {
        let now = crate::clock::now();
        let next = Reservation {
            holder,
            until: now + held.reserve.as_secs(),
        };
        let refresh = outcome_patch(outcome, now, &next);
        if let RefreshOutcome::Rejected { reason } = outcome {
            self.revoke(
                sid,
                &format!("the identity provider refused to refresh the session ({reason})"),
            )
            .await?;
        }
        self.write_under_claim(sid, holder, held, refresh).await?;
        if let RefreshOutcome::Confirmed {
            identity: Some((email, groups)),
            ..
        } = outcome
        {
            self.write_identity(sid, email, groups).await;
        }
        Ok(())
    }

    /// Writes a changed email and group list to the session's spec.
    async fn write_identity(&self, sid: &str, email: &Option<String>, groups: &[String]) {
        let patch = identity_patch(email, groups);
        if let Err(error) =
            retry(|| async { self.store.patch(sid, &patch).await.map(|_| ()) }).await
        {
            // The token is safe; the identity is re-read at the next refresh.
            warn!(%error, sid, "could not record the session's new identity");
        }
    }

    async fn write_under_claim(
        &self,
        sid: &str,
        holder: &str,
        held: &HeldClaim,
        mut patch: SessionPatch,
    ) -> Result<(), FinishError> {
        patch.resource_version = held.resource_version.clone();
        let mut pause = BACKOFF;
        loop {
            let error = match self.store.patch(sid, &patch).await {
                Ok(_) | Err(StoreError::NotFound) => return Ok(()),
                Err(error) => error,
            };
            match error {
                StoreError::Conflict => {
                    let current = self
                        .store
                        .get(sid)
                        .await
                        .map_err(|e| FinishError::Record(RecordError::Unavailable(e)))?;
                    let Some(current) = current else {
                        return Ok(());
                    };
                    if !holds(&current, holder, held) {
                        return Err(FinishError::LostClaim);
                    }
                    patch.resource_version = current.metadata.resource_version;
                }
                error if !error.is_transient() => {
                    return Err(RecordError::Refused(error).into());
                }
                error => {
                    if crate::clock::now() + pause.as_secs() + 1 >= held.until {
                        return Err(RecordError::Unavailable(error).into());
                    }
                    warn!(%error, sid, "writing the refresh outcome failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Whether `session` may be claimed at `now`: its refresh status and sealed token, or the
/// answer to give instead.
fn claimable(
    session: &AccessSession,
    holder: &str,
    interval: Duration,
    now: u64,
) -> ControlFlow<RefreshClaim, (RefreshStatus, String)> {
    if session.spec.revoked
        || session.metadata.deletion_timestamp.is_some()
        || unix(&session.spec.expires_at) <= now
    {
        return ControlFlow::Break(RefreshClaim::Ended);
    }
    let refresh = session
        .status
        .as_ref()
        .and_then(|s| s.refresh.clone())
        .unwrap_or_default();
    let Some(sealed_token) = refresh.sealed_token.clone() else {
        return ControlFlow::Break(RefreshClaim::NoToken);
    };
    let due = refresh
        .last_refreshed_at
        .as_ref()
        .map_or(0, |t| unix(t) + interval.as_secs());
    // This gateway's own claim or reservation does not keep it waiting.
    let ours = refresh.holder.as_deref() == Some(holder);
    let claimed = match refresh.lease_until.as_ref().map(unix) {
        Some(until) if !ours => until,
        _ => 0,
    };
    if due > now || claimed > now {
        return ControlFlow::Break(RefreshClaim::NotDue {
            at: due.max(claimed),
        });
    }
    ControlFlow::Continue((refresh, sealed_token))
}

/// The end of `holder`'s reservation of the session, when it holds one with at least half a
/// claim left at `now`: it may redeem the token without writing a claim. One that runs out
/// sooner is taken again by a write, since the provider call and the write-back need the time.
fn reserved_for(
    refresh: &RefreshStatus,
    holder: &str,
    claim_for: Duration,
    now: u64,
) -> Option<u64> {
    let until = refresh.lease_until.as_ref().map(unix)?;
    (refresh.holder.as_deref() == Some(holder) && until >= now + claim_for.as_secs() / 2)
        .then_some(until)
}

/// The write of the identity the provider states now.
fn identity_patch(email: &Option<String>, groups: &[String]) -> SessionPatch {
    // The spec has no partial type to serialize (its required fields would be sent too), and
    // it leaves out an absent email and an empty group list, which this write must state:
    // `"email": null` removes an email the provider no longer gives (a merge patch removes a
    // field with `null`), `"groups": []` empties the list.
    SessionPatch::spec(serde_json::json!({ "email": email, "groups": groups }))
}

/// Whether `holder` still holds the claim `held` of `session`.
fn holds(session: &AccessSession, holder: &str, held: &HeldClaim) -> bool {
    let claim = session
        .status
        .as_ref()
        .and_then(|s| s.refresh.as_ref())
        .map(|r| (r.holder.clone(), r.lease_until.as_ref().map(unix)));
    claim == Some((Some(holder.to_owned()), Some(held.until)))
}

mod outcome;

use outcome::{Reservation, outcome_patch};

#[cfg(test)]
mod tests;
