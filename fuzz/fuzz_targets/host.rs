//! Host normalization: never panics; a normalized host is a fixed point, lower-case, portless.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::Host;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(host) = Host::parse(raw) {
        let s = host.as_str();
        assert_eq!(s, s.to_ascii_lowercase());
        assert!(!s.ends_with('.'));
        assert_eq!(Host::parse(s).as_ref(), Ok(&host));
    }
});
