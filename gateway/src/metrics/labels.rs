//! The metrics' label values: each a closed enum, so no label can take a value that was not
//! written down here (and none comes from a user).

use portcullis_core::token::TokenError;
use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabel {
    pub(super) endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabel {
    pub(super) source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct IdpLabel {
    pub(super) idp: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ConfirmationLabel {
    pub(super) idp: String,
    pub(super) outcome: &'static str,
}

/// What the access check decided: the `outcome` label of `checks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Allow,
    Login,
    Deny,
    NoPolicy,
    NotReady,
}

impl CheckResult {
    pub const ALL: [Self; 5] = [
        Self::Allow,
        Self::Login,
        Self::Deny,
        Self::NoPolicy,
        Self::NotReady,
    ];

    /// The label value (also the access log's `decision`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Login => "login",
            Self::Deny => "deny",
            Self::NoPolicy => "no_policy",
            Self::NotReady => "not_ready",
        }
    }
}

/// Why a token (app token, SSO cookie) was not accepted: the `reason` label of
/// `token_rejections_total`.
#[derive(Clone, Copy, Debug)]
pub enum Rejection<'a> {
    /// The token itself failed verification.
    Token(&'a TokenError),
    /// Minted before the policy's revocation epoch, or for an earlier object of its name.
    StaleEpoch,
    /// The session was revoked, logged out or deleted.
    SessionRevoked,
    /// The session is not in the index: absence is not validity.
    SessionUnknown,
    /// The identity provider has not confirmed the session for longer than the policy allows.
    RefreshFailing,
    /// An SSO cookie whose session is revoked or unknown.
    SsoSessionEnded,
    /// An SSO cookie whose app session ended idle or at its absolute lifetime.
    SsoAppSessionEnded,
    /// An SSO cookie from before the policy's revocation epoch.
    SsoBeforeEpoch,
}

impl Rejection<'_> {
    /// The labels of every kind but [`Rejection::Token`] (whose labels are the token errors').
    pub(super) const OTHER_LABELS: [&'static str; 7] = [
        "stale_epoch",
        "session_revoked",
        "session_unknown",
        "refresh_failing",
        "sso_session_ended",
        "sso_app_session_ended",
        "sso_before_epoch",
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Token(error) => error.category(),
            Self::StaleEpoch => "stale_epoch",
            Self::SessionRevoked => "session_revoked",
            Self::SessionUnknown => "session_unknown",
            Self::RefreshFailing => "refresh_failing",
            Self::SsoSessionEnded => "sso_session_ended",
            Self::SsoAppSessionEnded => "sso_app_session_ended",
            Self::SsoBeforeEpoch => "sso_before_epoch",
        }
    }
}

/// How one confirmation of a session with its identity provider ended: the `outcome` label
/// of `session_confirmations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The provider confirmed the session.
    Confirmed,
    /// The provider refused it (or its token does not open): the session is revoked.
    Rejected,
    /// The provider could not be asked; retried after a pause.
    Failed,
    /// Left to a replica that has the session key the token is sealed with.
    Deferred,
    /// The outcome could not be written back.
    Unrecorded,
}

impl Confirmation {
    pub const ALL: [Self; 5] = [
        Self::Confirmed,
        Self::Rejected,
        Self::Failed,
        Self::Deferred,
        Self::Unrecorded,
    ];

    /// The metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Deferred => "deferred",
            Self::Unrecorded => "unrecorded",
        }
    }
}

/// A write of a session record that failed: the `operation` label of
/// `session_write_errors_total`. These are API-server (or session-file) failures, not
/// identity-provider ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionWrite {
    /// Recording a new login.
    Record,
    /// Revoking a session at logout.
    Revoke,
}

impl SessionWrite {
    pub(super) const ALL: [Self; 2] = [Self::Record, Self::Revoke];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Revoke => "revoke",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OperationLabel {
    pub(super) operation: &'static str,
}

/// Why an open exchange (an upgraded connection, a response still streaming) was cut: its
/// admission lapsed. The `reason` label of `exchanges_cut_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lapsed {
    /// The policy is gone, was created again, or its epoch was raised.
    PolicyRevoked,
    /// The session ended (revoked, logged out, deleted), or its provider stopped confirming
    /// it beyond what the policy allows.
    SessionEnded,
    /// The policy's rules no longer admit the user.
    NoLongerAllowed,
    /// The session's absolute lifetime is over.
    Expired,
}

impl Lapsed {
    pub(super) const ALL: [Self; 4] = [
        Self::PolicyRevoked,
        Self::SessionEnded,
        Self::NoLongerAllowed,
        Self::Expired,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::PolicyRevoked => "policy_revoked",
            Self::SessionEnded => "session_ended",
            Self::NoLongerAllowed => "no_longer_allowed",
            Self::Expired => "expired",
        }
    }
}
