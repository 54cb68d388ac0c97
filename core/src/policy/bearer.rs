//! `bearer` selectors: which bearer JWTs of an identity provider a `ServiceAuth` rule accepts.
//!
//! The split of the work: the gateway verifies a token once (signature with the provider's
//! keys, `iss`, `exp`, `nbf`, `iat`) and caches the result as a [`BearerToken`]; the selector
//! asks, on every request, what depends on the policy: the provider, an audience, the client
//! and the scopes. A policy edit therefore applies at once, even to a token verified before it.

use super::{Policy, Selector};
use std::collections::BTreeSet;

impl Policy {
    /// The identity providers whose bearer tokens the policy's rules may accept: the gateway
    /// must have each (a policy naming another is not enforceable as written), and looks at
    /// `Authorization` only for a policy with at least one.
    pub fn bearer_providers(&self) -> BTreeSet<&str> {
        self.rules
            .iter()
            .flat_map(|rule| rule.selectors())
            .filter_map(|selector| match selector {
                Selector::Bearer(rule) => Some(rule.identity_provider.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A compiled `bearer` selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerRule {
    /// The configured identity provider whose tokens count.
    pub identity_provider: String,
    /// At least one must be in the token's `aud`.
    pub audiences: BTreeSet<String>,
    /// The token's client (`azp`, or `client_id`) must be one of these.
    pub client_ids: BTreeSet<String>,
    /// Every one must be in the token's `scope`.
    pub scopes: BTreeSet<String>,
}

/// What a verified bearer JWT says, as far as a rule looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerToken {
    /// The configured provider whose issuer and keys it was verified with.
    pub identity_provider: String,
    /// `sub`: the service account.
    pub subject: String,
    /// `azp`, or `client_id` when there is no `azp` (RFC 9068 §2.2).
    pub client_id: String,
    /// `aud`, a single string read as a list of one.
    pub audiences: Vec<String>,
    /// The space-separated `scope` claim, split.
    pub scopes: BTreeSet<String>,
    /// `exp` (unix seconds): how long the verification may be cached.
    pub expires_at: u64,
}

impl BearerRule {
    /// Whether `token` is one this rule accepts: the same provider, an accepted audience, an
    /// allowed client and every required scope. Strings compare exactly.
    pub fn accepts(&self, token: &BearerToken) -> bool {
        token.identity_provider == self.identity_provider
            && token.audiences.iter().any(|a| self.audiences.contains(a))
            && self.client_ids.contains(&token.client_id)
            && self.scopes.is_subset(&token.scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn rule() -> BearerRule {
        BearerRule {
            identity_provider: "keycloak".into(),
            audiences: set(&["orders-api"]),
            client_ids: set(&["billing"]),
            scopes: set(&["orders:read"]),
        }
    }

    fn token() -> BearerToken {
        BearerToken {
            identity_provider: "keycloak".into(),
            subject: "service-account-billing".into(),
            client_id: "billing".into(),
            audiences: vec!["account".into(), "orders-api".into()],
            scopes: set(&["profile", "orders:read"]),
            expires_at: 0,
        }
    }

    #[test]
    fn every_condition_is_required() {
        assert!(rule().accepts(&token()));
        let mut other_idp = token();
        other_idp.identity_provider = "dex".into();
        let mut other_audience = token();
        other_audience.audiences = vec!["account".into()];
        let mut other_client = token();
        other_client.client_id = "billing2".into();
        let mut missing_scope = token();
        missing_scope.scopes = set(&["orders:write"]);
        for refused in [other_idp, other_audience, other_client, missing_scope] {
            assert!(!rule().accepts(&refused), "{refused:?}");
        }
    }

    #[test]
    fn no_scopes_required_accepts_a_token_without_scope() {
        let mut any_scope = rule();
        any_scope.scopes.clear();
        let mut token = token();
        token.scopes.clear();
        assert!(any_scope.accepts(&token));
        assert!(!rule().accepts(&token));
    }
}
