//! The access rules of an `AccessPolicy`: what a rule does, the selectors it matches requests
//! and users with, and the service tokens its selectors may name.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CIDR, DNS_NAME, EMAIL};

/// One access rule. It matches when the request satisfies at least one `include` selector, every
/// `require` selector and no `exclude` selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.action != 'Bypass' || (self.include.all(s, !has(s.emails) && !has(s.emailDomains) && !has(s.groups) && !has(s.claim) && !has(s.serviceTokens) && !has(s.bearer)) && (!has(self.require) || self.require.all(s, !has(s.emails) && !has(s.emailDomains) && !has(s.groups) && !has(s.claim) && !has(s.serviceTokens) && !has(s.bearer))))").message("Bypass rules run before login: they may only select everyone or ipRanges"))]
#[x_kube(validation = Rule::new("self.action != 'ServiceAuth' || self.include.all(s, has(s.serviceTokens) || has(s.bearer))").message("ServiceAuth rules must include serviceTokens or bearer"))]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// A name for logs, metrics and the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// What happens to a request this rule matches.
    pub action: RuleAction,
    /// The rule matches when any of these selectors matches.
    #[schemars(length(min = 1, max = 16))]
    pub include: Vec<Selector>,
    /// ...and every one of these matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub require: Vec<Selector>,
    /// ...and none of these matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub exclude: Vec<Selector>,
}

/// What a matching rule does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Let the logged-in user through.
    Allow,
    /// Refuse the request (403), even if a later rule would allow it.
    Deny,
    /// Let the request through with no login and no identity (health checks, public assets).
    Bypass,
    /// Let a machine through that presents a valid service token in the
    /// `Portcullis-Client-Id` / `Portcullis-Client-Secret` headers, or a bearer JWT its
    /// identity provider issued to it (`Authorization: Bearer`, see `bearer` selectors).
    ServiceAuth,
}

/// A condition on the request or its user. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.everyone), has(self.emails), has(self.emailDomains), has(self.groups), has(self.claim), has(self.ipRanges), has(self.serviceTokens), has(self.bearer)].filter(x, x).size() == 1").message("a selector sets exactly one of everyone, emails, emailDomains, groups, claim, ipRanges, serviceTokens, bearer"))]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Matches every request (`everyone: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("everyone must be true when set"))]
    pub everyone: Option<bool>,
    /// Matches users whose verified email is one of these (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), inner(length(min = 3, max = 320), regex(pattern = EMAIL)))]
    pub emails: Option<Vec<String>>,
    /// Matches users whose verified email is in one of these domains (exact domain, no
    /// subdomains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253), regex(pattern = DNS_NAME)))]
    pub email_domains: Option<Vec<String>>,
    /// Matches users in any of these groups (the identity provider's `groups` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), inner(length(min = 1, max = 256)))]
    pub groups: Option<Vec<String>>,
    /// Matches users whose ID-token claim has one of the given values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimSelector>,
    /// Matches clients whose address (the connection's peer, or the address a trusted proxy
    /// reported) is in one of these CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 49), regex(pattern = CIDR)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("ipRanges must be CIDRs such as 10.0.0.0/8 or 2001:db8::/32"))]
    pub ip_ranges: Option<Vec<String>>,
    /// Matches machines presenting one of these service tokens (names from `spec.serviceTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 63)))]
    pub service_tokens: Option<Vec<String>>,
    /// Matches machines presenting `Authorization: Bearer <JWT>` from one of the gateway's
    /// identity providers, typically an access token of the OAuth 2.0 client-credentials flow
    /// (a Keycloak service account). `ServiceAuth` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerSelector>,
}

/// Which bearer JWTs a `ServiceAuth` rule accepts. The gateway checks the signature with the
/// provider's keys, `iss` (exactly the provider's issuer), `exp`, `nbf` and `iat`; this selector
/// then asks for every one of: an audience, a client and the scopes listed here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BearerSelector {
    /// The identity provider that issues the tokens: the name of one of the gateway's
    /// configured providers, whose issuer and keys the gateway already has.
    #[schemars(length(min = 1, max = 63))]
    pub identity_provider: String,
    /// The token's `aud` must contain at least one of these: the audience that names the app
    /// behind this policy (a Keycloak audience mapper adds it to the client's tokens), so a
    /// token minted for another API is refused here.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 256)))]
    pub audiences: Vec<String>,
    /// The clients allowed: the token's `azp` (or, without one, `client_id`) must be one of
    /// these.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    pub client_ids: Vec<String>,
    /// Scopes the token must all carry in its space-separated `scope` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 128), regex(pattern = r"^[!#-\[\]-~]+$"))
    )]
    pub scopes: Vec<String>,
}

/// Matches a claim of the ID token by exact value. For a list claim, any element may match.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSelector {
    /// Claim name, e.g. `hd` for a Google Workspace domain.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Accepted values.
    #[schemars(length(min = 1, max = 64), inner(length(max = 256)))]
    pub values: Vec<String>,
}

/// A credential for machines: a client id and a secret, both held in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceToken {
    /// Name that `serviceTokens` selectors refer to.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Secret in the policy's namespace holding the keys `client-id` and `client-secret`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}
