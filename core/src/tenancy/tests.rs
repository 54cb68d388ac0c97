use super::*;
use std::collections::BTreeSet;

fn claim(ns: &str, name: &str, created: Option<i64>, uid: &str, hosts: &[&str]) -> Claim {
    Claim {
        id: PolicyId::new(ns, name),
        created,
        uid: uid.into(),
        hosts: hosts
            .iter()
            .map(|h| Host::parse(h).expect("host"))
            .collect(),
    }
}

fn grant(name: &str, patterns: &[&str], admits: Admits) -> HostGrant {
    HostGrant {
        name: name.into(),
        patterns: patterns
            .iter()
            .map(|p| HostPattern::parse(p).expect("pattern"))
            .collect(),
        admits,
    }
}

fn names(ns: &[&str]) -> Admits {
    Admits::Names(ns.iter().map(|s| (*s).to_owned()).collect())
}

/// The ids refused under `grants` (no namespace labels, first claim by default).
fn refused(grants: &[HostGrant], unclaimed: Unclaimed, claims: &[Claim]) -> BTreeSet<String> {
    Ownership {
        grants,
        labels: &|_: &str| None,
        unclaimed,
    }
    .refusals(claims)
    .keys()
    .map(ToString::to_string)
    .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn without_grants_the_oldest_claim_owns_the_host_whatever_the_order_given() {
    let a = claim("team-a", "app", Some(100), "u-a", &["app.example.com"]);
    let b = claim("team-b", "admin", Some(200), "u-b", &["app.example.com"]);
    let a2 = claim("team-a", "api", Some(300), "u-a2", &["app.example.com"]);
    for claims in [
        vec![a.clone(), b.clone(), a2.clone()],
        vec![b.clone(), a2.clone(), a.clone()],
    ] {
        let out = refused(&[], Unclaimed::FirstClaim, &claims);
        assert_eq!(out, set(&["team-b/admin"]));
    }
}

#[test]
fn same_second_claims_are_ordered_by_uid_then_name_and_manifests_come_last() {
    let a = claim("team-a", "app", Some(100), "u-2", &["h.example.com"]);
    let b = claim("team-b", "app", Some(100), "u-1", &["h.example.com"]);
    assert_eq!(
        refused(&[], Unclaimed::FirstClaim, &[a, b]),
        set(&["team-a/app"])
    );
    let file_a = claim("team-a", "app", None, "", &["h.example.com"]);
    let file_b = claim("team-b", "app", None, "", &["h.example.com"]);
    let stamped = claim("team-c", "app", Some(5), "u", &["h.example.com"]);
    assert_eq!(
        refused(&[], Unclaimed::FirstClaim, &[file_a, file_b, stamped]),
        set(&["team-a/app", "team-b/app"])
    );
}

#[test]
fn a_re_created_owner_loses_the_host_to_an_older_claim_from_elsewhere() {
    // team-a deleted and re-created its policy after team-b claimed the host: without an
    // AccessHost, team-b's claim is now the oldest (which is why production clusters should
    // state ownership with an AccessHost, see the next test).
    let b = claim("team-b", "grab", Some(150), "u-b", &["app.example.com"]);
    let a = claim("team-a", "app", Some(200), "u-a-new", &["app.example.com"]);
    assert_eq!(
        refused(&[], Unclaimed::FirstClaim, &[a.clone(), b.clone()]),
        set(&["team-a/app"])
    );
    let grants = [grant("app", &["app.example.com"], names(&["team-a"]))];
    assert_eq!(
        refused(&grants, Unclaimed::FirstClaim, &[a, b]),
        set(&["team-b/grab"])
    );
}

#[test]
fn a_policy_refused_for_one_host_is_refused_whole_and_keeps_its_other_hosts_owned() {
    let a = claim("team-a", "a", Some(1), "1", &["a.example.com"]);
    let b = claim(
        "team-b",
        "b",
        Some(2),
        "2",
        &["b.example.com", "a.example.com"],
    );
    let c = claim("team-c", "c", Some(3), "3", &["b.example.com"]);
    let out = Ownership {
        grants: &[],
        labels: &|_: &str| None,
        unclaimed: Unclaimed::FirstClaim,
    }
    .refusals(&[a, b, c]);
    assert_eq!(
        out.keys().map(ToString::to_string).collect::<BTreeSet<_>>(),
        set(&["team-b/b", "team-c/c"])
    );
    assert_eq!(
        out[&PolicyId::new("team-c", "c")],
        Refusal::OwnedElsewhere {
            host: Host::parse("b.example.com").expect("host"),
            owner: PolicyId::new("team-b", "b"),
        }
    );
}

#[test]
fn an_exact_grant_beats_a_wildcard_and_a_longer_wildcard_beats_a_shorter_one() {
    let grants = [
        grant("all", &["*.example.com"], Admits::All),
        grant("shop", &["*.shop.example.com"], names(&["shop"])),
        grant("pay", &["pay.shop.example.com"], names(&["payments"])),
    ];
    let cases = [
        ("web", "www.example.com", true),
        ("shop", "www.example.com", true),
        ("shop", "a.b.shop.example.com", true),
        ("web", "a.shop.example.com", false),
        ("shop", "pay.shop.example.com", false),
        ("payments", "pay.shop.example.com", true),
        // The wildcard does not cover the name itself: no grant, first claim.
        ("web", "example.com", true),
    ];
    for (ns, host, admitted) in cases {
        let c = claim(ns, "p", Some(1), "u", &[host]);
        let out = refused(&grants, Unclaimed::FirstClaim, &[c]);
        assert_eq!(out.is_empty(), admitted, "{ns} claiming {host}");
    }
}

#[test]
fn grants_equally_specific_add_up_and_a_grant_overrides_first_claim() {
    let grants = [
        grant("one", &["app.example.com"], names(&["team-a"])),
        grant("two", &["app.example.com"], names(&["team-b"])),
    ];
    let a = claim("team-a", "a", Some(2), "a", &["app.example.com"]);
    let b = claim("team-b", "b", Some(1), "b", &["app.example.com"]);
    let c = claim("team-c", "c", Some(0), "c", &["app.example.com"]);
    let out = Ownership {
        grants: &grants,
        labels: &|_: &str| None,
        unclaimed: Unclaimed::FirstClaim,
    }
    .refusals(&[a, b, c]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[&PolicyId::new("team-c", "c")],
        Refusal::NotGranted {
            host: Host::parse("app.example.com").expect("host"),
            grants: vec!["one".into(), "two".into()],
        }
    );
}

#[test]
fn selector_grants_read_namespace_labels_and_unknown_labels_are_not_admitted() {
    let mut expressions = NamespaceSelector::default();
    expressions
        .match_labels
        .insert("tenant".into(), "shop".into());
    expressions.expressions.push(Expression::NotIn(
        "stage".into(),
        ["sandbox".to_owned()].into_iter().collect(),
    ));
    let grants = [grant(
        "shop",
        &["*.shop.example.com"],
        Admits::Selector(expressions),
    )];
    let labels: BTreeMap<String, Labels> = [
        ("shop-prod", &[("tenant", "shop"), ("stage", "prod")][..]),
        (
            "shop-sandbox",
            &[("tenant", "shop"), ("stage", "sandbox")][..],
        ),
        ("other", &[("tenant", "other")][..]),
    ]
    .into_iter()
    .map(|(ns, l)| {
        let l = l.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        (ns.to_owned(), l)
    })
    .collect();
    let lookup = |ns: &str| labels.get(ns);
    let ownership = Ownership {
        grants: &grants,
        labels: &lookup,
        unclaimed: Unclaimed::FirstClaim,
    };
    for (ns, admitted) in [
        ("shop-prod", true),
        ("shop-sandbox", false),
        ("other", false),
        ("unknown", false),
    ] {
        let c = claim(ns, "p", Some(1), "u", &["www.shop.example.com"]);
        assert_eq!(ownership.refusals(&[c]).is_empty(), admitted, "{ns}");
    }
}

#[test]
fn an_unreadable_grant_covers_its_hosts_and_admits_nobody() {
    let grants = [grant("broken", &["app.example.com"], Admits::Nobody)];
    let c = claim("team-a", "p", Some(1), "u", &["app.example.com"]);
    assert_eq!(
        refused(&grants, Unclaimed::FirstClaim, &[c]),
        set(&["team-a/p"])
    );
}

#[test]
fn with_refuse_every_host_needs_a_grant_and_one_namespace_keeps_its_own_hosts() {
    let grants = [grant("app", &["app.example.com"], names(&["team-a"]))];
    let granted = claim("team-a", "app", Some(1), "1", &["app.example.com"]);
    let ungranted = claim("team-a", "other", Some(1), "2", &["other.example.com"]);
    assert_eq!(
        refused(&grants, Unclaimed::Refuse, &[granted.clone(), ungranted]),
        set(&["team-a/other"])
    );
    // Two policies of one namespace on one host are never refused by ownership.
    let twin = claim("team-a", "twin", Some(9), "3", &["other.example.com"]);
    let first = claim("team-a", "first", Some(1), "4", &["other.example.com"]);
    assert!(refused(&[], Unclaimed::FirstClaim, &[twin, first, granted]).is_empty());
}

#[test]
fn host_patterns_parse_strictly() {
    for ok in ["app.example.com", "*.example.com", "*.com", "localhost"] {
        assert!(HostPattern::parse(ok).is_some(), "{ok}");
    }
    for bad in [
        "",
        "*",
        "*.",
        "**.example.com",
        "a.*.example.com",
        "*example.com",
        "App.example.com",
        "app.example.com.",
        "app.example.com:443",
        "*.[::1]",
    ] {
        assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
    }
}
