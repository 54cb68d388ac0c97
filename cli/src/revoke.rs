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
//!
//! The commands are here; [`session`] writes one session's revocation, [`user`] is a `revoke
//! user` run (its sweeps and tally) and [`user_wait`] its `--wait`.

mod session;
mod user;
mod user_wait;

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::cli::{RevokeOptions, RevokeSessionArgs, RevokeUserArgs, SessionFilter};
use crate::error::Error;
use crate::printer::Printer;
use crate::sanitize;
use crate::sessions::{Sessions, resolve_email, resolve_subject, shell_quote};
use crate::wait;

pub use session::FIELD_MANAGER;
pub use session::requester;
use session::{Revoked, revoke};
use user::{SWEEP_WINDOW, UserRevocation, summary};

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
    let Some((subject, idp)) = identify_user(out, sessions, args, started).await? else {
        return Ok(());
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
        Some(timeout) => user_wait::sweep_until_enforced(out, &mut run, timeout, sweep_end).await,
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

/// The subject `revoke user` names, and its identity provider when given or found: an
/// ambiguous subject or email is an error naming the commands to type instead, and an email
/// no session has is reported and gives `None` (nothing to revoke).
async fn identify_user(
    out: &mut Printer<impl Write>,
    sessions: &Sessions,
    args: &RevokeUserArgs,
    started: Timestamp,
) -> Result<Option<(String, Option<String>)>, Error> {
    let options = typed_options(&args.options);
    match (&args.subject, &args.email) {
        (Some(subject), _) => match &args.idp {
            Some(idp) => Ok(Some((subject.clone(), Some(idp.clone())))),
            None => {
                let filter = SessionFilter {
                    user: Some(subject.clone()),
                    ..SessionFilter::default()
                };
                let listed = sessions.list(&filter).await?;
                let idp = resolve_subject(subject, &listed, &options)?;
                Ok(Some((subject.clone(), idp)))
            }
        },
        (None, Some(email)) => {
            let filter = SessionFilter {
                email: Some(email.clone()),
                idp: args.idp.clone(),
                user: None,
            };
            let with_email = sessions.list(&filter).await?;
            let Some((idp, subject)) = resolve_email(email, &with_email, started, &options)? else {
                out.line(format_args!(
                    "no session in namespace {} has the email {}: nothing to revoke",
                    sessions.namespace,
                    sanitize::value(email)
                ));
                return Ok(None);
            };
            out.line(format_args!(
                "{} is subject {} of identity provider {}",
                sanitize::value(email),
                shell_quote(&subject),
                shell_quote(&idp)
            ));
            Ok(Some((subject, Some(idp))))
        }
        (None, None) => Err(Error::Usage(
            "name the user: SUBJECT or --email EMAIL".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
