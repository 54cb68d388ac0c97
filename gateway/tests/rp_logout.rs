//! RP-initiated logout through the whole router (`oneshot`): where the auth host's logout
//! sends the browser, for providers whose discovery documents this test serves on 127.0.0.1.
//!
//! - discovered: the `end_session_endpoint` of the discovery document, with the session's ID
//!   token (sealed in its record at login) as `id_token_hint`, and `client_id`;
//! - configured: `endSessionEndpoint` wins over the discovered one;
//! - off: `rpInitiatedLogout: false` ends only the gateway's session;
//! - none advertised (Dex) or an unusable one (not https): only the gateway's session ends;
//! - a session recorded before ID tokens were kept: `client_id` only, no hint.
//!
//! Keycloak's real answer to such a request is in `keycloak/rp_logout.rs`.

use axum::{Json, Router, body::Body, routing::get};
use http::{Method, StatusCode, header};
use portcullis_core::{
    Host,
    token::{KeySet, TokenKind},
};
use portcullis_crds::session::RefreshStatus;
use portcullis_gateway::{
    clock::now,
    config::IdpFile,
    cookies,
    gateway::{Gateway, SessionServices, Settings},
    http::ClientAddr,
    idp::Providers,
    metrics::Metrics,
    proxy::{Proxy, ProxyConfig},
    router,
    sessions::{
        NewSession, SessionRecorder,
        file_store::LocalStore,
        refresh::Refresher,
        seal::{KeyRing, SessionKey},
        store::{Clear, SessionPatch, SessionStore},
    },
    tokens::SsoClaims,
};
use serde_json::{Value, json};
use std::{collections::HashMap, sync::Arc};
use tower::ServiceExt as _;

const AUTH: &str = "auth.portcullis.test";
const DISCOVERED: &str = "https://idp.test/realms/corp/logout";
const CONFIGURED: &str = "https://sso.corp.test/logout?tenant=t1";
/// What the provider issued at login; opaque to the gateway once verified.
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

/// Serves a discovery document advertising `end_session` (none when `None`) on a loopback
/// port; returns the issuer.
async fn discovery(end_session: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let mut document = json!({
        "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/certs"),
        "response_types_supported": ["code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    if let Some(endpoint) = end_session {
        document["end_session_endpoint"] = json!(endpoint);
    }
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(document) }),
        )
        .route("/certs", get(|| async { Json(json!({ "keys": [] })) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

struct Harness {
    gateway: Gateway,
    signing: Arc<KeySet>,
    ring: Arc<KeyRing>,
    store: Arc<LocalStore>,
}

async fn harness() -> Harness {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let advertising = discovery(Some(DISCOVERED)).await;
    let silent = discovery(None).await;
    let plain = discovery(Some("http://idp.test/logout")).await;
    let secret = std::env::temp_dir().join(format!("portcullis-rpl-{}", std::process::id()));
    std::fs::write(&secret, "secret").expect("secret");
    let entry = |name: &str, issuer: &str, extra: Value| {
        let mut entry = json!({ "name": name, "issuer": issuer, "clientId": "portcullis",
            "clientSecretFile": secret });
        if let (Some(entry), Value::Object(extra)) = (entry.as_object_mut(), extra) {
            entry.extend(extra);
        }
        entry
    };
    let file: IdpFile = serde_json::from_value(json!({ "identityProviders": [
        entry("discovered", &advertising, json!({})),
        entry("configured", &advertising, json!({ "endSessionEndpoint": CONFIGURED })),
        entry("off", &advertising, json!({ "rpInitiatedLogout": false })),
        entry("silent", &silent, json!({})),
        entry("plain", &plain, json!({})),
    ]}))
    .expect("idp file");
    let providers = Providers::new(
        file.identity_providers,
        &format!("https://{AUTH}/.portcullis/callback"),
        reqwest::Client::new(),
    )
    .expect("providers");
    let store = LocalStore::open(None).expect("store");
    let ring = Arc::new(KeyRing::new(
        SessionKey::from_file_content(&[7u8; 32]).expect("key"),
        vec![],
    ));
    let recorder = SessionRecorder::local(store.clone());
    let refresher = Refresher::new(
        recorder.clone(),
        ring.clone(),
        providers.clone(),
        "gw-1".into(),
        Metrics::new(),
    );
    let sessions = SessionServices {
        recorder,
        index: store.index(),
        refresher: Some(refresher),
    };
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("key")
        .serialize_pem();
    let signing = Arc::new(KeySet::from_pems(pem.as_bytes(), None, &[]).expect("keys"));
    let (_tx, rx) = tokio::sync::watch::channel(Arc::default());
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
    let gateway = Gateway::with_sessions(
        settings,
        rx,
        signing.clone(),
        providers,
        Proxy::new(ProxyConfig::default()).expect("proxy"),
        Metrics::new(),
        Some(sessions),
    );
    Harness {
        gateway,
        signing,
        ring,
        store,
    }
}

impl Harness {
    /// Records session `sid` of alice at `idp`, with the login's ID token sealed as the
    /// callback seals it, or without one (a session recorded before ID tokens were kept).
    async fn login(&self, sid: &str, idp: &str, with_id_token: bool) -> String {
        let start = now();
        let sealed = with_id_token.then(|| self.ring.seal_id_token(sid, ID_TOKEN).expect("seal"));
        SessionRecorder::local(self.store.clone())
            .record(&NewSession {
                sid,
                subject: "alice",
                email: None,
                groups: &[],
                identity_provider: idp,
                issued_at: start,
                expires_at: start + 3600,
                sealed_refresh_token: None,
                sealed_id_token: sealed,
                attempt: sid,
                provider_session_id: None,
            })
            .await
            .expect("recorded");
        let claims = SsoClaims {
            iss: format!("https://{AUTH}"),
            aud: format!("https://{AUTH}"),
            sub: "alice".into(),
            email: None,
            groups: vec![],
            ext: Default::default(),
            sid: sid.into(),
            idp: idp.into(),
            auth_time: start,
            iat: start,
            exp: start + 600,
        };
        let token = self.signing.sign(TokenKind::Sso, &claims).expect("sign");
        format!("{}={token}", cookies::SSO)
    }

    /// Confirms the logout of the browser holding `cookie` (a POST from the auth host's own
    /// confirmation page); the answer's status and `Location`.
    async fn logout(&self, cookie: &str) -> (StatusCode, Option<url::Url>) {
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri("/.portcullis/logout")
            .header("host", AUTH)
            .header("sec-fetch-site", "same-origin")
            .header("cookie", cookie)
            .body(Body::empty())
            .expect("request");
        req.extensions_mut()
            .insert(ClientAddr("192.0.2.1:40000".parse().expect("peer")));
        let response = router::app(self.gateway.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| url::Url::parse(v).expect("an absolute Location"));
        (response.status(), location)
    }
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

fn without_query(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

#[tokio::test]
async fn logout_uses_the_discovered_endpoint_with_the_sessions_id_token_as_hint() {
    let h = harness().await;
    let cookie = h.login("s-disc", "discovered", true).await;
    let (status, to) = h.logout(&cookie).await;
    assert_eq!(status, StatusCode::FOUND);
    let to = to.expect("a redirect to the provider");
    assert_eq!(without_query(&to), DISCOVERED);
    let query = query(&to);
    assert_eq!(
        query.get("id_token_hint").map(String::as_str),
        Some(ID_TOKEN)
    );
    assert_eq!(query["client_id"], "portcullis");
    assert_eq!(
        query["post_logout_redirect_uri"],
        format!("https://{AUTH}/.portcullis/logged-out")
    );
    // The session ended here too.
    assert!(h.store.get("s-disc").expect("session").spec.revoked);
}

#[tokio::test]
async fn a_configured_endpoint_wins_and_an_old_session_is_sent_without_a_hint() {
    let h = harness().await;
    let cookie = h.login("s-conf", "configured", true).await;
    let (_, to) = h.logout(&cookie).await;
    let to = to.expect("a redirect to the provider");
    assert_eq!(without_query(&to), "https://sso.corp.test/logout");
    let pairs = query(&to);
    assert_eq!(pairs["tenant"], "t1");
    assert_eq!(
        pairs.get("id_token_hint").map(String::as_str),
        Some(ID_TOKEN)
    );

    // Recorded before ID tokens were kept: client_id names the client, no hint.
    let cookie = h.login("s-old", "discovered", false).await;
    let (status, to) = h.logout(&cookie).await;
    assert_eq!(status, StatusCode::FOUND);
    let to = to.expect("a redirect to the provider");
    assert_eq!(without_query(&to), DISCOVERED);
    let pairs = query(&to);
    assert!(!pairs.contains_key("id_token_hint"), "{to}");
    assert_eq!(pairs["client_id"], "portcullis");
}

#[tokio::test]
async fn off_or_nothing_usable_advertised_ends_only_the_gateways_session() {
    let h = harness().await;
    for idp in ["off", "silent", "plain"] {
        let sid = format!("s-{idp}");
        let cookie = h.login(&sid, idp, true).await;
        let (status, to) = h.logout(&cookie).await;
        assert_eq!((status, to), (StatusCode::OK, None), "{idp}");
        assert!(
            h.store.get(&sid).expect("session").spec.revoked,
            "{idp}: not revoked"
        );
    }
}

#[tokio::test]
async fn an_id_token_sealed_for_another_session_or_as_a_refresh_token_is_not_sent() {
    let h = harness().await;
    let cookie = h.login("s-moved", "discovered", false).await;
    // Whoever may write the status puts another session's sealed ID token, then a refresh
    // token sealed for this very session, where the ID token goes: neither opens.
    for sealed in [
        h.ring.seal_id_token("s-other", ID_TOKEN).expect("seal"),
        h.ring.seal("s-moved", "a-refresh-token").expect("seal"),
    ] {
        let patch = SessionPatch::refresh(
            RefreshStatus {
                sealed_id_token: Some(sealed),
                ..RefreshStatus::default()
            },
            Clear::default(),
        );
        SessionStore::patch(h.store.as_ref(), "s-moved", &patch)
            .await
            .expect("patched");
        let (_, to) = h.logout(&cookie).await;
        let to = to.expect("a redirect to the provider");
        assert!(!query(&to).contains_key("id_token_hint"), "{to}");
    }
}
