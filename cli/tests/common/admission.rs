//! A real validating admission webhook, registered with the real API server, that refuses
//! writes to chosen AccessSessions: how a test makes one session's revocation fail (for good, or
//! a few times and then not) while the others succeed, with the errors the API server itself
//! returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use portcullis_tests::pki::Pki;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Decides a write to the session `name`, the `nth` (from 1) not dry-run write to it: `None`
/// admits it, `Some((code, message))` refuses it with that HTTP status.
pub type Decide = dyn Fn(&str, u32) -> Option<(u16, String)> + Send + Sync;

/// The webhook: serving on loopback until dropped, registered for one namespace.
pub struct Webhook {
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
    server: tokio::task::JoinHandle<()>,
    client: kube::Client,
    name: String,
}

impl Webhook {
    /// Serves `decide` over TLS (a certificate from a CA made in `dir`) and registers it for
    /// updates of AccessSessions in namespace `ns`.
    pub async fn start(
        client: &kube::Client,
        ns: &str,
        dir: &Path,
        decide: Box<Decide>,
    ) -> Result<Self> {
        let pki = Pki::generate(dir)?;
        let files = pki.issue_serving("webhook", &[])?;
        let certs = CertificateDer::pem_file_iter(&files.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&files.key)?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();

        let calls = Arc::new(Mutex::new(BTreeMap::new()));
        let decide: Arc<Decide> = Arc::from(decide);
        let state = (calls.clone(), decide);
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { review(request, &state.0, state.1.as_ref()).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });

        let name = format!("{ns}-sessions");
        let config: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "sessions.cli-test.portcullis.dev",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/validate"),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(pki.ca_pem()),
                },
                "rules": [{
                    "apiGroups": ["access.portcullis.dev"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE"],
                    "resources": ["accesssessions"],
                    "scope": "Namespaced",
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }],
        }))
        .context("webhook configuration")?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .context("registering the webhook")?;
        Ok(Self {
            calls,
            server,
            client: client.clone(),
            name,
        })
    }

    /// How many writes (not dry runs) to `session` the webhook has been asked about.
    pub fn calls(&self, session: &str) -> u32 {
        self.calls
            .lock()
            .map(|c| c.get(session).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Unregisters the webhook (or the namespace's writes would keep calling a dead server).
    pub async fn remove(self) -> Result<()> {
        self.server.abort();
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .context("unregistering the webhook")?;
        Ok(())
    }
}

/// Answers one AdmissionReview.
async fn review(
    request: Request<Incoming>,
    calls: &Mutex<BTreeMap<String, u32>>,
    decide: &Decide,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let request = &review["request"];
    let name = request["name"].as_str().unwrap_or_default().to_owned();
    let decision = if request["dryRun"].as_bool() == Some(true) {
        decide(&name, 0)
    } else {
        let nth = calls.lock().map_or(0, |mut calls| {
            let n = calls.entry(name.clone()).or_default();
            *n += 1;
            *n
        });
        decide(&name, nth)
    };
    let mut response = serde_json::json!({"uid": request["uid"], "allowed": decision.is_none()});
    if let Some((code, message)) = decision {
        response["status"] = serde_json::json!({"code": code, "message": message});
    }
    let answer = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap_or_default())
}
