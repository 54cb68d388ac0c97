//! Prometheus metrics. Every label has a bounded set of values (outcomes, error categories,
//! configured provider names); nothing user-controlled ever becomes a label.

use portcullis_core::token::TokenError;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

mod backchannel;
mod keys;
mod labels;
mod state;

pub use backchannel::{BackchannelResult, UNKNOWN_IDP};
pub use keys::KeyKind;
pub use labels::{CheckResult, Confirmation, Lapsed, Rejection, SessionWrite};
use labels::{
    ConfirmationLabel, EndpointLabel, IdpLabel, OperationLabel, OutcomeLabel, ReasonLabel,
};
pub use state::{StateMetrics, StreamFacts};

// Each metric's help text, as Prometheus shows it.
const CHECKS: &str = "Access checks by outcome";
const CHECK_DURATION_SECONDS: &str = "Time to decide one request";
const TOKEN_REJECTIONS: &str = "Tokens refused, by reason";
const LOGINS: &str = "Completed logins by identity provider";
const IDP_ERRORS: &str = "Failed interactions with identity providers";
const UPSTREAM_ERRORS: &str = "Requests the upstream could not answer";
const SESSION_WRITE_ERRORS: &str =
    "Session records that could not be written (record at login, revoke at logout)";
const TOKEN_RENEWALS: &str = "App tokens re-minted in the background for active sessions";
const SESSION_CONFIRMATIONS: &str = "\
    Refreshes at the identity provider by outcome: confirmed, rejected (the session was \
    revoked), failed (transient; the policy's refreshFailure applies), unrecorded (the outcome \
    could not be written; retried), deferred (sealed with a session key this replica lacks)";
const LOGINS_WITHOUT_REFRESH_TOKEN: &str = "\
    Logins for which the identity provider issued no refresh token: those sessions are never \
    confirmed (ask for offline access, e.g. the offline_access scope)";
const PENDING_REVOCATIONS: &str = "\
    Logout revocations waiting for the API server (the users are signed out already; written, \
    with retries, once it answers)";
const SESSION_LOOKUPS: &str = "\
    Sessions the index did not know, asked about at the API server, by outcome: found, absent, \
    failed";

const CONNECTIONS_CLOSED: &str = "\
    Connections the gateway closed itself: client_limit (the client already held the most it \
    may), handshake_timeout, header_timeout (no complete request head in time), idle";
const CERTIFICATE_EXPIRY: &str =
    "When the serving certificate presented now expires (unix seconds)";
const EXCHANGES_CUT: &str =
    "Open exchanges (WebSockets, streaming responses) cut because their admission lapsed";
const RATE_LIMITED: &str = "Login requests refused with 429 by the per-client rate limit";

/// Registers each metric as it is built, so a field and its registration cannot drift apart.
struct Registrar<'a>(&'a mut Registry);

impl Registrar<'_> {
    fn metric<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    /// A labelled family, registered empty.
    fn family<S, M>(&mut self, name: &str, help: &str) -> Family<S, M>
    where
        Family<S, M>: prometheus_client::registry::Metric + Clone + Default,
    {
        self.metric(name, help, Family::default())
    }
}

/// The gateway's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    checks: Family<OutcomeLabel, Counter>,
    check_seconds: Histogram,
    token_rejections: Family<ReasonLabel, Counter>,
    logins: Family<IdpLabel, Counter>,
    idp_errors: Family<ReasonLabel, Counter>,
    upstream_errors: Family<ReasonLabel, Counter>,
    session_write_errors: Family<OperationLabel, Counter>,
    renewals: Counter,
    confirmations: Family<ConfirmationLabel, Counter>,
    logins_without_refresh_token: Family<IdpLabel, Counter>,
    connections_closed: Family<ReasonLabel, Counter>,
    rate_limited: Family<EndpointLabel, Counter>,
    exchanges_cut: Family<ReasonLabel, Counter>,
    session_lookups: Family<OutcomeLabel, Counter>,
    pending_revocations: Gauge,
    certificate_expiry: Gauge,
    keys: keys::KeyMetrics,
    state: state::StateMetrics,
    backchannel: backchannel::BackchannelMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis_gateway");
        let mut add = Registrar(&mut registry);
        Self {
            checks: add.metric("checks", CHECKS, Family::default()),
            check_seconds: add.metric(
                "check_duration_seconds",
                CHECK_DURATION_SECONDS,
                Histogram::new([1e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2]),
            ),
            token_rejections: add.metric("token_rejections", TOKEN_REJECTIONS, Family::default()),
            logins: add.metric("logins", LOGINS, Family::default()),
            idp_errors: add.metric("idp_errors", IDP_ERRORS, Family::default()),
            upstream_errors: add.metric("upstream_errors", UPSTREAM_ERRORS, Family::default()),
            session_write_errors: add.family("session_write_errors", SESSION_WRITE_ERRORS),
            renewals: add.metric("token_renewals", TOKEN_RENEWALS, Counter::default()),
            confirmations: add.family("session_confirmations", SESSION_CONFIRMATIONS),
            logins_without_refresh_token: add.metric(
                "logins_without_refresh_token",
                LOGINS_WITHOUT_REFRESH_TOKEN,
                Family::default(),
            ),
            connections_closed: add.family("connections_closed", CONNECTIONS_CLOSED),
            rate_limited: add.metric("rate_limited", RATE_LIMITED, Family::default()),
            exchanges_cut: add.metric("exchanges_cut", EXCHANGES_CUT, Family::default()),
            session_lookups: add.metric("session_lookups", SESSION_LOOKUPS, Family::default()),
            pending_revocations: add.metric(
                "pending_revocations",
                PENDING_REVOCATIONS,
                Gauge::default(),
            ),
            certificate_expiry: add.metric(
                "tls_certificate_expiry_timestamp_seconds",
                CERTIFICATE_EXPIRY,
                Gauge::default(),
            ),
            keys: keys::KeyMetrics::register(add.0),
            state: state::StateMetrics::register(&mut add),
            backchannel: backchannel::BackchannelMetrics::register(add.0),
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// Creates every series whose labels are known in advance (outcomes, reasons, the configured
    /// identity providers) at zero: an alert on `rate()` or `increase()` then sees the first
    /// error, and a dashboard shows a flat line rather than "no data".
    pub fn initialize<'a>(&self, idps: impl IntoIterator<Item = &'a str>) {
        for result in CheckResult::ALL {
            let _ = self.checks.get_or_create(&OutcomeLabel {
                outcome: result.label(),
            });
        }
        for write in SessionWrite::ALL {
            let _ = self.session_write_errors.get_or_create(&OperationLabel {
                operation: write.label(),
            });
        }
        let rejections = TokenError::ALL
            .iter()
            .map(TokenError::category)
            .chain(Rejection::OTHER_LABELS);
        for reason in rejections {
            let _ = self.token_rejections.get_or_create(&ReasonLabel { reason });
        }
        for reason in crate::idp::OidcError::CATEGORIES {
            let _ = self.idp_errors.get_or_create(&ReasonLabel { reason });
        }
        for lapsed in Lapsed::ALL {
            let _ = self.exchanges_cut.get_or_create(&ReasonLabel {
                reason: lapsed.label(),
            });
        }
        self.keys.initialize();
        for reason in crate::proxy::ProxyError::CATEGORIES {
            let _ = self.upstream_errors.get_or_create(&ReasonLabel { reason });
        }
        for idp in idps {
            let _ = self.logins.get_or_create(&IdpLabel {
                idp: idp.to_owned(),
            });
            for outcome in Confirmation::ALL {
                let _ = self.confirmations.get_or_create(&ConfirmationLabel {
                    idp: idp.to_owned(),
                    outcome: outcome.label(),
                });
            }
        }
    }

    /// Counts one refresh at `idp` ending in `outcome`.
    pub fn session_confirmation(&self, idp: &str, outcome: Confirmation) {
        self.confirmations
            .get_or_create(&ConfirmationLabel {
                idp: idp.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts a login at `idp` that brought no refresh token; true for the first one (so the
    /// caller can log it once rather than on every login).
    pub fn login_without_refresh_token(&self, idp: &str) -> bool {
        self.logins_without_refresh_token
            .get_or_create(&IdpLabel {
                idp: idp.to_owned(),
            })
            .inc()
            == 0
    }

    pub fn observe_check(&self, result: CheckResult, elapsed: Duration) {
        self.checks
            .get_or_create(&OutcomeLabel {
                outcome: result.label(),
            })
            .inc();
        self.check_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn token_renewed(&self) {
        self.renewals.inc();
    }

    pub fn token_rejected(&self, rejection: Rejection<'_>) {
        self.token_rejections
            .get_or_create(&ReasonLabel {
                reason: rejection.label(),
            })
            .inc();
    }

    pub fn session_write_failed(&self, write: SessionWrite) {
        self.session_write_errors
            .get_or_create(&OperationLabel {
                operation: write.label(),
            })
            .inc();
    }

    /// `idp` is a configured provider's name, so the label set is bounded by configuration.
    pub fn login(&self, idp: &str) {
        self.logins
            .get_or_create(&IdpLabel {
                idp: idp.to_owned(),
            })
            .inc();
    }

    pub fn idp_error(&self, reason: &'static str) {
        self.idp_errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn exchange_cut(&self, lapsed: Lapsed) {
        self.exchanges_cut
            .get_or_create(&ReasonLabel {
                reason: lapsed.label(),
            })
            .inc();
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The series of the access state this gateway enforces.
    pub fn state(&self) -> &state::StateMetrics {
        &self.state
    }

    /// Counts one question to the API server about an unknown session (`found`, `absent`,
    /// `failed`).
    pub fn session_lookup(&self, outcome: &'static str) {
        self.session_lookups
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts one reload of key material from its files: `loaded`, or refused (and the keys in
    /// use kept).
    pub fn key_reload(&self, kind: KeyKind, loaded: bool) {
        self.keys.reloaded(kind, loaded);
    }

    /// Whether the files of `kind` on disk are refused now (1 until they load).
    pub fn key_files_rejected(&self, kind: KeyKind, rejected: bool) {
        self.keys.rejecting(kind, rejected);
    }

    /// When the serving certificate presented now expires.
    pub fn certificate_expires(&self, at: i64) {
        self.certificate_expiry.set(at);
    }

    /// How many logout revocations wait for the API server.
    pub fn pending_revocations(&self, len: usize) {
        self.pending_revocations
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Counts a connection the server closed itself.
    pub fn connection_closed(&self, reason: portcullis_runtime::server::Closed) {
        self.connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// Counts a login request refused by the rate limit; `endpoint` is one of a fixed set.
    pub fn rate_limited(&self, endpoint: &'static str) {
        self.rate_limited
            .get_or_create(&EndpointLabel { endpoint })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_label_is_listed() {
        let others = [
            Rejection::StaleEpoch,
            Rejection::SessionRevoked,
            Rejection::SessionUnknown,
            Rejection::RefreshFailing,
            Rejection::SsoSessionEnded,
            Rejection::SsoAppSessionEnded,
            Rejection::SsoBeforeEpoch,
        ];
        let labels: Vec<&str> = others.iter().map(|r| r.label()).collect();
        assert_eq!(labels, Rejection::OTHER_LABELS);
    }

    #[test]
    fn known_series_exist_at_zero_before_anything_happens() {
        let metrics = Metrics::new();
        metrics.initialize(["dex"]);
        let text = metrics.encode();
        for series in [
            r#"portcullis_gateway_checks_total{outcome="not_ready"} 0"#,
            r#"portcullis_gateway_token_rejections_total{reason="signature"} 0"#,
            r#"portcullis_gateway_token_rejections_total{reason="sso_before_epoch"} 0"#,
            r#"portcullis_gateway_idp_errors_total{reason="discovery"} 0"#,
            r#"portcullis_gateway_upstream_errors_total{reason="upstream_timeout"} 0"#,
            r#"portcullis_gateway_session_write_errors_total{operation="revoke"} 0"#,
            r#"portcullis_gateway_logins_total{idp="dex"} 0"#,
            r#"portcullis_gateway_session_confirmations_total{idp="dex",outcome="failed"} 0"#,
            r#"portcullis_gateway_key_reloads_total{kind="signing",result="failure"} 0"#,
            r#"portcullis_gateway_key_files_rejected{kind="client_secret"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
