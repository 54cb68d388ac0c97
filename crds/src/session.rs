//! `AccessSession`: one object per login, so that a login can be listed, audited and revoked with
//! `kubectl`.
//!
//! Revocation is one-way at the API server: CEL refuses any update that turns `revoked` back to
//! `false` or drops it, so no writer — a stale gateway, a server-side apply that still carries
//! `revoked: false`, a restored backup applied over a live object — can un-revoke a session.
//! `expiresAt` may only move earlier for the same reason.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Label carrying a stable, label-safe hash of the session's subject, so that every session of
/// one user can be selected (`-l access.portcullis.dev/user=<hash>`) even where the subject
/// itself is not a valid label value. `kubectl get accesssessions --field-selector
/// spec.subject=<sub>` selects by the subject itself.
pub const USER_LABEL: &str = "access.portcullis.dev/user";

/// Label naming the identity provider a session logged in through.
pub const IDENTITY_PROVIDER_LABEL: &str = "access.portcullis.dev/identity-provider";

/// Prefix of the annotations naming the policies a session was handed to: the policy object's
/// uid follows, the value is its `namespace/name`. Written by the gateway in the same write
/// that redeems the hand-off ticket (no write of its own), read by `kubectl portcullis preview
/// epoch`: a session was signed in to a policy (holds or held its app token) exactly when it
/// has that policy's annotation. A uid, not the name: a policy deleted and created again is
/// another object, and the gateways refuse the old one's tokens.
pub const USED_POLICY_PREFIX: &str = "policy.access.portcullis.dev/";

/// The uids of the policies `session` was handed to.
pub fn used_policies(session: &AccessSession) -> impl Iterator<Item = &str> {
    session
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter_map(|(key, _)| key.strip_prefix(USED_POLICY_PREFIX))
}

/// Escapes a value for a field selector on one of the selectable fields below, as the API
/// server's parser expects (`\`, `,` and `=` are special): identity providers' subjects can be
/// base64 with `=` padding, and a provider's name may hold any of them.
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Desired state of an `AccessSession`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    cel,
    group = "access.portcullis.dev",
    version = "v1alpha1",
    kind = "AccessSession",
    plural = "accesssessions",
    singular = "accesssession",
    shortname = "as",
    shortname = "asess",
    category = "portcullis",
    namespaced,
    status = "AccessSessionStatus",
    derive = "PartialEq",
    selectable = ".spec.subject",
    selectable = ".spec.identityProvider",
    // Every gateway watches the revoked sessions directly (a field selector on this), so a
    // revocation reaches it from the API server whatever the operator's stream is doing.
    selectable = ".spec.revoked",
    doc = "AccessSession is one login through the Portcullis auth host. Its name is the `sid` in \
           every token the login issues; set spec.revoked to end it on every gateway.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.email",
        description = "The user's verified email"
    ),
    printcolumn(
        name = "Subject",
        type_ = "string",
        json_path = ".spec.subject",
        priority = 1
    ),
    printcolumn(name = "IdP", type_ = "string", json_path = ".spec.identityProvider"),
    printcolumn(name = "Revoked", type_ = "boolean", json_path = ".spec.revoked"),
    printcolumn(
        name = "Enforced",
        type_ = "string",
        json_path = ".status.enforcement.summary",
        description = "Gateways enforcing the revocation / gateways connected"
    ),
    // A `date` column prints an age, and kubectl prints `<invalid>` for every time in the future:
    // the absolute expiry is shown as the timestamp itself.
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".spec.expiresAt",
        description = "When the session ends at the latest (RFC 3339)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    cel,
    validation = Rule::new("!has(oldSelf.revoked) || !oldSelf.revoked || (has(self.revoked) && self.revoked)").message("a revoked session cannot be un-revoked").reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.expiresAt > self.issuedAt").message("expiresAt must be after issuedAt"),
    validation = Rule::new("!has(self.revokedBy) || (has(self.revoked) && self.revoked)").message("revokedBy is set only together with revoked").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(oldSelf.revokedBy) || (has(self.revokedBy) && self.revokedBy == oldSelf.revokedBy)").message("revokedBy is immutable once set").reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(oldSelf.providerSessionId) == has(self.providerSessionId) && (!has(self.providerSessionId) || self.providerSessionId == oldSelf.providerSessionId)").message("providerSessionId is immutable").reason(Reason::FieldValueForbidden)
)]
#[serde(rename_all = "camelCase")]
pub struct AccessSessionSpec {
    /// The identity provider's stable subject identifier (`sub`). Immutable.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("subject is immutable").reason(Reason::FieldValueForbidden))]
    pub subject: String,
    /// Verified email at login, for display and email rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 320))]
    pub email: Option<String>,
    /// Groups at login (refreshed from the identity provider while the session lives).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512), inner(length(max = 256)))]
    pub groups: Vec<String>,
    /// Name of the identity provider the user logged in with. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("identityProvider is immutable").reason(Reason::FieldValueForbidden))]
    pub identity_provider: String,
    /// When the user authenticated at the identity provider. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("issuedAt is immutable").reason(Reason::FieldValueForbidden))]
    pub issued_at: Time,
    /// Absolute end of the session. It may be moved earlier, never later.
    #[x_kube(validation = Rule::new("self <= oldSelf").message("expiresAt can only move earlier").reason(Reason::FieldValueForbidden))]
    pub expires_at: Time,
    /// Set to true to end the session on every gateway. One-way: it cannot be set back to false.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    pub revoked: bool,
    /// Why the session was revoked (shown in audit logs and on the login page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub revocation_reason: Option<String>,
    /// Who revoked the session: the Kubernetes user name of the request that set `revoked`
    /// (`kubectl portcullis revoke` fills it in). The chart's ValidatingAdmissionPolicy refuses
    /// any other name, so with it installed this is the API server's word, not the writer's
    /// claim. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub revoked_by: Option<String>,
    /// The identity provider's own session id (the ID token's `sid`), when it sent one: a
    /// back-channel logout from the provider naming this `sid` ends this session. Immutable:
    /// it can be neither changed, added nor removed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub provider_session_id: Option<String>,
}

/// Observed state of an `AccessSession`, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessSessionStatus {
    /// `Revoked` once the revocation is recorded, `Enforced` once every connected gateway
    /// refuses the session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the operator first saw `spec.revoked: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    /// How many gateways enforce the revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Background confirmation of the session with its identity provider, written by the
    /// gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshStatus>,
}

/// The session's refresh token and the single-flight lease that lets exactly one gateway
/// redeem it at a time (identity providers rotate refresh tokens: two gateways redeeming the
/// same one would get the session revoked).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshStatus {
    /// The refresh token, sealed with the gateways' session key (AES-256-GCM, bound to this
    /// session's name): reading AccessSessions does not reveal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub sealed_token: Option<String>,
    /// The newest ID token the identity provider issued for the session (at login, or at a
    /// refresh), sealed like the refresh token but for a different purpose (a sealed refresh
    /// token moved here does not open): sent back to the provider as `id_token_hint` at
    /// RP-initiated logout, so it can end its own session without asking the user again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub sealed_id_token: Option<String>,
    /// Gateway currently redeeming the refresh token, or (after a confirmation) the one that
    /// redeems it next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub holder: Option<String>,
    /// Until when `holder` owns the refresh (after a confirmation: the next one plus one
    /// claim); another gateway may take over after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Time>,
    /// Last time the identity provider confirmed the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refreshed_at: Option<Time>,
    /// Set while the identity provider cannot be reached; the policy's `refreshFailure` decides
    /// what happens to the session meanwhile. Cleared by the next successful refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// The last refresh error, for `kubectl describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub last_error: Option<String>,
}

/// Gateways enforcing a revocation, out of those connected to the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    /// Gateways whose acknowledged state includes the revocation.
    pub enforced_by: i32,
    /// Gateways connected to the operator.
    pub connected: i32,
    /// `enforcedBy/connected`, for `kubectl get`.
    pub summary: String,
}
