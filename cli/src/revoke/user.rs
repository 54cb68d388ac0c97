//! Revoking every session of one user, logins in flight included: a run lists the user's
//! sessions again and again for a few seconds after it started, and revokes each one issued
//! before it (expired ones included).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use portcullis_crds::AccessSession;
use tokio::time::Instant;

use super::session::{Revoked, revoke};
use crate::cli::SessionFilter;
use crate::error::Error;
use crate::printer::Printer;
use crate::sanitize;
use crate::sessions::{Sessions, expired, shell_quote};
use crate::wait;

/// A login whose `issuedAt` is at most this much after the command started still counts as
/// started before it: the gateway's clock and this machine's may disagree a little, and
/// revoking a just-started session of a user being revoked is the safe side.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);

/// How long `revoke user` keeps listing the user's sessions after it started, to catch logins in
/// flight: a login's `issuedAt` is the identity provider's `auth_time`, and the gateway retries
/// creating its record for about 1.5 s, so a login that authenticated before the command started
/// can land seconds later.
pub const SWEEP_WINDOW: Duration = Duration::from_secs(5);

/// Counts for the `revoke user` report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Revoked by this command, listed in its first pass.
    pub revoked: usize,
    /// Revoked after the first pass: logins that were in flight when it started.
    pub in_flight: usize,
    /// Of those revoked, how many were past their `expiresAt` already.
    pub past_expiry: usize,
    /// Revoked before (by someone else, or a logout).
    pub already: usize,
    /// Deleted between listing and revoking (a deleted session is ended everywhere).
    pub gone: usize,
    /// Issued after the command started (in the last listing): left alone.
    pub newer: usize,
    /// Of another identity provider than the user's (in the last listing): left alone.
    pub other_idp: usize,
    /// Could not be revoked.
    pub failed: usize,
}

/// One `revoke user` run: the user, when it started, and what it has revoked so far.
pub struct UserRevocation<'a> {
    pub sessions: &'a Sessions,
    /// The subject, and its identity provider once known (fixed by the first session handled
    /// when the command did not name one and the subject had no sessions yet).
    pub filter: SessionFilter,
    pub started: Timestamp,
    pub reason: Option<String>,
    /// Sessions this run revoked or found revoked: what `--wait` waits for.
    pub handled: BTreeSet<String>,
    /// Sessions that could not be revoked (yet), with the last error; each sweep tries again.
    pub failed: BTreeMap<String, Error>,
    pub tally: Tally,
    /// Sessions listed by the first pass: any other revoked later was a login in flight.
    first_listed: BTreeSet<String>,
    gone: BTreeSet<String>,
    passes: usize,
}

/// Why a sweep leaves a listed session alone, or that it handles it.
enum Triage {
    /// Revoked or found revoked by an earlier sweep.
    Handled,
    /// Of another identity provider than the user's.
    OtherIdp,
    /// Issued after the command started.
    Newer,
    /// Revoke it (or count it as revoked already).
    Take,
}

impl<'a> UserRevocation<'a> {
    pub fn new(
        sessions: &'a Sessions,
        filter: SessionFilter,
        started: Timestamp,
        reason: Option<String>,
    ) -> Self {
        Self {
            sessions,
            filter,
            started,
            reason,
            handled: BTreeSet::new(),
            failed: BTreeMap::new(),
            tally: Tally::default(),
            first_listed: BTreeSet::new(),
            gone: BTreeSet::new(),
            passes: 0,
        }
    }

    /// Lists the user's sessions and revokes every one that is not revoked and was issued
    /// before the command started (expired ones included); returns the sessions as listed
    /// (revocations applied). Only a failed listing is an error: a session that cannot be
    /// revoked is kept in [`Self::failed`] and tried again by the next sweep.
    pub async fn sweep(
        &mut self,
        out: &mut Printer<impl Write>,
        now: Timestamp,
    ) -> Result<Vec<AccessSession>, Error> {
        let mut listed = self.sessions.list(&self.filter).await?;
        let cutoff = self
            .started
            .saturating_add(CLOCK_SKEW)
            .unwrap_or(Timestamp::MAX);
        let first = self.passes == 0;
        self.passes += 1;
        let mut newer = 0;
        let mut other_idp = 0;
        for session in &mut listed {
            let name = session.metadata.name.clone().unwrap_or_default();
            if first {
                self.first_listed.insert(name.clone());
            }
            match self.triage(&name, session, cutoff) {
                Triage::Handled => {}
                Triage::OtherIdp => other_idp += 1,
                Triage::Newer => newer += 1,
                Triage::Take => self.take(out, name, session, now).await,
            }
        }
        self.tally.newer = newer;
        self.tally.other_idp = other_idp;
        self.tally.failed = self.failed.len();
        Ok(listed)
    }

    /// Decides whether a listed session is this run's to revoke; the first one taken fixes the
    /// identity provider when the command did not name one.
    fn triage(&mut self, name: &str, session: &AccessSession, cutoff: Timestamp) -> Triage {
        if self.handled.contains(name) {
            return Triage::Handled;
        }
        match &self.filter.idp {
            Some(idp) if *idp != session.spec.identity_provider => return Triage::OtherIdp,
            _ => {}
        }
        if !session.spec.revoked && session.spec.issued_at.0 > cutoff {
            return Triage::Newer;
        }
        if self.filter.idp.is_none() {
            self.filter.idp = Some(session.spec.identity_provider.clone());
        }
        Triage::Take
    }

    /// Revokes a session taken by [`Self::triage`], reports and counts what happened, and marks
    /// it revoked in `session` once it is.
    async fn take(
        &mut self,
        out: &mut Printer<impl Write>,
        name: String,
        session: &mut AccessSession,
        now: Timestamp,
    ) {
        let shown = sanitize::value(&name).into_owned();
        if session.spec.revoked {
            self.tally.already += 1;
            self.handled.insert(name);
            return;
        }
        let past_expiry = expired(session, now);
        match revoke(self.sessions, session.clone(), self.reason.as_deref()).await {
            Ok(Revoked::Already) => {
                self.tally.already += 1;
                out.line(format_args!(
                    "accesssession/{shown} already revoked (unchanged)"
                ));
            }
            Ok(Revoked::Now) => self.count_revoked(out, &name, &shown, past_expiry),
            Err(Error::NotFound { .. }) => {
                self.failed.remove(&name);
                if self.gone.insert(name) {
                    self.tally.gone += 1;
                    out.line(format_args!(
                        "accesssession/{shown} deleted meanwhile (ended everywhere)"
                    ));
                }
                return;
            }
            Err(e) => {
                self.failed.insert(name, e);
                return;
            }
        }
        self.failed.remove(&name);
        session.spec.revoked = true;
        self.handled.insert(name);
    }

    /// Counts and reports a session this run revoked.
    fn count_revoked(
        &mut self,
        out: &mut Printer<impl Write>,
        name: &str,
        shown: &str,
        past_expiry: bool,
    ) {
        let in_flight = !self.first_listed.contains(name);
        if in_flight {
            self.tally.in_flight += 1;
        } else {
            self.tally.revoked += 1;
        }
        if past_expiry {
            self.tally.past_expiry += 1;
        }
        let note = match (in_flight, past_expiry) {
            (true, _) => " (a login that was in flight when the command started)",
            (false, true) => " (it was past its expiresAt)",
            (false, false) => "",
        };
        out.line(format_args!("accesssession/{shown} revoked{note}"));
    }

    /// Sweeps every [`wait::POLL`] until a sweep that started at or after `end` has run: a
    /// login in flight whose record lands before `end` is revoked. A listing that fails
    /// transiently is retried by the next sweep; the last one must succeed.
    pub async fn sweep_until(
        &mut self,
        out: &mut Printer<impl Write>,
        end: Instant,
    ) -> Result<(), Error> {
        loop {
            let wake = (Instant::now() + wait::POLL).min(end);
            tokio::time::sleep_until(wake).await;
            let last = wake >= end;
            match self.sweep(out, Timestamp::now()).await {
                Ok(_) if last => return Ok(()),
                Ok(_) => {}
                Err(e) if last || !e.is_transient() => {
                    return Err(Error::InFlightUnchecked(Box::new(e)));
                }
                Err(_) => {}
            }
        }
    }
}

/// The closing line of `revoke user`.
pub fn summary(subject: &str, idp: Option<&str>, namespace: &str, tally: &Tally) -> String {
    let who = match idp {
        Some(idp) => format!("subject {} ({})", shell_quote(subject), shell_quote(idp)),
        None => format!("subject {}", shell_quote(subject)),
    };
    let mut parts = vec![format!("{} revoked", tally.revoked + tally.in_flight)];
    parts.extend(
        [
            (
                tally.in_flight,
                "of them logins in flight, caught after the first pass",
            ),
            (tally.past_expiry, "of them past their expiresAt"),
            (tally.already, "already revoked"),
            (tally.gone, "deleted meanwhile"),
            (tally.newer, "issued after the command started (left alone)"),
            (tally.other_idp, "of another identity provider (left alone)"),
            (tally.failed, "NOT revoked (see the errors)"),
        ]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}")),
    );
    let total = tally.revoked + tally.in_flight + tally.already + tally.gone + tally.failed;
    if total == 0 && tally.newer == 0 && tally.other_idp == 0 {
        return format!("{who}: no sessions in namespace {namespace}: nothing to revoke");
    }
    format!("{who}: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_happened_to_each_session() {
        let tally = Tally {
            revoked: 2,
            in_flight: 1,
            past_expiry: 1,
            already: 1,
            gone: 0,
            newer: 1,
            other_idp: 0,
            failed: 1,
        };
        assert_eq!(
            summary("sub", Some("dex"), "portcullis", &tally),
            "subject sub (dex): 3 revoked, 1 of them logins in flight, caught after the first \
             pass, 1 of them past their expiresAt, 1 already revoked, 1 issued after the command \
             started (left alone), 1 NOT revoked (see the errors)"
        );
        assert_eq!(
            summary("a b", None, "portcullis", &Tally::default()),
            "subject 'a b': no sessions in namespace portcullis: nothing to revoke"
        );
        assert_eq!(
            summary("x\u{1b}[2J", None, "ns", &Tally::default()),
            r"subject $'x\x1b[2J': no sessions in namespace ns: nothing to revoke"
        );
    }
}
