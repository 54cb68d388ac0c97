//! Email and claim parsing: an accepted address has exactly one `@` and exactly the domain
//! after it; an accepted identity holds only what a header can carry verbatim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::{EmailAddress, Identity};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(email) = EmailAddress::parse(raw) {
        assert_eq!(raw.matches('@').count(), 1);
        let (_, domain) = raw.split_once('@').expect("one @");
        assert_eq!(email.domain(), domain.to_ascii_lowercase());
        assert!(email.as_str().bytes().all(|b| b.is_ascii_graphic()));
    }
    // Split the input into sub, email and groups at NUL bytes.
    let mut parts = raw.split('\0');
    let subject = parts.next().unwrap_or_default().to_owned();
    let email = parts.next();
    let groups: Vec<String> = parts.map(str::to_owned).collect();
    if let Ok(identity) = Identity::checked(subject, email, groups, serde_json::Map::new()) {
        assert!(identity.subject.bytes().all(|b| b.is_ascii_graphic()));
        assert!(
            identity
                .email
                .iter()
                .all(|e| EmailAddress::parse(e).is_ok())
        );
    }
});
