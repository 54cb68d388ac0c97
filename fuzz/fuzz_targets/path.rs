//! Path canonicalization: never panics; a canonical path is a fixed point and holds none of
//! what a second decoder could read differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::CanonicalPath;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = CanonicalPath::parse(raw) {
        let s = path.as_str();
        assert!(s.starts_with('/'));
        assert!(!s.contains(';') && !s.contains("//") && !s.contains('\\'));
        // No double encoding survives: `%25` is never followed by two hex digits.
        for (i, _) in s.match_indices("%25") {
            let next = s.as_bytes().get(i + 3..i + 5);
            assert!(
                !next.is_some_and(|n| n.iter().all(u8::is_ascii_hexdigit)),
                "{s}"
            );
        }
        assert_eq!(CanonicalPath::parse(s).as_ref(), Ok(&path));
        for segment in s.split('/') {
            assert!(segment != "." && segment != "..");
        }
    }
});
