//! The write of a refresh's outcome, and the reservation of the next round that a
//! confirmation carries (see the parent module).

use super::{RefreshOutcome, RefreshStatus, truncate};
use crate::sessions::store::{Clear, SessionPatch, time};

/// The next round, claimed by the write of a confirmed outcome.
pub(super) struct Reservation<'a> {
    pub holder: &'a str,
    pub until: u64,
}

/// The write of `status.refresh` that records `outcome` at `now`. A confirmation claims the
/// next round for the same gateway (`next`); every other outcome gives the claim back
/// (`holder` removed), and all but a failure, which keeps `leaseUntil` as the time of its
/// retry, remove its end too.
pub(super) fn outcome_patch(
    outcome: &RefreshOutcome,
    now: u64,
    next: &Reservation<'_>,
) -> SessionPatch {
    let (set, clear) = match outcome {
        RefreshOutcome::Confirmed {
            sealed_token,
            sealed_id_token,
            ..
        } => (
            RefreshStatus {
                last_refreshed_at: Some(time(now)),
                sealed_token: sealed_token.clone(),
                holder: Some(next.holder.to_owned()),
                lease_until: Some(time(next.until)),
                sealed_id_token: sealed_id_token.clone(),
                ..RefreshStatus::default()
            },
            Clear {
                failing_since: true,
                last_error: true,
                ..Clear::default()
            },
        ),
        RefreshOutcome::Rejected { reason } => (
            RefreshStatus {
                last_error: Some(truncate(reason, 500)),
                ..RefreshStatus::default()
            },
            // The provider ended its session: neither token is of use any more.
            Clear {
                sealed_token: true,
                sealed_id_token: true,
                ..Clear::CLAIM
            },
        ),
        RefreshOutcome::Failed {
            error,
            since,
            retry_at,
            sealed_token,
        } => (
            RefreshStatus {
                failing_since: Some(time(*since)),
                last_error: Some(truncate(error, 500)),
                lease_until: Some(time(*retry_at)),
                sealed_token: sealed_token.clone(),
                ..RefreshStatus::default()
            },
            Clear {
                lease_until: false,
                ..Clear::CLAIM
            },
        ),
        RefreshOutcome::Deferred { .. } => (RefreshStatus::default(), Clear::CLAIM),
    };
    SessionPatch::refresh(set, clear)
}
