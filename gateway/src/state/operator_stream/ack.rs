//! Acknowledgements: the operator learns which version each gateway applied (the counts in its
//! status rest on them).
//!
//! An acknowledgement waits [`ACK_COALESCE_MS`] after the change it reports and then carries the
//! latest version applied by then. Enforcement does not wait for it (the gateway refuses a
//! revoked session as soon as the frame is merged), but the operator is still writing the same
//! change to the rest of the fleet when the first gateways have applied it: acknowledging at
//! once would put N requests in front of that fan-out at the moment it matters, on the operator
//! (and, on a crowded node, beside gateways still applying). After the wait they arrive once
//! the change is out, and a burst of frames costs one acknowledgement per wait, not one each.

use portcullis_protocol::{
    Ack,
    frame::{ACK_COALESCE_MS, GATEWAY_ID_HEADER},
};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;
use url::Url;

/// Acknowledges versions in the background, coalescing to the latest.
pub(super) struct Acker {
    latest: watch::Sender<Option<(String, u64)>>,
}

impl Acker {
    pub(super) fn spawn(
        client: reqwest::Client,
        url: Url,
        token: String,
        gateway_id: String,
    ) -> Self {
        let (latest, mut rx) = watch::channel::<Option<(String, u64)>>(None);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(ACK_COALESCE_MS)).await;
                let Some((instance, version)) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let ack = Ack { instance, version };
                let sent = client
                    .post(url.clone())
                    .bearer_auth(&token)
                    .header(GATEWAY_ID_HEADER, &gateway_id)
                    .json(&ack)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => warn!(status = %r.status(), "ack refused"),
                    Err(error) => warn!(%error, "ack failed"),
                }
            }
        });
        Self { latest }
    }

    /// Queues an ack of `version` (heartbeats included: they prove the gateway is alive).
    pub(super) fn ack(&self, instance: &str, version: u64) {
        self.latest
            .send_replace(Some((instance.to_owned(), version)));
    }
}
