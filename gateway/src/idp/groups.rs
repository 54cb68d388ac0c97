//! The user's groups, from the ID token or (`groupsFrom: userinfo`) the userinfo endpoint, at
//! login and at every confirmation alike. Claims that say the groups are elsewhere (Entra ID's
//! groups overage) refuse the login: "no groups" would be a guess, and group rules fail closed
//! only if the groups they see are the user's groups.

use super::{Client, ExtraClaims, IdTokenClaims, OidcError, Provider};
use crate::config::GroupsSource;
use openidconnect::{
    AccessToken, ClaimsVerificationError, SubjectIdentifier, UserInfoClaims, UserInfoError,
    core::CoreGenderClaim,
};
use portcullis_runtime::error_chain;

impl Provider {
    /// The groups of the user `claims` (a verified ID token) describe, from where `groupsFrom`
    /// says; `access_token` (from the same answer of the provider) reads the userinfo endpoint,
    /// whose `sub` must be the ID token's.
    pub(super) async fn groups(
        &self,
        client: &Client,
        claims: &IdTokenClaims,
        access_token: &AccessToken,
    ) -> Result<Vec<String>, OidcError> {
        match self.config.groups_from {
            GroupsSource::IdToken => stated_groups(claims.additional_claims(), "ID token"),
            GroupsSource::Userinfo => {
                self.userinfo_groups(client, claims.subject(), access_token)
                    .await
            }
        }
    }

    /// The groups the userinfo endpoint states now for `subject`, read with `access_token`: at
    /// login and at a refresh, also one whose answer carries no ID token (OpenID Connect makes
    /// it optional there), so groups kept at userinfo are re-read at every confirmation.
    pub(super) async fn userinfo_groups(
        &self,
        client: &Client,
        subject: &SubjectIdentifier,
        access_token: &AccessToken,
    ) -> Result<Vec<String>, OidcError> {
        let info = self.user_info(client, subject, access_token).await?;
        stated_groups(info.additional_claims(), "userinfo answer")
    }

    /// The userinfo endpoint's claims about `subject` (a plain JSON answer, or a JWT
    /// verified with the provider's keys).
    #[tracing::instrument(
        target = "portcullis::trace",
        name = "identity_provider",
        skip_all,
        fields(otel.name = "userinfo", otel.kind = "client")
    )]
    async fn user_info(
        &self,
        client: &Client,
        subject: &SubjectIdentifier,
        access_token: &AccessToken,
    ) -> Result<UserInfoClaims<ExtraClaims, CoreGenderClaim>, OidcError> {
        let name = &self.config.name;
        client
            .user_info(access_token.clone(), Some(subject.clone()))
            .map_err(|_| {
                OidcError::Userinfo(format!(
                    "{name} has groupsFrom: userinfo, but its discovery names no userinfo_endpoint"
                ))
            })?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                UserInfoError::ClaimsVerification(ClaimsVerificationError::InvalidSubject(_)) => {
                    OidcError::UserinfoSubject(format!("{name}: {}", error_chain(&e)))
                }
                e => OidcError::Userinfo(format!("{name}: {}", error_chain(&e))),
            })
    }
}

/// The groups a set of claims states: its `groups` claim, none when it has none, and an error
/// when `_claim_names` names `groups` (OpenID Connect aggregated or distributed claims; Entra
/// ID sends that instead of `groups` for a user in more groups than fit in a token, its "groups
/// overage"): the claim that is there is not the user's groups.
fn stated_groups(claims: &ExtraClaims, source: &str) -> Result<Vec<String>, OidcError> {
    let elsewhere = claims
        .other
        .get("_claim_names")
        .and_then(serde_json::Value::as_object)
        .is_some_and(|names| names.contains_key("groups"));
    if elsewhere {
        return Err(OidcError::GroupsUnavailable(format!(
            "the {source} names groups in _claim_names (Entra ID's groups overage: the user is \
             in more groups than fit in a token) instead of listing them; configure the \
             provider to send only the groups assigned to the application, or read them from \
             userinfo"
        )));
    }
    Ok(claims.groups.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: serde_json::Value) -> ExtraClaims {
        serde_json::from_value(value).expect("claims")
    }

    #[test]
    fn an_overage_is_never_taken_for_no_groups() {
        let overage = claims(json!({
            "_claim_names": { "groups": "src1" },
            "_claim_sources": { "src1": { "endpoint": "https://graph.microsoft.com/v1.0/me/getMemberObjects" } },
        }));
        let error = stated_groups(&overage, "ID token").expect_err("overage");
        assert!(matches!(error, OidcError::GroupsUnavailable(_)), "{error}");
        assert!(error.to_string().contains("_claim_names"), "{error}");
        // A groups claim beside the pointer is not the whole list either.
        let both = claims(json!({ "groups": ["a"], "_claim_names": { "groups": "src1" } }));
        assert!(stated_groups(&both, "ID token").is_err());
    }

    #[test]
    fn stated_groups_are_taken_and_none_is_none() -> Result<(), OidcError> {
        let listed = claims(json!({ "groups": ["a", "b"], "_claim_names": { "roles": "s" } }));
        assert_eq!(stated_groups(&listed, "ID token")?, ["a", "b"]);
        assert!(stated_groups(&claims(json!({})), "ID token")?.is_empty());
        Ok(())
    }
}
