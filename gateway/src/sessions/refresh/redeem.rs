//! Redeeming a claimed refresh token at the identity provider, within the claim.

use super::{Refresher, WRITE_BACK};
use crate::{
    idp::RefreshError,
    sessions::{claim::Claimed, claim::RefreshOutcome, seal::SealError},
};
use std::time::Duration;

/// A redemption that did not come to an outcome: the error, and the rotated token, sealed, when
/// the provider issued one before the failure.
pub(super) type Unredeemed = (RefreshError, Option<String>);

impl Refresher {
    /// Redeems the claimed token within what is left of the claim after the write-back's share.
    pub(super) async fn redeem_in_time(
        &self,
        sid: &str,
        idp: &str,
        claimed: &Claimed,
    ) -> Result<RefreshOutcome, Unredeemed> {
        let budget = Duration::from_secs(claimed.held.until.saturating_sub(crate::clock::now()))
            .saturating_sub(WRITE_BACK);
        let redeem = self.redeem(
            sid,
            idp,
            &claimed.sealed_token,
            &claimed.subject,
            (&claimed.email, &claimed.groups),
        );
        tokio::time::timeout(budget, redeem)
            .await
            .unwrap_or_else(|_| {
                Err((
                    RefreshError::Transient("the provider took too long".into()),
                    None,
                ))
            })
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
    ) -> Result<RefreshOutcome, Unredeemed> {
        let provider = self
            .providers
            .get(idp)
            .map_err(|e| (RefreshError::Transient(e.to_string()), None))?;
        let token = match self.open(sid, sealed) {
            Ok(token) => token,
            Err(outcome) => return Ok(outcome),
        };
        let now = crate::clock::now();
        let refreshed = match provider
            .refresh(&token, subject, email.as_deref(), now)
            .await
        {
            Ok(refreshed) => refreshed,
            Err(RefreshError::Rejected(code)) => {
                return Ok(RefreshOutcome::Rejected { reason: code });
            }
            Err(error) => return Err((error, None)),
        };
        let sealed_token = self
            .reseal(sid, sealed, &token, refreshed.refresh_token.as_deref())
            .map_err(|error| (error, None))?;
        match refreshed.identity {
            Ok(identity) => Ok(RefreshOutcome::Confirmed {
                sealed_id_token: self.seal_id_token(sid, refreshed.id_token.as_deref()),
                sealed_token,
                identity: identity
                    .filter(|i| (&i.email, &i.groups) != (email, groups))
                    .map(|i| (i.email, i.groups)),
            }),
            Err(RefreshError::Rejected(reason)) => Ok(RefreshOutcome::Rejected { reason }),
            Err(error) => Err((error, sealed_token)),
        }
    }

    /// Opens the sealed refresh token, or says what that means for the session.
    fn open(&self, sid: &str, sealed: &str) -> Result<String, RefreshOutcome> {
        match self.key().open(sid, sealed) {
            Ok(token) => Ok(token),
            // Sealed by a replica with another key (mid-rotation): not this gateway's to judge,
            // and no failure either (a FailClosed policy would refuse the session everywhere).
            Err(error @ SealError::UnknownKey(_)) => Err(RefreshOutcome::Deferred {
                reason: error.to_string(),
            }),
            // A token that does not open (tampering) cannot be redeemed by anyone: the session
            // can never be confirmed again.
            Err(error) => Err(RefreshOutcome::Rejected {
                reason: error.to_string(),
            }),
        }
    }

    /// The refresh's new ID token, sealed, when there is one. One that cannot be sealed is
    /// left out (the stored one stays): it only helps a later logout, never the session.
    fn seal_id_token(&self, sid: &str, id_token: Option<&str>) -> Option<String> {
        let sealed = self.key().seal_id_token(sid, id_token?);
        sealed
            .inspect_err(|error| tracing::warn!(%error, sid, "could not seal the new ID token"))
            .ok()
    }

    /// The token to store after a redemption, sealed: a rotated one, and also an unchanged one
    /// still sealed with a previous key, so that the previous key can be retired after one
    /// refresh interval. `None`: the stored token stays.
    fn reseal(
        &self,
        sid: &str,
        sealed: &str,
        token: &str,
        rotated: Option<&str>,
    ) -> Result<Option<String>, RefreshError> {
        let key = self.key();
        let to_store = match rotated {
            Some(new) if new != token => Some(new),
            _ if key.is_stale(sealed) => Some(token),
            _ => None,
        };
        to_store
            .map(|t| key.seal(sid, t))
            .transpose()
            .map_err(|error| RefreshError::Transient(error.to_string()))
    }
}
