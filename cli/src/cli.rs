//! Command-line interface: what `kubectl portcullis` accepts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Printed after `--help`: scripts and runbooks branch on these.
const EXIT_CODES: &str = "\
Exit codes:
  0  done, or nothing to do (an already revoked session, a user without sessions)
  1  failed: object not found, forbidden by RBAC, CRDs missing, API server unreachable; some
     sessions not revoked (the others are, and each one that is not is named); or a revoke
     command could not write its report to stdout (each failure is explained on stderr)
  2  usage error, or a user not named unambiguously (--email of several users, a subject with
     sessions under several identity providers and no --idp): nothing was revoked
  3  --wait timed out: the revocation is written, but status does not yet show every
     connected gateway enforcing it

Reference: docs/cli.md";

/// The longest `spec.revocationReason` the AccessSession schema accepts.
pub const MAX_REASON: usize = 256;

/// How long `--wait` waits when given without a value.
pub const DEFAULT_WAIT: &str = "60s";

/// List and revoke Portcullis sessions, raise policy revocation epochs, and wait until every
/// gateway enforces them.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-portcullis",
    bin_name = "kubectl portcullis",
    version,
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster, as kubectl chooses it, and where Portcullis keeps its sessions.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster options")]
pub struct ConnectArgs {
    /// Kubeconfig file [default: $KUBECONFIG (a list of files is merged), else ~/.kube/config,
    /// else the in-cluster ServiceAccount]
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context [default: its current context]
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace holding the AccessSessions: the namespace Portcullis is installed in (the
    /// chart's release namespace) [default: the context's namespace, as kubectl chooses it]
    #[arg(
        long,
        global = true,
        value_name = "NAMESPACE",
        env = "PORTCULLIS_SESSION_NAMESPACE",
        hide_env_values = true
    )]
    pub session_namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List sessions (AccessSessions), oldest login first
    #[command(visible_alias = "session")]
    Sessions(SessionsArgs),
    /// Revoke one session, every session of a user, or every session of a policy
    #[command(subcommand)]
    Revoke(Revoke),
    /// Summarize the fleet: each policy's readiness, gateways and epochs; sessions revoked and
    /// enforced
    Status(StatusArgs),
    /// Show who a change would affect, before making it: the live sessions an epoch raise logs
    /// out, or that a changed policy locks out or lets in (nothing is written)
    #[command(subcommand)]
    Preview(Preview),
}

/// What `preview` can judge.
#[derive(Debug, Subcommand)]
pub enum Preview {
    /// The live sessions `revoke policy NAME` (an epoch raise) would log out of the policy's apps
    Epoch(PreviewEpochArgs),
    /// The live sessions that would lose (or gain) access if the AccessPolicy in a file replaced
    /// the one in the cluster
    Policy(PreviewPolicyArgs),
}

#[derive(Debug, Args)]
pub struct PreviewEpochArgs {
    /// The AccessPolicy
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Namespace of the policy [default: the kubeconfig context's namespace, else `default`]
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct PreviewPolicyArgs {
    /// The changed AccessPolicy manifest (YAML), as you would `kubectl apply -f` it
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Namespace of the policy [default: the manifest's, else the kubeconfig context's]
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Output formats of `sessions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table
    #[default]
    Table,
    /// The table with the subject and revocation reason
    Wide,
    /// `accesssession.access.portcullis.dev/NAME`, one a line (for `xargs kubectl ...`)
    Name,
    /// A `v1` List of the AccessSession objects
    Json,
    /// A `v1` List of the AccessSession objects
    Yaml,
}

/// Which sessions.
#[derive(Debug, Args, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions of this subject (the identity provider's `sub`; a field selector on
    /// spec.subject)
    #[arg(long, visible_alias = "subject", value_name = "SUBJECT")]
    pub user: Option<String>,
    /// Only sessions whose verified email is this (case-insensitive)
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// Only sessions logged in through this identity provider (a field selector on
    /// spec.identityProvider)
    #[arg(long, value_name = "NAME")]
    pub idp: Option<String>,
}

/// `-n` where sessions are meant: refused with an explanation instead of clap's bare "unexpected
/// argument", because kubectl habits make it the likeliest mistake.
#[derive(Debug, Args, Clone, Default)]
pub struct NoNamespace {
    #[arg(short = 'n', long = "namespace", hide = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

impl NoNamespace {
    /// The usage error for a `-n` given to a session command.
    pub fn check(&self) -> Result<(), crate::error::Error> {
        match &self.namespace {
            None => Ok(()),
            Some(ns) => Err(crate::error::Error::Usage(format!(
                "-n/--namespace names the namespace of AccessPolicies; AccessSessions live in the \
                 namespace Portcullis is installed in: use --session-namespace {ns} (or set \
                 PORTCULLIS_SESSION_NAMESPACE)"
            ))),
        }
    }
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub filter: SessionFilter,
    #[command(flatten)]
    pub no_namespace: NoNamespace,
    /// Only sessions still valid: not revoked and not expired
    #[arg(long)]
    pub active: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What `revoke` can end.
#[derive(Debug, Subcommand)]
pub enum Revoke {
    /// Revoke sessions by name (spec.revoked = true; one-way)
    #[command(visible_alias = "sessions")]
    Session(RevokeSessionArgs),
    /// Revoke every session of one user, including logins in flight while the command runs
    #[command(after_help = "\
Every session of the user that is not revoked is revoked, expired ones included (revoking is
one-way and harmless, and an admin may have moved expiresAt earlier to end a session). Without
--idp, the subject's sessions must all come from one identity provider (a subject names a user
only within its provider); otherwise nothing is revoked and the exact --idp commands are printed.

Logins in flight: the user's sessions are listed again every 0.5 s until 5 s after the command
started (with --wait, until the wait ends), and every session found with an issuedAt no later
than 5 s after the command started is revoked too. issuedAt is when the user authenticated at the
identity provider, so this includes a single-sign-on login made while the command runs that
reuses an earlier authentication. Sessions with a later issuedAt are left alone.")]
    User(RevokeUserArgs),
    /// Revoke every session and token issued under a policy so far: raise its revocationEpoch by
    /// one ("revoke existing tokens")
    #[command(after_help = "\
The epoch is raised with the object's resourceVersion as a precondition, and re-read and retried
on a conflict: two people running this at the same time raise it by two, never by one.")]
    Policy(RevokePolicyArgs),
}

/// `--reason` and `--wait`, shared by every revocation.
#[derive(Debug, Args)]
pub struct RevokeOptions {
    /// Why (recorded as the session's spec.revocationReason, or the policy's
    /// access.portcullis.dev/revocation-reason annotation; shown in audit logs)
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: Option<String>,
    /// Then wait until status shows every connected gateway enforcing the revocation (exit 3 on
    /// timeout). TIMEOUT like 30s, 2m, 1m30s
    #[arg(
        long,
        value_name = "TIMEOUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = DEFAULT_WAIT,
        value_parser = parse_timeout
    )]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RevokeSessionArgs {
    /// AccessSession names (the `sid` of the app token)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub options: RevokeOptions,
    #[command(flatten)]
    pub no_namespace: NoNamespace,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["subject", "email"]))]
pub struct RevokeUserArgs {
    /// The user's subject (the identity provider's `sub`, spec.subject)
    #[arg(value_name = "SUBJECT")]
    pub subject: Option<String>,
    /// Find the subject by verified email instead; refused when the email belongs to sessions
    /// of more than one subject or identity provider
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// The user's identity provider: only its sessions (needed when the subject has sessions
    /// under more than one provider)
    #[arg(long, value_name = "NAME")]
    pub idp: Option<String>,
    #[command(flatten)]
    pub options: RevokeOptions,
    #[command(flatten)]
    pub no_namespace: NoNamespace,
}

#[derive(Debug, Args)]
pub struct RevokePolicyArgs {
    /// The AccessPolicy
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Namespace of the policy [default: the kubeconfig context's namespace, else `default`]
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub options: RevokeOptions,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only policies of this namespace [default: all namespaces]
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

fn parse_reason(text: &str) -> Result<String, String> {
    let length = text.chars().count();
    if length > MAX_REASON {
        return Err(format!(
            "{length} characters; the API server accepts at most {MAX_REASON}"
        ));
    }
    Ok(text.to_owned())
}

/// A duration as kubectl's `--timeout` takes it: whole numbers with units, `30s`, `2m`,
/// `1m30s`, `1h`, `500ms`. (Parsed here with checked arithmetic: a huge or odd value is a usage
/// error, never a panic.)
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let usage = || format!("{text:?} is not a duration such as 30s, 2m, 1m30s or 500ms");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(usage());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
        if digits == 0 {
            return Err(usage());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| usage())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(usage()),
        };
        rest = &rest[unit_len..];
        let part = value
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(usage)?;
        total = total.checked_add(part).ok_or_else(usage)?;
    }
    if total.is_zero() {
        return Err("a timeout must be longer than 0s".to_owned());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-portcullis").chain(args.iter().copied()))
    }

    #[test]
    fn the_interface_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_takes_its_timeout_only_after_an_equals_sign() {
        let Ok(cli) = parse(&["revoke", "session", "--wait", "a", "b"]) else {
            panic!("--wait before names must not swallow a name");
        };
        let Command::Revoke(Revoke::Session(args)) = cli.command else {
            panic!("not revoke session");
        };
        assert_eq!(args.names, ["a", "b"]);
        assert_eq!(args.options.wait, Some(Duration::from_secs(60)));
        let Ok(cli) = parse(&["revoke", "policy", "apps", "--wait=1m30s"]) else {
            panic!("--wait=1m30s");
        };
        let Command::Revoke(Revoke::Policy(args)) = cli.command else {
            panic!("not revoke policy");
        };
        assert_eq!(args.options.wait, Some(Duration::from_secs(90)));
        assert!(parse(&["revoke", "policy", "apps", "--wait=soon"]).is_err());
        assert!(parse(&["revoke", "policy", "apps", "--wait=0s"]).is_err());
    }

    #[test]
    fn timeouts_parse_like_kubectls_and_never_panic() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "-1s",
            "1.5s",
            "nanh",
            "99999999999999999999h",
            "18446744073709551615h",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revoke_user_needs_exactly_a_subject_or_an_email() {
        assert!(parse(&["revoke", "user"]).is_err());
        assert!(parse(&["revoke", "user", "sub", "--email", "a@b.c"]).is_err());
        assert!(parse(&["revoke", "user", "--email", "a@b.c", "--idp", "dex"]).is_ok());
        assert!(parse(&["revoke", "user", "sub"]).is_ok());
    }

    #[test]
    fn reasons_longer_than_the_schema_allows_are_refused_here() {
        let long = "x".repeat(MAX_REASON + 1);
        assert!(parse(&["revoke", "session", "a", "--reason", &long]).is_err());
        let fits = "é".repeat(MAX_REASON);
        assert!(parse(&["revoke", "session", "a", "--reason", &fits]).is_ok());
    }

    #[test]
    fn connection_flags_go_anywhere() {
        let Ok(cli) = parse(&[
            "sessions",
            "--context",
            "prod",
            "--session-namespace",
            "auth",
            "--kubeconfig",
            "/k",
        ]) else {
            panic!("global flags after the subcommand");
        };
        assert_eq!(cli.connect.context.as_deref(), Some("prod"));
        assert_eq!(cli.connect.session_namespace.as_deref(), Some("auth"));
        // -n is for policies only: on a session command it is an error, not a silent no-op.
        let Ok(cli) = parse(&["sessions", "-n", "portcullis"]) else {
            panic!("-n is parsed to be explained");
        };
        let Command::Sessions(args) = cli.command else {
            panic!("not sessions");
        };
        let Err(e) = args.no_namespace.check() else {
            panic!("-n on sessions must be refused");
        };
        assert!(
            e.to_string().contains("--session-namespace portcullis"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }
}
