//! Revoking sessions: by name, and every session of one user, logins in flight included.
//!
//! Every write is a JSON merge patch carrying the `resourceVersion` it was decided on, so a
//! session that someone else revoked meanwhile is reported as already revoked (and keeps their
//! reason) instead of being written over. Revocation is one-way at the API server (CEL), so
//! nothing here can un-revoke anything.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use portcullis_crds::AccessSession;
use serde_json::json;

use crate::cli::{RevokeSessionArgs, RevokeUserArgs, SessionFilter};
use crate::error::{Error, is_conflict};
use crate::sessions::{Sessions, expired, resolve_email, shell_quote};
use crate::wait;

/// Field manager of the plugin's writes (visible in `managedFields` and audit logs).
pub const FIELD_MANAGER: &str = "kubectl-portcullis";

/// Attempts at one write before giving up on a run of conflicts.
pub const MAX_ATTEMPTS: u32 = 20;

/// A login whose `issuedAt` is at most this much after the command started still counts as
/// started before it: the gateway's clock and this machine's may disagree a little, and
/// revoking a just-started session of a user being revoked is the safe side.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);

/// How many times `revoke user` lists again after its first pass before reporting (each pass
/// that finds nothing new ends it).
const SWEEPS: usize = 5;

/// What one revocation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// This command set `spec.revoked`.
    Now,
    /// It was revoked already; nothing written.
    Already,
}

/// Sleeps a little longer after each conflict, with jitter so that two racing writers part.
pub async fn backoff(attempt: u32) {
    let base = 20u64.saturating_mul(1 << attempt.min(6));
    let jitter = rand::Rng::random_range(&mut rand::rng(), 0..=base / 2);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Revokes `current` (as last read), re-reading it after a conflict.
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
    for attempt in 0..MAX_ATTEMPTS {
        if current.spec.revoked {
            return Ok(Revoked::Already);
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
                backoff(attempt).await;
                current = sessions.get(&name).await?.ok_or_else(|| Error::NotFound {
                    kind: "AccessSession",
                    name: name.clone(),
                    namespace: sessions.namespace.clone(),
                })?;
            }
            Err(e) => return Err(target.error(e)),
        }
    }
    Err(Error::Refused {
        verb: "patch",
        target: format!("accesssession/{name} in namespace {}", sessions.namespace),
        code: 409,
        reason: "Conflict".to_owned(),
        message: format!("{MAX_ATTEMPTS} conflicting writes in a row; try again"),
    })
}

/// `revoke session NAME...`.
pub async fn sessions(
    out: &mut impl Write,
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
    let mut errors = Vec::new();
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
        match result {
            Ok(Revoked::Now) => {
                writeln!(out, "accesssession/{name} revoked")?;
                done.push((*name).to_owned());
            }
            Ok(Revoked::Already) => {
                writeln!(out, "accesssession/{name} already revoked (unchanged)")?;
                done.push((*name).to_owned());
            }
            Err(e) => errors.push(e),
        }
    }
    let waited = match args.options.wait {
        Some(timeout) if !done.is_empty() => wait::sessions(out, sessions, &done, timeout).await,
        _ => Ok(()),
    };
    // A failure to revoke outranks a wait that timed out: it is the bigger problem.
    let total = names.len();
    let failed = errors.len();
    let mut errors = errors.into_iter();
    match (errors.next(), failed) {
        (Some(only), 1) if total == 1 => Err(only),
        (Some(first), _) => {
            for e in std::iter::once(first).chain(errors) {
                crate::warn(&format!("error: {e}"));
            }
            Err(Error::Partial { failed, total })
        }
        (None, _) => waited,
    }
}

/// Counts for the `revoke user` report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Revoked by this command in its first pass.
    pub revoked: usize,
    /// Revoked after the first pass: logins that were in flight when it started.
    pub in_flight: usize,
    /// Revoked before (by someone else, or a logout).
    pub already: usize,
    /// Past their expiry: no gateway accepts them; left alone.
    pub expired: usize,
    /// Deleted between listing and revoking (a deleted session is ended everywhere).
    pub gone: usize,
    /// Logged in after the command started: left alone.
    pub newer: usize,
}

/// One `revoke user` run: the user, when it started, and what it has revoked so far.
pub struct UserRevocation<'a> {
    pub sessions: &'a Sessions,
    pub filter: SessionFilter,
    pub started: Timestamp,
    pub reason: Option<String>,
    /// Sessions this run revoked or found revoked: what `--wait` waits for.
    pub handled: BTreeSet<String>,
    pub tally: Tally,
    first_pass_done: bool,
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
            tally: Tally::default(),
            first_pass_done: false,
        }
    }

    /// Lists the user's sessions and revokes every one that is not revoked, not expired and
    /// was issued before the command started; returns the sessions as listed (revocations
    /// applied) and how many this pass revoked.
    pub async fn sweep(
        &mut self,
        out: &mut impl Write,
        now: Timestamp,
    ) -> Result<(Vec<AccessSession>, usize), Error> {
        let mut listed = self.sessions.list(&self.filter).await?;
        let cutoff = self
            .started
            .saturating_add(CLOCK_SKEW)
            .unwrap_or(Timestamp::MAX);
        let first = !self.first_pass_done;
        let mut revoked_now = 0;
        let mut newer = 0;
        for session in &mut listed {
            let name = session.metadata.name.clone().unwrap_or_default();
            if self.handled.contains(&name) {
                continue;
            }
            if session.spec.revoked {
                if first {
                    self.tally.already += 1;
                    self.handled.insert(name);
                }
                continue;
            }
            if expired(session, now) {
                if first {
                    self.tally.expired += 1;
                }
                continue;
            }
            if session.spec.issued_at.0 > cutoff {
                newer += 1;
                continue;
            }
            match revoke(self.sessions, session.clone(), self.reason.as_deref()).await {
                Ok(result) => {
                    let note = match (result, first) {
                        (Revoked::Already, _) => {
                            self.tally.already += 1;
                            "already revoked (unchanged)"
                        }
                        (Revoked::Now, true) => {
                            self.tally.revoked += 1;
                            revoked_now += 1;
                            "revoked"
                        }
                        (Revoked::Now, false) => {
                            self.tally.in_flight += 1;
                            revoked_now += 1;
                            "revoked (a login that was in flight when the command started)"
                        }
                    };
                    writeln!(out, "accesssession/{name} {note}")?;
                    session.spec.revoked = true;
                    self.handled.insert(name);
                }
                Err(Error::NotFound { .. }) => {
                    self.tally.gone += 1;
                    writeln!(
                        out,
                        "accesssession/{name} deleted meanwhile (ended everywhere)"
                    )?;
                }
                Err(e) => return Err(e),
            }
        }
        self.tally.newer = newer;
        self.first_pass_done = true;
        Ok((listed, revoked_now))
    }
}

/// `revoke user SUBJECT | --email EMAIL`.
pub async fn user(
    out: &mut impl Write,
    sessions: &Sessions,
    args: &RevokeUserArgs,
) -> Result<(), Error> {
    let started = Timestamp::now();
    let (subject, idp) = match (&args.subject, &args.email) {
        (Some(subject), _) => (subject.clone(), args.idp.clone()),
        (None, Some(email)) => {
            let filter = SessionFilter {
                email: Some(email.clone()),
                idp: args.idp.clone(),
                user: None,
            };
            let with_email = sessions.list(&filter).await?;
            match resolve_email(email, &with_email, started)? {
                Some((idp, subject)) => {
                    writeln!(
                        out,
                        "{email} is subject {} of identity provider {idp}",
                        shell_quote(&subject)
                    )?;
                    (subject, Some(idp))
                }
                None => {
                    writeln!(
                        out,
                        "no session in namespace {} has the email {email}: nothing to revoke",
                        sessions.namespace
                    )?;
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
        idp: idp.clone(),
        email: None,
    };
    let mut run = UserRevocation::new(sessions, filter, started, args.options.reason.clone());
    run.sweep(out, Timestamp::now()).await?;
    for _ in 0..SWEEPS {
        let (_, revoked) = run.sweep(out, Timestamp::now()).await?;
        if revoked == 0 {
            break;
        }
    }
    writeln!(
        out,
        "{}",
        summary(&subject, idp.as_deref(), &sessions.namespace, &run.tally)
    )?;
    match args.options.wait {
        Some(timeout) if !run.handled.is_empty() => wait::user(out, &mut run, timeout).await,
        _ => Ok(()),
    }
}

/// The closing line of `revoke user`.
pub fn summary(subject: &str, idp: Option<&str>, namespace: &str, tally: &Tally) -> String {
    let who = match idp {
        Some(idp) => format!("subject {} ({idp})", shell_quote(subject)),
        None => format!("subject {}", shell_quote(subject)),
    };
    let mut parts = vec![format!("{} revoked", tally.revoked + tally.in_flight)];
    if tally.in_flight > 0 {
        parts.push(format!(
            "{} of them logins in flight, caught after the first pass",
            tally.in_flight
        ));
    }
    if tally.already > 0 {
        parts.push(format!("{} already revoked", tally.already));
    }
    if tally.expired > 0 {
        parts.push(format!("{} expired (left alone)", tally.expired));
    }
    if tally.gone > 0 {
        parts.push(format!("{} deleted meanwhile", tally.gone));
    }
    if tally.newer > 0 {
        parts.push(format!(
            "{} logged in after the command started (left alone)",
            tally.newer
        ));
    }
    let total = tally.revoked + tally.in_flight + tally.already + tally.expired + tally.gone;
    if total == 0 && tally.newer == 0 {
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
            already: 1,
            expired: 1,
            gone: 0,
            newer: 1,
        };
        assert_eq!(
            summary("sub", Some("dex"), "portcullis", &tally),
            "subject sub (dex): 3 revoked, 1 of them logins in flight, caught after the first \
             pass, 1 already revoked, 1 expired (left alone), 1 logged in after the command \
             started (left alone)"
        );
        assert_eq!(
            summary("a b", None, "portcullis", &Tally::default()),
            "subject 'a b': no sessions in namespace portcullis: nothing to revoke"
        );
    }
}
