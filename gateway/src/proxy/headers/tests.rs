use super::*;

/// `HeaderMap::get` for any key type, used by tests.
fn get<K: http::header::AsHeaderName>(h: &HeaderMap, k: K) -> Option<&str> {
    h.get(k).and_then(|v| v.to_str().ok())
}

fn ctx() -> ForwardContext {
    ForwardContext {
        client_addr: "192.0.2.7:5555".parse().expect("addr"),
        trusted_forwarded_for: false,
        scheme: Scheme::HTTPS,
        host: Authority::from_static("app.example"),
        identity_headers: Vouched::new(vec![
            (
                HeaderName::from_static("x-auth-request-user"),
                HeaderValue::from_static("alice"),
            ),
            (
                HeaderName::from_static("portcullis-jwt-assertion"),
                HeaderValue::from_static("jwt"),
            ),
            (
                HeaderName::from_static("x-custom-id"),
                HeaderValue::from_static("42"),
            ),
        ])
        .expect("vouched"),
        gateway_cookies: GatewayCookies::new(["__Host-portcullis"], ["__Host-portcullis-login-"]),
    }
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

#[test]
fn normalization() {
    assert_eq!(
        normalize_name("X_Auth_Request_Email"),
        "x-auth-request-email"
    );
    assert_eq!(
        normalize_name("x.auth.request.email"),
        "x-auth-request-email"
    );
    for n in [
        "x-auth-request-email",
        "x_auth_request_email",
        "portcullis-jwt-assertion",
        "portcullis_anything",
        "x-forwarded-user",
        "x_forwarded_groups",
        "x-forwarded-preferred-username",
        "x-remote-user",
        "remote-user",
        "x-webauth-user",
        "x-real-ip",
        "x-original-url",
        "forwarded",
        "x_forwarded_for",
    ] {
        assert!(is_reserved_inbound(&HeaderName::from_static(n)), "{n}");
    }
    for n in [
        "x-forwarded-for",
        "authorization",
        "accept",
        "x-request-id",
        "cookie",
    ] {
        assert!(!is_reserved_inbound(&HeaderName::from_static(n)), "{n}");
    }
}

#[test]
fn identity_headers_stripped_then_added() {
    let mut h = map(&[
        ("x-auth-request-user", "mallory"),
        ("x_auth_request_user", "mallory"),
        ("X-Auth-Request-Email", "m@evil"),
        ("portcullis-jwt-assertion", "forged"),
        ("x_custom_id", "7"),
        ("x-custom-id", "7"),
        ("connection", "x-auth-request-user, x-custom-id, keep-alive"),
        ("keep-alive", "timeout=5"),
        ("accept", "*/*"),
    ]);
    rewrite_request(&mut h, &ctx(), None).expect("rewrite");
    assert_eq!(h.get_all("x-auth-request-user").iter().count(), 1);
    assert_eq!(get(&h, "x-auth-request-user"), Some("alice"));
    assert_eq!(get(&h, "portcullis-jwt-assertion"), Some("jwt"));
    assert_eq!(get(&h, "x-custom-id"), Some("42"));
    assert!(h.get("x_auth_request_user").is_none());
    assert!(h.get("x_custom_id").is_none());
    assert!(h.get("x-auth-request-email").is_none());
    assert!(h.get("connection").is_none());
    assert!(h.get("keep-alive").is_none());
    assert_eq!(get(&h, "accept"), Some("*/*"));
}

#[test]
fn forwarded_headers() {
    let mut h = map(&[
        ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "evil"),
        ("host", "evil"),
    ]);
    rewrite_request(&mut h, &ctx(), None).expect("rewrite");
    assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.7"));
    assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
    assert_eq!(get(&h, "x-forwarded-host"), Some("app.example"));
    assert_eq!(get(&h, "x-forwarded-port"), Some("443"));
    assert_eq!(get(&h, "host"), Some("app.example"));

    let mut trusted = ctx();
    trusted.trusted_forwarded_for = true;
    trusted.client_addr = "[::ffff:10.1.1.1]:1".parse().expect("addr");
    trusted.host = Authority::from_static("app.example:8443");
    let mut h = map(&[
        ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
        ("x-forwarded-for", "10.0.0.3"),
    ]);
    rewrite_request(&mut h, &trusted, None).expect("rewrite");
    assert_eq!(
        get(&h, "x-forwarded-for"),
        Some("10.0.0.1, 10.0.0.2, 10.0.0.3, 10.1.1.1")
    );
    assert_eq!(get(&h, "x-forwarded-port"), Some("8443"));
}

#[test]
fn hop_by_hop_and_te() {
    let mut h = map(&[
        ("te", "trailers, deflate"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAA"),
        ("connection", "Upgrade, HTTP2-Settings"),
        ("proxy-authorization", "Basic x"),
        ("proxy-connection", "keep-alive"),
        ("trailer", "x-checksum"),
        ("expect", "100-continue"),
    ]);
    rewrite_request(&mut h, &ctx(), None).expect("rewrite");
    for gone in [
        "transfer-encoding",
        "upgrade",
        "http2-settings",
        "connection",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
        "expect",
    ] {
        assert!(h.get(gone).is_none(), "{gone}");
    }
    assert_eq!(get(&h, "te"), Some("trailers"));

    let up = UpgradeRequest {
        protocols: HeaderValue::from_static("websocket"),
    };
    let mut h = map(&[("upgrade", "websocket"), ("connection", "upgrade")]);
    rewrite_request(&mut h, &ctx(), Some(&up)).expect("rewrite");
    assert_eq!(get(&h, "upgrade"), Some("websocket"));
    assert_eq!(get(&h, "connection"), Some("upgrade"));
}

#[test]
fn cookies() {
    let mut h = map(&[
        ("cookie", "app=1; __Host-portcullis=secret; theme=dark"),
        ("cookie", "__Host-portcullis-login-3=x"),
        ("cookie", "__host-portcullis=case-differs"),
    ]);
    rewrite_request(&mut h, &ctx(), None).expect("rewrite");
    assert_eq!(
        get(&h, "cookie"),
        Some("app=1; theme=dark; __host-portcullis=case-differs")
    );

    let mut h = map(&[("cookie", "__Host-portcullis=secret")]);
    rewrite_request(&mut h, &ctx(), None).expect("rewrite");
    assert!(h.get("cookie").is_none());
}

#[test]
fn refuses_bad_added_headers() {
    for forbidden in [
        header::HOST,
        header::CONNECTION,
        header::COOKIE,
        X_FORWARDED_FOR,
    ] {
        assert!(matches!(
            Vouched::new(vec![(forbidden, HeaderValue::from_static("x"))]),
            Err(ProxyError::InvalidAddedHeader { .. })
        ));
    }
    assert!(Vouched::new(vec![(header::ACCEPT, HeaderValue::from_static("ok"))]).is_ok());
    let bad = HeaderValue::from_bytes(b"a\rb");
    assert!(bad.is_err(), "http refuses CR itself");
    assert!(checked(&header::ACCEPT, &HeaderValue::from_static("ok\tvalue")).is_ok());
}

#[test]
fn response_rewrite() {
    let mut h = map(&[
        ("connection", "close, x-internal"),
        ("x-internal", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("proxy-authenticate", "Basic"),
        ("set-cookie", "__Host-portcullis=evil; Path=/"),
        ("set-cookie", "app=1; Path=/"),
        ("content-type", "text/plain"),
    ]);
    rewrite_response(&mut h, false, &ctx().gateway_cookies);
    for gone in [
        "connection",
        "x-internal",
        "keep-alive",
        "transfer-encoding",
        "proxy-authenticate",
    ] {
        assert!(h.get(gone).is_none(), "{gone}");
    }
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, vec!["app=1; Path=/"]);

    let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    rewrite_response(&mut h, true, &GatewayCookies::default());
    assert_eq!(get(&h, "connection"), Some("upgrade"));
    assert_eq!(get(&h, "upgrade"), Some("websocket"));
}

#[test]
fn upgrade_tokens() {
    assert_eq!(
        upgrade_protocols(&HeaderValue::from_static("WebSocket, h2c/2")),
        vec!["websocket", "h2c"]
    );
    let h = map(&[("connection", "keep-alive"), ("connection", " Upgrade ")]);
    assert!(connection_has(&h, "upgrade"));
}
