//! Minting and verifying tokens, and the verification cache.

use portcullis_core::token::{AppClaims, KeySet, TokenError, TokenKind, Verifier};
use std::sync::Arc;

fn pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("key generation")
        .serialize_pem()
}

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://auth.example.test";

fn claims(aud: &str) -> AppClaims {
    AppClaims {
        iss: ISSUER.into(),
        aud: aud.into(),
        sub: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["admins".into()],
        ext: Default::default(),
        sid: "s-1".into(),
        idp: "dex".into(),
        epoch: 0,
        iat: NOW,
        exp: NOW + 300,
        auth_time: NOW - 10,
        sexp: None,
        puid: None,
    }
}

fn keys() -> Arc<KeySet> {
    Arc::new(KeySet::from_pems(pem().as_bytes(), Some(pem().as_bytes()), &[]).expect("keys"))
}

fn verifier(keys: &Arc<KeySet>) -> Verifier<AppClaims> {
    Verifier::new(keys.clone(), TokenKind::App, ISSUER, 1024)
}

#[test]
fn a_minted_app_token_verifies() {
    let keys = keys();
    let token = keys
        .sign(TokenKind::App, &claims("team/apps"))
        .expect("sign");
    let verified = verifier(&keys)
        .verify(&token, Some("team/apps"), NOW + 1)
        .expect("valid");
    assert_eq!(*verified, claims("team/apps"));
}

#[test]
fn the_jwks_publishes_current_and_next_keys() {
    let keys = keys();
    let jwks = serde_json::to_value(keys.jwks()).expect("json");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0], keys.current_kid());
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "private key material published"
    );
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}

#[test]
fn rotation_keeps_tokens_of_the_previous_key_valid() {
    let (old, next, newer) = (pem(), pem(), pem());
    let before =
        Arc::new(KeySet::from_pems(old.as_bytes(), Some(next.as_bytes()), &[]).expect("keys"));
    let token = before
        .sign(TokenKind::App, &claims("team/apps"))
        .expect("sign");
    let after = Arc::new(
        KeySet::from_pems(next.as_bytes(), Some(newer.as_bytes()), &[old.as_bytes()])
            .expect("keys"),
    );
    assert!(
        verifier(&after)
            .verify(&token, Some("team/apps"), NOW)
            .is_ok()
    );
    // Once the old key is dropped, its tokens are refused even if they were cached before.
    let dropped =
        Arc::new(KeySet::from_pems(next.as_bytes(), Some(newer.as_bytes()), &[]).expect("keys"));
    assert_eq!(
        verifier(&dropped)
            .verify(&token, Some("team/apps"), NOW)
            .err(),
        Some(TokenError::UnknownKey)
    );
}

#[test]
fn bad_tokens_are_refused_for_the_right_reason() {
    let keys = keys();
    let v = verifier(&keys);
    let token = keys
        .sign(TokenKind::App, &claims("team/apps"))
        .expect("sign");

    // Expired, and issued in the future.
    assert_eq!(
        v.verify(&token, Some("team/apps"), NOW + 300).err(),
        Some(TokenError::Expired)
    );
    let mut future = claims("team/apps");
    future.iat = NOW + 3600;
    future.exp = NOW + 7200;
    let future = keys.sign(TokenKind::App, &future).expect("sign");
    assert_eq!(
        v.verify(&future, Some("team/apps"), NOW).err(),
        Some(TokenError::NotYetValid)
    );

    // A token for app A replayed on app B, cached or not.
    assert!(v.verify(&token, Some("team/apps"), NOW).is_ok());
    assert_eq!(
        v.verify(&token, Some("team/other"), NOW).err(),
        Some(TokenError::Audience)
    );

    // Another kind of token in place of an app token.
    let sso = keys
        .sign(TokenKind::Sso, &claims("team/apps"))
        .expect("sign");
    assert_eq!(
        v.verify(&sso, Some("team/apps"), NOW).err(),
        Some(TokenError::WrongType)
    );

    // Tampered payload, same signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims("team/apps");
    forged.sub = "mallory".into();
    use base64::Engine as _;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&forged).expect("json"));
    assert_eq!(
        v.verify(&parts.join("."), Some("team/apps"), NOW).err(),
        Some(TokenError::Signature)
    );

    // alg: none, and an HMAC token "signed" with the public key.
    let header = |h: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h);
    let none = format!(
        "{}.{}.",
        header(&format!(
            r#"{{"alg":"none","typ":"portcullis-app+jwt","kid":"{}"}}"#,
            keys.current_kid()
        )),
        parts[1]
    );
    assert!(v.verify(&none, Some("team/apps"), NOW).is_err());
    let hs = format!(
        "{}.{}.{}",
        header(&format!(
            r#"{{"alg":"HS256","typ":"portcullis-app+jwt","kid":"{}"}}"#,
            keys.current_kid()
        )),
        parts[1],
        parts[2]
    );
    assert_eq!(
        v.verify(&hs, Some("team/apps"), NOW).err(),
        Some(TokenError::Algorithm)
    );

    // Unknown key, garbage, oversized.
    let stranger = Arc::new(KeySet::from_pems(pem().as_bytes(), None, &[]).expect("keys"));
    let foreign = stranger
        .sign(TokenKind::App, &claims("team/apps"))
        .expect("sign");
    assert_eq!(
        v.verify(&foreign, Some("team/apps"), NOW).err(),
        Some(TokenError::UnknownKey)
    );
    assert_eq!(
        v.verify("not-a-jwt", Some("team/apps"), NOW).err(),
        Some(TokenError::Malformed)
    );
    assert_eq!(
        v.verify(&"a".repeat(5000), Some("team/apps"), NOW).err(),
        Some(TokenError::TooLarge)
    );
}

#[test]
fn the_cache_remembers_successes_only_and_rechecks_expiry() {
    let keys = keys();
    let v = verifier(&keys);
    let token = keys
        .sign(TokenKind::App, &claims("team/apps"))
        .expect("sign");
    assert!(v.verify("garbage", None, NOW).is_err());
    assert_eq!(v.cached(), 0);
    assert!(v.verify(&token, Some("team/apps"), NOW).is_ok());
    assert_eq!(v.cached(), 1);
    assert!(v.verify(&token, Some("team/apps"), NOW + 1).is_ok());
    assert_eq!(
        v.verify(&token, Some("team/apps"), NOW + 300).err(),
        Some(TokenError::Expired)
    );
}

#[test]
fn the_cache_stays_bounded() {
    let keys = keys();
    let v = Verifier::<AppClaims>::new(keys.clone(), TokenKind::App, ISSUER, 8);
    for i in 0..20 {
        let mut c = claims("team/apps");
        c.sid = format!("s-{i}");
        let token = keys.sign(TokenKind::App, &c).expect("sign");
        assert!(v.verify(&token, None, NOW).is_ok());
        assert!(v.cached() <= 8);
    }
}

/// A verifier whose entries carry a memo the test writes into.
fn memo_verifier(keys: &Arc<KeySet>) -> Verifier<AppClaims, std::sync::Mutex<Vec<u32>>> {
    Verifier::new(keys.clone(), TokenKind::App, ISSUER, 1024)
}

#[test]
fn a_cache_hit_returns_the_same_entry_with_its_memo() {
    let keys = keys();
    let v = memo_verifier(&keys);
    let token = keys
        .sign(TokenKind::App, &claims("team/apps"))
        .expect("sign");
    let first = v
        .verified_allowing_expiry(&token, Some("team/apps"), NOW)
        .expect("valid");
    assert_eq!(&**first.token(), token.as_str());
    first.memo().lock().expect("memo").push(7);
    let again = v
        .verified_allowing_expiry(&token, Some("team/apps"), NOW + 1)
        .expect("valid");
    assert!(Arc::ptr_eq(&first, &again), "a hit is the cached entry");
    assert_eq!(*again.memo().lock().expect("memo"), vec![7]);
    // The audience is checked on hits too, and an expired token is returned, not refused.
    assert_eq!(
        v.verified_allowing_expiry(&token, Some("team/other"), NOW)
            .err(),
        Some(TokenError::Audience)
    );
    assert!(v.verified_allowing_expiry(&token, None, NOW + 300).is_ok());
    // A verifier of another key set (a rotation) starts with fresh entries and memos.
    let other = memo_verifier(&keys);
    let fresh = other
        .verified_allowing_expiry(&token, None, NOW)
        .expect("valid");
    assert!(fresh.memo().lock().expect("memo").is_empty());
}
