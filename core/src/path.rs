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
//! - no encoded `/`, `\`, `#`, `?`, no NUL or other control character, raw or encoded;
//! - the decoded bytes are UTF-8.

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
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::NotUtf8);
        }
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
        b'/' | b'\\' | b'?' | b'#' => return Err(PathError::EncodedDelimiter),
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
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match CanonicalPath::parse(raw) {
            Ok(path) => path.0,
            Err(error) => panic!("{raw} refused: {error}"),
        }
    }

    #[test]
    fn plain_paths_are_kept() {
        for raw in [
            "/",
            "/wordpress",
            "/wordpress/",
            "/a/b.c/d~e",
            "/api/v1:batch",
            "/@me",
        ] {
            assert_eq!(ok(raw), raw);
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_upper_cased() {
        assert_eq!(ok("/%77ordpress"), "/wordpress");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%2a"), "/a%2A");
        assert_eq!(ok("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use PathError::*;
        let cases = [
            ("", NotAbsolute),
            ("wordpress", NotAbsolute),
            ("/wordpress/../admin", DotSegment),
            ("/wordpress/./admin", DotSegment),
            ("/..", DotSegment),
            ("/%2e%2e/admin", DotSegment),
            ("/%2E/admin", DotSegment),
            ("/.%2e/admin", DotSegment),
            ("/wordpress/..;/admin", Parameter),
            ("/wordpress/.;x/admin", Parameter),
            ("/admin;x=1/users", Parameter),
            ("/wordpress%2fadmin", EncodedDelimiter),
            ("/wordpress%2Fadmin", EncodedDelimiter),
            ("/a%5cb", EncodedDelimiter),
            ("/a%23b", EncodedDelimiter),
            ("/a%3fb", EncodedDelimiter),
            ("//admin", EmptySegment),
            ("/a//b", EmptySegment),
            ("/a\\b", Backslash),
            ("/a%00b", ControlCharacter),
            ("/a%0d%0ab", ControlCharacter),
            ("/a\u{1}b", ControlCharacter),
            ("/a%zz", BadEscape),
            ("/a%4", BadEscape),
            ("/a b", UnencodedCharacter),
            ("/a\"b", UnencodedCharacter),
            ("/é", UnencodedCharacter),
            ("/%ff%fe", NotUtf8),
        ];
        for (raw, expected) in cases {
            assert_eq!(CanonicalPath::parse(raw), Err(expected), "{raw:?}");
        }
        assert_eq!(
            CanonicalPath::parse(&"/a".repeat(MAX_PATH_LEN)),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn prefixes_match_whole_segments_ignoring_case() {
        let path = |raw| CanonicalPath::parse(raw).expect("valid");
        assert!(path("/wordpress").starts_with_segments("/wordpress"));
        assert!(path("/wordpress/").starts_with_segments("/wordpress"));
        assert!(path("/wordpress/wp-admin").starts_with_segments("/wordpress"));
        assert!(path("/WordPress/wp-admin").starts_with_segments("/wordpress"));
        assert!(!path("/wordpress2").starts_with_segments("/wordpress"));
        assert!(!path("/word").starts_with_segments("/wordpress"));
        assert!(path("/anything").starts_with_segments("/"));
    }
}
