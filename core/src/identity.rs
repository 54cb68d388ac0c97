//! The user behind a request, as the gateway knows it after verifying an app token.

use serde::{Deserialize, Serialize};

/// A verified user. Built from a verified app token (or, at login, a verified ID token), never
/// from anything a client can set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The identity provider's `sub`: the key of the user everywhere.
    pub subject: String,
    /// Verified email; `None` when the identity provider did not verify one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Further ID-token claims that `claim` selectors may test (e.g. Google's `hd`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Longest `sub` accepted (OIDC Core §2: at most 255 ASCII characters).
pub const MAX_SUBJECT_LEN: usize = 255;
/// Most bytes the identity of a session (`sub`, email, groups and forwarded claims, as JSON)
/// may take. It travels in the SSO cookie and every app-token cookie, each at most 4000 bytes
/// once signed and base64-encoded; this leaves room for the rest of the token and the
/// largest signature the gateway makes.
pub const MAX_IDENTITY_BYTES: usize = 2048;

/// Why an identity provider's statement of a user cannot become a session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "the subject (sub) is empty, longer than {MAX_SUBJECT_LEN} bytes, or holds a character \
         other than visible ASCII"
    )]
    Subject,
    #[error("the verified email does not parse: {0}")]
    Email(crate::email::EmailError),
    #[error("a group name is empty")]
    EmptyGroup,
    #[error(
        "the identity (sub, email, groups, forwarded claims) takes {size} bytes, more than the \
         {MAX_IDENTITY_BYTES} a session can carry"
    )]
    TooLarge { size: usize },
}

impl ClaimError {
    /// A bounded label for metrics and error codes.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Subject => "bad_subject",
            Self::Email(_) => "bad_email",
            Self::EmptyGroup => "bad_group",
            Self::TooLarge { .. } => "claims_too_large",
        }
    }
}

impl Identity {
    /// Checks claim values as an identity provider stated them, before they become a session:
    /// the `sub` is 1–255 bytes of visible ASCII (it keys the user everywhere and is sent as a
    /// header verbatim), a verified email parses strictly (and is returned lower-cased), no
    /// group is empty, and the whole fits in a session cookie. Group names may hold any other
    /// character: they are encoded where they leave the gateway (see the gateway's identity
    /// headers).
    pub fn checked(
        subject: String,
        email: Option<&str>,
        groups: Vec<String>,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ClaimError> {
        if subject.is_empty()
            || subject.len() > MAX_SUBJECT_LEN
            || !subject.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ClaimError::Subject);
        }
        let email = email
            .map(crate::email::EmailAddress::parse)
            .transpose()
            .map_err(ClaimError::Email)?
            .map(|e| e.as_str().to_owned());
        if groups.iter().any(String::is_empty) {
            return Err(ClaimError::EmptyGroup);
        }
        let identity = Self {
            subject,
            email,
            groups,
            claims,
        };
        let size = serde_json::to_vec(&identity).map_or(usize::MAX, |json| json.len());
        if size > MAX_IDENTITY_BYTES {
            return Err(ClaimError::TooLarge { size });
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests;
