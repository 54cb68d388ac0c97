use super::*;

#[test]
fn uri_translation() {
    let up = Upstream::from_url("https://backend:8443", Duration::from_secs(1)).expect("upstream");
    let uri: Uri = "https://app.example/a/b?c=d".parse().expect("uri");
    assert_eq!(
        upstream_uri(&uri, &up).expect("ok").to_string(),
        "https://backend:8443/a/b?c=d"
    );
    let uri: Uri = "/x".parse().expect("uri");
    assert_eq!(
        upstream_uri(&uri, &up).expect("ok").to_string(),
        "https://backend:8443/x"
    );
    let uri: Uri = "*".parse().expect("uri");
    assert!(upstream_uri(&uri, &up).is_err());
}

#[test]
fn h2c_never_allowed() {
    let p = Proxy::new(ProxyConfig {
        native_roots: false,
        upgrade_protocols: vec!["websocket".into(), "H2C".into()],
        ..ProxyConfig::default()
    })
    .expect("proxy");
    assert_eq!(p.inner.upgrade_protocols, vec!["websocket".to_owned()]);
}
