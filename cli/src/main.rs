//! `kubectl-portcullis`: the kubectl plugin for Portcullis. kubectl runs any `kubectl-<name>`
//! on `PATH` as `kubectl <name>`, so this is `kubectl portcullis`.
//!
//! It does nothing the plain kubectl one-liners cannot, but does it safely: subjects that need
//! escaping in field selectors, logins in flight while a user is revoked, two admins raising a
//! policy's epoch at once, and `--wait` until status proves every gateway enforces the
//! revocation. Reference: docs/cli.md.

mod cli;
mod connect;
mod epoch;
mod error;
mod output;
mod preview;
mod printer;
mod retry;
mod revoke;
mod sanitize;
mod sessions;
mod status;
mod wait;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser as _;
use k8s_openapi::jiff::Timestamp;

use crate::cli::{Cli, Command, Output, Preview, Revoke, SessionsArgs};
use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use crate::printer::Printer;
use crate::sessions::Sessions;

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0 (clap).
    let cli = Cli::parse();
    // The one crypto provider of the workspace; kube's TLS uses it.
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            warn(&format!("error: starting the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // Only `sessions` and `status` succeed when the reader has gone: they only read.
    let read_only = matches!(cli.command, Command::Sessions(_) | Command::Status(_));
    let mut out = Printer::new(std::io::stdout());
    let result = runtime.block_on(run(cli, &mut out));
    let lost = out.finish();
    let mut code = match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            warn(&format!("error: {e}"));
            e.exit_code()
        }
    };
    match lost {
        None => {}
        // `kubectl portcullis sessions | head`: the reader has gone, which is not a failure.
        Some(e) if read_only && e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Some(e) if read_only => {
            warn(&format!("error: writing the output: {e}"));
            if code == EXIT_OK {
                code = EXIT_FAILED;
            }
        }
        // A revocation did all its writes regardless; but a script reading its report got only
        // part of it, and must not take that for the whole.
        Some(e) => {
            warn(&format!(
                "error: writing the report to stdout failed ({e}), so it is incomplete; every \
                 revocation was still attempted (`kubectl portcullis sessions` shows the result)"
            ));
            if code == EXIT_OK {
                code = EXIT_FAILED;
            }
        }
    }
    ExitCode::from(code)
}

/// Writes a line to stderr, terminal controls replaced (messages quote what the API server and
/// identity providers said); a closed stderr is ignored rather than a panic (as `eprintln!`
/// would).
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "{}", sanitize::message(message));
}

async fn run(cli: Cli, out: &mut Printer<impl Write>) -> Result<(), Error> {
    match &cli.command {
        Command::Sessions(args) => args.no_namespace.check()?,
        Command::Revoke(Revoke::Session(args)) => args.no_namespace.check()?,
        Command::Revoke(Revoke::User(args)) => args.no_namespace.check()?,
        Command::Revoke(Revoke::Policy(_)) | Command::Status(_) | Command::Preview(_) => {}
    }
    let connection = connect::connect(&cli.connect).await?;
    // Like kubectl: the flag (or its environment variable), else the context's namespace.
    let (session_namespace, chosen_by) = match &cli.connect.session_namespace {
        Some(namespace) => (namespace.as_str(), ChosenBy::Flag),
        None => (connection.context_namespace.as_str(), ChosenBy::Context),
    };
    let mut sessions = Sessions::new(connection.client.clone(), session_namespace);
    if matches!(
        cli.command,
        Command::Revoke(Revoke::Session(_) | Revoke::User(_))
    ) {
        sessions = sessions.revoked_by(revoke::requester(&connection.client).await);
    }
    match cli.command {
        Command::Sessions(args) => list_sessions(out, &sessions, chosen_by, &args).await,
        Command::Revoke(Revoke::Session(args)) => revoke::sessions(out, &sessions, &args).await,
        Command::Revoke(Revoke::User(args)) => revoke::user(out, &sessions, &args).await,
        Command::Revoke(Revoke::Policy(args)) => {
            let namespace = args
                .namespace
                .clone()
                .unwrap_or(connection.context_namespace);
            epoch::revoke_policy(out, connection.client, &namespace, &args).await
        }
        Command::Status(args) => {
            status::status(out, connection.client, args.namespace.as_deref(), &sessions).await
        }
        Command::Preview(Preview::Epoch(args)) => {
            let namespace = args
                .namespace
                .as_deref()
                .unwrap_or(&connection.context_namespace);
            preview::epoch(out, connection.client.clone(), namespace, &sessions, &args).await
        }
        Command::Preview(Preview::Policy(args)) => {
            let context = &connection.context_namespace;
            preview::policy(out, connection.client.clone(), context, &sessions, &args).await
        }
    }
}

/// Where the sessions' namespace came from, so a "no match" message can say why it looked there.
#[derive(Clone, Copy)]
enum ChosenBy {
    Flag,
    Context,
}

async fn list_sessions(
    out: &mut Printer<impl Write>,
    sessions: &Sessions,
    chosen_by: ChosenBy,
    args: &SessionsArgs,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let mut listed = sessions.list(&args.filter).await?;
    if args.active {
        listed.retain(|s| sessions::active(s, now));
    }
    listed.sort_by(|a, b| {
        (a.spec.issued_at.0, &a.metadata.name).cmp(&(b.spec.issued_at.0, &b.metadata.name))
    });
    if listed.is_empty() && matches!(args.output, Output::Table | Output::Wide) {
        let filtered = args.active
            || args.filter.user.is_some()
            || args.filter.email.is_some()
            || args.filter.idp.is_some();
        warn(&no_sessions_message(
            filtered,
            &sessions.namespace,
            chosen_by,
        ));
        return Ok(());
    }
    output::print_sessions(out, &listed, args.output, now)
}

/// The message for an empty listing: it names the namespace searched and how it was chosen,
/// because the commonest cause is looking in the wrong one.
fn no_sessions_message(filtered: bool, namespace: &str, chosen_by: ChosenBy) -> String {
    let chosen_by = match chosen_by {
        ChosenBy::Flag => "--session-namespace / PORTCULLIS_SESSION_NAMESPACE",
        ChosenBy::Context => "the kubeconfig context's namespace",
    };
    format!(
        "No {}AccessSessions in namespace {namespace} (chosen by {chosen_by}). Sessions live in \
         the namespace Portcullis is installed in: pass --session-namespace NAMESPACE or set \
         PORTCULLIS_SESSION_NAMESPACE.",
        if filtered { "matching " } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::{ChosenBy, no_sessions_message};

    #[test]
    fn an_empty_listing_names_the_namespace_and_how_it_was_chosen() {
        let from_context = no_sessions_message(true, "team-a", ChosenBy::Context);
        assert!(from_context.starts_with("No matching AccessSessions in namespace team-a"));
        assert!(from_context.contains("the kubeconfig context's namespace"));
        assert!(from_context.contains("--session-namespace"));
        let from_flag = no_sessions_message(false, "portcullis", ChosenBy::Flag);
        assert!(from_flag.starts_with("No AccessSessions in namespace portcullis"));
        assert!(from_flag.contains("chosen by --session-namespace"));
    }
}
