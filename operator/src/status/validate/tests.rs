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
