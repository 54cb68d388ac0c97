//! Discovery against a provider that is down.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A provider whose issuer is a local port that accepts connections and closes them at once,
/// counting them; and the counter.
async fn unreachable_provider() -> (Providers, Arc<AtomicUsize>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let dir = std::env::temp_dir().join(format!("portcullis-idp-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, "s").expect("secret");
    let config: IdpConfig = serde_json::from_value(serde_json::json!({
        "name": "down", "issuer": format!("http://127.0.0.1:{port}"), "clientId": "gw",
        "clientSecretFile": secret,
    }))
    .expect("config");
    let providers = Providers::new(
        vec![config],
        "https://auth.test/.portcullis/callback",
        reqwest::Client::new(),
    )
    .expect("providers");
    (providers, connections)
}

#[tokio::test]
async fn a_provider_that_is_down_is_not_asked_again_for_every_caller() {
    let (providers, connections) = unreachable_provider().await;
    let provider = providers.get("down").expect("configured");
    assert!(provider.client().await.is_err());
    let after_first = connections.load(Ordering::SeqCst);
    assert!(after_first >= 1, "the first discovery reached the provider");
    // A burst of callers right after the failure: none of them reaches the provider.
    for _ in 0..20 {
        let error = provider.client().await.expect_err("still down");
        assert!(error.to_string().contains("not asked again"), "{error}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), after_first);
    // After the pause it is asked again.
    tokio::time::sleep(FAILED_DISCOVERY_PAUSE + std::time::Duration::from_millis(100)).await;
    assert!(provider.client().await.is_err());
    assert!(connections.load(Ordering::SeqCst) > after_first);
}
