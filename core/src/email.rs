//! Email addresses, parsed strictly.
//!
//! An address is compared by the domain it really has: `someone@evil.test@example.com` must not
//! satisfy `emailDomains: [example.com]`. Mail software disagrees on everything beyond the
//! plain `local@domain` form (quoted local parts, comments, `%` and `!` routing, source routes,
//! IP literals, trailing dots, internationalized addresses), so the gateway accepts a strict
//! subset of RFC 5321 and refuses the rest instead of guessing which part a provider meant:
//!
//! - exactly one `@`, with a non-empty local part (at most 64 bytes) before it and a domain
//!   (at most 253 bytes) after it, 254 bytes in all;
//! - the local part is a dot-atom of ASCII letters, digits and `! # $ & ' * + - / = ? ^ _ `
//!   { | } ~` (RFC 5322 `atext` without `%` and `!`, which relays read as routing), with no
//!   leading, trailing or doubled dot;
//! - the domain is at least two LDH labels (letters, digits, inner hyphens; 1–63 bytes each),
//!   with no trailing dot and no address literal;
//! - no whitespace, control character, quote, comment or non-ASCII character anywhere.
//!
//! Both parts are lower-cased: domains are case-insensitive, and every provider the gateway
//! knows treats local parts case-insensitively too (policies compare them lower-cased).

use std::fmt;

/// Longest address accepted (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;
/// Longest domain.
pub const MAX_DOMAIN_LEN: usize = 253;

/// A strictly parsed, lower-cased email address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    /// `local@domain`, lower-cased.
    address: String,
    /// Where the domain starts in `address`.
    at: usize,
}

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email address is longer than {MAX_EMAIL_LEN} bytes")]
    TooLong,
    #[error("email address must contain exactly one '@'")]
    NotOneAt,
    #[error("email address has an empty or over-long local part")]
    LocalLength,
    #[error("email address has a character outside the accepted local-part set")]
    LocalCharacter,
    #[error("email address has a leading, trailing or doubled dot in its local part")]
    LocalDot,
    #[error("email address has an invalid domain: {0}")]
    Domain(DomainError),
}

/// Why a mail domain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("empty or longer than {MAX_DOMAIN_LEN} bytes")]
    Length,
    #[error("ends with a dot")]
    TrailingDot,
    #[error("needs at least two labels")]
    SingleLabel,
    #[error("a label is empty, longer than 63 bytes, or starts or ends with '-'")]
    Label,
    #[error("contains a character outside letters, digits, '-' and '.'")]
    Character,
}

impl EmailAddress {
    /// Parses an address as an identity provider states it.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        if raw.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let mut parts = raw.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::NotOneAt);
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return Err(EmailError::LocalLength);
        }
        if !local.bytes().all(is_local_byte) {
            return Err(EmailError::LocalCharacter);
        }
        if local.split('.').any(str::is_empty) {
            return Err(EmailError::LocalDot);
        }
        let domain = mail_domain(domain).map_err(EmailError::Domain)?;
        let mut address = local.to_ascii_lowercase();
        address.push('@');
        let at = address.len();
        address.push_str(&domain);
        Ok(Self { address, at })
    }

    /// The whole address, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The local part, lower-cased.
    pub fn local(&self) -> &str {
        &self.address[..self.at - 1]
    }

    /// The domain, lower-cased: what `emailDomains` rules compare, exactly.
    pub fn domain(&self) -> &str {
        &self.address[self.at..]
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// A mail domain in the strict form [`EmailAddress`] accepts, lower-cased. Policies'
/// `emailDomains` entries go through it too, so a rule can only name a domain an address can
/// have.
pub fn mail_domain(raw: &str) -> Result<String, DomainError> {
    if raw.is_empty() || raw.len() > MAX_DOMAIN_LEN {
        return Err(DomainError::Length);
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(DomainError::Character);
    }
    if raw.ends_with('.') {
        return Err(DomainError::TrailingDot);
    }
    let mut labels = 0;
    for label in raw.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError::Label);
        }
        labels += 1;
    }
    if labels < 2 {
        return Err(DomainError::SingleLabel);
    }
    Ok(raw.to_ascii_lowercase())
}

/// RFC 5322 `atext` without `%` and `!` (routing), plus the dot between atoms.
fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'#'
                | b'$'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
}

#[cfg(test)]
mod tests;
