//! The original request as a forward-auth contract describes it, split by hand. Every contract
//! (nginx `X-Original-URL`, Traefik `X-Forwarded-Uri`, Envoy's path after the prefix) goes
//! through [`original_target`], so they all refuse the same things; the path it returns is the
//! one canonical form proxy mode judges too ([`CanonicalPath`]).

use super::Problem;
use http::Uri;
use portcullis_core::CanonicalPath;

/// Why a described original request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    #[error("not an https URL with an authority and an absolute path")]
    Url,
    #[error("a request URI must be an absolute path of visible ASCII without '#'")]
    Uri,
}

/// Splits nginx's `X-Original-URL` (`https://authority/path?query`) into authority and path
/// with query. By hand: a URL parser would resolve `..` and judge another path than the one
/// nginx forwards.
pub fn split_original_url(url: &str) -> Result<(&str, &str), OriginalError> {
    let rest = url.strip_prefix("https://").ok_or(OriginalError::Url)?;
    let (authority, path_and_query) = match rest.find(['/', '?', '#']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        Some(_) => return Err(OriginalError::Url),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(OriginalError::Url);
    }
    Ok((authority, path_and_query))
}

/// The canonical path and the URI of an original request target (`/path?query`). Judges
/// exactly what the ingress will forward: path and query are split by hand on the raw string,
/// and what a URI parser would silently drop or reinterpret (a `#` and all after it, spaces,
/// non-ASCII, an authority) is refused instead of judging a shorter path.
pub fn original_target(uri: &str) -> Result<(CanonicalPath, Uri), Problem> {
    let bad = || Problem::bad_request("bad_forwarded_headers", "Invalid request URI.");
    if !uri.starts_with('/') || uri.bytes().any(|b| b == b'#' || !b.is_ascii_graphic()) {
        return Err(bad());
    }
    let raw_path = uri.split('?').next().unwrap_or_default();
    let path = CanonicalPath::parse(raw_path)
        .map_err(|e| Problem::bad_request("bad_path", e.to_string()))?;
    let parsed: Uri = uri.parse().map_err(|_| bad())?;
    if parsed.scheme().is_some() || parsed.authority().is_some() || parsed.path() != raw_path {
        return Err(bad());
    }
    Ok((path, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_urls_split_on_the_first_delimiter() {
        assert_eq!(
            split_original_url("https://app.example.test/a/b?c=d"),
            Ok(("app.example.test", "/a/b?c=d"))
        );
        assert_eq!(
            split_original_url("https://app.example.test"),
            Ok(("app.example.test", "/"))
        );
        for bad in [
            "http://app.example.test/",
            "https://app.example.test?x=/",
            "https://app.example.test#/admin",
            "https://user@app.example.test/",
            "https:///admin",
            "//app.example.test/",
        ] {
            assert_eq!(split_original_url(bad), Err(OriginalError::Url), "{bad}");
        }
    }

    #[test]
    fn every_contract_refuses_a_fragment_and_what_a_parser_would_drop() {
        for bad in [
            "/public#/../admin",
            "/public?x#y",
            "/public%23",
            "/public/%3B/admin",
            "/public/%252e%252e/admin",
            "/a b",
            "/caf\u{e9}",
            "public",
            "//evil.test/admin",
            "/a\r\n",
        ] {
            assert!(original_target(bad).is_err(), "{bad:?}");
        }
        assert!(original_target("/public/x?q=%23#").is_err());
        let (path, uri) = original_target("/Public/x?q=1").expect("valid");
        assert_eq!(path.as_str(), "/Public/x");
        assert_eq!(uri.query(), Some("q=1"));
    }
}
