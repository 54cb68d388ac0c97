//! The validate step from YAML fixtures.

use super::*;
use portcullis_crds::AccessPolicy;

fn fixture(yaml: &str) -> AccessPolicy {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

fn idps() -> BTreeSet<String> {
    identity_provider_names(include_str!("fixtures/idp.yaml")).expect("idp file parses")
}

fn secrets(keys: &[&str]) -> BTreeMap<Key, BTreeSet<String>> {
    BTreeMap::from([(
        ("team-a".to_owned(), "wiki-ci".to_owned()),
        keys.iter().map(|k| (*k).to_owned()).collect(),
    )])
}

fn verdict(
    policies: &[AccessPolicy],
    idps: Option<&BTreeSet<String>>,
    secrets: &BTreeMap<Key, BTreeSet<String>>,
    ns: &str,
    name: &str,
) -> Result<(), Problem> {
    let refs = Refs {
        identity_providers: idps,
        secret_keys: secrets,
        secret_scope: &SecretScope::default(),
        host_refusals: &BTreeMap::new(),
    };
    validate_all(policies, &refs)
        .remove(&(ns.to_owned(), name.to_owned()))
        .expect("a verdict for every policy")
}

#[test]
fn a_valid_policy_is_accepted() {
    let idps = idps();
    let policies = [fixture(include_str!("fixtures/valid.yaml"))];
    let secrets = secrets(&["client-id", "client-secret"]);
    assert_eq!(
        verdict(&policies, Some(&idps), &secrets, "team-a", "wiki"),
        Ok(())
    );
}

#[test]
fn the_provider_file_is_read_leniently() {
    assert_eq!(idps(), BTreeSet::from(["dex".to_owned()]));
    assert!(identity_provider_names("identityProviders: [{issuer: x}]").is_err());
    assert!(identity_provider_names("other: 1").is_ok_and(|n| n.is_empty()));
}

#[test]
fn the_same_host_and_prefix_in_two_policies_conflict_and_each_names_the_other() {
    let secrets = secrets(&["client-id", "client-secret"]);
    let policies = [
        fixture(include_str!("fixtures/valid.yaml")),
        fixture(include_str!("fixtures/conflicting.yaml")),
        fixture(include_str!("fixtures/other-path.yaml")),
    ];
    let first = verdict(&policies, None, &secrets, "team-a", "wiki");
    let second = verdict(&policies, None, &secrets, "team-b", "wiki-copy");
    match (&first, &second) {
        (
            Err(a @ Problem::HostPathConflict { other: oa, .. }),
            Err(Problem::HostPathConflict { other: ob, .. }),
        ) => {
            assert_eq!(a.reason(), "HostPathConflict");
            assert_eq!(oa, "team-b/wiki-copy");
            assert_eq!(ob, "team-a/wiki");
            assert!(a.to_string().contains("wiki.example.com"), "{a}");
        }
        other => panic!("expected two conflicts, got {other:?}"),
    }
    // A longer prefix on the same host is a different claim.
    assert_eq!(
        verdict(&policies, None, &secrets, "team-b", "wiki-admin"),
        Ok(())
    );
}

#[test]
fn a_refused_host_claim_is_host_not_allowed_and_conflicts_with_nobody() {
    use portcullis_core::{PolicyId, tenancy::Refusal};
    let secrets = secrets(&["client-id", "client-secret"]);
    let policies = [
        fixture(include_str!("fixtures/valid.yaml")),
        fixture(include_str!("fixtures/conflicting.yaml")),
    ];
    let refusal = Refusal::OwnedElsewhere {
        host: Host::parse("wiki.example.com").expect("host"),
        owner: PolicyId::new("team-a", "wiki"),
    };
    let refusals = BTreeMap::from([(("team-b".to_owned(), "wiki-copy".to_owned()), refusal)]);
    let mut verdicts = validate_all(
        &policies,
        &Refs {
            identity_providers: None,
            secret_keys: &secrets,
            secret_scope: &SecretScope::default(),
            host_refusals: &refusals,
        },
    );
    let refused = verdicts.remove(&("team-b".into(), "wiki-copy".into()));
    match refused {
        Some(Err(p @ Problem::HostNotAllowed(_))) => {
            assert_eq!(p.reason(), "HostNotAllowed");
            let text = p.to_string();
            assert!(
                text.contains("wiki.example.com") && text.contains("team-a"),
                "{text}"
            );
        }
        other => panic!("expected HostNotAllowed, got {other:?}"),
    }
    assert_eq!(
        verdicts.remove(&("team-a".into(), "wiki".into())),
        Some(Ok(()))
    );
}

#[test]
fn a_bad_cidr_is_an_invalid_spec() {
    let policies = [fixture(include_str!("fixtures/bad-cidr.yaml"))];
    let got = verdict(&policies, None, &BTreeMap::new(), "team-a", "office");
    assert!(
        matches!(&got, Err(p @ Problem::InvalidSpec(_)) if p.reason() == "InvalidSpec"),
        "{got:?}"
    );
}

#[test]
fn an_unknown_identity_provider_is_named_and_skipped_without_the_file() {
    let idps = idps();
    let policies = [fixture(include_str!("fixtures/unknown-idp.yaml"))];
    let got = verdict(
        &policies,
        Some(&idps),
        &BTreeMap::new(),
        "team-a",
        "grafana",
    );
    assert_eq!(got, Err(Problem::UnknownIdentityProvider("okta".into())));
    assert_eq!(
        verdict(&policies, None, &BTreeMap::new(), "team-a", "grafana"),
        Ok(())
    );
}

#[test]
fn a_missing_secret_or_key_is_reported() {
    let idps = idps();
    let policies = [fixture(include_str!("fixtures/valid.yaml"))];
    let got = verdict(&policies, Some(&idps), &BTreeMap::new(), "team-a", "wiki");
    assert_eq!(
        got.as_ref().map_err(Problem::reason),
        Err("MissingSecret"),
        "{got:?}"
    );
    let got = verdict(
        &policies,
        Some(&idps),
        &secrets(&["client-id"]),
        "team-a",
        "wiki",
    );
    assert_eq!(
        got,
        Err(Problem::MissingSecretKey {
            secret: "wiki-ci".into(),
            token: "ci".into(),
            key: "client-secret",
        })
    );
}

#[test]
fn a_service_token_in_a_namespace_the_operator_does_not_read_says_why() {
    let policies = [fixture(include_str!("fixtures/valid.yaml"))];
    let secrets = secrets(&["client-id", "client-secret"]);
    let judge = |scope: &SecretScope| {
        validate_all(
            &policies,
            &Refs {
                identity_providers: None,
                secret_keys: &secrets,
                secret_scope: scope,
                host_refusals: &BTreeMap::new(),
            },
        )
        .remove(&("team-a".to_owned(), "wiki".to_owned()))
        .expect("a verdict")
    };
    let only_b = SecretScope {
        namespaces: Some(BTreeSet::from(["team-b".to_owned()])),
        forbidden: BTreeSet::new(),
    };
    let refused_a = SecretScope {
        namespaces: Some(BTreeSet::from(["team-a".to_owned()])),
        forbidden: BTreeSet::from([Some("team-a".to_owned())]),
    };
    let refused_all = SecretScope {
        namespaces: None,
        forbidden: BTreeSet::from([None]),
    };
    for (scope, why) in [
        (&only_b, Unreadable::NotWatched),
        (&refused_a, Unreadable::Forbidden),
        (&refused_all, Unreadable::Forbidden),
    ] {
        let got = judge(scope);
        assert!(
            matches!(&got, Err(p @ Problem::SecretNotReadable { why: w, .. }) if *w == why && p.reason() == "SecretNotReadable"),
            "{got:?}"
        );
    }
    let granted = SecretScope {
        namespaces: Some(BTreeSet::from(["team-a".to_owned()])),
        forbidden: BTreeSet::from([Some("team-b".to_owned())]),
    };
    assert_eq!(judge(&granted), Ok(()));
    assert_eq!(judge(&SecretScope::default()), Ok(()));
}

#[test]
fn a_bearer_selector_names_a_configured_identity_provider() {
    let policy = |idp: &str| {
        fixture(&format!(
            "apiVersion: access.portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: grafana, namespace: team-a}}\nspec:\n  hosts: [grafana.example.com]\n  identityProviders: [dex]\n  rules:\n    - action: ServiceAuth\n      include: [{{bearer: {{identityProvider: {idp}, audiences: [grafana], clientIds: [ci]}}}}]\n"
        ))
    };
    let idps = idps();
    let got = |idp: &str| {
        verdict(
            &[policy(idp)],
            Some(&idps),
            &BTreeMap::new(),
            "team-a",
            "grafana",
        )
    };
    assert_eq!(got("dex"), Ok(()));
    assert_eq!(
        got("okta"),
        Err(Problem::UnknownIdentityProvider("okta".into()))
    );
}
