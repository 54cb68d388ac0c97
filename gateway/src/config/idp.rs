//! `PORTCULLIS_IDP_CONFIG`: the identity-provider file (the chart renders it from
//! `identityProviders`; `gateway/tests/chart_options.rs` checks every option can be set there).

use super::{AuthorizationParams, ForcedLoginPrompt, GroupsSource};
use serde::Deserialize;
use std::{path::PathBuf, time::Duration};

/// `PORTCULLIS_IDP_CONFIG`: the identity providers, by name.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdpFile {
    pub identity_providers: Vec<IdpConfig>,
}

/// One OpenID Connect provider (Google is one with issuer `https://accounts.google.com`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdpConfig {
    /// Name policies refer to in `identityProviders`.
    pub name: String,
    /// Shown on the chooser page.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Issuer URL; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Other spellings of the issuer the provider puts in `iss` (Google sends
    /// `accounts.google.com` as well as `https://accounts.google.com`).
    #[serde(default)]
    pub issuer_aliases: Vec<String>,
    pub client_id: String,
    /// File holding the client secret (a mounted Secret).
    pub client_secret_file: PathBuf,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Accept `email` without `email_verified: true` (some providers never send it). Off by
    /// default: an unverified email matches no email rule.
    #[serde(default)]
    pub trust_unverified_email: bool,
    /// ID-token claims carried into app tokens for `claim` selectors (e.g. `hd`).
    #[serde(default)]
    pub forward_claims: Vec<String>,
    /// When the gateway forces a new login (after a revocation), require the ID token's
    /// `auth_time` to prove the provider really authenticated the user again. Turn off only for
    /// providers that never send `auth_time` and keep no login session of their own (Dex with
    /// its password database asks for credentials on every authorization).
    #[serde(default = "default_true")]
    pub require_auth_time: bool,
    /// How a forced re-login is asked for: `login` (`prompt=login` and `max_age=0`, the
    /// default) or `select_account` (Google, which refuses `prompt=login`; with it
    /// `requireAuthTime` must be off, since nothing proves a new authentication).
    #[serde(default)]
    pub forced_login_prompt: ForcedLoginPrompt,
    /// After an ID token signed with a key the gateway does not know (the provider rotated its
    /// keys), discovery and the JWKS are fetched again, at most this often.
    #[serde(default = "default_jwks_refresh_cooldown", with = "duration_string")]
    pub jwks_refresh_cooldown: Duration,
    /// How often an active session is confirmed with the provider by redeeming its refresh
    /// token (which also re-reads the user's email and groups). `0s` turns confirmation off:
    /// sessions then live until their idle or absolute limit, or a revocation.
    #[serde(default = "default_refresh_interval", with = "duration_string")]
    pub refresh_interval: Duration,
    /// OAuth error codes from the token endpoint that mean "this refresh token is dead": the
    /// session is then revoked. RFC 6749 says `invalid_grant`; Dex answers a refresh token it
    /// no longer knows (expired, already used, lost in a restart) with `invalid_request`, so
    /// Dex deployments list both. Any other answer, and every network error or 5xx, is
    /// transient and handled by the policy's `refreshFailure`.
    #[serde(default = "default_refresh_rejections")]
    pub refresh_rejection_errors: Vec<String>,
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): after
    /// `/.portcullis/logout` on the auth host, send the browser to this URL instead of the
    /// `end_session_endpoint` the provider's discovery document advertises (for a provider that
    /// advertises none, or a wrong one). The provider must accept
    /// `https://<auth host>/.portcullis/logged-out` as a post-logout redirect URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<url::Url>,
    /// Whether signing out at the auth host also ends the user's session at this provider
    /// (RP-initiated logout), at `endSessionEndpoint` or else the discovered
    /// `end_session_endpoint`, with the session's ID token as `id_token_hint`. On by default:
    /// a user who signs out expects to be signed out, and a provider session left behind
    /// would log the next person at a shared computer straight back in. Turn it off for a
    /// provider whose session is shared with other applications that must stay signed in
    /// (a company's Google or Entra account); the gateway's own session ends either way. A
    /// provider that advertises no endpoint and has none configured (Dex) is not affected.
    #[serde(default = "default_true")]
    pub rp_initiated_logout: bool,
    /// Back-Channel Logout: accept `logout_token`s at `/.portcullis/backchannel-logout/<name>`
    /// on the auth host and revoke the sessions they name (off: that path answers 404).
    #[serde(default)]
    pub backchannel_logout: bool,
    /// Extra parameters of the authorization request (Google: `access_type: offline` and
    /// `prompt: consent` for refresh tokens). The parameters the gateway sets itself are
    /// refused; see [`AuthorizationParams`] for `prompt`.
    #[serde(default)]
    pub authorization_params: AuthorizationParams,
    /// Where the user's groups are read: `idToken` (default) or `userinfo` (the userinfo
    /// endpoint, at login and at every confirmation), for providers that keep them out of ID
    /// tokens.
    #[serde(default)]
    pub groups_from: GroupsSource,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_refresh_rejections() -> Vec<String> {
    vec!["invalid_grant".into()]
}

fn default_true() -> bool {
    true
}

fn default_jwks_refresh_cooldown() -> Duration {
    Duration::from_secs(30)
}

/// (De)serializes a [`Duration`] as a Go-style string (`30s`).
mod duration_string {
    use portcullis_runtime::parse_duration;
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups", "offline_access"]
        .map(String::from)
        .to_vec()
}
