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
    /// A new authentication was required (after a revocation) and the ID token does not prove
    /// one: its `auth_time` is missing or predates the requirement. The provider reused its
    /// own login session (a client that dropped `prompt=login` / `max_age=0`, or a provider
    /// that ignores them).
    #[error("re-authentication was required but not proven: {0}")]
    NotReauthenticated(String),
    #[error("bad configuration: {0}")]
    Config(String),
    /// The ID token verified, but what it says about the user cannot become a session.
    #[error("the identity provider's claims are unacceptable: {0}")]
    UnacceptableClaims(#[from] portcullis_core::identity::ClaimError),
    /// The claims say the user's groups are somewhere else (Entra ID's groups overage): taking
    /// them for "no groups" would be a guess.
    #[error("the user's groups are not in the identity provider's answer: {0}")]
    GroupsUnavailable(String),
    /// `groupsFrom: userinfo` and the userinfo endpoint did not answer (unreachable, an error,
    /// an answer that does not parse or verify).
    #[error("the identity provider's userinfo endpoint failed: {0}")]
    Userinfo(String),
    /// The userinfo endpoint answered about another user than the one the session or login
    /// is for: not a failure to retry, a statement about someone else.
    #[error("the identity provider's userinfo endpoint answered about another user: {0}")]
    UserinfoSubject(String),
}

impl OidcError {
    /// Every value [`OidcError::category`] can take, so metrics can show each at zero.
    pub const CATEGORIES: [&'static str; 10] = [
        "unknown_provider",
        "discovery",
        "exchange",
        "code_rejected",
        "no_id_token",
        "invalid_id_token",
        "not_reauthenticated",
        "config",
        "groups_unavailable",
        "userinfo",
    ];

    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownProvider(_) => "unknown_provider",
            Self::Discovery { .. } => "discovery",
            Self::Exchange(_) => "exchange",
            Self::CodeRejected(_) => "code_rejected",
            Self::NoIdToken => "no_id_token",
            Self::InvalidIdToken(_) => "invalid_id_token",
            Self::NotReauthenticated(_) => "not_reauthenticated",
            Self::Config(_) => "config",
            Self::GroupsUnavailable(_) => "groups_unavailable",
            Self::Userinfo(_) | Self::UserinfoSubject(_) => "userinfo",
            Self::UnacceptableClaims(error) => error.category(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OidcError;

    #[test]
    fn every_category_is_listed() {
        let all = [
            OidcError::UnknownProvider(String::new()),
            OidcError::Discovery {
                idp: String::new(),
                detail: String::new(),
            },
            OidcError::Exchange(String::new()),
            OidcError::CodeRejected(String::new()),
            OidcError::NoIdToken,
            OidcError::InvalidIdToken(String::new()),
            OidcError::NotReauthenticated(String::new()),
            OidcError::Config(String::new()),
            OidcError::GroupsUnavailable(String::new()),
            OidcError::Userinfo(String::new()),
        ];
        let categories: Vec<&str> = all.iter().map(OidcError::category).collect();
        assert_eq!(categories, OidcError::CATEGORIES);
    }
}
