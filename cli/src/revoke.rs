//! Revoking sessions: by name, and every session of one user, logins in flight included.
//!
//! Every write is a JSON merge patch carrying the `resourceVersion` it was decided on, so a
//! session that someone else revoked meanwhile is reported as already revoked (and keeps their
//! reason) instead of being written over. Revocation is one-way at the API server (CEL), so
//! nothing here can un-revoke anything, and revoking is cheap: a session past its `expiresAt` is
//! revoked too (an admin may have moved `expiresAt` earlier to end it; revoking it costs nothing).
//!
//! One session failing never stops the others: a conflict is decided again from a fresh read, a
//! transient failure (timeout, 5xx, 429) is retried with backoff, and whatever still failed is
//! named at the end with exit code 1.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use portcullis_crds::AccessSession;
use serde_json::json;
use tokio::time::Instant;

use crate::cli::{RevokeOptions, RevokeSessionArgs, RevokeUserArgs, SessionFilter};
use crate::error::{Error, is_conflict};
use crate::printer::Printer;
use crate::retry::{self, MAX_CONFLICTS, TRANSIENT_ATTEMPTS};
use crate::sanitize;
use crate::sessions::{Sessions, expired, resolve_email, resolve_subject, shell_quote};
use crate::wait;

/// Field manager of the plugin's writes (visible in `managedFields` and audit logs).
pub const FIELD_MANAGER: &str = "kubectl-portcullis";

/// A login whose `issuedAt` is at most this much after the command started still counts as
/// started before it: the gateway's clock and this machine's may disagree a little, and
/// revoking a just-started session of a user being revoked is the safe side.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);

/// How long `revoke user` keeps listing the user's sessions after it started, to catch logins in
/// flight: a login's `issuedAt` is the identity provider's `auth_time`, and the gateway retries
/// creating its record for about 1.5 s, so a login that authenticated before the command started
/// can land seconds later.
pub const SWEEP_WINDOW: Duration = Duration::from_secs(5);

/// What one revocation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// This command set `spec.revoked` (or a write of it whose answer was lost got through).
    Now,
    /// It was revoked already; nothing written.
    Already,
}

/// Revokes `current` (as last read): after a conflict it is read again and decided again; after
/// a transient failure too (the write may or may not have landed), up to
/// [`TRANSIENT_ATTEMPTS`] times.
pub async fn revoke(
    sessions: &Sessions,
    mut current: AccessSession,
    reason: Option<&str>,
) -> Result<Revoked, Error> {
    let name = current.metadata.name.clone().unwrap_or_default();
    let target = sessions.target("patch", Some(&name));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut conflicts = 0;
    let mut failures = 0;
    loop {
        if current.spec.revoked {
            // After a lost answer, the write that revoked it may well be ours.
            return Ok(if failures > 0 {
                Revoked::Now
            } else {
                Revoked::Already
            });
        }
        let mut spec = json!({ "revoked": true });
        if let Some(reason) = reason {
            spec["revocationReason"] = json!(reason);
        }
        let mut patch = json!({ "spec": spec });
        if let Some(version) = &current.metadata.resource_version {
            patch["metadata"] = json!({ "resourceVersion": version });
        }
        match sessions
            .api
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Revoked::Now),
            Err(e) if is_conflict(&e) => {
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(Error::Refused {
                        verb: "patch",
                        target: format!("accesssession/{name} in namespace {}", sessions.namespace),
                        code: 409,
                        reason: "Conflict".to_owned(),
                        message: format!("{MAX_CONFLICTS} conflicting writes in a row; try again"),
                    });
                }
                retry::after_conflict(conflicts).await;
            }
            Err(e) => {
                let e = target.error(e);
                failures += 1;
                if !e.is_transient() || failures >= TRANSIENT_ATTEMPTS {
                    return Err(e);
                }
                retry::after_transient(failures - 1).await;
            }
        }
        current = sessions.get(&name).await?.ok_or_else(|| Error::NotFound {
            kind: "AccessSession",
            name: name.clone(),
            namespace: sessions.namespace.clone(),
        })?;
    }
}

/// `revoke session NAME...`.
pub async fn sessions(
    out: &mut Printer<impl Write>,
    sessions: &Sessions,
    args: &RevokeSessionArgs,
) -> Result<(), Error> {
    let mut names: Vec<&str> = Vec::new();
    for name in &args.names {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let reason = args.options.reason.as_deref();
    let mut done = Vec::new();
    let mut failed = BTreeMap::new();
    for name in &names {
        let result = match sessions.get(name).await {
            Ok(Some(session)) => revoke(sessions, session, reason).await,
            Ok(None) => Err(Error::NotFound {
                kind: "AccessSession",
                name: (*name).to_owned(),
                namespace: sessions.namespace.clone(),
            }),
            Err(e) => Err(e),
        };
        let shown = sanitize::value(name);
        match result {
            Ok(Revoked::Now) => {
                out.line(format_args!("accesssession/{shown} revoked"));
                done.push((*name).to_owned());
            }
            Ok(Revoked::Already) => {
                out.line(format_args!(
                    "accesssession/{shown} already revoked (unchanged)"
                ));
                done.push((*name).to_owned());
            }
            Err(e) => {
                failed.insert((*name).to_owned(), e);
            }
        }
    }
    let waited = match args.options.wait {
        Some(timeout) if !done.is_empty() => wait::sessions(out, sessions, &done, timeout).await,
        _ => Ok(()),
    };
    if names.len() == 1
        && let Some((_, only)) = failed.pop_first()
    {
        return Err(only);
    }
    report_failures(failed, done.len(), waited)
}

/// A failure to revoke outranks a wait that timed out (it is the bigger problem); both are
/// reported.
fn report_failures(
    failed: BTreeMap<String, Error>,
    others: usize,
    waited: Result<(), Error>,
) -> Result<(), Error> {
    if failed.is_empty() {
        return waited;
    }
    if let Err(e) = waited {
        crate::warn(&format!("error: {e}"));
    }
    for (name, e) in &failed {
        crate::warn(&format!(
            "error: accesssession/{} not revoked: {e}",
            sanitize::value(name)
        ));
    }
    Err(Error::NotRevoked {
        names: failed.into_keys().collect(),
        others,
    })
}

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
            if self.handled.contains(&name) {
                continue;
            }
            match &self.filter.idp {
                Some(idp) if *idp != session.spec.identity_provider => {
                    other_idp += 1;
                    continue;
                }
                _ => {}
            }
            if !session.spec.revoked && session.spec.issued_at.0 > cutoff {
                newer += 1;
                continue;
            }
            if self.filter.idp.is_none() {
                self.filter.idp = Some(session.spec.identity_provider.clone());
            }
            let shown = sanitize::value(&name).into_owned();
            if session.spec.revoked {
                self.tally.already += 1;
                self.handled.insert(name);
                continue;
            }
            let past_expiry = expired(session, now);
            match revoke(self.sessions, session.clone(), self.reason.as_deref()).await {
                Ok(Revoked::Already) => {
                    self.tally.already += 1;
                    out.line(format_args!(
                        "accesssession/{shown} already revoked (unchanged)"
                    ));
                }
                Ok(Revoked::Now) => {
                    let in_flight = !self.first_listed.contains(&name);
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
                Err(Error::NotFound { .. }) => {
                    self.failed.remove(&name);
                    if self.gone.insert(name) {
                        self.tally.gone += 1;
                        out.line(format_args!(
                            "accesssession/{shown} deleted meanwhile (ended everywhere)"
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    self.failed.insert(name, e);
                    continue;
                }
            }
            self.failed.remove(&name);
            session.spec.revoked = true;
            self.handled.insert(name);
        }
        self.tally.newer = newer;
        self.tally.other_idp = other_idp;
        self.tally.failed = self.failed.len();
        Ok(listed)
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

/// The options of a revocation as they are typed, for the commands an ambiguous user gets.
fn typed_options(options: &RevokeOptions) -> String {
    let mut typed = String::new();
    if let Some(reason) = &options.reason {
        typed += &format!(" --reason {}", shell_quote(reason));
    }
    if let Some(wait) = options.wait {
        typed += &if wait.subsec_millis() == 0 {
            format!(" --wait={}s", wait.as_secs())
        } else {
            format!(" --wait={}ms", wait.as_millis())
        };
    }
    typed
}

/// `revoke user SUBJECT | --email EMAIL`.
pub async fn user(
    out: &mut Printer<impl Write>,
    sessions: &Sessions,
    args: &RevokeUserArgs,
) -> Result<(), Error> {
    let started = Timestamp::now();
    let sweep_end = Instant::now() + SWEEP_WINDOW;
    let options = typed_options(&args.options);
    let (subject, idp) = match (&args.subject, &args.email) {
        (Some(subject), _) => match &args.idp {
            Some(idp) => (subject.clone(), Some(idp.clone())),
            None => {
                let filter = SessionFilter {
                    user: Some(subject.clone()),
                    ..SessionFilter::default()
                };
                let listed = sessions.list(&filter).await?;
                (
                    subject.clone(),
                    resolve_subject(subject, &listed, &options)?,
                )
            }
        },
        (None, Some(email)) => {
            let filter = SessionFilter {
                email: Some(email.clone()),
                idp: args.idp.clone(),
                user: None,
            };
            let with_email = sessions.list(&filter).await?;
            match resolve_email(email, &with_email, started, &options)? {
                Some((idp, subject)) => {
                    out.line(format_args!(
                        "{} is subject {} of identity provider {}",
                        sanitize::value(email),
                        shell_quote(&subject),
                        shell_quote(&idp)
                    ));
                    (subject, Some(idp))
                }
                None => {
                    out.line(format_args!(
                        "no session in namespace {} has the email {}: nothing to revoke",
                        sessions.namespace,
                        sanitize::value(email)
                    ));
                    return Ok(());
                }
            }
        }
        (None, None) => {
            return Err(Error::Usage(
                "name the user: SUBJECT or --email EMAIL".to_owned(),
            ));
        }
    };
    let filter = SessionFilter {
        user: Some(subject.clone()),
        idp,
        email: None,
    };
    let mut run = UserRevocation::new(sessions, filter, started, args.options.reason.clone());
    // A first listing that fails has revoked nothing: plainly an error.
    run.sweep(out, Timestamp::now()).await?;
    let outcome = match args.options.wait {
        Some(timeout) => wait::user(out, &mut run, timeout, sweep_end).await,
        None => run.sweep_until(out, sweep_end).await,
    };
    out.line(summary(
        &subject,
        run.filter.idp.as_deref(),
        &sessions.namespace,
        &run.tally,
    ));
    report_failures(run.failed, run.handled.len(), outcome)
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

    #[test]
    fn ambiguous_users_get_the_options_they_typed() {
        let options = RevokeOptions {
            reason: Some("left the company".into()),
            wait: Some(Duration::from_secs(90)),
        };
        assert_eq!(
            typed_options(&options),
            " --reason 'left the company' --wait=90s"
        );
        let options = RevokeOptions {
            reason: None,
            wait: Some(Duration::from_millis(1500)),
        };
        assert_eq!(typed_options(&options), " --wait=1500ms");
    }
}
