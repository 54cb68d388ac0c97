//! Policy compilation and rule evaluation, from the manifests users write.

use portcullis_core::{
    CanonicalPath, Decision, Host, Identity, InvalidPolicy, Policy, PolicyError, PolicyId,
    PolicyMeta, RequestFacts, Route, RouteTable, policy::ServiceTokenRef,
};
use portcullis_crds::AccessPolicy;
use std::{net::IpAddr, sync::Arc};

fn manifest(yaml: &str) -> AccessPolicy {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

fn compile(yaml: &str) -> Policy {
    Policy::try_from(&manifest(yaml)).expect("policy compiles")
}

const APPS: &str = r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: apps, namespace: team, generation: 4 }
spec:
  hosts: [myserver.example.test]
  paths: [/wordpress, /express]
  identityProviders: [dex]
  upstream: { url: "http://127.0.0.1:8080", timeout: 10s }
  revocationEpoch: 2
  serviceTokens: [{ name: ci, secretName: ci-token }]
  rules:
    - name: monitoring
      action: Bypass
      include: [{ ipRanges: [198.51.100.0/24] }]
    - name: ci
      action: ServiceAuth
      include: [{ serviceTokens: [ci] }]
    - name: no-mallory
      action: Deny
      include: [{ emails: [Mallory@Example.com] }]
    - name: staff
      action: Allow
      include: [{ emailDomains: [example.com] }, { groups: [contractors] }]
      require: [{ ipRanges: ["10.0.0.0/8", "2001:db8::/32"] }]
      exclude: [{ claim: { name: hd, values: [blocked.example.com] } }]
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn user(email: &str, groups: &[&str]) -> Identity {
    Identity {
        subject: format!("sub-{email}"),
        email: Some(email.to_owned()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        claims: Default::default(),
    }
}

fn facts(client: &str) -> RequestFacts<'static> {
    RequestFacts {
        client_ip: ip(client),
        service_token: None,
        bearer: None,
    }
}

#[test]
fn compiles_every_field() {
    let policy = compile(APPS);
    assert_eq!(policy.id, PolicyId::new("team", "apps"));
    assert_eq!(policy.id.to_string(), "team/apps");
    assert_eq!(policy.generation, Some(4));
    assert_eq!(policy.epoch, 2);
    assert_eq!(policy.prefixes, ["/wordpress", "/express"]);
    assert_eq!(policy.rules.len(), 4);
    assert_eq!(policy.session.token_lifetime.as_secs(), 300);
    assert_eq!(
        policy.upstream.as_ref().map(|u| u.timeout.as_secs()),
        Some(10),
    );
}

#[test]
fn bypass_and_service_auth_come_before_login() {
    let policy = compile(APPS);
    assert_eq!(
        policy.evaluate(&facts("198.51.100.7"), None),
        Decision::Bypass { rule: 0 }
    );
    let ci = RequestFacts {
        client_ip: ip("192.0.2.1"),
        service_token: Some("ci"),
        bearer: None,
    };
    assert_eq!(
        policy.evaluate(&ci, None),
        Decision::ServiceAuth { rule: 1 }
    );
    let other = RequestFacts {
        client_ip: ip("192.0.2.1"),
        service_token: Some("other"),
        bearer: None,
    };
    assert_eq!(policy.evaluate(&other, None), Decision::LoginRequired);
    assert_eq!(
        policy.evaluate(&facts("10.1.2.3"), None),
        Decision::LoginRequired
    );
}

#[test]
fn allow_and_deny_rules_decide_in_order_after_login() {
    let policy = compile(APPS);
    let inside = facts("10.1.2.3");
    assert_eq!(
        policy.evaluate(&inside, Some(&user("alice@example.com", &[]))),
        Decision::Allow { rule: 3 }
    );
    assert_eq!(
        policy.evaluate(&inside, Some(&user("ALICE@EXAMPLE.COM", &[]))),
        Decision::Allow { rule: 3 }
    );
    assert_eq!(
        policy.evaluate(
            &inside,
            Some(&user("bob@contractor.test", &["contractors"]))
        ),
        Decision::Allow { rule: 3 }
    );
    assert_eq!(
        policy.evaluate(&inside, Some(&user("mallory@example.com", &[]))),
        Decision::Deny { rule: 2 }
    );
    assert_eq!(
        policy.evaluate(&inside, Some(&user("eve@evil.test", &[]))),
        Decision::NoRuleMatched
    );
    // example.com must be the domain, not a suffix of it.
    assert_eq!(
        policy.evaluate(&inside, Some(&user("eve@notexample.com", &[]))),
        Decision::NoRuleMatched
    );
    assert_eq!(
        policy.evaluate(&inside, Some(&user("eve@example.com.evil.test", &[]))),
        Decision::NoRuleMatched
    );
}

#[test]
fn require_and_exclude_narrow_a_rule() {
    let policy = compile(APPS);
    let alice = user("alice@example.com", &[]);
    assert_eq!(
        policy.evaluate(&facts("192.0.2.1"), Some(&alice)),
        Decision::NoRuleMatched
    );
    assert_eq!(
        policy.evaluate(&facts("2001:db8::1"), Some(&alice)),
        Decision::Allow { rule: 3 }
    );
    // An IPv4-mapped IPv6 peer is judged as its IPv4 address.
    assert_eq!(
        policy.evaluate(&facts("::ffff:10.0.0.1"), Some(&alice)),
        Decision::Allow { rule: 3 }
    );
    let mut blocked = alice.clone();
    blocked
        .claims
        .insert("hd".into(), "blocked.example.com".into());
    assert_eq!(
        policy.evaluate(&facts("10.0.0.1"), Some(&blocked)),
        Decision::NoRuleMatched
    );
}

#[test]
fn an_unverified_email_matches_no_email_rule() {
    let policy = compile(APPS);
    let mut anonymous = user("alice@example.com", &[]);
    anonymous.email = None;
    assert_eq!(
        policy.evaluate(&facts("10.0.0.1"), Some(&anonymous)),
        Decision::NoRuleMatched
    );
}

#[test]
fn email_rules_compare_the_strictly_parsed_address() {
    let policy = compile(APPS);
    let inside = facts("10.1.2.3");
    // Each of these has no single domain, or not example.com: no email rule matches, so the
    // Deny of mallory cannot be dodged either way and the Allow of example.com is not given.
    for email in [
        "someone@evil.test@example.com",
        "someone@example.com@evil.test",
        "\"someone@evil.test\"@example.com",
        "someone%evil.test@example.com",
        "evil.test!someone@example.com",
        "someone@example.com.",
        "someone@example.com ",
        "someone @example.com",
        "someone@example.com\r\n",
        "someone@ex\u{0430}mple.com",
        "someone\u{ff20}example.com",
        "someone@example\u{ff0e}com",
        "@example.com",
        "someone@",
        "",
    ] {
        assert_eq!(
            policy.evaluate(&inside, Some(&user(email, &[]))),
            Decision::NoRuleMatched,
            "{email:?}"
        );
    }
    // The Deny of Mallory compares the whole parsed address, case-folded.
    assert_eq!(
        policy.evaluate(&inside, Some(&user("MALLORY@example.COM", &[]))),
        Decision::Deny { rule: 2 }
    );
}

#[test]
fn invalid_manifests_are_refused_with_the_reason() {
    let cases = [
        (
            APPS.replace("[myserver.example.test]", "[MyServer.example.test]"),
            "invalid host",
        ),
        (
            APPS.replace("[myserver.example.test]", "[myserver.example.test.]"),
            "invalid host",
        ),
        (
            APPS.replace("[/wordpress, /express]", "[/wordpress/../admin]"),
            "invalid path prefix",
        ),
        (
            APPS.replace("[/wordpress, /express]", "[/wordpress/]"),
            "invalid path prefix",
        ),
        (
            APPS.replace("198.51.100.0/24", "198.51.100.0/33"),
            "invalid CIDR",
        ),
        (
            APPS.replace("http://127.0.0.1:8080", "http://user@127.0.0.1:8080"),
            "invalid upstream",
        ),
        (
            APPS.replace("http://127.0.0.1:8080", "ftp://127.0.0.1"),
            "invalid upstream",
        ),
        (
            APPS.replace("ipRanges: [198.51.100.0/24]", "groups: [admins]"),
            "Bypass rules may only",
        ),
        (
            APPS.replace(
                "include: [{ serviceTokens: [ci] }]",
                "include: [{ everyone: true }]",
            ),
            "ServiceAuth rules",
        ),
        (
            APPS.replace("revocationEpoch: 2", "revocationEpoch: -1"),
            "revocationEpoch",
        ),
        (
            APPS.replace("timeout: 10s", "timeout: -10s"),
            "invalid duration",
        ),
        (
            APPS.replace(
                "emailDomains: [example.com]",
                "emailDomains: [\"@example.com\"]",
            ),
            "invalid email domain",
        ),
        (
            APPS.replace(
                "emailDomains: [example.com]",
                "emailDomains: [example.com.]",
            ),
            "invalid email domain",
        ),
        (
            APPS.replace(
                "[Mallory@Example.com]",
                "[\"mallory@evil.test@example.com\"]",
            ),
            "invalid email",
        ),
    ];
    for (yaml, expected) in cases {
        let error = Policy::try_from(&manifest(&yaml)).expect_err(expected);
        assert!(
            error.to_string().contains(expected),
            "{error} does not mention {expected}"
        );
    }
    let mut unnamed = manifest(APPS);
    unnamed.metadata.namespace = None;
    assert_eq!(Policy::try_from(&unnamed), Err(PolicyError::MissingName));
}

#[test]
fn a_policy_compiles_from_its_parts_as_from_the_object() {
    let mut object = manifest(APPS);
    object.metadata.uid = Some("u-1".into());
    let meta = PolicyMeta {
        namespace: "team".into(),
        name: "apps".into(),
        uid: Some("u-1".into()),
        generation: Some(4),
    };
    let from_parts = Policy::compile(meta.clone(), &object.spec).expect("policy compiles");
    assert_eq!(Policy::try_from(&object), Ok(from_parts.clone()));
    assert_eq!(from_parts.id, PolicyId::new("team", "apps"));
    assert_eq!(from_parts.uid.as_deref(), Some("u-1"));
    assert_eq!(from_parts.generation, Some(4));
    // The same errors too.
    object.spec.revocation_epoch = -1;
    assert_eq!(
        Policy::compile(meta, &object.spec),
        Err(PolicyError::NegativeEpoch)
    );
    assert_eq!(Policy::try_from(&object), Err(PolicyError::NegativeEpoch));
}

#[test]
fn service_token_secrets_hold_a_client_id_and_a_client_secret() {
    assert_eq!(ServiceTokenRef::CLIENT_ID_KEY, "client-id");
    assert_eq!(ServiceTokenRef::CLIENT_SECRET_KEY, "client-secret");
    assert_eq!(ServiceTokenRef::SECRET_KEYS, ["client-id", "client-secret"]);
}

fn route<'a>(table: &'a RouteTable, host: &str, path: &str) -> Option<&'a Route> {
    table.route(
        &Host::parse(host).expect("host"),
        &CanonicalPath::parse(path).expect("path"),
    )
}

fn routed_to(route: Option<&Route>) -> String {
    match route {
        Some(Route::Policy(p)) => p.id.to_string(),
        Some(Route::Invalid { id, .. }) => format!("invalid:{id}"),
        Some(Route::Conflict { ids }) => format!("conflict:{}", ids.len()),
        None => "none".into(),
    }
}

#[test]
fn routes_pick_the_longest_whole_segment_prefix() {
    let apps = Arc::new(compile(APPS));
    let root = Arc::new(compile(
        &APPS
            .replace("name: apps", "name: root")
            .replace("[/wordpress, /express]", "[/]"),
    ));
    let admin = Arc::new(compile(
        &APPS
            .replace("name: apps", "name: admin")
            .replace("[/wordpress, /express]", "[/wordpress/wp-admin]"),
    ));
    let table = RouteTable::build(&[apps, root, admin], &[]);
    assert_eq!(
        routed_to(route(&table, "myserver.example.test", "/wordpress/x")),
        "team/apps"
    );
    assert_eq!(
        routed_to(route(&table, "MyServer.Example.Test:443", "/express")),
        "team/apps"
    );
    assert_eq!(
        routed_to(route(&table, "myserver.example.test", "/wordpress2")),
        "team/root"
    );
    assert_eq!(
        routed_to(route(
            &table,
            "myserver.example.test",
            "/wordpress/wp-admin/x"
        )),
        "team/admin"
    );
    assert_eq!(
        routed_to(route(
            &table,
            "myserver.example.test",
            "/WordPress/WP-Admin"
        )),
        "team/admin"
    );
    assert_eq!(
        routed_to(route(&table, "other.example.test", "/wordpress")),
        "none"
    );
}

#[test]
fn conflicting_and_invalid_policies_route_to_denials() {
    let apps = Arc::new(compile(APPS));
    let twin = Arc::new(compile(&APPS.replace("name: apps", "name: twin")));
    let broken = InvalidPolicy {
        id: PolicyId::new("team", "broken"),
        hosts: vec![Host::parse("broken.example.test").expect("host")],
        prefixes: vec![],
        reason: "rule 0: bad".into(),
    };
    let table = RouteTable::build(&[apps, twin], &[broken]);
    assert_eq!(
        routed_to(route(&table, "myserver.example.test", "/wordpress")),
        "conflict:2"
    );
    assert_eq!(
        routed_to(route(&table, "broken.example.test", "/anything")),
        "invalid:team/broken"
    );
}

#[test]
fn a_deny_before_a_bypass_wins_when_it_needs_no_user() {
    let yaml = APPS.replace(
        "    - name: monitoring\n      action: Bypass",
        "    - name: blocked-range\n      action: Deny\n      include: [{ ipRanges: [198.51.100.128/25] }]\n    - name: monitoring\n      action: Bypass",
    );
    let policy = compile(&yaml);
    assert_eq!(
        policy.evaluate(&facts("198.51.100.200"), None),
        Decision::Deny { rule: 0 }
    );
    assert_eq!(
        policy.evaluate(&facts("198.51.100.7"), None),
        Decision::Bypass { rule: 1 }
    );
    // A Deny that needs the user is judged after login, after every pre-login rule.
    let mallory = user("mallory@example.com", &[]);
    assert_eq!(
        policy.evaluate(&facts("10.0.0.1"), Some(&mallory)),
        Decision::Deny { rule: 3 }
    );
}

#[test]
fn refresh_failure_modes_decide_who_stays_in_while_the_provider_is_down() {
    use portcullis_core::policy::RefreshFailurePolicy;
    use std::time::Duration;
    let since = 1_000;
    assert!(!RefreshFailurePolicy::FailClosed.admits(since, since));
    let grace = RefreshFailurePolicy::GracePeriod(Duration::from_secs(300));
    assert!(grace.admits(since, since + 299));
    assert!(!grace.admits(since, since + 300));
    // No overflow at the edges.
    assert!(RefreshFailurePolicy::GracePeriod(Duration::from_secs(u64::MAX)).admits(10, 20));
    assert!(RefreshFailurePolicy::KeepUntilExpiry.admits(since, since + 1_000_000));
}

const MACHINES: &str = r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: orders, namespace: team }
spec:
  hosts: [orders.example.test]
  identityProviders: [keycloak]
  upstream: { url: "http://127.0.0.1:8080" }
  rules:
    - name: billing
      action: ServiceAuth
      include:
        - bearer:
            identityProvider: keycloak
            audiences: [orders-api]
            clientIds: [billing]
            scopes: [orders]
      require: [{ ipRanges: [10.0.0.0/8] }]
    - action: Allow
      include: [{ emailDomains: [example.com] }]
"#;

fn bearer_token(client_id: &str, audience: &str, scope: &str) -> portcullis_core::BearerToken {
    portcullis_core::BearerToken {
        identity_provider: "keycloak".into(),
        subject: format!("service-account-{client_id}"),
        client_id: client_id.into(),
        audiences: vec![audience.into()],
        scopes: scope.split(' ').map(str::to_owned).collect(),
        expires_at: 0,
    }
}

#[test]
fn a_bearer_selector_lets_only_its_clients_through_before_login() {
    let policy = compile(MACHINES);
    let judge = |token: &portcullis_core::BearerToken, client: &str| {
        let facts = RequestFacts {
            client_ip: ip(client),
            service_token: None,
            bearer: Some(token),
        };
        policy.evaluate(&facts, None)
    };
    let good = bearer_token("billing", "orders-api", "profile orders");
    assert_eq!(judge(&good, "10.1.1.1"), Decision::ServiceAuth { rule: 0 });
    // The rule's `require` still applies to a machine.
    assert_eq!(judge(&good, "192.0.2.1"), Decision::LoginRequired);
    for refused in [
        bearer_token("reporting", "orders-api", "orders"),
        bearer_token("billing", "account", "orders"),
        bearer_token("billing", "orders-api", "profile"),
    ] {
        assert_eq!(judge(&refused, "10.1.1.1"), Decision::LoginRequired);
    }
    // A bearer token is no user: it never satisfies an Allow rule.
    assert_eq!(
        policy.evaluate(&facts("10.1.1.1"), None),
        Decision::LoginRequired
    );
}

#[test]
fn bearer_selectors_are_refused_outside_service_auth_or_when_empty() {
    let allow = MACHINES.replace("action: ServiceAuth", "action: Allow");
    let bypass = MACHINES.replace("action: ServiceAuth", "action: Bypass");
    let spaced = MACHINES.replace("scopes: [orders]", "scopes: [\"orders write\"]");
    let no_client = MACHINES.replace("clientIds: [billing]", "clientIds: [\"\"]");
    for (yaml, expected) in [
        (allow, "belong in ServiceAuth rules"),
        (bypass, "Bypass rules may only"),
        (spaced, "is not a scope token"),
        (no_client, "bearer.clientIds"),
    ] {
        let error = Policy::try_from(&manifest(&yaml)).expect_err(expected);
        assert!(error.to_string().contains(expected), "{error}");
    }
}
