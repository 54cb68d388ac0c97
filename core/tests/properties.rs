//! Properties of the parsers every decision rests on, for bounded random inputs (the fuzz
//! targets in `fuzz/` run the same functions unbounded), and the payload lists in
//! `core/tests/vectors/`.
//!
//! The routing property is the one that matters: for any policies and any request path, the
//! gateway either refuses the path or routes it exactly as it would route the path a backend
//! sees after decoding it fully (percent-decoding until nothing changes, Unicode NFKC, `\` as
//! `/`, `;parameters` dropped, slashes merged, dot segments resolved).

use icu_normalizer::ComposingNormalizerBorrowed;
use portcullis_core::{
    CanonicalPath, EmailAddress, Host, Identity, Policy, PolicyId, PolicyMeta, Route, RouteTable,
};
use proptest::prelude::*;
use std::sync::Arc;

/// Pieces paths are built from: the characters and escapes that parser disagreements were
/// made of, and plain names so that prefixes get matched.
const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    ".",
    "..",
    "public",
    "admin",
    "Admin",
    "a",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%3b",
    "%3B",
    ";",
    "%25",
    "%252e",
    "%252f",
    "%32",
    "%65",
    "%41",
    "%61",
    "%20",
    "\\",
    "%00",
    "%c0%ae",
    "%ef%bc%8f",
    "%ef%bc%8e",
    "%e2%88%95",
    "%ef%bd%81",
    "%c3%a9",
    "%e4%b8%ad",
    "~",
    "-",
    "_",
    "%7e",
    "?",
    "#",
    "%23",
    "%3f",
    "@",
    ":",
    "+",
    ",",
    "=",
    "!",
];

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..12)
        .prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// Percent-decodes what decodes; leaves the rest as it is.
fn decode_once(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path a lenient backend serves for `path`.
fn backend_view(path: &str) -> String {
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let mut current = path.to_owned();
    for _ in 0..8 {
        let next = nfkc
            .normalize(&decode_once(&current))
            .replace(['\\', '\u{2215}', '\u{2044}'], "/");
        if next == current {
            break;
        }
        current = next;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in current.split('/') {
        match segment.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Longest whole-segment, ASCII-case-insensitive prefix match, as the route table does it.
fn covers(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path.len() >= prefix.len()
            && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

fn policy(name: &str, prefix: &str, bypass: bool) -> Arc<Policy> {
    let rule = if bypass {
        "{ action: Bypass, include: [{ everyone: true }] }"
    } else {
        "{ action: Allow, include: [{ emailDomains: [example.com] }] }"
    };
    let spec = serde_saphyr::from_str(&format!(
        "{{ hosts: [app.example.test], paths: [\"{prefix}\"], rules: [{rule}] }}"
    ))
    .expect("spec");
    let meta = PolicyMeta {
        namespace: "ns".into(),
        name: name.into(),
        uid: None,
        generation: None,
    };
    Arc::new(Policy::compile(meta, &spec).expect("policy"))
}

fn routed(table: &RouteTable, path: &CanonicalPath) -> Option<PolicyId> {
    let host = Host::parse("app.example.test").expect("host");
    match table.route(&host, path) {
        Some(Route::Policy(policy)) => Some(policy.id.clone()),
        _ => None,
    }
}

/// What the gateway decides equals what it would decide on the backend's view of the path.
fn assert_routes_as_the_backend_sees_it(prefixes: [&str; 2], raw: &str) {
    let policies = [
        policy("first", prefixes[0], true),
        policy("second", prefixes[1], false),
    ];
    let table = RouteTable::build(&policies, &[]);
    let Ok(canonical) = CanonicalPath::parse(raw) else {
        return; // refused: nothing reaches the backend
    };
    let view = backend_view(canonical.as_str());
    let expected = policies
        .iter()
        .filter_map(|p| {
            let prefix = p.prefixes.first()?;
            covers(&view, prefix).then(|| (prefix.len(), p.id.clone()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, id)| id);
    assert_eq!(
        routed(&table, &canonical),
        expected,
        "{raw:?} judged as {canonical}, served as {view:?}"
    );
}

const PREFIXES: &[&str] = &["/", "/public", "/admin", "/public/admin", "/a", "/Admin"];

/// Every ordered pair of prefixes two policies can hold side by side (the same prefix in two
/// policies is a conflict, denied whatever the path).
fn prefix_pairs() -> Vec<[&'static str; 2]> {
    let mut pairs = Vec::new();
    for first in PREFIXES {
        for second in PREFIXES {
            if !first.eq_ignore_ascii_case(second) {
                pairs.push([*first, *second]);
            }
        }
    }
    pairs
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_decision_is_the_decision_on_what_the_backend_serves(
        prefixes in prop::sample::select(prefix_pairs()),
        raw in path_strategy(),
    ) {
        assert_routes_as_the_backend_sees_it(prefixes, &raw);
    }

    #[test]
    fn canonical_paths_are_fixed_points(raw in path_strategy()) {
        if let Ok(canonical) = CanonicalPath::parse(&raw) {
            prop_assert_eq!(CanonicalPath::parse(canonical.as_str()), Ok(canonical.clone()));
            let s = canonical.as_str();
            prop_assert!(!s.contains(';') && !s.contains("//") && !s.contains('\\'));
        }
    }

    #[test]
    fn any_string_is_canonicalized_or_refused_without_panicking(raw in any::<String>()) {
        let _ = CanonicalPath::parse(&raw);
        let _ = CanonicalPath::parse(&format!("/{raw}"));
        let _ = Host::parse(&raw);
    }

    #[test]
    fn an_email_has_exactly_the_domain_after_its_only_at(raw in any::<String>()) {
        if let Ok(email) = EmailAddress::parse(&raw) {
            prop_assert_eq!(raw.matches('@').count(), 1);
            let (_, domain) = raw.split_once('@').expect("one @");
            prop_assert_eq!(email.domain(), domain.to_ascii_lowercase());
            prop_assert!(email.as_str().bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(EmailAddress::parse(email.as_str()), Ok(email.clone()));
        }
    }

    #[test]
    fn emails_built_from_address_pieces(
        local in "[a-zA-Z0-9.+%!\"@ _-]{0,12}",
        domain in "[a-zA-Z0-9.@ -]{0,16}",
    ) {
        let raw = format!("{local}@{domain}");
        if let Ok(email) = EmailAddress::parse(&raw) {
            prop_assert!(!local.contains(['@', '%', '!', '"', ' ']));
            prop_assert_eq!(email.domain(), domain.to_ascii_lowercase());
        }
    }

    #[test]
    fn checked_identities_hold_only_what_headers_can_carry(
        subject in any::<String>(),
        email in proptest::option::of(any::<String>()),
        groups in prop::collection::vec(any::<String>(), 0..8),
    ) {
        if let Ok(identity) = Identity::checked(
            subject.clone(),
            email.as_deref(),
            groups,
            serde_json::Map::new(),
        ) {
            prop_assert!(identity.subject.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert!(identity.email.as_deref().is_none_or(|e| EmailAddress::parse(e).is_ok()));
            prop_assert!(serde_json::to_vec(&identity).map_or(0, |j| j.len())
                <= portcullis_core::identity::MAX_IDENTITY_BYTES);
        }
    }
}

/// The payload list, after a Bypass prefix and on its own, against every pair of prefixes.
#[test]
fn payload_lists_are_refused_or_judged_as_served() {
    let vectors = include_str!("vectors/path-traversal.txt");
    let payloads: Vec<&str> = vectors
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("# "))
        .collect();
    assert!(payloads.len() > 80, "{}", payloads.len());
    let mut refused = 0;
    for payload in &payloads {
        for raw in [
            format!("/public/{payload}admin"),
            format!("/public/{payload}"),
            format!("/{payload}admin"),
            format!("/public{payload}admin"),
        ] {
            for prefixes in prefix_pairs() {
                assert_routes_as_the_backend_sees_it(prefixes, &raw);
            }
            if CanonicalPath::parse(&raw).is_err() {
                refused += 1;
            }
        }
        // Behind the Bypass prefix, no payload reaches /admin.
        let raw = format!("/public/{payload}admin");
        if let Ok(canonical) = CanonicalPath::parse(&raw) {
            let view = backend_view(canonical.as_str());
            assert!(!covers(&view, "/admin"), "{raw:?} is served as {view}");
        }
    }
    assert!(refused > payloads.len() * 2, "only {refused} refused");
}
