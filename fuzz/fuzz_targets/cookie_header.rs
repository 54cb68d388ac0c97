//! Cookie-header parsing: never panics; a cookie is read only when its name appears once.
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use portcullis_gateway::cookies;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, value);
    let jar = cookies::parse(&headers);
    for (name, _) in &jar {
        if let Some(value) = cookies::get(&jar, name) {
            assert_eq!(jar.iter().filter(|(n, _)| n == name).count(), 1);
            assert!(value.len() <= cookies::MAX_COOKIE_LEN);
        }
    }
});
