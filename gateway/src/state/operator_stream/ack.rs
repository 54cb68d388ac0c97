//! Acknowledgements: the operator learns which version each gateway applied (its status and
//! the revocation latency it reports rest on them).

use portcullis_protocol::{Ack, frame::GATEWAY_ID_HEADER};
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
