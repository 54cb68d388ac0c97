//! Token parsing: arbitrary input never verifies and never panics, whatever the token kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::token::{AppClaims, KeySet, TokenKind};
use std::sync::OnceLock;

/// A key made at start-up: no input can have been signed with it.
fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key generation")
            .serialize_pem();
        KeySet::from_pems(pem.as_bytes(), None, &[]).expect("fuzz key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [TokenKind::App, TokenKind::Sso] {
        let verified =
            keys().verify::<AppClaims>(kind, raw, "https://auth.example.test", None, 1_800_000_000);
        assert!(verified.is_err(), "forged input verified");
    }
});
