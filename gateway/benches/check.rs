//! The per-request access check: route → app-token verification → rules, as the gateway runs
//! it on every request. Target: ≤ 20 µs amortized with a token seen before (the signature is
//! checked once, then the verification is served from the cache keyed on the whole token).
//!
//! `cargo bench -p portcullis-gateway --bench check`

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use portcullis_core::{
    CanonicalPath, Host, PolicyId,
    token::{AppClaims, KeySet, TokenKind},
};
use portcullis_gateway::{
    access::{self, Outcome, Subject},
    clock::now,
    cookies,
    gateway::{Gateway, SessionServices, Settings},
    idp::Providers,
    metrics::Metrics,
    proxy::{Proxy, ProxyConfig},
    sessions::SessionRecorder,
    sessions::file_store::LocalStore,
    state,
    state::session_index::{Entry, SessionIdentity, SessionIndex},
};
use std::{collections::HashMap, hint::black_box, sync::Arc};

/// 50 policies over 25 hosts, each with 8 rules; the benchmarked user matches the last Allow.
fn manifests() -> Vec<portcullis_crds::AccessPolicy> {
    (0..50)
        .map(|i| {
            let yaml = format!(
                r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: app-{i}, namespace: team }}
spec:
  hosts: [app-{host}.example.test]
  paths: [/p{i}, /p{i}/api, /p{i}/static]
  identityProviders: [dex]
  upstream: {{ url: "http://127.0.0.1:8080" }}
  rules:
    - action: Bypass
      include: [{{ ipRanges: [198.51.100.0/24, 203.0.113.0/24] }}]
    - action: Deny
      include: [{{ emails: [mallory@example.com, trudy@example.com] }}]
    - action: Deny
      include: [{{ groups: [suspended] }}]
    - action: Allow
      include: [{{ groups: [admins] }}]
      require: [{{ ipRanges: [10.0.0.0/8] }}]
    - action: Allow
      include: [{{ emails: [bob@example.com] }}]
    - action: Allow
      include: [{{ claim: {{ name: hd, values: [partner.example] }} }}]
    - action: Allow
      include: [{{ groups: [contractors] }}]
      exclude: [{{ ipRanges: [192.0.2.0/24] }}]
    - action: Allow
      include: [{{ emailDomains: [example.com] }}]
"#,
                host = i / 2
            );
            serde_saphyr::from_str(&yaml).expect("manifest")
        })
        .collect()
}

const SUBJECT: &str = "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs";
const EMAIL: &str = "alice@example.com";
const GROUPS: [&str; 3] = ["engineering", "staff", "oncall"];

/// A session index of `n` live sessions (ids as [`token`] makes them), one in ten revoked.
fn sessions(n: usize) -> SessionIndex {
    let identity = Arc::new(SessionIdentity {
        email: Some(EMAIL.into()),
        groups: GROUPS.iter().map(|g| (*g).to_owned()).collect(),
    });
    let mut index = SessionIndex {
        synced: true,
        ..SessionIndex::default()
    };
    for sid in 0..n {
        index.entries.insert(
            format!("{sid:032x}"),
            Entry {
                subject: SUBJECT.into(),
                expires_at: now() + 86_400,
                retain_until: now() + 86_400,
                ended: sid % 10 == 9,
                refresh_failing_since: None,
                identity: identity.clone(),
                confirmed_at: None,
            },
        );
    }
    index
}

fn build_gateway(sessions: Option<SessionIndex>) -> (Gateway, Arc<KeySet>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let snapshot = state::build(1, &manifests(), &HashMap::new(), &|n| n == "dex");
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot));
    std::mem::forget(tx);
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("key")
        .serialize_pem();
    let keys = Arc::new(KeySet::from_pems(pem.as_bytes(), None, &[]).expect("keys"));
    let settings = Settings {
        auth_host: Host::parse("auth.example.test").expect("host"),
        public_port: 443,
        sso_lifetime: std::time::Duration::from_secs(3600),
        trusted_proxies: vec![],
        access_log: Default::default(),
        login_rate: portcullis_gateway::rate_limit::Rate {
            per_second: 5.0,
            burst: 50,
            clients: 100_000,
        },
    };
    let proxy = Proxy::new(ProxyConfig::default()).expect("proxy");
    let sessions = sessions.map(|index| {
        let (tx, index) = tokio::sync::watch::channel(Arc::new(index));
        std::mem::forget(tx);
        SessionServices {
            recorder: SessionRecorder::local(LocalStore::open(None).expect("in-memory store")),
            index,
            refresher: None,
        }
    });
    (
        Gateway::with_sessions(
            settings,
            rx,
            keys.clone(),
            Providers::default(),
            proxy,
            Metrics::new(),
            sessions,
        ),
        keys,
    )
}

fn token(keys: &KeySet, sid: usize) -> String {
    let now = now();
    let claims = AppClaims {
        iss: "https://auth.example.test".into(),
        aud: "team/app-37".into(),
        sub: SUBJECT.into(),
        email: Some(EMAIL.into()),
        groups: GROUPS.iter().map(|g| (*g).to_owned()).collect(),
        ext: Default::default(),
        sid: format!("{sid:032x}"),
        idp: "dex".into(),
        epoch: 0,
        iat: now,
        exp: now + 3600,
        auth_time: now,
        sexp: None,
        puid: None,
    };
    keys.sign(TokenKind::App, &claims).expect("sign")
}

fn bench(c: &mut Criterion) {
    let (gateway, keys) = build_gateway(None);
    let host = Host::parse("app-18.example.test").expect("host");
    let path = CanonicalPath::parse("/p37/api/items/42").expect("path");
    let cookie_name = cookies::app_cookie(&PolicyId::new("team", "app-37"));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!(
            "_ga=GA1.2.3; {cookie_name}={}; theme=dark",
            token(&keys, 1)
        ))
        .expect("cookie"),
    );
    let subject = Subject {
        host: &host,
        path: &path,
        headers: &headers,
        client_ip: "10.1.2.3".parse().expect("ip"),
    };
    assert!(matches!(
        access::check(&gateway, &gateway.snapshot(), &subject, now()),
        Outcome::Allow { .. }
    ));

    let mut group = c.benchmark_group("check");
    group.bench_function("known_token_allowed", |b| {
        b.iter(|| {
            black_box(access::check(
                &gateway,
                &gateway.snapshot(),
                black_box(&subject),
                now(),
            ))
        })
    });

    // The same, with the session judged against an index of 100k sessions (10k revoked), as in
    // cluster mode: one lookup in the persistent map, the identity compared.
    let (with_sessions, keys_100k) = build_gateway(Some(sessions(100_000)));
    let cookie_with = |sid: usize| {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "_ga=GA1.2.3; {cookie_name}={}; theme=dark",
                token(&keys_100k, sid)
            ))
            .expect("cookie"),
        );
        headers
    };
    let (live, revoked) = (cookie_with(1), cookie_with(9));
    let live = Subject {
        headers: &live,
        ..subject
    };
    let revoked = Subject {
        headers: &revoked,
        ..subject
    };
    assert!(matches!(
        access::check(&with_sessions, &with_sessions.snapshot(), &live, now()),
        Outcome::Allow { .. }
    ));
    assert!(
        !matches!(
            access::check(&with_sessions, &with_sessions.snapshot(), &revoked, now()),
            Outcome::Allow { .. }
        ),
        "a revoked session must be refused"
    );
    group.bench_function("known_token_allowed_100k_sessions", |b| {
        b.iter(|| {
            black_box(access::check(
                &with_sessions,
                &with_sessions.snapshot(),
                black_box(&live),
                now(),
            ))
        })
    });

    let anonymous = HeaderMap::new();
    let anonymous = Subject {
        headers: &anonymous,
        ..subject
    };
    group.bench_function("no_session_login_required", |b| {
        b.iter(|| {
            black_box(access::check(
                &gateway,
                &gateway.snapshot(),
                black_box(&anonymous),
                now(),
            ))
        })
    });

    // A token the gateway has not seen: one signature verification (paid once per token).
    let fresh: Vec<String> = (0..4096).map(|i| token(&keys, i + 10)).collect();
    let mut next = 0;
    group.bench_function("first_sight_of_a_token_es256", |b| {
        b.iter(|| {
            next = (next + 1) % fresh.len();
            black_box(keys.verify::<AppClaims>(
                TokenKind::App,
                &fresh[next],
                "https://auth.example.test",
                Some("team/app-37"),
                now(),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
