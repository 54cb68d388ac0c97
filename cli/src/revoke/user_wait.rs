//! `revoke user --wait`: keep sweeping the user's sessions while waiting until status proves that
//! every connected gateway enforces each revocation of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use portcullis_crds::AccessSession;
use tokio::time::Instant;

use super::user::UserRevocation;
use crate::error::Error;
use crate::printer::Printer;
use crate::wait::{self, POLL, bounded, next_poll, report_deleted, session_state, settle};

/// Waits for every session `run` revoked or found revoked, listing the user's sessions on each
/// poll and revoking any login that was in flight when the command started. Returns once all are
/// settled and a listing begun after `sweep_end` has been swept (so logins in flight are caught
/// as without `--wait`), or times out.
pub async fn sweep_until_enforced(
    out: &mut Printer<impl Write>,
    run: &mut UserRevocation<'_>,
    timeout: Duration,
    sweep_end: Instant,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut pending = BTreeMap::new();
    loop {
        let listed_at = Instant::now();
        let now = Timestamp::now();
        match bounded(deadline, run.sweep(out, now)).await {
            Some(Ok(listed)) => {
                pending.clear();
                settle_handled(out, run, &listed, now, &mut done, &mut pending);
                if pending.is_empty() {
                    if listed_at >= sweep_end {
                        return Ok(());
                    }
                    // Everything so far is settled; keep sweeping (deadline or not) until a
                    // listing starts after `sweep_end`, a few seconds at most.
                    tokio::time::sleep_until((listed_at + POLL).min(sweep_end)).await;
                    continue;
                }
            }
            Some(Err(e)) if e.is_transient() => {
                pending.insert("(list)".to_owned(), format!("could not read status: {e}"));
            }
            Some(Err(e)) => return Err(e),
            None => {
                pending.insert(
                    "(list)".to_owned(),
                    "the API server did not answer in time".to_owned(),
                );
            }
        }
        if !next_poll(deadline).await {
            return Err(wait::timed_out(
                "the user's revocation is",
                timeout,
                &pending,
            ));
        }
    }
}

/// Reports each session the run handled and that is not settled yet, from the sessions as just
/// listed: settled ones join `done`, the others are named in `pending`.
fn settle_handled(
    out: &mut Printer<impl Write>,
    run: &UserRevocation<'_>,
    listed: &[AccessSession],
    now: Timestamp,
    done: &mut BTreeSet<String>,
    pending: &mut BTreeMap<String, String>,
) {
    let by_name: BTreeMap<&str, &AccessSession> = listed
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
        .collect();
    for name in run
        .handled
        .iter()
        .filter(|n| !done.contains(*n))
        .cloned()
        .collect::<Vec<_>>()
    {
        // Not listed: deleted (the subject and provider of a session never change).
        let settled = match by_name.get(name.as_str()) {
            Some(session) => settle(out, &name, session_state(session, now), pending),
            None => {
                report_deleted(out, &name);
                true
            }
        };
        if settled {
            done.insert(name);
        }
    }
}
