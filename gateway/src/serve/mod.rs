//! Serving protected requests after the access check: as a reverse proxy
//! ([`proxy_mode`]), as a forward-auth endpoint for ingress controllers ([`forward_auth`]), and
//! the session endpoint apps call ([`session_endpoint`]).

mod confirm;
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
/// the outcome. A bearer token is verified first (with the provider's keys, or from the cache
/// of verified tokens). A token whose session the index does not know is asked about at the API server
/// (the source of truth) once, and checked again with what it says: a session created on
/// another gateway, or while the operator's stream is unavailable, works at once instead of
/// sending the browser round to log in again.
#[tracing::instrument(
    target = "portcullis::trace",
    name = "check",
    skip_all,
    fields(result = tracing::field::Empty)
)]
pub(crate) async fn check(
    gateway: &Gateway,
    snapshot: &Snapshot,
    subject: &Subject<'_>,
    now: u64,
) -> Outcome {
    let started = Instant::now();
    let bearer = access::bearer(gateway, snapshot, subject, now).await;
    let mut outcome = access::check_with(gateway, snapshot, subject, &bearer, now);
    if let Outcome::Login {
        unknown_sid: Some(sid),
        ..
    } = &outcome
        && confirm::unknown_session(gateway, sid, now).await
    {
        outcome = access::check_with(gateway, snapshot, subject, &bearer, now);
    }
    gateway
        .metrics()
        .observe_check(outcome.result(), started.elapsed());
    access_log::note(&outcome);
    tracing::Span::current().record("result", outcome.result().label());
    outcome
}
