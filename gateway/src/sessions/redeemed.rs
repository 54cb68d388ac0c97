//! Single use of hand-off tickets across every replica.
//!
//! A hand-off ticket is a bearer URL, valid for a minute. Each replica remembers the tickets it
//! redeemed, but a replay sent to another replica would find nothing there. So a ticket is
//! redeemed at the source of truth: an annotation named after the ticket is added to the
//! session's `AccessSession`, conditioned on the resourceVersion read without it. Of two
//! redemptions of one ticket, on any replicas, exactly one write succeeds; the other finds the
//! annotation (or loses the race and reads it). The same read also refuses a ticket whose
//! session was revoked meanwhile.
//!
//! Cost: one read and one write per hand-off, which is once per app and login, never per
//! request. Expired tickets' annotations are removed by the next redemption of the session.
//! When the session store cannot be reached, the ticket is not redeemed and the browser gets
//! a page asking to try again (never a redirect, so never a loop).

use super::{
    record::{ATTEMPTS, BACKOFF, SessionRecorder},
    store::{Part, SessionPatch, StoreError},
};
use portcullis_crds::{AccessSession, session::USED_POLICY_PREFIX};
use tracing::warn;

/// Prefix of the annotation marking a redeemed ticket; the ticket id (`jti`, hex) follows.
pub const REDEEMED_PREFIX: &str = "handoff.access.portcullis.dev/";

/// What redeeming a ticket found.
#[derive(Debug, PartialEq, Eq)]
pub enum Redemption {
    /// Redeemed now, by this call: the one use of the ticket.
    Redeemed,
    /// Already redeemed (on this replica or another).
    Replayed,
    /// The session is revoked, expired or gone.
    SessionEnded,
    /// The session store could not say; nothing was redeemed.
    Unavailable,
}

impl SessionRecorder {
    /// Redeems ticket `jti` (valid until `exp`) of session `sid` exactly once fleet-wide, and
    /// in the same write records that the session was handed to `policy` (its uid and
    /// `namespace/name`; `None` for a policy without a uid, from a manifest file).
    pub async fn redeem_handoff(
        &self,
        (sid, jti): (&str, &str),
        policy: Option<(&str, &str)>,
        exp: u64,
        now: u64,
    ) -> Redemption {
        let key = format!("{REDEEMED_PREFIX}{jti}");
        let mut pause = BACKOFF;
        for _ in 0..ATTEMPTS {
            let session = match self.store.get(sid).await {
                Ok(Some(session)) if live(&session, now) => session,
                Ok(_) => return Redemption::SessionEnded,
                Err(error) => {
                    warn!(%error, "reading the session to redeem a hand-off failed");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    continue;
                }
            };
            let annotations = session.metadata.annotations.unwrap_or_default();
            if annotations.contains_key(&key) {
                return Redemption::Replayed;
            }
            let mut change = serde_json::Map::new();
            for (name, value) in &annotations {
                // Tickets that expired no longer need remembering: their signature refuses them.
                if name.starts_with(REDEEMED_PREFIX)
                    && value.parse::<u64>().map_or(true, |e| e <= now)
                {
                    change.insert(name.clone(), serde_json::Value::Null);
                }
            }
            change.insert(key.clone(), serde_json::Value::String(exp.to_string()));
            if let Some((uid, id)) = policy {
                let used = format!("{USED_POLICY_PREFIX}{uid}");
                change.insert(used, serde_json::Value::String(id.to_owned()));
            }
            let patch = SessionPatch {
                resource_version: session.metadata.resource_version,
                part: Part::Metadata,
                change: serde_json::json!({ "annotations": change }),
            };
            match self.store.patch(sid, &patch).await {
                Ok(_) => return Redemption::Redeemed,
                // Changed meanwhile (perhaps this very ticket, elsewhere): read again.
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Redemption::SessionEnded,
                Err(error) => {
                    warn!(%error, "recording a hand-off failed");
                    if !error.is_transient() {
                        return Redemption::Unavailable;
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        Redemption::Unavailable
    }
}

/// Not revoked and not past its end.
fn live(session: &AccessSession, now: u64) -> bool {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    !session.spec.revoked && session.spec.expires_at.0.as_second() > now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{NewSession, file_store::LocalStore};

    const SID: &str = "0123456789abcdef0123456789abcdef";

    async fn recorder() -> (SessionRecorder, u64) {
        let recorder = SessionRecorder::local(LocalStore::open(None).expect("store"));
        let now = crate::clock::now();
        let login = NewSession {
            sid: SID,
            subject: "alice",
            email: None,
            groups: &[],
            identity_provider: "dex",
            issued_at: now,
            expires_at: now + 3600,
            sealed_refresh_token: None,
            sealed_id_token: None,
            attempt: "a",
            provider_session_id: None,
        };
        recorder.record(&login).await.expect("recorded");
        (recorder, now)
    }

    #[tokio::test]
    async fn a_ticket_is_redeemed_once_and_others_of_the_session_still_work() {
        let (recorder, now) = recorder().await;
        let redeem = |jti: &'static str| recorder.redeem_handoff((SID, jti), None, now + 60, now);
        assert_eq!(redeem("t1").await, Redemption::Redeemed);
        assert_eq!(redeem("t1").await, Redemption::Replayed);
        assert_eq!(redeem("t2").await, Redemption::Redeemed);
        assert_eq!(redeem("t1").await, Redemption::Replayed);
        assert_eq!(redeem("t2").await, Redemption::Replayed);
    }

    #[tokio::test]
    async fn expired_tickets_are_forgotten_by_the_next_redemption() {
        let (recorder, now) = recorder().await;
        assert_eq!(
            recorder
                .redeem_handoff((SID, "old"), None, now + 60, now)
                .await,
            Redemption::Redeemed
        );
        let later = now + 120;
        assert_eq!(
            recorder
                .redeem_handoff((SID, "new"), None, later + 60, later)
                .await,
            Redemption::Redeemed
        );
        let session = recorder.store.get(SID).await.expect("read").expect("there");
        let annotations = session.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key(&format!("{REDEEMED_PREFIX}old")));
        assert!(annotations.contains_key(&format!("{REDEEMED_PREFIX}new")));
    }

    #[tokio::test]
    async fn a_redemption_records_the_policy_the_session_was_handed_to() {
        let (recorder, now) = recorder().await;
        let apps = Some(("uid-apps", "team/apps"));
        let admin = Some(("uid-admin", "team/admin"));
        for (jti, policy) in [("t1", apps), ("t2", admin), ("t3", apps), ("t4", None)] {
            let redeemed = recorder
                .redeem_handoff((SID, jti), policy, now + 60, now)
                .await;
            assert_eq!(redeemed, Redemption::Redeemed);
        }
        let session = recorder.store.get(SID).await.expect("read").expect("there");
        let mut used: Vec<&str> = portcullis_crds::session::used_policies(&session).collect();
        used.sort_unstable();
        assert_eq!(used, ["uid-admin", "uid-apps"]);
        let annotations = session.metadata.annotations.clone().unwrap_or_default();
        let named = annotations.get(&format!("{USED_POLICY_PREFIX}uid-apps"));
        assert_eq!(named.map(String::as_str), Some("team/apps"));
    }

    #[tokio::test]
    async fn a_ticket_of_an_ended_session_is_refused() {
        let (recorder, now) = recorder().await;
        assert_eq!(
            recorder
                .redeem_handoff(("ffff", "t"), None, now + 60, now)
                .await,
            Redemption::SessionEnded
        );
        recorder.revoke(SID, "test").await.expect("revoked");
        assert_eq!(
            recorder
                .redeem_handoff((SID, "t"), None, now + 60, now)
                .await,
            Redemption::SessionEnded
        );
    }
}
