//! Session garbage collection, on the leader: AccessSessions whose absolute expiry plus the
//! grace (`--session-gc-grace`) has passed are deleted, a bounded batch per pass, so an outage's
//! backlog drains without flooding the API server. The candidates come from the watched index,
//! so a pass costs a read and a delete per expired session, not a list of every session.
//! Gateways forget such sessions on their own (expiry plus clock skew), so deleting them never
//! revives anything.

use crate::{clock::now, index::SharedIndex, metrics::Metrics};
use kube::{
    Api, Client,
    api::{DeleteParams, Preconditions},
};
use portcullis_crds::AccessSession;
use portcullis_runtime::{error_chain, shutdown::Signal, telemetry::api_server_span};
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use tracing::{Instrument as _, info, warn};

/// Sessions deleted per pass at most.
pub const BATCH: usize = 100;
/// Time between passes.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Collects while this replica leads, until shutdown.
pub async fn run(
    client: Client,
    namespace: String,
    grace: Duration,
    (index, metrics): (Arc<SharedIndex>, Metrics),
    mut leading: watch::Receiver<bool>,
    mut shutdown: Signal,
) {
    let api: Api<AccessSession> = Api::namespaced(client, &namespace);
    loop {
        if !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                () = shutdown.wait() => return,
            }
            continue;
        }
        match pass(&api, &index, grace, now()).await {
            Ok(0) => {}
            Ok(deleted) => {
                metrics.sessions_collected(deleted);
                info!(deleted, %namespace, "expired sessions deleted");
            }
            Err(error) => warn!(
                error = %error_chain(&error),
                "session garbage collection failed; retrying next pass"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            _ = leading.changed() => {}
            () = shutdown.wait() => return,
        }
    }
}

/// One pass: deletes up to [`BATCH`] sessions past expiry plus grace; how many it deleted.
///
/// The candidates come from the index the watch keeps (no list of every session); each is read
/// again and judged on what the API server holds now, and deleted with its uid as precondition.
pub async fn pass(
    api: &Api<AccessSession>,
    index: &SharedIndex,
    grace: Duration,
    now: u64,
) -> Result<usize, kube::Error> {
    let cutoff = now.saturating_sub(grace.as_secs());
    let candidates = index.lock().expired_before(cutoff, BATCH);
    if candidates.is_empty() {
        return Ok(0);
    }
    let span = tracing::info_span!(
        target: portcullis_runtime::telemetry::TARGET,
        "collect_sessions",
        otel.name = "collect sessions",
        candidates = candidates.len(),
    );
    let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
    collect(api, index, candidates, cutoff)
        .instrument(span)
        .await
}

/// Deletes those of `candidates` that the API server still holds past `cutoff`.
async fn collect(
    api: &Api<AccessSession>,
    index: &SharedIndex,
    candidates: Vec<String>,
    cutoff: i64,
) -> Result<usize, kube::Error> {
    let mut deleted = 0;
    for name in candidates {
        let read = api.get_opt(&name);
        let Some(session) = read
            .instrument(api_server_span("get AccessSession"))
            .await?
        else {
            index.update(|index| index.forget_lingering(&name));
            continue;
        };
        if session.metadata.deletion_timestamp.is_some()
            || session.spec.expires_at.0.as_second() >= cutoff
        {
            continue;
        }
        let params = DeleteParams {
            // The object we judged, not a namesake created since.
            preconditions: Some(Preconditions {
                uid: session.metadata.uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let delete = api.delete(&name, &params);
        match delete
            .instrument(api_server_span("delete AccessSession"))
            .await
        {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(deleted)
}
