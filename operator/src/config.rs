//! Command-line configuration; every flag has an environment variable.

use clap::Parser;
use portcullis_core::tenancy::Unclaimed;
use portcullis_runtime::{parse_duration, server::ConnectionLimits};
use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

/// The Portcullis operator: streams the access state to the gateway fleet and reconciles the
/// Portcullis resources.
#[derive(Clone, Debug, Parser)]
#[command(name = "portcullis-operator", version, about)]
pub struct Args {
    /// HTTPS listener of the state stream API for gateways.
    #[arg(
        long,
        env = "PORTCULLIS_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8444"
    )]
    pub listen: SocketAddr,
    /// Plain-HTTP listener for /livez, /readyz and /metrics.
    #[arg(long, env = "PORTCULLIS_OPS_LISTEN", default_value = "0.0.0.0:9091")]
    pub ops_listen: SocketAddr,
    /// Serving certificate chain (PEM) of the stream API.
    #[arg(long, env = "PORTCULLIS_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// Serving key (PEM).
    #[arg(long, env = "PORTCULLIS_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// Namespace holding the AccessSessions.
    #[arg(long, env = "PORTCULLIS_SESSION_NAMESPACE")]
    pub session_namespace: String,
    /// ServiceAccounts (`namespace:name`, comma-separated) allowed to open the stream.
    #[arg(long, env = "PORTCULLIS_GATEWAY_SERVICE_ACCOUNTS", value_delimiter = ',', value_parser = parse_service_account)]
    pub gateway_service_accounts: Vec<String>,
    /// Audience a gateway's token must carry.
    #[arg(
        long,
        env = "PORTCULLIS_TOKEN_AUDIENCE",
        default_value = "portcullis-operator"
    )]
    pub token_audience: String,
    /// The gateway's identity-provider file; only the provider names are read.
    #[arg(long, env = "PORTCULLIS_IDP_CONFIG")]
    pub idp_config: Option<PathBuf>,
    /// Name of the Lease the writing replica holds.
    #[arg(
        long,
        env = "PORTCULLIS_LEASE_NAME",
        default_value = "portcullis-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: the session namespace).
    #[arg(long, env = "PORTCULLIS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity (default: hostname and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How peers reach this replica's stream API.
    #[arg(long, env = "PORTCULLIS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How long after its absolute expiry an AccessSession is deleted.
    #[arg(long, env = "PORTCULLIS_SESSION_GC_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub session_gc_grace: Duration,
    /// This operator's own ServiceAccount token (audience `--token-audience`, projected and
    /// rotated by the kubelet): followers present it when relaying to the leader, and the
    /// leader accepts relays from the user it reviews as.
    #[arg(
        long,
        env = "PORTCULLIS_PEER_TOKEN_FILE",
        default_value = "/var/run/secrets/portcullis/token"
    )]
    pub peer_token_file: PathBuf,
    /// CA that signed the replicas' serving certificate, to verify the leader when relaying.
    #[arg(long, env = "PORTCULLIS_PEER_CA_FILE")]
    pub peer_ca_file: Option<PathBuf>,
    /// Name verified in the leader's certificate (one the certificate has, such as the headless
    /// Service's `<name>.<namespace>.svc`) while connecting to the address of its advertised
    /// URL; default: the advertised URL's host.
    #[arg(long, env = "PORTCULLIS_PEER_SERVER_NAME")]
    pub peer_server_name: Option<String>,
    /// Bounds on every connection of both listeners.
    #[clap(flatten)]
    pub connections: ConnectionLimits,
    /// Who may claim a host no AccessHost covers: `first-claim` (the namespace of its oldest
    /// AccessPolicy owns it; other namespaces are refused) or `refuse` (nobody: every host needs
    /// an AccessHost).
    #[arg(long, env = "PORTCULLIS_UNCLAIMED_HOSTS", default_value = "first-claim", value_parser = parse_unclaimed)]
    pub unclaimed_hosts: Unclaimed,
    /// The namespaces whose AccessPolicies this operator serves (streams to its gateways and
    /// writes status for), comma-separated; empty: every namespace. Installations sharing a
    /// cluster each take their own namespaces: two operators watching one policy would both
    /// write its status, each with its own gateways' progress.
    #[arg(long, env = "PORTCULLIS_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// The namespaces whose Secrets the operator reads (service tokens), comma-separated; empty:
    /// the watched namespaces (every namespace when those are every namespace). A policy
    /// elsewhere that names a service token is reported `SecretNotReadable`.
    #[arg(long, env = "PORTCULLIS_SECRET_NAMESPACES", value_delimiter = ',')]
    pub secret_namespaces: Vec<String>,
    /// OpenTelemetry traces of reconciles and API-server writes (off without an endpoint).
    #[clap(flatten)]
    pub traces: portcullis_runtime::telemetry::TraceArgs,
    /// Log format.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

fn parse_unclaimed(s: &str) -> Result<Unclaimed, String> {
    match s {
        "first-claim" => Ok(Unclaimed::FirstClaim),
        "refuse" => Ok(Unclaimed::Refuse),
        _ => Err(format!("{s:?} is neither first-claim nor refuse")),
    }
}

/// `namespace:name`, rendered as the ServiceAccount's user name.
fn parse_service_account(s: &str) -> Result<String, String> {
    match s.trim().split_once(':') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains(':') => {
            Ok(format!("system:serviceaccount:{ns}:{name}"))
        }
        _ => Err(format!("{s:?} is not namespace:name")),
    }
}

/// The non-empty names of a comma-separated list; `None` when there are none (every namespace).
fn namespace_set(names: &[String]) -> Option<BTreeSet<String>> {
    let names: BTreeSet<String> = names
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty()).then_some(names)
}

impl Args {
    /// The namespaces whose AccessPolicies the operator serves; `None`: every namespace.
    pub fn watch_namespaces(&self) -> Option<BTreeSet<String>> {
        namespace_set(&self.watch_namespaces)
    }

    /// The namespaces whose Secrets the operator reads: as set, else the watched namespaces;
    /// `None`: every namespace.
    pub fn secret_namespaces(&self) -> Option<BTreeSet<String>> {
        namespace_set(&self.secret_namespaces).or_else(|| self.watch_namespaces())
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "operator".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let base = [
            "portcullis-operator",
            "--tls-cert-file=c",
            "--tls-key-file=k",
            "--session-namespace=portcullis",
            "--gateway-service-accounts=portcullis:gateway",
        ];
        Args::try_parse_from(base.iter().chain(extra)).expect("valid arguments")
    }

    fn set(names: &[&str]) -> Option<BTreeSet<String>> {
        Some(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn no_watched_namespaces_means_every_namespace_for_policies_and_secrets() {
        let args = args(&[]);
        assert_eq!(args.watch_namespaces(), None);
        assert_eq!(args.secret_namespaces(), None);
    }

    #[test]
    fn secrets_are_read_where_policies_are_watched_unless_set() {
        let scoped = args(&["--watch-namespaces= team-a,team-b,,"]);
        assert_eq!(scoped.watch_namespaces(), set(&["team-a", "team-b"]));
        assert_eq!(scoped.secret_namespaces(), set(&["team-a", "team-b"]));
        let both = args(&["--watch-namespaces=team-a", "--secret-namespaces=tokens"]);
        assert_eq!(both.watch_namespaces(), set(&["team-a"]));
        assert_eq!(both.secret_namespaces(), set(&["tokens"]));
    }
}
