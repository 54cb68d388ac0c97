//! Properties of the gateway's own parsers for bounded random inputs (the fuzz targets in
//! `fuzz/` run the same functions unbounded): the forward-auth URI splitting of every
//! contract, cookie headers, return addresses and the identity headers.

use http::{HeaderMap, HeaderValue, header};
use portcullis_core::CanonicalPath;
use portcullis_gateway::{
    cookies,
    http::{original_target, split_original_url},
    login::bind::{MAX_RETURN_ADDRESS_LEN, check_return_address},
    proxy::headers::{decode_groups, encode_group, identity_values},
};
use proptest::prelude::*;

const PIECES: &[&str] = &[
    "/",
    "a",
    "admin",
    ".",
    "..",
    "%2e",
    "%2f",
    "%3b",
    ";",
    "?",
    "#",
    "%23",
    "%252e",
    "@",
    " ",
    "\u{e9}",
    "%ef%bc%8f",
    "\\",
    "//",
    "https://",
    "x.test",
    ":443",
    "=",
];

fn uri_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..10).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// What a contract describes is either refused or judged on the canonical form of exactly
    /// the path before the first `?`, and never holds a fragment.
    #[test]
    fn forward_auth_targets_are_judged_on_their_exact_path(raw in uri_strategy()) {
        if let Ok((path, uri)) = original_target(&raw) {
            prop_assert!(!raw.contains('#'));
            let raw_path = raw.split('?').next().unwrap_or_default();
            prop_assert_eq!(CanonicalPath::parse(raw_path), Ok(path));
            prop_assert_eq!(uri.path(), raw_path);
        }
        let url = format!("https://{raw}");
        if let Ok((authority, rest)) = split_original_url(&url) {
            prop_assert!(!authority.contains(['/', '?', '#', '@']));
            prop_assert!(rest.starts_with('/'));
            let whole = format!("https://{authority}{rest}");
            let bare = format!("https://{authority}");
            prop_assert!(whole == url || (rest == "/" && bare == url), "{} split as {} {}", url, authority, rest);
        }
    }

    #[test]
    fn any_header_string_is_split_or_refused_without_panicking(raw in any::<String>()) {
        let _ = original_target(&raw);
        let _ = split_original_url(&raw);
        let _ = check_return_address(&raw);
    }

    /// A cookie the gateway reads appears exactly once with that name, and is never oversized.
    #[test]
    fn cookie_headers_yield_each_name_once_or_not_at_all(
        pairs in prop::collection::vec(("[a-zA-Z_-]{0,6}", "[ -~]{0,12}"), 0..8),
        name in "[a-zA-Z_-]{1,6}",
    ) {
        let line = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&line) {
            headers.insert(header::COOKIE, value);
        }
        let jar = cookies::parse(&headers);
        if let Some(value) = cookies::get(&jar, &name) {
            prop_assert_eq!(jar.iter().filter(|(n, _)| *n == name).count(), 1);
            prop_assert!(!value.is_empty() && value.len() <= cookies::MAX_COOKIE_LEN);
        }
    }

    #[test]
    fn return_addresses_are_capped(len in 0usize..6000) {
        let rd = format!("https://app.example.test/{}", "a".repeat(len));
        let result = check_return_address(&rd);
        prop_assert_eq!(result.is_ok(), rd.len() <= MAX_RETURN_ADDRESS_LEN);
        if let Err(problem) = result {
            prop_assert_eq!(problem.status, http::StatusCode::URI_TOO_LONG);
        }
    }

    /// Any group names survive the header encoding exactly, and the header is visible ASCII.
    #[test]
    fn group_headers_round_trip(groups in prop::collection::vec(any::<String>(), 1..8)) {
        prop_assume!(groups.iter().all(|g| !g.is_empty()));
        let value = groups.iter().map(|g| encode_group(g)).collect::<Vec<_>>().join(",");
        prop_assert!(value.bytes().all(|b| b.is_ascii_graphic()));
        prop_assert_eq!(decode_groups(&value), Some(groups.clone()));
        let headers = identity_values("alice", None, &groups).expect("headers");
        prop_assert_eq!(headers.len(), 2);
    }

    /// The user header is there exactly when the subject can be sent verbatim; never missing
    /// from an answer that was built.
    #[test]
    fn the_user_header_is_never_silently_missing(subject in any::<String>()) {
        match identity_values(&subject, None, &[]) {
            Ok(headers) => prop_assert_eq!(headers[0].1.to_str().ok(), Some(subject.as_str())),
            Err(_) => prop_assert!(
                subject.is_empty() || !subject.bytes().all(|b| b.is_ascii_graphic())
            ),
        }
    }
}
