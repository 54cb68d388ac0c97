//! Return-address (`rd`) validation: never panics; accepted only within the length cap and
//! without bytes a URL never carries raw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_gateway::login::bind::{MAX_RETURN_ADDRESS_LEN, check_return_address};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if check_return_address(raw).is_ok() {
        assert!(raw.len() <= MAX_RETURN_ADDRESS_LEN);
        assert!(
            raw.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        );
    }
});
