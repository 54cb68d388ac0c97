//! The audit trail: one structured event for each thing a security review asks about (who
//! signed in, who signed out, which sessions the identity provider ended or could not confirm,
//! which revoked sessions were refused, which open connections were cut) with the user in it,
//! on a log target of its own (`portcullis::audit`) so a log pipeline can keep it apart from
//! the operational log and the access log. Tokens, cookies, codes and secrets are never part of
//! it; the identity provider's error codes are cut to their safe characters.
//!
//! Revocations themselves are written to the API server, which records who made them in its
//! own audit log; the operator reports each one's enforcement as a Kubernetes Event on the
//! revoked object.

use tracing::{info, warn};

/// The log target of every audit event.
pub const TARGET: &str = "portcullis::audit";

/// Who an event is about: the identity provider's subject, and the email it stated.
#[derive(Clone, Copy, Debug)]
pub struct User<'a> {
    pub subject: &'a str,
    pub email: Option<&'a str>,
}

impl<'a> User<'a> {
    pub fn new(subject: &'a str, email: Option<&'a str>) -> Self {
        Self { subject, email }
    }
}

/// A login completed and recorded as session `sid`.
pub fn login(sid: &str, idp: &str, user: User<'_>, groups: usize) {
    info!(
        target: TARGET,
        audit = %"login",
        sid = %sid,
        idp = %idp,
        subject = %user.subject,
        email = %user.email.unwrap_or(""),
        groups,
        "login"
    );
}

/// The identity provider answered the login with an error instead of a code.
pub fn login_refused(idp: &str, error: &str) {
    info!(
        target: TARGET,
        audit = %"login_refused",
        idp = %idp,
        error = %error,
        "the identity provider refused a login"
    );
}

/// The user signed out: session `sid` ended.
pub fn logout(sid: &str, user: User<'_>) {
    info!(
        target: TARGET,
        audit = %"logout",
        sid = %sid,
        subject = %user.subject,
        email = %user.email.unwrap_or(""),
        "logout"
    );
}

/// The identity provider refused a refresh for good (`reason`, e.g. `invalid_grant`): the
/// session is revoked.
pub fn ended_by_provider(sid: &str, idp: &str, reason: &str) {
    info!(
        target: TARGET,
        audit = %"ended_by_provider",
        sid = %sid,
        idp = %idp,
        reason = %reason,
        "the identity provider ended the session"
    );
}

/// A refresh failed (the provider unreachable or erroring): the policy's `refreshFailure`
/// decides what the session may still do.
pub fn refresh_failed(sid: &str, idp: &str, error: &str) {
    warn!(
        target: TARGET,
        audit = %"refresh_failed",
        sid = %sid,
        idp = %idp,
        error = %error,
        "refresh failed; the policy's refreshFailure applies"
    );
}

/// A request carrying a token of an ended session, or one minted before the policy's epoch
/// was raised, was refused (`reason` is the code the client saw).
pub fn refused(sid: &str, user: User<'_>, policy: &str, reason: &str) {
    info!(
        target: TARGET,
        audit = %"refused",
        sid = %sid,
        subject = %user.subject,
        email = %user.email.unwrap_or(""),
        policy = %policy,
        reason = %reason,
        "a revoked session was refused"
    );
}

/// An open WebSocket or streaming response was cut: its admission lapsed (`reason`).
pub fn exchange_cut(sid: &str, user: User<'_>, policy: &str, reason: &str) {
    info!(
        target: TARGET,
        audit = %"exchange_cut",
        sid = %sid,
        subject = %user.subject,
        email = %user.email.unwrap_or(""),
        policy = %policy,
        reason = %reason,
        "an open exchange was cut: its admission lapsed"
    );
}
