//! The one error type of the forwarding phase.
//!
//! Every failure knows its HTTP status and a bounded metrics category. The client only ever sees
//! [`ProxyError::public_message`]: the detail (addresses, TLS alerts, hyper's wording) goes to the
//! log, because it describes the inside of the deployment.

use std::{error::Error as StdError, fmt, time::Duration};

use http::StatusCode;

/// A boxed error, as hyper and hyper-util use them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request could not be forwarded, or its response head not obtained.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Nothing listens at the upstream address (TCP RST on connect).
    #[error("upstream refused the connection")]
    ConnectRefused(#[source] BoxError),
    /// DNS, routing or connect-timeout failure on the way to the upstream.
    #[error("could not connect to the upstream")]
    Connect(#[source] BoxError),
    /// The TLS handshake with an https upstream failed (unknown CA, name mismatch, alert, ...).
    #[error("TLS handshake with the upstream failed")]
    Tls(#[source] BoxError),
    /// The upstream sent no response head in time (see [`crate::proxy::Upstream`] for what the
    /// timer covers).
    #[error("upstream sent no response head within {0:?}")]
    Timeout(Duration),
    /// The upstream broke HTTP: closed mid-response, sent garbage, reset the stream.
    #[error("upstream protocol error")]
    UpstreamProtocol(#[source] BoxError),
    /// The upstream answered in a way a proxy must not pass on (for example `101 Switching
    /// Protocols` to a request that did not ask for that protocol).
    #[error("upstream answered unacceptably: {0}")]
    UpstreamMisbehaved(&'static str),
    /// Reading the client's request body failed (client went away or sent a malformed body).
    #[error("client request body failed")]
    ClientBody(#[source] BoxError),
    /// The request cannot be proxied as given (CONNECT, `*` target, ...).
    #[error("request cannot be proxied: {0}")]
    UnsupportedRequest(&'static str),
    /// A header the gateway itself computed is unusable (control character, reserved name).
    /// This is a bug or misconfiguration in the gateway, never the client's fault.
    #[error("refusing to add header {name}: {reason}")]
    InvalidAddedHeader { name: String, reason: &'static str },
    /// The proxy could not be built (TLS roots, ...).
    #[error("proxy setup failed: {0}")]
    Setup(String),
}

impl ProxyError {
    /// HTTP status the gateway answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ConnectRefused(_)
            | Self::Connect(_)
            | Self::Tls(_)
            | Self::UpstreamProtocol(_)
            | Self::UpstreamMisbehaved(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::ClientBody(_) | Self::UnsupportedRequest(_) => StatusCode::BAD_REQUEST,
            Self::InvalidAddedHeader { .. } | Self::Setup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every value [`ProxyError::category`] can take, so metrics can show each at zero.
    pub const CATEGORIES: [&'static str; 10] = [
        "upstream_refused",
        "upstream_connect",
        "upstream_tls",
        "upstream_timeout",
        "upstream_protocol",
        "upstream_misbehaved",
        "client_body",
        "unsupported_request",
        "invalid_added_header",
        "setup",
    ];

    /// Bounded label for metrics and log fields. Never derived from error text.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ConnectRefused(_) => "upstream_refused",
            Self::Connect(_) => "upstream_connect",
            Self::Tls(_) => "upstream_tls",
            Self::Timeout(_) => "upstream_timeout",
            Self::UpstreamProtocol(_) => "upstream_protocol",
            Self::UpstreamMisbehaved(_) => "upstream_misbehaved",
            Self::ClientBody(_) => "client_body",
            Self::UnsupportedRequest(_) => "unsupported_request",
            Self::InvalidAddedHeader { .. } => "invalid_added_header",
            Self::Setup(_) => "setup",
        }
    }

    /// Whether the upstream (rather than the client or the gateway) is to blame; useful for
    /// outlier detection and for choosing a log level.
    pub fn is_upstream(&self) -> bool {
        self.status() == StatusCode::BAD_GATEWAY || self.status() == StatusCode::GATEWAY_TIMEOUT
    }

    /// The short, generic text that may be shown to the client.
    pub fn public_message(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_GATEWAY => "Bad Gateway",
            StatusCode::GATEWAY_TIMEOUT => "Gateway Timeout",
            StatusCode::BAD_REQUEST => "Bad Request",
            _ => "Internal Server Error",
        }
    }

    /// Display adaptor printing the error with its whole `source()` chain, for logs.
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }

    /// Turns a hyper-util client error into the matching variant by walking its sources.
    pub(crate) fn from_client(err: hyper_util::client::legacy::Error) -> Self {
        let connect = err.is_connect();
        // Body errors of our request come back wrapped as a user error of hyper.
        let client_body =
            find_in_chain::<hyper::Error>(&err).is_some_and(|h| h.is_user() && !h.is_canceled());
        let refused = io_kind_in_chain(&err) == Some(std::io::ErrorKind::ConnectionRefused);
        let tls = rustls_in_chain(&err);
        let boxed: BoxError = Box::new(err);
        if tls {
            Self::Tls(boxed)
        } else if connect && refused {
            Self::ConnectRefused(boxed)
        } else if connect {
            Self::Connect(boxed)
        } else if client_body {
            Self::ClientBody(boxed)
        } else {
            Self::UpstreamProtocol(boxed)
        }
    }
}

/// See [`ProxyError::chain`].
pub struct ErrorChain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            // An `io::Error` displays its custom payload itself.
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// Sources of `err`, including custom payloads of `io::Error`s (which `io::Error::source` hides).
fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut stack: Vec<&'a (dyn StdError + 'static)> = vec![err];
    std::iter::from_fn(move || {
        let e = stack.pop()?;
        if let Some(s) = e.source() {
            stack.push(s);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            stack.push(inner);
        }
        Some(e)
    })
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    sources(err).find_map(|e| e.downcast_ref::<T>())
}

fn io_kind_in_chain(err: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    sources(err).find_map(|e| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind))
}

fn rustls_in_chain(err: &(dyn StdError + 'static)) -> bool {
    sources(err).any(|e| e.is::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_listed() {
        let all = [
            ProxyError::ConnectRefused("x".into()),
            ProxyError::Connect("x".into()),
            ProxyError::Tls("x".into()),
            ProxyError::Timeout(Duration::from_millis(1)),
            ProxyError::UpstreamProtocol("x".into()),
            ProxyError::UpstreamMisbehaved("x"),
            ProxyError::ClientBody("x".into()),
            ProxyError::UnsupportedRequest("x"),
            ProxyError::InvalidAddedHeader {
                name: String::new(),
                reason: "x",
            },
            ProxyError::Setup(String::new()),
        ];
        let categories: Vec<&str> = all.iter().map(ProxyError::category).collect();
        assert_eq!(categories, ProxyError::CATEGORIES);
    }

    #[test]
    fn statuses_and_categories() {
        let refused = ProxyError::ConnectRefused("x".into());
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refused.category(), "upstream_refused");
        assert!(refused.is_upstream());
        let timeout = ProxyError::Timeout(Duration::from_millis(5));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.public_message(), "Gateway Timeout");
        let bad = ProxyError::UnsupportedRequest("CONNECT");
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(!bad.is_upstream());
    }

    #[test]
    fn chain_finds_io_payloads() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let err = ProxyError::Tls(Box::new(inner));
        let text = err.chain().to_string();
        assert!(text.contains("TLS handshake"), "{text}");
        assert!(rustls_in_chain(&err));
    }
}
