//! Provider specifics of the login: extra parameters of the authorization request
//! (`authorizationParams`) and where the user's groups are read (`groupsFrom`). Both are
//! checked when the identity-provider file is parsed, so a gateway with a parameter it would
//! have to drop or let override its own never starts.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Parameters the gateway sets itself: a configured value would replace or duplicate the
/// protections of the flow (`state`, `nonce`, PKCE), send the code elsewhere (`redirect_uri`,
/// `response_mode`, `request*` objects that carry their own parameters), or weaken the forced
/// re-login (`max_age`). `scope` has its own option (`scopes`).
const GATEWAY_OWNED: [&str; 12] = [
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "response_type",
    "response_mode",
    "client_id",
    "scope",
    "max_age",
    "request",
    "request_uri",
];

/// The `prompt` values a provider entry may ask for on every login. `none` is not one: it
/// would fail every login that needs the user.
const PROMPTS: [&str; 3] = ["login", "consent", "select_account"];

/// Extra query parameters of the authorization request, e.g. Google's `access_type=offline`
/// and `prompt=consent` (without which Google issues no refresh token after the first login),
/// or Entra's `domain_hint`. `prompt` is a space-separated set of `login`, `consent` and
/// `select_account`; when the gateway forces a re-login it adds `login` to that set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct AuthorizationParams {
    /// Every parameter but `prompt`, by name.
    extra: BTreeMap<String, String>,
    /// The configured `prompt` values, each one of [`PROMPTS`], without repeats.
    prompt: Vec<String>,
}

impl TryFrom<BTreeMap<String, String>> for AuthorizationParams {
    type Error = String;

    fn try_from(mut extra: BTreeMap<String, String>) -> Result<Self, String> {
        for name in extra.keys() {
            let lower = name.to_ascii_lowercase();
            if name.is_empty() || GATEWAY_OWNED.contains(&lower.as_str()) {
                return Err(format!(
                    "authorizationParams: {name:?} is set by the gateway and cannot be \
                     configured (the gateway owns {})",
                    GATEWAY_OWNED.join(", ")
                ));
            }
            if lower == "prompt" && name != "prompt" {
                return Err(format!("authorizationParams: write {name:?} as \"prompt\""));
            }
        }
        let mut prompt: Vec<String> = Vec::new();
        for value in extra.remove("prompt").iter().flat_map(|p| p.split(' ')) {
            if !PROMPTS.contains(&value) {
                return Err(format!(
                    "authorizationParams: prompt {value:?} is not one of {} (space-separated)",
                    PROMPTS.join(", ")
                ));
            }
            if !prompt.iter().any(|p| p == value) {
                prompt.push(value.to_owned());
            }
        }
        Ok(Self { extra, prompt })
    }
}

impl AuthorizationParams {
    /// The parameters other than `prompt`, to add to every authorization request.
    pub fn extra(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The `prompt` values of a request: the configured ones, plus the provider's forced-login
    /// prompt when the gateway forces a re-login (the configured ones are kept: Google's
    /// `consent` must survive it, or Google sends no new refresh token).
    pub fn prompt(&self, forced: Option<ForcedLoginPrompt>) -> Vec<&str> {
        let mut prompt: Vec<&str> = self.prompt.iter().map(String::as_str).collect();
        if let Some(forced) = forced.map(ForcedLoginPrompt::value)
            && !prompt.contains(&forced)
        {
            prompt.push(forced);
        }
        prompt
    }
}

/// What the gateway sends a provider when it must authenticate the user again (after a
/// revocation, the SSO session's epoch raise).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ForcedLoginPrompt {
    /// `prompt=login` and `max_age=0` (OpenID Connect Core): the provider asks for the
    /// credentials again, and `auth_time` proves it (Keycloak, Entra ID, Okta, Dex).
    #[default]
    Login,
    /// `prompt=select_account` only: for Google, which answers `prompt=login` with an error
    /// page and honours no `max_age`. The user picks the account again, but Google may not ask
    /// for the password, and nothing proves it did: `requireAuthTime` must be off.
    SelectAccount,
}

impl ForcedLoginPrompt {
    /// The `prompt` value.
    pub fn value(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::SelectAccount => "select_account",
        }
    }

    /// Whether `max_age=0` goes with it (a provider that honours it states `auth_time`).
    pub fn with_max_age(self) -> bool {
        self == Self::Login
    }
}

/// Where the user's groups come from.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum GroupsSource {
    /// The ID token's `groups` claim (Dex, Keycloak, Okta with a groups claim, Entra).
    #[default]
    IdToken,
    /// The userinfo endpoint's `groups` claim, read with the access token at login and at
    /// every confirmation (providers that keep groups out of ID tokens to keep them small).
    Userinfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<AuthorizationParams, String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AuthorizationParams::try_from(map)
    }

    #[test]
    fn parameters_the_gateway_owns_are_refused_in_any_case() {
        for name in GATEWAY_OWNED {
            let error = parse(&[(name, "x")]).expect_err(name);
            assert!(error.contains("set by the gateway"), "{error}");
            assert!(
                parse(&[(&name.to_ascii_uppercase(), "x")]).is_err(),
                "{name}"
            );
        }
        assert!(parse(&[("", "x")]).is_err());
        assert!(parse(&[("Prompt", "consent")]).is_err());
    }

    #[test]
    fn prompt_values_are_checked_and_the_forced_login_is_added() -> Result<(), String> {
        let google = parse(&[("access_type", "offline"), ("prompt", "consent")])?;
        assert_eq!(
            google.extra().collect::<Vec<_>>(),
            [("access_type", "offline")]
        );
        let login = Some(ForcedLoginPrompt::Login);
        let select = Some(ForcedLoginPrompt::SelectAccount);
        assert_eq!(google.prompt(None), ["consent"]);
        assert_eq!(google.prompt(login), ["consent", "login"]);
        assert_eq!(google.prompt(select), ["consent", "select_account"]);
        let twice = parse(&[("prompt", "login login")])?;
        assert_eq!(twice.prompt(login), ["login"]);
        assert!(AuthorizationParams::default().prompt(None).is_empty());
        assert_eq!(AuthorizationParams::default().prompt(login), ["login"]);
        for bad in ["none", "consent none", "", "consent  login", "Login"] {
            assert!(parse(&[("prompt", bad)]).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
