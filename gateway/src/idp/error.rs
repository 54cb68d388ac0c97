//! What can go wrong at login: the errors of discovery, the code exchange and ID-token
//! validation, with a bounded label for metrics. Refresh failures are `RefreshError`:
//! they are judged differently (a rejection ends a session, anything else is retried).

/// Failures talking to, or believing, an identity provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("unknown identity provider {0:?}")]
    UnknownProvider(String),
    #[error("identity provider {idp} is not reachable: {detail}")]
    Discovery { idp: String, detail: String },
    #[error("the identity provider could not exchange the code: {0}")]
    Exchange(String),
    #[error("the identity provider refused the code: {0}")]
    CodeRejected(String),
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    #[error("the ID token is invalid: {0}")]
    InvalidIdToken(String),
    #[error("bad configuration: {0}")]
    Config(String),
    /// The ID token verified, but what it says about the user cannot become a session.
    #[error("the identity provider's claims are unacceptable: {0}")]
    UnacceptableClaims(#[from] portcullis_core::identity::ClaimError),
}

impl OidcError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownProvider(_) => "unknown_provider",
            Self::Discovery { .. } => "discovery",
            Self::Exchange(_) => "exchange",
            Self::CodeRejected(_) => "code_rejected",
            Self::NoIdToken => "no_id_token",
            Self::InvalidIdToken(_) => "invalid_id_token",
            Self::Config(_) => "config",
            Self::UnacceptableClaims(error) => error.category(),
        }
    }
}
