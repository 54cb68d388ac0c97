//! The back-channel logout endpoint through the whole router (`oneshot`), for a provider whose
//! discovery and JWKS this test serves on 127.0.0.1 with a key it holds: every invalid logout
//! token is refused with the spec's 400 and revokes nothing; a valid one revokes exactly the
//! sessions it names (by the provider's `sid`, else every session of its `sub`), and its
//! replay is refused. Keycloak's real call is in `keycloak/backchannel.rs`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::{Json, Router, body::Body, routing::get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use portcullis_core::{Host, token::KeySet};
use portcullis_gateway::{
    clock::now,
    config::IdpFile,
    gateway::{Gateway, SessionServices, Settings},
    http::ClientAddr,
    idp::Providers,
    metrics::Metrics,
    proxy::{Proxy, ProxyConfig},
    router,
    sessions::{NewSession, SessionRecorder, file_store::LocalStore},
};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt as _;

const AUTH: &str = "auth.portcullis.test";
const CLIENT: &str = "portcullis";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

struct Idp {
    issuer: String,
    key: Ed25519KeyPair,
}

impl Idp {
    /// Serves discovery and the JWKS of a fresh Ed25519 key on a loopback port.
    async fn start() -> Idp {
        let key = Ed25519KeyPair::generate().expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        let jwks = json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1",
            "use": "sig", "alg": "EdDSA" }] });
        let discovery = json!({
            "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/certs"),
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
        });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/certs", get(move || async move { Json(jwks) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Idp { issuer, key }
    }

    fn token(&self, header: &Value, claims: &Value) -> String {
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
        let signed = format!("{}.{}", encode(header), encode(claims));
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn claims(&self, jti: &str) -> Value {
        json!({
            "iss": self.issuer, "aud": CLIENT, "iat": now(), "exp": now() + 120, "jti": jti,
            "sub": "alice", "sid": "kc-1", "events": { EVENT: {} },
        })
    }
}

fn header() -> Value {
    json!({ "alg": "EdDSA", "typ": "logout+jwt", "kid": "k1" })
}

async fn gateway(idp: &Idp, store: &Arc<LocalStore>) -> Gateway {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let secret = std::env::temp_dir().join(format!("portcullis-bcl-{}", std::process::id()));
    std::fs::write(&secret, "secret").expect("secret");
    let file: IdpFile = serde_json::from_value(json!({ "identityProviders": [
        { "name": "corp", "issuer": idp.issuer, "clientId": CLIENT,
          "clientSecretFile": secret, "backchannelLogout": true },
        { "name": "quiet", "issuer": idp.issuer, "clientId": CLIENT,
          "clientSecretFile": secret },
    ]}))
    .expect("idp file");
    let redirect = format!("https://{AUTH}/.portcullis/callback");
    let providers =
        Providers::new(file.identity_providers, &redirect, reqwest::Client::new()).expect("idp");
    let settings = Settings {
        auth_host: Host::parse(AUTH).expect("host"),
        public_port: 443,
        sso_lifetime: std::time::Duration::from_secs(3600),
        trusted_proxies: vec![],
        access_log: Default::default(),
        login_rate: portcullis_gateway::rate_limit::Rate {
            per_second: 1000.0,
            burst: 1000,
            clients: 1000,
        },
    };
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("key")
        .serialize_pem();
    let keys = Arc::new(KeySet::from_pems(pem.as_bytes(), None, &[]).expect("keys"));
    let (_tx, rx) = tokio::sync::watch::channel(Arc::default());
    let sessions = SessionServices {
        recorder: SessionRecorder::local(store.clone()),
        index: store.index(),
        refresher: None,
    };
    let proxy = Proxy::new(ProxyConfig::default()).expect("proxy");
    let metrics = Metrics::new();
    metrics.initialize_backchannel(&providers);
    Gateway::with_sessions(
        settings,
        rx,
        keys,
        providers,
        proxy,
        metrics,
        Some(sessions),
    )
}

/// Records a session `sid` of `subject` through `idp`, with the provider's `provider_sid`.
async fn login(store: &Arc<LocalStore>, sid: &str, subject: &str, idp: &str, provider_sid: &str) {
    let start = now();
    SessionRecorder::local(store.clone())
        .record(&NewSession {
            sid,
            subject,
            email: None,
            groups: &[],
            identity_provider: idp,
            issued_at: start,
            expires_at: start + 3600,
            sealed_refresh_token: None,
            sealed_id_token: None,
            attempt: sid,
            provider_session_id: Some(provider_sid),
        })
        .await
        .expect("recorded");
}

fn revoked(store: &LocalStore) -> Vec<String> {
    let mut names: Vec<String> = ["s-kc1", "s-kc2", "s-other-user", "s-other-idp"]
        .into_iter()
        .filter(|sid| store.get(sid).is_some_and(|s| s.spec.revoked))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

async fn post(gateway: &Gateway, provider: &str, form: &str) -> (StatusCode, Value, bool) {
    let mut req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("/.portcullis/backchannel-logout/{provider}"))
        .header("host", AUTH)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request");
    req.extensions_mut()
        .insert(ClientAddr("192.0.2.1:40000".parse().expect("peer")));
    let response = router::app(gateway.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = response.status();
    let no_store = response
        .headers()
        .get("cache-control")
        .is_some_and(|v| v == "no-store");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        no_store,
    )
}

/// The value of `portcullis_gateway_backchannel_logouts_total{idp, result}`; `None` when the
/// series does not exist.
fn logouts(gateway: &Gateway, idp: &str, result: &str) -> Option<u64> {
    let series = format!(
        r#"portcullis_gateway_backchannel_logouts_total{{idp="{idp}",result="{result}"}} "#
    );
    let text = gateway.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map(|value| value.trim().parse().expect("a counter"))
}

fn form(token: &str) -> String {
    format!("logout_token={token}")
}

#[tokio::test]
async fn invalid_logout_tokens_revoke_nothing_and_a_valid_one_revokes_what_it_names() {
    let idp = Idp::start().await;
    let store = LocalStore::open(None).expect("store");
    let gateway = gateway(&idp, &store).await;
    login(&store, "s-kc1", "alice", "corp", "kc-1").await;
    login(&store, "s-kc2", "alice", "corp", "kc-2").await;
    login(&store, "s-other-user", "bob", "corp", "kc-1").await;
    login(&store, "s-other-idp", "alice", "quiet", "kc-1").await;

    let with = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = idp.claims("attack");
        change(claims.as_object_mut().expect("object"));
        idp.token(&header(), &claims)
    };
    let forger = Idp {
        issuer: idp.issuer.clone(),
        key: Ed25519KeyPair::generate().expect("key"),
    };
    let attacks = [
        (
            "bad signature",
            forger.token(&header(), &idp.claims("attack")),
        ),
        (
            "wrong iss",
            with(&|c| drop(c.insert("iss".into(), json!("https://evil.test")))),
        ),
        (
            "wrong aud",
            with(&|c| drop(c.insert("aud".into(), json!("someone-else")))),
        ),
        ("missing events", with(&|c| drop(c.remove("events")))),
        (
            "nonce present",
            with(&|c| drop(c.insert("nonce".into(), json!("n")))),
        ),
        (
            "neither sid nor sub",
            with(&|c| {
                c.remove("sid");
                c.remove("sub");
            }),
        ),
        (
            "expired",
            with(&|c| drop(c.insert("exp".into(), json!(now() - 120)))),
        ),
        (
            "too old",
            with(&|c| drop(c.insert("iat".into(), json!(now() - 3600)))),
        ),
        (
            "alg none",
            idp.token(
                &json!({ "alg": "none", "kid": "k1" }),
                &idp.claims("attack"),
            ),
        ),
    ];
    for (case, token) in &attacks {
        let (status, body, no_store) = post(&gateway, "corp", &form(token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert!(no_store, "{case}");
        assert_eq!(body["error"], "invalid_request", "{case}");
        assert!(body["error_description"].is_string(), "{case}");
    }
    // A valid token at a provider without backchannelLogout: no endpoint.
    let valid = idp.token(&header(), &idp.claims("j-1"));
    assert_eq!(
        post(&gateway, "quiet", &form(&valid)).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(revoked(&store).is_empty(), "{:?}", revoked(&store));

    // The provider's sid kc-1 of alice: only that session, not bob's of the same sid, not
    // alice's other one, not the other provider's.
    let (status, body, no_store) = post(&gateway, "corp", &form(&valid)).await;
    assert_eq!((status, no_store), (StatusCode::OK, true), "{body}");
    assert_eq!(revoked(&store), ["s-kc1"]);
    let reason = store.get("s-kc1").and_then(|s| s.spec.revocation_reason);
    assert_eq!(
        reason.as_deref(),
        Some("back-channel logout from identity provider corp")
    );
    // Replayed: refused.
    let (status, body, _) = post(&gateway, "corp", &form(&valid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error_description"],
        "the logout token was already used"
    );
    // sub only: every session of alice at this provider.
    let mut by_sub = idp.claims("j-2");
    by_sub.as_object_mut().expect("object").remove("sid");
    let token = idp.token(
        &json!({ "alg": "EdDSA", "kid": "k1", "typ": "JWT" }),
        &by_sub,
    );
    assert_eq!(
        post(&gateway, "corp", &form(&token)).await.0,
        StatusCode::OK
    );
    assert_eq!(revoked(&store), ["s-kc1", "s-kc2"]);
}

#[tokio::test]
async fn back_channel_logouts_are_counted_by_provider_and_result_without_user_data() {
    let idp = Idp::start().await;
    let store = LocalStore::open(None).expect("store");
    let gateway = gateway(&idp, &store).await;
    login(&store, "s-kc1", "alice", "corp", "kc-1").await;
    // Every result of the provider exists at zero before the first request.
    for result in ["accepted", "signature", "claims", "replayed", "lookup"] {
        assert_eq!(logouts(&gateway, "corp", result), Some(0), "{result}");
    }
    let valid = idp.token(&header(), &idp.claims("j-1"));
    let forger = Idp {
        issuer: idp.issuer.clone(),
        key: Ed25519KeyPair::generate().expect("key"),
    };
    let forged = forger.token(&header(), &idp.claims("j-forged"));
    let mut late = idp.claims("j-late");
    late["exp"] = json!(now() - 120);
    let late = idp.token(&header(), &late);
    let none = idp.token(&json!({ "alg": "none", "kid": "k1" }), &idp.claims("j-n"));
    for (provider, body) in [
        ("corp", form(&forged)),
        ("corp", form(&late)),
        ("corp", form(&none)),
        ("corp", "logout_token=a&logout_token=b".to_owned()),
        ("corp", form(&valid)),
        ("corp", form(&valid)),
        // No back-channel logout there, and a name nobody configured: counted as unknown.
        ("quiet", form(&valid)),
        ("sub-alice%40example.test", form(&valid)),
    ] {
        post(&gateway, provider, &body).await;
    }
    let counted = |idp: &str, result: &str| logouts(&gateway, idp, result);
    assert_eq!(counted("corp", "signature"), Some(1));
    assert_eq!(counted("corp", "claims"), Some(1));
    assert_eq!(counted("corp", "header"), Some(1));
    assert_eq!(counted("corp", "form"), Some(1));
    assert_eq!(counted("corp", "accepted"), Some(1));
    assert_eq!(counted("corp", "replayed"), Some(1));
    assert_eq!(counted("unknown", "not_found"), Some(2));
    let text = gateway.metrics().encode();
    for private in ["quiet", "alice", "kc-1", "j-1", "s-kc1"] {
        assert!(
            !text
                .lines()
                .filter(|l| l.contains("backchannel"))
                .any(|l| l.contains(private)),
            "{private} in a label:\n{text}"
        );
    }
}
