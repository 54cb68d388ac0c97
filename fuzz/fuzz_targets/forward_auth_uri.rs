//! Forward-auth URI splitting, for every contract: nginx's `X-Original-URL` is split by
//! `split_original_url`, and its path part, Traefik's `X-Forwarded-Uri` and Envoy's path all go
//! through `original_target`. Never panics; an accepted target has no fragment and is judged
//! on exactly its path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::CanonicalPath;
use portcullis_gateway::http::{original_target, split_original_url};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let check = |uri: &str| {
        if let Ok((path, parsed)) = original_target(uri) {
            assert!(!uri.contains('#'));
            let raw_path = uri.split('?').next().unwrap_or_default();
            assert_eq!(CanonicalPath::parse(raw_path).as_ref(), Ok(&path));
            assert_eq!(parsed.path(), raw_path);
        }
    };
    check(raw);
    if let Ok((authority, rest)) = split_original_url(raw) {
        assert!(!authority.contains(['/', '?', '#', '@']));
        check(rest);
    }
});
