//! What a provider's discovery document must promise for its configuration to hold:
//! `requireAuthTime` needs ID tokens with `auth_time`, so a provider whose `claims_supported`
//! leaves it out would refuse every forced re-login. Checked at start-up (the gateway does not
//! start) and at every discovery after (logins fail as misconfigured, naming the option).

use super::{OidcError, Providers};
use openidconnect::core::CoreClaimName;
use tracing::warn;

impl Providers {
    /// Discovers every provider once and checks what it advertises. A provider that cannot be
    /// reached now is only logged: it is checked when it first answers, and an outage of one
    /// provider must not keep the gateway (and every other provider's apps) down.
    pub async fn check_discovery(&self) -> Result<(), OidcError> {
        for provider in self.all() {
            match provider.client().await {
                Ok(_) => {}
                Err(error @ OidcError::Config(_)) => return Err(error),
                Err(error) => warn!(
                    idp = %provider.config().name,
                    %error,
                    "identity provider not reachable at start-up: its discovery is checked when \
                     it first answers"
                ),
            }
        }
        Ok(())
    }
}

/// Refuses `requireAuthTime` for a provider whose discovery lists `claims_supported` without
/// `auth_time`. Without `claims_supported` (it is optional) the option stays on, with a
/// warning: the first forced re-login will tell.
pub(super) fn check_auth_time(
    name: &str,
    require_auth_time: bool,
    claims_supported: Option<&Vec<CoreClaimName>>,
) -> Result<(), OidcError> {
    if !require_auth_time {
        return Ok(());
    }
    match claims_supported {
        None => {
            warn!(
                idp = name,
                "the provider's discovery has no claims_supported: requireAuthTime stays on, \
                 and a forced re-login fails if its ID tokens carry no auth_time"
            );
            Ok(())
        }
        Some(claims) if claims.iter().any(|c| c.as_str() == "auth_time") => Ok(()),
        Some(_) => Err(OidcError::Config(format!(
            "identity provider {name}: requireAuthTime is on (the default) but its discovery's \
             claims_supported does not list auth_time, so no forced re-login could be proven; \
             set requireAuthTime: false for it only if it asks for credentials on every \
             authorization (docs/gateway.md)"
        ))),
    }
}

/// `forcedLoginPrompt: select_account` with `requireAuthTime` on would refuse every forced
/// re-login: the provider is not asked to authenticate again, so its `auth_time` predates the
/// revocation. Refused at start-up rather than at the first revocation.
pub(super) fn check_forced_login(config: &crate::config::IdpConfig) -> Result<(), OidcError> {
    if config.require_auth_time
        && config.forced_login_prompt == crate::config::ForcedLoginPrompt::SelectAccount
    {
        return Err(OidcError::Config(format!(
            "identity provider {}: forcedLoginPrompt select_account cannot prove a new \
             authentication; set requireAuthTime: false for it (see docs/providers/google.md)",
            config.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(names: &[&str]) -> Vec<CoreClaimName> {
        names
            .iter()
            .map(|n| CoreClaimName::new((*n).to_owned()))
            .collect()
    }

    #[test]
    fn require_auth_time_needs_auth_time_in_claims_supported() {
        let keycloak = claims(&["sub", "iss", "auth_time", "email"]);
        let dex = claims(&["iss", "sub", "aud", "iat", "exp", "email", "groups"]);
        assert!(check_auth_time("kc", true, Some(&keycloak)).is_ok());
        let error = check_auth_time("dex", true, Some(&dex)).expect_err("dex");
        assert!(matches!(error, OidcError::Config(_)));
        assert!(error.to_string().contains("requireAuthTime"), "{error}");
        assert!(error.to_string().contains("dex"), "{error}");
        assert!(check_auth_time("dex", false, Some(&dex)).is_ok());
        assert!(check_auth_time("other", true, None).is_ok());
    }
}
