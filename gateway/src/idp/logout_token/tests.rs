//! Logout tokens signed here, with a key whose JWKS the test controls: every way §2.6 says a
//! token must be refused is refused, and a good one (each `typ` the spec allows) is accepted.

use super::*;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use openidconnect::core::CoreJwsSigningAlgorithm;
use serde_json::json;

const ISSUER: &str = "https://idp.test/realms/r";
const CLIENT: &str = "portcullis";
const NOW: u64 = 1_800_000_000;

struct Signer {
    key: Ed25519KeyPair,
    kid: &'static str,
}

impl Signer {
    fn new(kid: &'static str) -> Self {
        Self {
            key: Ed25519KeyPair::generate().expect("key"),
            kid,
        }
    }

    fn jwks(&self) -> CoreJsonWebKeySet {
        let x = URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref());
        serde_json::from_value(json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "use": "sig", "alg": "EdDSA",
        }]}))
        .expect("jwks")
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
        let signed = format!("{}.{}", encode(header), encode(claims));
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn header(&self) -> Value {
        json!({ "alg": "EdDSA", "typ": "logout+jwt", "kid": self.kid })
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": [CLIENT, "other"],
        "iat": NOW - 10,
        "exp": NOW + 120,
        "jti": "jti-1",
        "sub": "user-1",
        "sid": "idp-session-1",
        "events": { BACKCHANNEL_EVENT: {} },
    })
}

fn check(signer: &Signer, token: &str) -> Result<LogoutClaims, Option<LogoutTokenError>> {
    verify(token, &signer.jwks(), &[ISSUER], CLIENT, NOW)
}

fn with(change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut claims = claims();
    if let Some(map) = claims.as_object_mut() {
        change(map);
    }
    claims
}

#[test]
fn a_valid_logout_token_is_accepted_with_either_typ() {
    let signer = Signer::new("k1");
    for typ in [
        Some("logout+jwt"),
        Some("JWT"),
        Some("application/logout+jwt"),
        None,
    ] {
        let mut header = signer.header();
        match typ {
            Some(typ) => header["typ"] = json!(typ),
            None => drop(header.as_object_mut().map(|h| h.remove("typ"))),
        }
        let token = signer.sign(&header, &claims());
        let claims = check(&signer, &token).expect("valid");
        assert_eq!(claims.sid.as_deref(), Some("idp-session-1"), "{typ:?}");
        assert_eq!(claims.sub.as_deref(), Some("user-1"));
    }
    // Only one of sid and sub is enough; aud may be a plain string.
    for claims in [
        with(|c| drop(c.remove("sid"))),
        with(|c| drop(c.remove("sub"))),
        with(|c| drop(c.insert("aud".into(), json!(CLIENT)))),
    ] {
        let token = signer.sign(&signer.header(), &claims);
        assert!(check(&signer, &token).is_ok(), "{claims}");
    }
}

#[test]
fn every_invalid_logout_token_is_refused() {
    let signer = Signer::new("k1");
    let claims_error = |claims: Value| {
        let token = signer.sign(&signer.header(), &claims);
        check(&signer, &token)
    };
    let refused: Vec<(&str, Value)> = vec![
        (
            "wrong iss",
            with(|c| drop(c.insert("iss".into(), json!("https://evil.test")))),
        ),
        ("no iss", with(|c| drop(c.remove("iss")))),
        (
            "wrong aud",
            with(|c| drop(c.insert("aud".into(), json!(["other"])))),
        ),
        ("no aud", with(|c| drop(c.remove("aud")))),
        ("no iat", with(|c| drop(c.remove("iat")))),
        (
            "old iat",
            with(|c| drop(c.insert("iat".into(), json!(NOW - 3600)))),
        ),
        (
            "future iat",
            with(|c| drop(c.insert("iat".into(), json!(NOW + 3600)))),
        ),
        (
            "expired",
            with(|c| drop(c.insert("exp".into(), json!(NOW - 60)))),
        ),
        // Required since the specification's errata set 1 (2023): a token without it could
        // be replayed once the `jti` has left the replay cache.
        ("no exp", with(|c| drop(c.remove("exp")))),
        ("no jti", with(|c| drop(c.remove("jti")))),
        ("no events", with(|c| drop(c.remove("events")))),
        (
            "other event",
            with(|c| drop(c.insert("events".into(), json!({"urn:x": {}})))),
        ),
        (
            "event not an object",
            with(|c| drop(c.insert("events".into(), json!({ BACKCHANNEL_EVENT: "yes" })))),
        ),
        (
            "nonce",
            with(|c| drop(c.insert("nonce".into(), json!("n")))),
        ),
        (
            "neither sid nor sub",
            with(|c| {
                c.remove("sid");
                c.remove("sub");
            }),
        ),
        (
            "sid not a string",
            with(|c| drop(c.insert("sid".into(), json!(7)))),
        ),
    ];
    for (case, claims) in refused {
        assert!(
            matches!(claims_error(claims), Err(Some(LogoutTokenError::Claims(_)))),
            "{case}"
        );
    }
}

#[test]
fn a_bad_signature_or_header_is_refused() {
    let signer = Signer::new("k1");
    let token = signer.sign(&signer.header(), &claims());
    // Signed by another key under the same kid.
    let forger = Signer::new("k1");
    let forged = forger.sign(&forger.header(), &claims());
    assert_eq!(
        check(&signer, &forged),
        Err(Some(LogoutTokenError::Signature))
    );
    // A changed payload under the original signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let other = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&with(|c| drop(c.insert("sub".into(), json!("admin"))))).expect("json"),
    );
    parts[1] = &other;
    assert_eq!(
        check(&signer, &parts.join(".")),
        Err(Some(LogoutTokenError::Signature))
    );
    // An unknown kid asks for the keys again.
    let rotated = Signer::new("k2");
    let token = rotated.sign(&rotated.header(), &claims());
    assert_eq!(check(&signer, &token), Err(None));
    for (case, header) in [
        ("alg none", json!({ "alg": "none", "kid": "k1" })),
        ("alg HS256", json!({ "alg": "HS256", "kid": "k1" })),
        (
            "typ at+jwt",
            json!({ "alg": "EdDSA", "kid": "k1", "typ": "at+jwt" }),
        ),
        (
            "crit",
            json!({ "alg": "EdDSA", "kid": "k1", "crit": ["exp"] }),
        ),
    ] {
        let token = signer.sign(&header, &claims());
        assert!(
            matches!(
                check(&signer, &token),
                Err(Some(LogoutTokenError::Header(_)))
            ),
            "{case}"
        );
    }
    for malformed in [
        "",
        "a.b",
        "a.b.c.d.e",
        "!!.!!.!!",
        &"x".repeat(MAX_LOGOUT_TOKEN_LEN + 1),
    ] {
        assert!(
            matches!(
                check(&signer, malformed),
                Err(Some(LogoutTokenError::Malformed(_)))
            ),
            "{malformed:.20}"
        );
    }
}

#[test]
fn a_jti_is_accepted_once_and_the_cache_is_bounded() {
    let claims = |jti: &str| LogoutClaims {
        sid: Some("s".into()),
        sub: None,
        jti: jti.into(),
        iat: NOW,
    };
    let mut cache = ReplayCache::default();
    assert_eq!(cache.admit(&claims("a"), NOW), Ok(()));
    assert_eq!(
        cache.admit(&claims("a"), NOW + 1),
        Err(LogoutTokenError::Replayed)
    );
    cache.forget("a");
    assert_eq!(cache.admit(&claims("a"), NOW + 2), Ok(()));
    for i in 1..REPLAY_CACHE_CAPACITY {
        assert_eq!(cache.admit(&claims(&i.to_string()), NOW), Ok(()));
    }
    assert_eq!(
        cache.admit(&claims("full"), NOW),
        Err(LogoutTokenError::ReplayCacheFull)
    );
    // Once the remembered tokens are too old to be accepted anyway, they make room.
    let later = NOW + MAX_LOGOUT_TOKEN_AGE.as_secs() + CLOCK_SKEW_SECS + 1;
    assert_eq!(cache.admit(&claims("full"), later), Ok(()));
}

/// A provider whose discovery is already done, with `signer`'s key as its JWKS (no network:
/// the cooldown keeps an unknown `kid` from fetching anything).
fn provider(signer: &Signer) -> Provider {
    use openidconnect::{
        AuthUrl, ClientId, EmptyAdditionalProviderMetadata, IssuerUrl, JsonWebKeySetUrl,
        RedirectUrl, ResponseTypes,
        core::{CoreProviderMetadata, CoreResponseType, CoreSubjectIdentifierType},
    };
    use std::sync::{Arc, Mutex};
    let url = |path: &str| format!("{ISSUER}{path}");
    let metadata = CoreProviderMetadata::new(
        IssuerUrl::new(ISSUER.into()).expect("issuer"),
        AuthUrl::new(url("/auth")).expect("auth"),
        JsonWebKeySetUrl::new(url("/certs")).expect("jwks"),
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![CoreJwsSigningAlgorithm::EdDsa],
        EmptyAdditionalProviderMetadata {},
    )
    .set_jwks(signer.jwks());
    let client =
        openidconnect::Client::from_provider_metadata(metadata, ClientId::new(CLIENT.into()), None);
    let config: crate::config::IdpConfig = serde_json::from_value(json!({
        "name": "corp", "issuer": ISSUER, "issuerAliases": ["idp.test/realms/r"],
        "clientId": CLIENT, "clientSecretFile": "/nonexistent", "backchannelLogout": true,
    }))
    .expect("config");
    let secret: Arc<str> = "secret".into();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Provider {
        config,
        secret: Mutex::new(secret.clone()),
        redirect: RedirectUrl::new("https://auth.test/.portcullis/callback".into())
            .expect("redirect"),
        http: reqwest::Client::new(),
        client: tokio::sync::RwLock::new(Some(super::super::Discovered {
            client: Arc::new(client),
            at: std::time::Instant::now(),
            secret,
            jwks: Arc::new(signer.jwks()),
            end_session: None,
        })),
        replay: Mutex::default(),
        failed: Mutex::default(),
        bearers: Mutex::default(),
    }
}

#[tokio::test]
async fn the_provider_checks_its_own_issuer_and_client_and_refuses_a_replay() {
    let signer = Signer::new("k1");
    let provider = provider(&signer);
    let now = crate::clock::now();
    let claims = |jti: &str, iss: &str| {
        json!({
            "iss": iss, "aud": CLIENT, "iat": now, "exp": now + 120, "jti": jti, "sid": "kc-1",
            "events": { BACKCHANNEL_EVENT: {} },
        })
    };
    let token = signer.sign(&signer.header(), &claims("j1", ISSUER));
    let accepted = provider.verify_logout_token(&token, now).await;
    assert_eq!(accepted.map(|c| c.sid), Ok(Some("kc-1".into())));
    assert_eq!(
        provider.verify_logout_token(&token, now + 1).await,
        Err(LogoutTokenError::Replayed)
    );
    // A logout that could not be carried out is forgotten: the provider may send it again.
    provider.forget_logout_token("j1");
    assert!(provider.verify_logout_token(&token, now + 2).await.is_ok());
    // An alias of the issuer is the provider too; another issuer is not, and a refused token
    // does not take its jti.
    let alias = signer.sign(&signer.header(), &claims("j2", "idp.test/realms/r"));
    assert!(provider.verify_logout_token(&alias, now).await.is_ok());
    let foreign = signer.sign(&signer.header(), &claims("j3", "https://other.test"));
    assert!(matches!(
        provider.verify_logout_token(&foreign, now).await,
        Err(LogoutTokenError::Claims(_))
    ));
    let good = signer.sign(&signer.header(), &claims("j3", ISSUER));
    assert!(provider.verify_logout_token(&good, now).await.is_ok());
    // A key the provider never published: refused after the (cooled-down) second look.
    let rotated = Signer::new("k2");
    let token = rotated.sign(&rotated.header(), &claims("j4", ISSUER));
    assert_eq!(
        provider.verify_logout_token(&token, now).await,
        Err(LogoutTokenError::Signature)
    );
}
