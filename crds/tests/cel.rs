//! The CEL rules of the CRDs, evaluated client-side with the same rules the API server runs.
//! The integration tests in `tests/` send the same bad manifests to a real kube-apiserver.

use portcullis_crds::{AccessPolicy, AccessSession};

fn policy(yaml: &str) -> AccessPolicy {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

fn session(yaml: &str) -> AccessSession {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

const POLICY: &str = r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: apps, namespace: default }
spec:
  hosts: [myserver.example.com]
  paths: [/wordpress, /express]
  identityProviders: [dex]
  upstream: { url: "http://127.0.0.1:8080" }
  revocationEpoch: 3
  rules:
    - name: staff
      action: Allow
      include: [{ emailDomains: [example.com] }, { groups: [admins] }]
      exclude: [{ emails: [mallory@example.com] }]
    - action: Bypass
      include: [{ ipRanges: [10.0.0.0/8, "2001:db8::/32"] }]
"#;

const SESSION: &str = r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessSession
metadata: { name: s-1, namespace: default }
spec:
  subject: CiQwOGE4Njg0Yi1kYjg4
  email: alice@example.com
  identityProvider: dex
  issuedAt: "2026-11-23T08:00:00Z"
  expiresAt: "2026-11-23T20:00:00Z"
  revoked: false
"#;

fn errors(result: Result<(), kube::core::cel::ValidationErrors>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn a_valid_policy_passes() {
    assert_eq!(errors(policy(POLICY).validate_cel()), "");
}

#[test]
fn lowering_the_revocation_epoch_is_refused_raising_it_is_not() {
    let old = policy(POLICY);
    let mut lower = old.clone();
    lower.spec.revocation_epoch = 2;
    assert!(errors(lower.validate_cel_update(&old)).contains("revocationEpoch can only be raised"));
    let mut higher = old.clone();
    higher.spec.revocation_epoch = 4;
    assert_eq!(errors(higher.validate_cel_update(&old)), "");
}

#[test]
fn malformed_hosts_are_refused() {
    for host in [
        "Upper.example.com",
        "app.example.com.",
        "*.example.com",
        "host:443",
        "-x.example.com",
    ] {
        let mut p = policy(POLICY);
        p.spec.hosts = vec![host.to_owned()];
        assert!(
            errors(p.validate_cel()).contains("lowercase DNS names"),
            "{host} accepted"
        );
    }
}

#[test]
fn non_canonical_paths_are_refused() {
    for path in [
        "wordpress",
        "/a/../b",
        "/a/./b",
        "/a//b",
        "/a/",
        "/%2e%2e",
        "/a?b",
        "/a#b",
        "/..",
    ] {
        let mut p = policy(POLICY);
        p.spec.paths = vec![path.to_owned()];
        assert!(
            errors(p.validate_cel()).contains("canonical"),
            "{path} accepted"
        );
    }
    let mut p = policy(POLICY);
    p.spec.paths = vec!["/".into(), "/api/v1".into(), "/a.b/c~d".into()];
    assert_eq!(errors(p.validate_cel()), "");
}

#[test]
fn invalid_cidrs_are_refused() {
    for cidr in ["10.0.0.0/33", "10.0.0", "example.com/8", "::1/129"] {
        let mut p = policy(POLICY);
        p.spec.rules[1].include[0].ip_ranges = Some(vec![cidr.to_owned()]);
        assert!(
            errors(p.validate_cel()).contains("ipRanges must be CIDRs"),
            "{cidr} accepted"
        );
    }
}

#[test]
fn a_selector_sets_exactly_one_field() {
    let mut p = policy(POLICY);
    p.spec.rules[0].include[0].groups = Some(vec!["admins".into()]);
    assert!(errors(p.validate_cel()).contains("exactly one of"));
    let mut p = policy(POLICY);
    p.spec.rules[0].include[0].email_domains = None;
    assert!(errors(p.validate_cel()).contains("exactly one of"));
}

#[test]
fn bypass_rules_cannot_select_identities() {
    let mut p = policy(POLICY);
    p.spec.rules[1].include[0].ip_ranges = None;
    p.spec.rules[1].include[0].groups = Some(vec!["admins".into()]);
    assert!(errors(p.validate_cel()).contains("Bypass rules run before login"));
}

#[test]
fn session_lifetimes_are_bounded_and_consistent() {
    let mut p = policy(POLICY);
    p.spec.session.token_lifetime = std::time::Duration::from_secs(2).into();
    assert!(errors(p.validate_cel()).contains("tokenLifetime must be between"));
    let mut p = policy(POLICY);
    p.spec.session.token_lifetime = std::time::Duration::from_secs(3600).into();
    p.spec.session.absolute_lifetime = std::time::Duration::from_secs(600).into();
    p.spec.session.idle_timeout = std::time::Duration::from_secs(300).into();
    assert!(errors(p.validate_cel()).contains("tokenLifetime must not exceed absoluteLifetime"));
}

#[test]
fn upstream_takes_service_or_url_not_both() {
    let mut p = policy(POLICY);
    if let Some(upstream) = p.spec.upstream.as_mut() {
        upstream.service = Some(portcullis_crds::ServiceBackend {
            name: "wordpress".into(),
            port: 80,
            scheme: Default::default(),
        });
    }
    assert!(errors(p.validate_cel()).contains("either service or url"));
}

#[test]
fn a_valid_session_passes() {
    assert_eq!(errors(session(SESSION).validate_cel()), "");
}

#[test]
fn revoking_is_allowed_un_revoking_is_not() {
    let live = session(SESSION);
    let mut revoked = live.clone();
    revoked.spec.revoked = true;
    revoked.spec.revocation_reason = Some("laptop stolen".into());
    assert_eq!(errors(revoked.validate_cel_update(&live)), "");
    let mut unrevoked = revoked.clone();
    unrevoked.spec.revoked = false;
    assert!(errors(unrevoked.validate_cel_update(&revoked)).contains("cannot be un-revoked"));
}

#[test]
fn the_subject_is_immutable_and_expiry_only_moves_earlier() {
    let old = session(SESSION);
    let mut other = old.clone();
    other.spec.subject = "someone-else".into();
    assert!(errors(other.validate_cel_update(&old)).contains("subject is immutable"));

    let later: AccessSession =
        session(&SESSION.replace("2026-11-23T20:00:00Z", "2026-11-24T20:00:00Z"));
    assert!(errors(later.validate_cel_update(&old)).contains("expiresAt can only move earlier"));
    let earlier: AccessSession =
        session(&SESSION.replace("2026-11-23T20:00:00Z", "2026-11-23T09:00:00Z"));
    assert_eq!(errors(earlier.validate_cel_update(&old)), "");
}

#[test]
fn the_provider_session_id_is_immutable() {
    let none = session(SESSION);
    let mut set = none.clone();
    set.spec.provider_session_id = Some("kc-1".into());
    assert_eq!(errors(set.validate_cel_update(&set)), "");
    let mut other = set.clone();
    other.spec.provider_session_id = Some("kc-2".into());
    for (new, old) in [(&other, &set), (&none, &set), (&set, &none)] {
        assert!(
            errors(new.validate_cel_update(old)).contains("providerSessionId is immutable"),
            "{:?} -> {:?}",
            old.spec.provider_session_id,
            new.spec.provider_session_id
        );
    }
}

fn host(yaml: &str) -> portcullis_crds::AccessHost {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

#[test]
fn an_access_host_names_its_namespaces_exactly_one_way() {
    let with = |allowed: &str| {
        host(&format!(
            "metadata: {{name: shop}}\nspec:\n  hostnames: [shop.example.com, '*.shop.example.com']\n  allowedNamespaces: {allowed}\n"
        ))
    };
    for ok in [
        "{from: All}",
        "{from: Names, names: [shop]}",
        "{from: Selector, selector: {matchLabels: {tenant: shop}}}",
    ] {
        assert_eq!(errors(with(ok).validate_cel()), "", "{ok}");
    }
    for (bad, message) in [
        ("{from: Names}", "from: Names needs at least one entry"),
        (
            "{from: Names, names: []}",
            "from: Names needs at least one entry",
        ),
        ("{from: Selector}", "from: Selector needs a selector"),
        (
            "{from: All, names: [shop]}",
            "names is only read with from: Names",
        ),
        (
            "{from: Names, names: [a], selector: {}}",
            "selector is only read with from: Selector",
        ),
    ] {
        let got = errors(with(bad).validate_cel());
        assert!(got.contains(message), "{bad}: {got}");
    }
}

const MACHINE_RULE: &str = r#"
action: ServiceAuth
include:
  - bearer: { identityProvider: keycloak, audiences: [orders-api], clientIds: [billing], scopes: [orders] }
"#;

fn with_rule(rule: &str) -> AccessPolicy {
    let mut p = policy(POLICY);
    p.spec
        .rules
        .push(serde_saphyr::from_str(rule).expect("rule parses"));
    p
}

#[test]
fn service_auth_rules_take_a_bearer_selector() {
    assert_eq!(errors(with_rule(MACHINE_RULE).validate_cel()), "");
    let everyone = MACHINE_RULE.replace(
        "  - bearer: { identityProvider: keycloak, audiences: [orders-api], clientIds: [billing], scopes: [orders] }",
        "  - everyone: true",
    );
    assert!(
        errors(with_rule(&everyone).validate_cel())
            .contains("ServiceAuth rules must include serviceTokens or bearer")
    );
}

#[test]
fn bypass_rules_cannot_use_a_bearer_selector() {
    let bypass = MACHINE_RULE.replace("ServiceAuth", "Bypass");
    assert!(errors(with_rule(&bypass).validate_cel()).contains("Bypass rules run before login"));
}

#[test]
fn a_bearer_selector_is_the_only_field_of_its_selector() {
    let mut p = with_rule(MACHINE_RULE);
    p.spec.rules[2].include[0].service_tokens = Some(vec!["ci".into()]);
    assert!(errors(p.validate_cel()).contains("exactly one of"));
}
