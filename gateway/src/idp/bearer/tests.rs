//! Bearer tokens signed here with a key whose JWKS the test controls: a good access token is
//! accepted, every kind of bad one refused with its reason; the cache holds what was verified,
//! until it expires, and stays bounded.

use super::{jwt::verify, *};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use openidconnect::core::CoreJsonWebKeySet;
use serde_json::{Map, Value, json};

const ISSUER: &str = "https://idp.test/realms/r";
const NOW: u64 = 1_800_000_000;

struct Signer(Ed25519KeyPair);

impl Signer {
    fn new() -> Self {
        Self(Ed25519KeyPair::generate().expect("key"))
    }

    fn jwks(&self) -> CoreJsonWebKeySet {
        let x = URL_SAFE_NO_PAD.encode(self.0.public_key().as_ref());
        serde_json::from_value(json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "use": "sig", "alg": "EdDSA",
        }]}))
        .expect("jwks")
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
        let signed = format!("{}.{}", encode(header), encode(claims));
        let signature = self.0.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

fn header() -> Value {
    json!({ "alg": "EdDSA", "typ": "JWT", "kid": "k1" })
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": ["orders-api", "account"], "sub": "sa-1", "azp": "billing",
        "typ": "Bearer", "scope": "profile orders", "iat": NOW - 5, "exp": NOW + 300,
    })
}

fn with(change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut claims = claims();
    if let Some(map) = claims.as_object_mut() {
        change(map);
    }
    claims
}

fn check(signer: &Signer, token: &str) -> Result<BearerToken, Option<BearerError>> {
    verify(token, &signer.jwks(), "keycloak", &[ISSUER], NOW)
}

#[test]
fn a_good_access_token_is_read_exactly() {
    let signer = Signer::new();
    let token = signer.sign(&header(), &claims());
    let verified = check(&signer, &token).expect("valid");
    assert_eq!(verified.identity_provider, "keycloak");
    assert_eq!(verified.subject, "sa-1");
    assert_eq!(verified.client_id, "billing");
    assert_eq!(verified.audiences, ["orders-api", "account"]);
    assert!(verified.scopes.contains("orders") && verified.scopes.contains("profile"));
    assert_eq!(verified.expires_at, NOW + 300);
    // RFC 9068 spelling: `client_id`, `typ: at+jwt`, a single audience.
    let rfc = with(|c| {
        c.remove("azp");
        c.remove("typ");
        c.insert("client_id".into(), json!("billing"));
        c.insert("aud".into(), json!("orders-api"));
    });
    let typ = json!({ "alg": "EdDSA", "typ": "application/at+jwt", "kid": "k1" });
    let verified = check(&signer, &signer.sign(&typ, &rfc)).expect("RFC 9068 token");
    assert_eq!(
        (verified.client_id.as_str(), verified.audiences.len()),
        ("billing", 1)
    );
}

#[test]
fn bad_tokens_are_refused_with_their_reason() {
    let signer = Signer::new();
    let good = signer.sign(&header(), &claims());
    let (head, rest) = good.split_once('.').expect("three parts");
    let (_, signature) = rest.split_once('.').expect("three parts");
    let forged_payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&with(|c| {
            c.insert("azp".into(), json!("admin"));
        }))
        .expect("json"),
    );
    let tampered = format!("{head}.{forged_payload}.{signature}");
    let none = json!({ "alg": "none", "typ": "JWT" });
    let hs = json!({ "alg": "HS256", "typ": "JWT" });
    let logout = json!({ "alg": "EdDSA", "typ": "logout+jwt", "kid": "k1" });
    let cases: Vec<(String, BearerError)> = vec![
        (tampered, BearerError::Signature),
        (
            Signer::new().sign(&header(), &claims()),
            BearerError::Signature,
        ),
        (format!("{head}.{forged_payload}."), BearerError::Signature),
        (
            "not-a-jwt".into(),
            BearerError::Malformed("not three parts"),
        ),
        (
            signer.sign(&none, &claims()),
            BearerError::Header("alg is missing or not allowed"),
        ),
        (
            signer.sign(&hs, &claims()),
            BearerError::Header("alg is missing or not allowed"),
        ),
        (
            signer.sign(&logout, &claims()),
            BearerError::Header("typ is not at+jwt or JWT"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("exp".into(), json!(NOW - 60));
                }),
            ),
            BearerError::Expired,
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("nbf".into(), json!(NOW + 600));
                }),
            ),
            BearerError::Claims("the token is not valid yet (nbf)"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("iat".into(), json!(NOW + 600));
                }),
            ),
            BearerError::Claims("iat is in the future"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.remove("exp");
                }),
            ),
            BearerError::Claims("exp is missing"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("iss".into(), json!("https://idp.test/realms/r/"));
                }),
            ),
            BearerError::Claims("iss is not the provider's issuer"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("nonce".into(), json!("n"));
                }),
            ),
            BearerError::Claims("the token is not an access token"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("typ".into(), json!("ID"));
                }),
            ),
            BearerError::Claims("the token is not an access token"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("client_id".into(), json!("other"));
                }),
            ),
            BearerError::Claims("azp and client_id disagree"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.remove("azp");
                }),
            ),
            BearerError::Claims("azp or client_id is missing"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.remove("aud");
                }),
            ),
            BearerError::Claims("aud is missing"),
        ),
        (
            signer.sign(
                &header(),
                &with(|c| {
                    c.insert("scope".into(), json!(["orders"]));
                }),
            ),
            BearerError::Claims("scope is not a string"),
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(
            check(&signer, &token).err(),
            Some(Some(expected)),
            "{expected}"
        );
    }
}

#[test]
fn an_unknown_kid_asks_for_the_keys_again() {
    let signer = Signer::new();
    let other_kid = json!({ "alg": "EdDSA", "typ": "JWT", "kid": "k2" });
    assert_eq!(
        check(&signer, &signer.sign(&other_kid, &claims())).err(),
        Some(None)
    );
}

fn token(exp: u64) -> Arc<BearerToken> {
    Arc::new(BearerToken {
        identity_provider: "keycloak".into(),
        subject: "sa-1".into(),
        client_id: "billing".into(),
        audiences: vec!["orders-api".into()],
        scopes: Default::default(),
        expires_at: exp,
    })
}

#[test]
fn the_cache_holds_a_verified_token_until_it_expires() {
    let mut cache = BearerCache::default();
    cache.insert("token-a", token(NOW + 60), NOW);
    assert_eq!(cache.get("token-a", NOW + 59), Some(token(NOW + 60)));
    assert_eq!(cache.get("token-b", NOW), None);
    // Expired (past the clock skew too): dropped on the lookup that finds it so.
    assert_eq!(cache.get("token-a", NOW + 60 + CLOCK_SKEW_SECS), None);
    assert!(cache.is_empty());
}

#[test]
fn the_cache_is_bounded() {
    let mut cache = BearerCache::default();
    for i in 0..BEARER_CACHE_CAPACITY {
        cache.insert(&format!("old-{i}"), token(NOW + 10), NOW);
    }
    // Full of expired entries: they make room.
    cache.insert("fresh", token(NOW + 3_600), NOW + 1_000);
    assert_eq!(cache.len(), 1);
    for i in 0..BEARER_CACHE_CAPACITY {
        cache.insert(&format!("live-{i}"), token(NOW + 3_600), NOW + 1_000);
    }
    assert_eq!(cache.len(), BEARER_CACHE_CAPACITY);
}

/// A provider whose keys were discovered (the signer's), as after a discovery.
fn provider(signer: &Signer) -> Provider {
    use openidconnect::{
        AuthUrl, ClientId, EmptyAdditionalProviderMetadata, IssuerUrl, JsonWebKeySetUrl,
        RedirectUrl, ResponseTypes,
        core::{
            CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreResponseType,
            CoreSubjectIdentifierType,
        },
    };
    use std::sync::Mutex;
    let metadata = CoreProviderMetadata::new(
        IssuerUrl::new(ISSUER.into()).expect("issuer"),
        AuthUrl::new(format!("{ISSUER}/auth")).expect("auth"),
        JsonWebKeySetUrl::new(format!("{ISSUER}/certs")).expect("jwks"),
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![CoreJwsSigningAlgorithm::EdDsa],
        EmptyAdditionalProviderMetadata {},
    )
    .set_jwks(signer.jwks());
    let client =
        openidconnect::Client::from_provider_metadata(metadata, ClientId::new("gw".into()), None);
    let config: crate::config::IdpConfig = serde_json::from_value(json!({
        "name": "keycloak", "issuer": ISSUER, "clientId": "gw",
        "clientSecretFile": "/nonexistent",
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
        client: tokio::sync::RwLock::new(Some(crate::idp::Discovered {
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
async fn a_verified_token_is_not_verified_again_until_it_expires() {
    let signer = Signer::new();
    let provider = provider(&signer);
    let first = signer.sign(&header(), &claims());
    assert!(provider.verify_bearer(&first, NOW).await.is_ok());
    // Past `exp` and the skew, the cached verification no longer counts.
    let late = NOW + 300 + CLOCK_SKEW_SECS;
    assert_eq!(
        provider.verify_bearer(&first, late).await,
        Err(BearerError::Expired)
    );
    let second = signer.sign(
        &header(),
        &with(|c| {
            c.insert("sub".into(), json!("sa-2"));
        }),
    );
    assert!(provider.verify_bearer(&second, NOW).await.is_ok());
    // The provider's keys change (the discovery within its cooldown is not repeated): the
    // cached token is still admitted without a signature check, a new one is checked.
    let other = Signer::new();
    if let Some(discovered) = provider.client.write().await.as_mut() {
        discovered.jwks = Arc::new(other.jwks());
    }
    let verified = provider
        .verify_bearer(&second, NOW + 1)
        .await
        .expect("cached");
    assert_eq!(verified.subject, "sa-2");
    let third = signer.sign(
        &header(),
        &with(|c| {
            c.insert("sub".into(), json!("sa-3"));
        }),
    );
    assert_eq!(
        provider.verify_bearer(&third, NOW).await,
        Err(BearerError::Signature)
    );
    assert!(provider.issues(ISSUER) && !provider.issues("https://idp.test/realms/other"));
}
