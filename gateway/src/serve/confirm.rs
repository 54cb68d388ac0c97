//! Absence = ask the truth: a signed token whose session the index does not know is not valid
//! on its own, but it is not invalid either (created on another gateway a moment ago, or while
//! the operator's stream is unavailable). The serving layer asks the API server once, merges the
//! answer into the index (ended stays ended) and checks the request again.

use crate::gateway::Gateway;
use portcullis_protocol::SessionEntry;
use std::time::Duration;
use tracing::{debug, warn};

/// How long a request waits for the API server's answer before it is sent to log in.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the API server about session `sid` and merges what it says; whether the index learned
/// anything (then the request is checked again). An id the API server lacks, or could not
/// answer for, is not asked about again for a moment.
pub(super) async fn unknown_session(gateway: &Gateway, sid: &str, now: u64) -> bool {
    let (Some(recorder), Some(index)) = (gateway.sessions(), gateway.session_index()) else {
        return false;
    };
    let Some(learner) = index.borrow().learner.clone() else {
        return false;
    };
    if !learner.may_ask(sid, now) {
        return false;
    }
    match tokio::time::timeout(ASK_TIMEOUT, recorder.read(sid)).await {
        Ok(Ok(Some(object))) => match SessionEntry::try_from(&object) {
            Ok(seen) => {
                debug!(sid, "an unknown session was confirmed at the API server");
                gateway.metrics().session_lookup("found");
                learner.learn(&seen, now);
                true
            }
            Err(_) => false,
        },
        Ok(Ok(None)) => {
            gateway.metrics().session_lookup("absent");
            learner.missed(sid, now);
            false
        }
        Ok(Err(error)) => {
            warn!(%error, sid, "cannot ask the API server about an unknown session");
            gateway.metrics().session_lookup("failed");
            learner.missed(sid, now);
            false
        }
        Err(_) => {
            warn!(
                sid,
                "the API server did not answer about an unknown session in time"
            );
            gateway.metrics().session_lookup("failed");
            learner.missed(sid, now);
            false
        }
    }
}
