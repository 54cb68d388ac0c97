//! Command-line and file configuration. Every flag has an environment variable; secrets are read
//! from files, never taken from argv.

use crate::rate_limit::Rate;
use clap::Parser;
use ipnet::IpNet;
use portcullis_runtime::{parse_duration, server::ConnectionLimits};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

mod authorization;
mod idp;

pub use authorization::{AuthorizationParams, ForcedLoginPrompt, GroupsSource};
pub use idp::{IdpConfig, IdpFile};

/// The Portcullis gateway.
#[derive(Clone, Debug, Parser)]
#[command(name = "portcullis-gateway", version, about)]
pub struct Args {
    #[clap(flatten)]
    pub listen: ListenArgs,
    #[clap(flatten)]
    pub auth: AuthArgs,
    #[clap(flatten)]
    pub keys: KeyArgs,
    #[clap(flatten)]
    pub login_rate: LoginRateArgs,
    #[clap(flatten)]
    pub traces: portcullis_runtime::telemetry::TraceArgs,
    /// Standalone mode: load AccessPolicy (and Secret) manifests from this directory and reload
    /// them when they change. Exactly one of this and `--operator-url`.
    #[arg(
        long,
        env = "PORTCULLIS_POLICY_DIR",
        required_unless_present = "operator_url",
        conflicts_with = "operator_url"
    )]
    pub policy_dir: Option<PathBuf>,
    #[clap(flatten)]
    pub operator: OperatorArgs,
    /// Record every login as an AccessSession in this namespace (cluster mode; the Kubernetes
    /// client is configured from `KUBECONFIG` or the pod's service account). Unset in standalone
    /// mode.
    #[arg(long, env = "PORTCULLIS_SESSION_NAMESPACE")]
    pub session_namespace: Option<String>,
    /// Standalone mode: record logins in this file (the same AccessSession objects a cluster
    /// would hold), so logout, refresh and revocation work as in cluster mode. One replica
    /// only; without it (and without `--session-namespace`) app tokens are not tied to a
    /// recorded session.
    #[arg(
        long,
        env = "PORTCULLIS_SESSION_STORE_FILE",
        conflicts_with = "session_namespace"
    )]
    pub session_store_file: Option<PathBuf>,
    #[clap(flatten)]
    pub log: LogArgs,
}

/// Logging.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Write one access-log event per request (target `portcullis::access`).
    #[arg(
        long,
        env = "PORTCULLIS_ACCESS_LOG",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub access_log: bool,
    /// Share of allowed requests the access log writes (0.0–1.0); refusals and server errors
    /// are always written.
    #[arg(long, env = "PORTCULLIS_ACCESS_LOG_SAMPLE", default_value_t = 1.0, value_parser = portcullis_runtime::parse_share)]
    pub access_log_sample: f64,
}

impl LogArgs {
    /// The access log's settings.
    pub fn access_log(&self) -> crate::settings::AccessLogSettings {
        crate::settings::AccessLogSettings {
            enabled: self.access_log,
            sample: self.access_log_sample,
        }
    }
}

/// Cluster mode: the access state comes from the operator's push stream.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorArgs {
    /// HTTPS URLs of the operator replicas (comma-separated); every address a name resolves to
    /// is an endpoint.
    #[arg(long, env = "PORTCULLIS_OPERATOR_URL", value_delimiter = ',')]
    pub operator_url: Vec<url::Url>,
    /// CA (PEM) that signed the operator's serving certificate.
    #[arg(long, env = "PORTCULLIS_OPERATOR_CA_FILE")]
    pub operator_ca_file: Option<PathBuf>,
    /// Projected ServiceAccount token (audience `portcullis-operator`), re-read on every
    /// connect.
    #[arg(
        long,
        env = "PORTCULLIS_OPERATOR_TOKEN_FILE",
        default_value = "/var/run/secrets/portcullis/token"
    )]
    pub operator_token_file: PathBuf,
    /// This gateway's name towards the operator (default: `POD_NAME`, else hostname and pid).
    #[arg(long, env = "PORTCULLIS_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// The state counts as behind when neither the operator's stream (heartbeats included)
    /// nor the API-server fallback proved it current for longer than this: the metric
    /// `portcullis_gateway_state_behind` says so and a warning is logged. Readiness does not
    /// change, unless `--refuse-stale-state` is set.
    #[arg(long, env = "PORTCULLIS_STATE_STALE_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub state_stale_after: Duration,
    /// Opt-in: `/readyz` fails while the state is behind (older than `--state-stale-after`).
    /// Trades availability for freshness: when the whole control plane is unreachable, every
    /// gateway leaves the Service at once and every protected app is down.
    #[arg(long, env = "PORTCULLIS_REFUSE_STALE_STATE", default_value_t = false)]
    pub refuse_stale_state: bool,
    /// When the operator's stream has been unavailable (disconnected, or silent for three
    /// heartbeats) this long, the gateway watches AccessSessions and AccessPolicies at the API
    /// server itself until the stream is back.
    #[arg(long, env = "PORTCULLIS_API_FALLBACK_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub api_fallback_after: Duration,
    /// Up to this much longer, at random per gateway, so a fleet does not list at once.
    #[arg(long, env = "PORTCULLIS_API_FALLBACK_JITTER", default_value = "5s", value_parser = parse_duration)]
    pub api_fallback_jitter: Duration,
    /// The namespaces whose AccessPolicies this gateway takes from the API server (while it
    /// falls back to it, and for their epochs), comma-separated; empty: every namespace. The
    /// operator's `--watch-namespaces`, so an installation sharing a cluster never serves
    /// another's policies.
    #[arg(long, env = "PORTCULLIS_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
}

impl OperatorArgs {
    /// The gateway id: the flag, `POD_NAME`, or hostname and pid.
    pub fn gateway_id(&self) -> String {
        self.gateway_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "gateway".into());
                format!("{host}-{}", std::process::id())
            })
    }
}

/// Where the gateway listens.
#[derive(Clone, Debug, clap::Args)]
pub struct ListenArgs {
    /// HTTPS listener for the auth host, the protected apps and forward-auth checks.
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP listener for /livez, /readyz and /metrics: a separate port, so no request to
    /// an app can reach them.
    #[arg(long, env = "PORTCULLIS_OPS_LISTEN", default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,
    /// TLS certificate chain (PEM) served for the auth host and the app hosts.
    #[arg(long, env = "PORTCULLIS_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// TLS private key (PEM).
    #[arg(long, env = "PORTCULLIS_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// Extra CA certificates (PEM) trusted for https upstreams and identity providers.
    #[arg(long, env = "PORTCULLIS_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Peers whose X-Forwarded-For / X-Forwarded-* / X-Original-* headers are believed
    /// (comma-separated CIDRs). Default: none.
    #[arg(long, env = "PORTCULLIS_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<Option<IpNet>>,
    /// How long a request may take end to end before the gateway answers 504.
    #[arg(long, env = "PORTCULLIS_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Bounds on every connection of both listeners.
    #[clap(flatten)]
    pub connections: ConnectionLimits,
}

/// The central auth host and identity providers.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthArgs {
    /// Public name of the auth host (login, callback, JWKS), e.g. `auth.example.test`.
    #[arg(long, env = "PORTCULLIS_AUTH_HOST")]
    pub auth_host: String,
    /// Port browsers use to reach the gateway, when it is not 443 (local setups).
    #[arg(long, env = "PORTCULLIS_PUBLIC_PORT", default_value_t = 443)]
    pub public_port: u16,
    /// YAML file listing the identity providers (see docs/operations.md).
    #[arg(long, env = "PORTCULLIS_IDP_CONFIG")]
    pub idp_config: PathBuf,
    /// Lifetime of the single-sign-on session at the auth host.
    #[arg(long, env = "PORTCULLIS_SSO_LIFETIME", default_value = "12h", value_parser = parse_duration)]
    pub sso_lifetime: Duration,
    /// 32-byte key (raw or base64) refresh tokens are sealed with before they are stored in
    /// `AccessSession.status`; the same Secret on every gateway replica. Without it, refresh
    /// tokens are not kept and sessions are not confirmed with the identity provider.
    #[arg(long, env = "PORTCULLIS_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,
    /// Earlier session keys (comma-separated files): they still open the refresh tokens they
    /// sealed, and each confirmation re-seals those with the current key, so the key can be
    /// rotated without logging anyone out.
    #[arg(
        long,
        env = "PORTCULLIS_PREVIOUS_SESSION_KEY_FILES",
        value_delimiter = ',',
        requires = "session_key_file"
    )]
    pub previous_session_key_files: Vec<PathBuf>,
}

/// The per-client rate limit of the login endpoints (start, callback, hand-off, begin,
/// logout); a client over it gets 429 with `Retry-After`.
#[derive(Clone, Debug, clap::Args)]
pub struct LoginRateArgs {
    /// Login requests per second one client (an IPv4 address or an IPv6 /64, as the gateway
    /// determines it: trusted proxies' `X-Forwarded-For` only) may make, sustained.
    #[arg(long, env = "PORTCULLIS_LOGIN_RATE_LIMIT", default_value_t = 5.0, value_parser = parse_rate)]
    pub login_rate_limit: f64,
    /// Login requests one client may make at once after a quiet period.
    #[arg(long, env = "PORTCULLIS_LOGIN_RATE_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_rate_burst: u32,
    /// Most clients whose rate is remembered at once (bounds the memory; the least recently
    /// seen are forgotten first).
    #[arg(long, env = "PORTCULLIS_LOGIN_RATE_CLIENTS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(16..))]
    pub login_rate_clients: u32,
}

impl LoginRateArgs {
    /// The limit as the limiter takes it.
    pub fn rate(&self) -> Rate {
        Rate {
            per_second: self.login_rate_limit,
            burst: self.login_rate_burst,
            clients: usize::try_from(self.login_rate_clients).unwrap_or(usize::MAX),
        }
    }
}

/// A duration above zero (a timer cannot tick every 0 s).
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        interval if interval.is_zero() => Err(format!("{s:?} is not a positive interval")),
        interval => Ok(interval),
    }
}

/// A positive, finite number of requests per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

/// Signing keys, and how often key files are looked at.
#[derive(Clone, Debug, clap::Args)]
pub struct KeyArgs {
    /// PKCS#8 P-256 private key (PEM) new tokens are signed with.
    #[arg(long, env = "PORTCULLIS_SIGNING_KEY_FILE")]
    pub signing_key_file: PathBuf,
    /// The key that will be current after the next rotation; published in the JWKS ahead of use.
    #[arg(long, env = "PORTCULLIS_NEXT_SIGNING_KEY_FILE")]
    pub next_signing_key_file: Option<PathBuf>,
    /// Keys of earlier rotations still accepted for verification (comma-separated files).
    #[arg(
        long,
        env = "PORTCULLIS_PREVIOUS_SIGNING_KEY_FILES",
        value_delimiter = ','
    )]
    pub previous_signing_key_files: Vec<PathBuf>,
    /// How often the key files (signing keys, session keys, identity providers' client
    /// secrets) are read to see whether they changed; a change is put in force without a
    /// restart.
    #[arg(long, env = "PORTCULLIS_KEY_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    pub key_reload_interval: Duration,
}

/// One entry of `--trusted-proxies`; an empty entry (an empty environment variable rendered by a
/// chart) means none.
fn parse_proxy(s: &str) -> Result<Option<IpNet>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<IpNet>()
        .map(Some)
        .map_err(|e| format!("invalid CIDR {s:?}: {e}"))
}

impl ListenArgs {
    /// The trusted-proxy CIDRs, without empty entries.
    pub fn trusted_proxies(&self) -> Vec<IpNet> {
        self.trusted_proxies.iter().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reload_interval_of_zero_is_refused() {
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
