//! Host-header normalization.
//!
//! Policies name exact lowercase DNS names. A request's authority is lower-cased and its port
//! dropped; anything else that could make two readings of one host (a trailing dot, userinfo,
//! characters outside DNS names, an empty name) is refused instead of normalized, so no request
//! reaches an upstream under a name its policy did not see.

use std::fmt;

/// Longest DNS name.
pub const MAX_HOST_LEN: usize = 253;

/// A lowercase DNS name or IP literal, without port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

/// Why an authority was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("missing host")]
    Empty,
    #[error("host is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    #[error("host ends with a dot")]
    TrailingDot,
    #[error("host contains characters outside a DNS name")]
    InvalidCharacter,
    #[error("host has an invalid port")]
    InvalidPort,
}

impl Host {
    /// Parses an authority as found in `Host` or the `:authority` pseudo-header.
    pub fn parse(authority: &str) -> Result<Self, HostError> {
        let (name, port) = if let Some(rest) = authority.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(HostError::InvalidCharacter);
            };
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(HostError::InvalidCharacter);
            }
            match after {
                "" => (format!("[{}]", inside.to_ascii_lowercase()), None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (format!("[{}]", inside.to_ascii_lowercase()), Some(port)),
                    None => return Err(HostError::InvalidPort),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((name, port)) => (name.to_ascii_lowercase(), Some(port)),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        if let Some(port) = port
            && (port.is_empty() || port.len() > 5 || port.parse::<u16>().is_err())
        {
            return Err(HostError::InvalidPort);
        }
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if name.len() > MAX_HOST_LEN {
            return Err(HostError::TooLong);
        }
        if name.starts_with('[') {
            return Ok(Self(name));
        }
        if name.ends_with('.') {
            return Err(HostError::TrailingDot);
        }
        let valid = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !valid {
            return Err(HostError::InvalidCharacter);
        }
        Ok(Self(name))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_normalized() {
        let host = |a| Host::parse(a).map(|h| h.0);
        assert_eq!(host("App.Example.TEST"), Ok("app.example.test".into()));
        assert_eq!(host("app.example.test:8443"), Ok("app.example.test".into()));
        assert_eq!(host("127.0.0.1:80"), Ok("127.0.0.1".into()));
        assert_eq!(host("[::1]:8443"), Ok("[::1]".into()));
    }

    #[test]
    fn ambiguous_authorities_are_refused() {
        use HostError::*;
        for (authority, error) in [
            ("", Empty),
            (":443", Empty),
            ("app.example.test.", TrailingDot),
            ("app.example.test.:443", TrailingDot),
            ("user@app.example.test", InvalidCharacter),
            ("app..example.test", InvalidCharacter),
            ("app_x.example.test", InvalidCharacter),
            ("-app.example.test", InvalidCharacter),
            ("app.example.test:", InvalidPort),
            ("app.example.test:99999", InvalidPort),
            ("app.example.test:80:80", InvalidPort),
            ("[::1", InvalidCharacter),
            ("[nope]", InvalidCharacter),
            ("[::1]x", InvalidPort),
        ] {
            assert_eq!(Host::parse(authority), Err(error), "{authority:?}");
        }
    }
}
