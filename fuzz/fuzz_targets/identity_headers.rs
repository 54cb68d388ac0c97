//! Identity headers: any group names round-trip through the header encoding, the value is
//! visible ASCII, and the user header is present whenever the headers are built.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_gateway::proxy::headers::{decode_groups, encode_group, identity_values};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = raw.split('\0');
    let subject = parts.next().unwrap_or_default();
    let groups: Vec<String> = parts.filter(|g| !g.is_empty()).map(str::to_owned).collect();
    let encoded = groups
        .iter()
        .map(|g| encode_group(g))
        .collect::<Vec<_>>()
        .join(",");
    assert!(encoded.bytes().all(|b| b.is_ascii_graphic()));
    if !groups.is_empty() {
        assert_eq!(decode_groups(&encoded), Some(groups.clone()));
    }
    if let Ok(headers) = identity_values(subject, None, &groups) {
        assert_eq!(headers[0].1.as_bytes(), subject.as_bytes());
    }
});
