//! The back-channel logout series: every `logout_token` POSTed to the auth host, accepted or
//! refused, by provider and result, so an operator sees a provider whose logouts fail (wrong
//! keys, clock skew, a misconfigured client) instead of finding out from a user who is still
//! signed in.
//!
//! Both labels are bounded: `idp` is a configured provider's name, or `unknown` for a path
//! that names none with back-channel logout on (the name in such a path is the caller's, and
//! never becomes a label); `result` is one of [`BackchannelResult::ALL`]. No claim of a token
//! (`sub`, `sid`, `jti`) is ever a label.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

const BACKCHANNEL_LOGOUTS: &str = "\
    Back-channel logout requests by identity provider (unknown: no provider with back-channel \
    logout at that path) and result: accepted, or why it was refused (not_found, method, \
    content_type, body, form, malformed, header, signature, claims, replayed, \
    replay_cache_full, keys, lookup)";

/// The `idp` label of a request whose path names no provider with back-channel logout.
pub const UNKNOWN_IDP: &str = "unknown";

/// How one back-channel logout request ended: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackchannelResult {
    /// The token verified and the sessions it names were ended (possibly none).
    Accepted,
    /// No provider with back-channel logout at that path (404).
    NotFound,
    /// Not a `POST`.
    Method,
    /// Not a form.
    ContentType,
    /// The body was too large or unreadable.
    Body,
    /// Not exactly one `logout_token` in the form.
    Form,
    /// Not a compact JWS.
    Malformed,
    /// `alg`, `typ` or `crit` not acceptable.
    Header,
    /// The signature does not verify with the provider's keys.
    Signature,
    /// `iss`, `aud`, `iat`, `exp`, `jti`, `events`, `sid`/`sub` or `nonce` not acceptable.
    Claims,
    /// The `jti` was seen already.
    Replayed,
    /// Too many recent `jti`s to remember another.
    ReplayCacheFull,
    /// The provider's keys could not be fetched.
    Keys,
    /// The sessions it names could not be listed (the provider may send it again).
    Lookup,
}

impl BackchannelResult {
    pub const ALL: [Self; 14] = [
        Self::Accepted,
        Self::NotFound,
        Self::Method,
        Self::ContentType,
        Self::Body,
        Self::Form,
        Self::Malformed,
        Self::Header,
        Self::Signature,
        Self::Claims,
        Self::Replayed,
        Self::ReplayCacheFull,
        Self::Keys,
        Self::Lookup,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NotFound => "not_found",
            Self::Method => "method",
            Self::ContentType => "content_type",
            Self::Body => "body",
            Self::Form => "form",
            Self::Malformed => "malformed",
            Self::Header => "header",
            Self::Signature => "signature",
            Self::Claims => "claims",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::Keys => "keys",
            Self::Lookup => "lookup",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackchannelLabel {
    idp: String,
    result: &'static str,
}

/// The back-channel logout counter.
#[derive(Clone, Default)]
pub(super) struct BackchannelMetrics {
    logouts: Family<BackchannelLabel, Counter>,
}

impl BackchannelMetrics {
    pub(super) fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "backchannel_logouts",
            BACKCHANNEL_LOGOUTS,
            metrics.logouts.clone(),
        );
        metrics
    }

    /// Every result of each provider in `idps` (those with back-channel logout on) at zero,
    /// and `not_found` of [`UNKNOWN_IDP`].
    pub(super) fn initialize<'a>(&self, idps: impl IntoIterator<Item = &'a str>) {
        for idp in idps {
            for result in BackchannelResult::ALL {
                self.count(idp, result, 0);
            }
        }
        self.count(UNKNOWN_IDP, BackchannelResult::NotFound, 0);
    }

    /// Adds `n` to the series of `idp` and `result`.
    pub(super) fn count(&self, idp: &str, result: BackchannelResult, n: u64) {
        self.logouts
            .get_or_create(&BackchannelLabel {
                idp: idp.to_owned(),
                result: result.label(),
            })
            .inc_by(n);
    }
}

impl super::Metrics {
    /// Every back-channel logout series of the providers with `backchannelLogout: true` at
    /// zero.
    pub fn initialize_backchannel(&self, providers: &crate::idp::Providers) {
        self.backchannel.initialize(
            providers
                .all()
                .filter(|p| p.config().backchannel_logout)
                .map(|p| p.config().name.as_str()),
        );
    }

    /// Counts one back-channel logout request of `idp` (a configured provider's name, or
    /// [`UNKNOWN_IDP`]) ending in `result`.
    pub fn backchannel_logout(&self, idp: &str, result: BackchannelResult) {
        self.backchannel.count(idp, result, 1);
    }
}
