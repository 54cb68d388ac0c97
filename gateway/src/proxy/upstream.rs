//! Validated upstream targets.

use std::{fmt, str::FromStr, time::Duration};

use http::uri::{Authority, Scheme};

/// Protocol spoken to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamScheme {
    /// Plain HTTP/1.1 (no h2c: prior-knowledge h2 to arbitrary backends breaks too often and an
    /// h2c *upgrade* is a request-smuggling vector).
    Http,
    /// TLS, offering `h2` and `http/1.1` by ALPN; verified against the proxy's roots.
    Https,
}

impl UpstreamScheme {
    fn as_scheme(self) -> Scheme {
        match self {
            Self::Http => Scheme::HTTP,
            Self::Https => Scheme::HTTPS,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Why an upstream target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream url must start with http:// or https://")]
    Scheme,
    #[error(
        "upstream url must be scheme://host[:port] without path, query, fragment or credentials"
    )]
    Shape,
    #[error("invalid upstream authority")]
    Authority,
    #[error("upstream port must be 1-65535")]
    Port,
    #[error("upstream response-head timeout must be positive")]
    Timeout,
}

/// Where a policy's authorized requests go: scheme, `host[:port]` and how long the upstream may
/// take to start answering.
///
/// Built only through validating constructors, so a value of this type is always something
/// [`crate::proxy::Proxy::forward`] can use: no userinfo (credentials in a URL end up in logs),
/// no path or query (the request's path is forwarded unchanged; prefix rewriting is a separate,
/// explicit feature if it is ever needed), a non-zero port.
///
/// The response-head timeout runs while the gateway connects, does TLS and waits for the
/// response head. It is *suspended* while the request body is still being streamed upstream and
/// restarts in full once the body is complete, so a large upload is not cut off by a timeout
/// sized for the upstream's think time; a client that uploads slowly forever is the server
/// layer's request timeout's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    scheme: UpstreamScheme,
    authority: Authority,
    response_head_timeout: Duration,
}

impl Upstream {
    /// An upstream from its parts. `authority` is `host[:port]`; IPv6 literals in brackets.
    pub fn new(
        scheme: UpstreamScheme,
        authority: &str,
        response_head_timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        if response_head_timeout.is_zero() {
            return Err(UpstreamError::Timeout);
        }
        if authority.is_empty() || authority.contains(['@', '/', '?', '#', '\\']) {
            return Err(UpstreamError::Shape);
        }
        let authority = Authority::from_str(authority).map_err(|_| UpstreamError::Authority)?;
        if authority.host().is_empty() {
            return Err(UpstreamError::Authority);
        }
        // `Authority` keeps a port it cannot read (`host:`, `host:99999`) verbatim; refuse
        // those and port 0.
        let has_port = authority.as_str().len() != authority.host().len();
        if has_port && authority.port_u16().is_none_or(|p| p == 0) {
            return Err(UpstreamError::Port);
        }
        Ok(Self {
            scheme,
            authority,
            response_head_timeout,
        })
    }

    /// Parses a policy's `upstream.url`: `http://host[:port]` or `https://host[:port]`.
    pub fn from_url(url: &str, response_head_timeout: Duration) -> Result<Self, UpstreamError> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (UpstreamScheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (UpstreamScheme::Http, rest)
        } else {
            return Err(UpstreamError::Scheme);
        };
        Self::new(scheme, rest, response_head_timeout)
    }

    /// A Kubernetes Service in `namespace`, addressed as `name.namespace.svc:port` (resolved
    /// through the pod's DNS search path, and the name a Service certificate usually carries).
    pub fn service(
        scheme: UpstreamScheme,
        name: &str,
        namespace: &str,
        port: u16,
        response_head_timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        if port == 0 {
            return Err(UpstreamError::Port);
        }
        Self::new(
            scheme,
            &format!("{name}.{namespace}.svc:{port}"),
            response_head_timeout,
        )
    }

    pub fn scheme(&self) -> UpstreamScheme {
        self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn response_head_timeout(&self) -> Duration {
        self.response_head_timeout
    }

    pub(crate) fn http_scheme(&self) -> Scheme {
        self.scheme.as_scheme()
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn accepts_plain_targets() {
        let u = Upstream::from_url("https://app.example:8443", T).expect("valid");
        assert_eq!(u.scheme(), UpstreamScheme::Https);
        assert_eq!(u.authority().as_str(), "app.example:8443");
        assert_eq!(u.to_string(), "https://app.example:8443");
        assert!(Upstream::from_url("http://127.0.0.1", T).is_ok());
        assert!(Upstream::from_url("http://[::1]:8080", T).is_ok());
        let s = Upstream::service(UpstreamScheme::Http, "web", "shop", 80, T).expect("valid");
        assert_eq!(s.authority().as_str(), "web.shop.svc:80");
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "ftp://x",
            "x:80",
            "http://",
            "http://user:pw@x",
            "http://x/path",
            "http://x?q",
            "http://x#f",
            "http://x:",
            "http://x:0",
            "http://x:99999",
            "http://a b",
            "http://x\r\nHost: y",
        ] {
            assert!(Upstream::from_url(bad, T).is_err(), "{bad}");
        }
        assert_eq!(
            Upstream::from_url("http://x", Duration::ZERO),
            Err(UpstreamError::Timeout)
        );
    }
}
