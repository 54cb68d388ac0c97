//! A provider this test serves on 127.0.0.1 with a key it holds: discovery (with the
//! `claims_supported` and userinfo endpoint a test asks for), the JWKS, a token endpoint that
//! signs the ID token a test describes (with the nonce of the login under way), and a userinfo
//! endpoint that answers only the access token it issued last.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::{
    Form, Json, Router,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis_gateway::clock::now;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub const CLIENT: &str = "portcullis";

/// What the provider answers next; the test sets it.
#[derive(Default)]
pub struct Answers {
    /// Claims of the next ID token besides `iss`, `aud`, `iat`, `exp` and `nonce`.
    pub id_claims: Value,
    /// The nonce of the login under way (from the authorization request the gateway built).
    pub nonce: Option<String>,
    /// The userinfo endpoint's answer.
    pub userinfo: Value,
    /// The access token issued last: the only one userinfo answers.
    access_token: Option<String>,
    /// How many times userinfo answered.
    pub userinfo_calls: usize,
    /// Answer a refresh without an ID token (OpenID Connect makes it optional there).
    pub refresh_without_id_token: bool,
    issued: usize,
}

/// What the discovery document advertises.
pub struct Discovery {
    pub claims_supported: Option<Vec<&'static str>>,
    pub userinfo: bool,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            claims_supported: Some(vec!["sub", "iss", "aud", "auth_time", "email", "hd"]),
            userinfo: true,
        }
    }
}

pub struct Idp {
    pub issuer: String,
    pub answers: Arc<Mutex<Answers>>,
}

type Shared = Arc<(Ed25519KeyPair, String)>;

impl Idp {
    /// Serves the provider on a loopback port.
    pub async fn start(discovery: Discovery) -> Idp {
        let key = Ed25519KeyPair::generate().expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        let jwks = json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1",
            "use": "sig", "alg": "EdDSA" }] });
        let mut document = json!({
            "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/certs"),
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
        });
        if let Some(claims) = discovery.claims_supported {
            document["claims_supported"] = json!(claims);
        }
        if discovery.userinfo {
            document["userinfo_endpoint"] = json!(format!("{issuer}/userinfo"));
        }
        let answers = Arc::new(Mutex::new(Answers::default()));
        let shared: Shared = Arc::new((key, issuer.clone()));
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(document) }),
            )
            .route("/certs", get(move || async move { Json(jwks) }))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state((shared, answers.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Idp { issuer, answers }
    }

    pub fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().expect("answers")
    }
}

type AppState = (Shared, Arc<Mutex<Answers>>);

/// The token endpoint: a signed ID token with the claims the test set, a fresh access token,
/// and a refresh token.
async fn token(
    axum::extract::State((shared, answers)): axum::extract::State<AppState>,
    Form(form): Form<HashMap<String, String>>,
) -> Json<Value> {
    let (key, issuer) = &*shared;
    let mut answers = answers.lock().expect("answers");
    let mut claims = json!({ "iss": issuer, "aud": CLIENT, "iat": now(), "exp": now() + 300 });
    if let Some(extra) = answers.id_claims.as_object() {
        for (name, value) in extra {
            claims[name] = value.clone();
        }
    }
    if form.get("grant_type").map(String::as_str) == Some("authorization_code")
        && let Some(nonce) = &answers.nonce
    {
        claims["nonce"] = json!(nonce);
    }
    answers.issued += 1;
    let access_token = format!("access-{}", answers.issued);
    answers.access_token = Some(access_token.clone());
    let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": "k1" });
    let mut answer = json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": 300,
        "refresh_token": format!("refresh-{}", answers.issued),
    });
    let refresh = form.get("grant_type").map(String::as_str) == Some("refresh_token");
    if !(refresh && answers.refresh_without_id_token) {
        answer["id_token"] = json!(sign(key, &header, &claims));
    }
    Json(answer)
}

/// The userinfo endpoint: the test's answer, for the access token issued last only.
async fn userinfo(
    axum::extract::State((_, answers)): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let mut answers = answers.lock().expect("answers");
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_none() || presented != answers.access_token.as_deref() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_token" })),
        );
    }
    answers.userinfo_calls += 1;
    (StatusCode::OK, Json(answers.userinfo.clone()))
}

fn sign(key: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let signed = format!("{}.{}", encode(header), encode(claims));
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}
