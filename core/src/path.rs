//! Request-path canonicalization.
//!
//! Most real bypasses of access proxies were parser disagreements: the proxy matched one reading
//! of a path and the upstream served another (`/app/../admin`, `%2e%2e`, `%2f`, `..;/`,
//! backslashes, double slashes). So the gateway never guesses: it turns the raw path into one
//! canonical form, rejects what has no single reading, matches policies on that form and
//! forwards exactly that form upstream.
//!
//! The canonical form:
//! - starts with `/`, has no empty segment except a trailing one (`/a/` is kept, `/a//b` refused);
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
//!   escape is kept with upper-case hex;
//! - no `.` or `..` segment, also not in escaped form;
//! - no `;` at all: servlet containers and Spring drop `;parameters` from segments, so
//!   `/admin;x/users` would be judged outside `/admin` and served as `/admin/users`;
//! - no encoded `/`, `\`, `#`, `?`, `;`, no NUL or other control character, raw or encoded;
//! - no double encoding: once decoded, no `%` starts an escape again (`%252e`, `%25%32%65`,
//!   `%25u002e`), since a backend that decodes twice would see `.`, `/` or `;` there;
//! - the decoded bytes are UTF-8, and no character in them is one that Unicode compatibility
//!   normalization (NFKC) or "best-fit" code-page mapping turns into ASCII (fullwidth solidus
//!   U+FF0F, division slash U+2215, fullwidth full stop U+FF0E, one dot leader U+2024,
//!   fullwidth letters, …): a backend that normalizes would see a separator, a dot segment or
//!   another name than the gateway did. Letters of other scripts are kept.
//!
//! There is deliberately no opt-in to forward any of these: every route is chosen on the
//! canonical path, so a lenient form could only be judged by guessing which policy it belongs
//! to. An app that needs such paths must accept them in a form that has a single reading.

use std::fmt;

/// Longest path accepted, in bytes of the raw form.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// A request path in canonical form; the only form policies are matched against and the form
/// forwarded upstream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CanonicalPath(String);

/// Why a path has no single safe reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path contains an empty segment ('//')")]
    EmptySegment,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains an encoded '/', '\\\\', '?' or '#'")]
    EncodedDelimiter,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a control character")]
    ControlCharacter,
    #[error("path contains a malformed percent-escape")]
    BadEscape,
    #[error("path contains a character that must be percent-encoded")]
    UnencodedCharacter,
    #[error("path contains a ';' parameter")]
    Parameter,
    #[error("path is not UTF-8 once decoded")]
    NotUtf8,
    #[error("path is percent-encoded twice ('%25' followed by an escape)")]
    DoubleEncoding,
    #[error("path contains a character that Unicode normalization turns into ASCII")]
    FoldsToAscii,
}

impl CanonicalPath {
    /// Canonicalizes the path component of a request target (without the query string).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        let bytes = raw.as_bytes();
        if bytes.first() != Some(&b'/') {
            return Err(PathError::NotAbsolute);
        }
        let mut out = String::with_capacity(raw.len());
        let mut decoded = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'%' => {
                    let v = escaped_byte(bytes.get(i + 1..i + 3))?;
                    push_escaped(&mut out, v)?;
                    decoded.push(v);
                    i += 3;
                }
                b'\\' => return Err(PathError::Backslash),
                b';' => return Err(PathError::Parameter),
                0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                _ if is_pchar_or_slash(b) => {
                    out.push(char::from(b));
                    decoded.push(b);
                    i += 1;
                }
                _ => return Err(PathError::UnencodedCharacter),
            }
        }
        let Ok(decoded) = std::str::from_utf8(&decoded) else {
            return Err(PathError::NotUtf8);
        };
        check_decoded(decoded)?;
        check_segments(&out)?;
        Ok(Self(out))
    }

    /// The canonical path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `prefix` (itself canonical, without trailing `/` unless it is `/`) covers this
    /// path on whole segments, ignoring ASCII case: `/wordpress` covers `/wordpress`,
    /// `/WordPress/x`, not `/wordpress2`. Case is ignored because some upstreams serve paths
    /// case-insensitively; treating `/WordPress` as protected by `/wordpress` fails closed.
    pub fn starts_with_segments(&self, prefix: &str) -> bool {
        if prefix == "/" {
            return true;
        }
        let path = self.0.as_bytes();
        let prefix = prefix.as_bytes();
        path.len() >= prefix.len()
            && path[..prefix.len()].eq_ignore_ascii_case(prefix)
            && (path.len() == prefix.len() || path[prefix.len()] == b'/')
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The byte a `%XX` escape stands for, from the two characters after the `%`.
fn escaped_byte(digits: Option<&[u8]>) -> Result<u8, PathError> {
    let Some(&[h, l]) = digits else {
        return Err(PathError::BadEscape);
    };
    let (Some(h), Some(l)) = (hex(h), hex(l)) else {
        return Err(PathError::BadEscape);
    };
    Ok(h << 4 | l)
}

/// Writes an escaped byte in canonical form: decoded when unreserved, else escaped again in
/// upper case. An escaped delimiter or control character is refused.
fn push_escaped(out: &mut String, v: u8) -> Result<(), PathError> {
    match v {
        b'/' | b'\\' | b'?' | b'#' | b';' => return Err(PathError::EncodedDelimiter),
        0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
        _ if is_unreserved(v) => out.push(char::from(v)),
        _ => {
            out.push('%');
            out.push(char::from(HEX[usize::from(v >> 4)]));
            out.push(char::from(HEX[usize::from(v & 0xf)]));
        }
    }
    Ok(())
}

/// What a backend decoding again or normalizing Unicode would read differently: a `%` that
/// starts an escape once decoded, or a character that folds into ASCII.
fn check_decoded(decoded: &str) -> Result<(), PathError> {
    let bytes = decoded.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let next = bytes.get(i + 1..i + 3);
            let is_escape =
                escaped_byte(next).is_ok() || matches!(bytes.get(i + 1), Some(b'u' | b'U'));
            if is_escape {
                return Err(PathError::DoubleEncoding);
            }
        }
    }
    if !decoded.is_ascii() && decoded.chars().any(crate::unicode::folds_to_ascii) {
        return Err(PathError::FoldsToAscii);
    }
    Ok(())
}

/// No empty segment (but the last: a trailing `/`), and no `.` or `..` segment.
fn check_segments(path: &str) -> Result<(), PathError> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        if segment.is_empty() && index != last {
            return Err(PathError::EmptySegment);
        }
        if *segment == "." || *segment == ".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` (minus `%`, handled separately) or the segment separator.
fn is_pchar_or_slash(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'/' | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests;
