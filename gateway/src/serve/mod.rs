//! Serving protected requests after the access check: as a reverse proxy
//! ([`proxy_mode`]), as a forward-auth endpoint for ingress controllers ([`forward_auth`]), and
//! the session endpoint apps call ([`session_endpoint`]).

pub(crate) mod forward_auth;
pub(crate) mod proxy_mode;
pub(crate) mod refusal;
pub(crate) mod session_endpoint;

use crate::{
    access::{self, Outcome, Subject},
    access_log,
    gateway::Gateway,
    state::Snapshot,
};
use std::time::Instant;

/// The access check as every surface runs it: timed and counted in the check metric, whatever
/// the outcome.
pub(crate) fn check(
    gateway: &Gateway,
    snapshot: &Snapshot,
    subject: &Subject<'_>,
    now: u64,
) -> Outcome {
    let started = Instant::now();
    let outcome = access::check(gateway, snapshot, subject, now);
    gateway
        .metrics()
        .observe_check(outcome.result(), started.elapsed());
    access_log::note(&outcome);
    outcome
}
