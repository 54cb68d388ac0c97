//! Redeeming a refresh token: asks the provider whether the session still stands, and reads
//! the identity it states now: from the new ID token, if it sends one; otherwise, when the
//! groups come from userinfo, the groups userinfo states now.

use super::{Client, OidcError, Provider, TokenResponse};
use crate::config::GroupsSource;
use openidconnect::{
    OAuth2TokenResponse as _, RefreshToken, SubjectIdentifier, TokenResponse as _,
};
use portcullis_core::{Identity, identity::ClaimError};
use portcullis_runtime::error_chain;
use std::sync::Arc;

/// What redeeming a refresh token produced.
pub struct Refreshed {
    /// The provider's new refresh token, when it rotates them (Dex does): the old one is dead.
    pub refresh_token: Option<String>,
    /// The identity the provider states now: the new ID token's when it sent one, or else the
    /// groups userinfo states (`groupsFrom: userinfo`) with the email the session had; `None`
    /// when the answer restates nothing. An error when that ID token or userinfo answer does
    /// not hold (the rotated refresh token must be kept all the same).
    pub identity: Result<Option<RefreshedIdentity>, RefreshError>,
    /// The new ID token (compact JWS), only when it verified: the newest one the provider
    /// issued is the one to send as `id_token_hint` at logout.
    pub id_token: Option<String>,
}

impl std::fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshed")
            .field("rotated", &self.refresh_token.is_some())
            .field("identity", &self.identity)
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Email and groups as the provider states them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshedIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

/// Why a refresh did not confirm the session.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider answered that the refresh token is dead (`invalid_grant`, or another code
    /// listed in `refreshRejectionErrors`): the session is over.
    #[error("the identity provider refused the refresh token: {0}")]
    Rejected(String),
    /// Anything else: unreachable, 5xx, an unexpected answer. Retried; meanwhile the policy's
    /// `refreshFailure` applies.
    #[error("the identity provider could not confirm the session: {0}")]
    Transient(String),
}

impl Provider {
    /// Redeems `refresh_token` of the session of `subject`, whose email is `email` now. A new
    /// ID token in the answer is verified like a login's (signature, issuer, audience, `azp`,
    /// `iat`) except for the nonce, which refreshed ID tokens do not carry; its subject must be
    /// `subject`.
    #[tracing::instrument(
        target = "portcullis::trace",
        name = "identity_provider",
        skip_all,
        fields(otel.name = "refresh", otel.kind = "client")
    )]
    pub async fn refresh(
        &self,
        refresh_token: &str,
        subject: &str,
        email: Option<&str>,
        now: u64,
    ) -> Result<Refreshed, RefreshError> {
        let transient = |e: String| RefreshError::Transient(e);
        let client = self.client().await.map_err(|e| transient(e.to_string()))?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| transient(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(response) => {
                    let code = response.error().to_string();
                    if self.config.refresh_rejection_errors.contains(&code) {
                        RefreshError::Rejected(code)
                    } else {
                        transient(format!("the provider answered {code}"))
                    }
                }
                other => transient(error_chain(&other)),
            })?;
        let refresh_token = response.refresh_token().map(|t| t.secret().clone());
        let identity = self
            .refreshed_identity(&client, &response, subject, email, now)
            .await;
        let id_token = match &identity {
            Ok(Some(_)) => response.id_token().map(ToString::to_string),
            _ => None,
        };
        Ok(Refreshed {
            refresh_token,
            identity,
            id_token,
        })
    }

    /// Verifies the ID token of a refresh answer, if there is one.
    async fn refreshed_identity(
        &self,
        client: &Arc<Client>,
        response: &TokenResponse,
        subject: &str,
        email: Option<&str>,
        now: u64,
    ) -> Result<Option<RefreshedIdentity>, RefreshError> {
        let Some(id_token) = response.id_token() else {
            return self
                .refreshed_groups(client, response, subject, email)
                .await;
        };
        let (claims, _) = self
            .verified_claims(client, id_token, None, now)
            .await
            .map_err(|e| RefreshError::Transient(format!("refreshed ID token: {e}")))?;
        // A different subject is not a transient glitch: the grant now speaks for someone else.
        if claims.subject().as_str() != subject {
            return Err(RefreshError::Rejected("subject changed".into()));
        }
        let groups = self
            .groups(client, &claims, response.access_token())
            .await
            .map_err(groups_unread)?;
        stated(subject, self.identity(&claims, groups))
    }

    /// A refresh answer without an ID token: nothing restates the email, but groups kept at
    /// userinfo are read again with the new access token (the answer must be about
    /// `subject`), so a group removed at the provider still ends access at the next
    /// confirmation. With groups from the ID token there is nothing to re-read.
    async fn refreshed_groups(
        &self,
        client: &Arc<Client>,
        response: &TokenResponse,
        subject: &str,
        email: Option<&str>,
    ) -> Result<Option<RefreshedIdentity>, RefreshError> {
        if self.config.groups_from != GroupsSource::Userinfo {
            return Ok(None);
        }
        let sub = SubjectIdentifier::new(subject.to_owned());
        let groups = self
            .userinfo_groups(client, &sub, response.access_token())
            .await
            .map_err(groups_unread)?;
        let identity = Identity::checked(subject.to_owned(), email, groups, Default::default());
        stated(subject, identity)
    }
}

/// Why the groups could not be read again. Claims that could not start a session cannot go on
/// with one either (groups that are elsewhere included, a userinfo answer about another
/// user): the user logs in again and is told why. A userinfo endpoint that does not answer is
/// transient, like the token endpoint.
fn groups_unread(error: OidcError) -> RefreshError {
    match error {
        OidcError::Userinfo(_) => RefreshError::Transient(error.to_string()),
        other => RefreshError::Rejected(format!("refreshed claims: {other}")),
    }
}

/// The identity a refresh states for `subject`, once its claim values are checked.
fn stated(
    subject: &str,
    identity: Result<Identity, ClaimError>,
) -> Result<Option<RefreshedIdentity>, RefreshError> {
    let identity =
        identity.map_err(|e| RefreshError::Rejected(format!("refreshed claims: {e}")))?;
    Ok(Some(RefreshedIdentity {
        subject: subject.to_owned(),
        email: identity.email,
        groups: identity.groups,
    }))
}
