//! One-line rendering of an error and its sources. The HTTP client's errors hide the useful
//! part (DNS, TLS, connection refused) in their source chain, so the chain goes into the
//! messages this module's callers log. Kept apart because it is not OIDC-specific: it is due
//! to move to a shared runtime helper.

/// The message of an error and all its sources, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
