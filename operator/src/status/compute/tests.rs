//! The pure status step: counts from merged facts, first-seen times kept.

use super::*;
use portcullis_crds::AccessPolicySpec;
use portcullis_protocol::AppliedPolicy;
use std::{collections::BTreeMap, sync::Arc};

fn entry(generation: i64, epoch: i64) -> PolicyEntry {
    let spec: AccessPolicySpec = serde_json::from_value(serde_json::json!({
        "hosts": ["app.example.com"],
        "identityProviders": ["dex"],
        "revocationEpoch": epoch,
        "rules": [{"action": "Allow", "include": [{"everyone": true}]}]
    }))
    .expect("spec");
    PolicyEntry {
        namespace: "ns".into(),
        name: "app".into(),
        uid: "uid-1".into(),
        generation,
        spec,
        epoch_raised_at: 1_700_000_000,
    }
}

fn facts(
    gateway: &str,
    policy: Option<(i64, i64)>,
    ended: &[&str],
) -> portcullis_protocol::GatewayFacts {
    portcullis_protocol::GatewayFacts {
        gateway: gateway.into(),
        acked_at: 0,
        policies: policy
            .map(|p| ("uid-1".to_owned(), AppliedPolicy::from(p)))
            .into_iter()
            .collect(),
        ended_sessions: ended.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn a_gateway_on_two_replicas_counts_once_with_the_union_of_its_facts() {
    let all = [
        facts("g1", Some((2, 1)), &[]),
        facts("g1", Some((3, 1)), &["s1"]),
        facts("g2", Some((2, 1)), &[]),
    ];
    let fleet = Enforced::merge(&all);
    let status = policy_status(&entry(3, 1), None, &Ok(()), &fleet, 10);
    let gateways = status.gateways.expect("gateways");
    assert_eq!((gateways.applied, gateways.connected), (1, 2));
    assert_eq!(gateways.summary, "1/2");
    assert_eq!(status.enforced_epoch, Some(1));
    assert_eq!(status.raised_epoch, Some(1));
    let session = session_status(
        "s1",
        (None, None),
        &AccessSessionStatus::default(),
        &fleet,
        10,
    );
    let enforcement = session.enforcement.expect("enforcement");
    assert_eq!(enforcement.summary, "1/2");
    assert!(
        session
            .conditions
            .iter()
            .any(|c| c.type_ == "Enforced" && c.status == "False")
    );
}

#[test]
fn first_seen_times_and_transition_times_are_kept() {
    let fleet = Enforced::merge(&[facts("g1", Some((1, 0)), &["s1"])]);
    let first = session_status(
        "s1",
        (None, None),
        &AccessSessionStatus::default(),
        &fleet,
        100,
    );
    let later = session_status("s1", (None, None), &first, &fleet, 500);
    assert_eq!(later.revoked_at, first.revoked_at);
    assert_eq!(later, first);
    assert!(session_unchanged(&first, &later));
    assert_eq!(
        first.enforcement.as_ref().map(|e| e.summary.as_str()),
        Some("1/1")
    );

    let ok = policy_status(&entry(1, 0), None, &Ok(()), &fleet, 100);
    let problem = Err(Problem::InvalidSpec("bad".into()));
    let bad = policy_status(&entry(1, 0), Some(&ok), &problem, &fleet, 200);
    assert!(!policy_unchanged(Some(&ok), &bad));
    let ready = &bad.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert_eq!(ready.last_transition_time, time(200));
    let again = policy_status(&entry(1, 0), Some(&bad), &problem, &fleet, 300);
    assert!(policy_unchanged(Some(&bad), &again));
}

#[test]
fn without_gateways_nothing_counts_as_enforced() {
    let fleet = Enforced::default();
    let session = session_status(
        "s1",
        (None, None),
        &AccessSessionStatus::default(),
        &fleet,
        1,
    );
    let enforced = session
        .conditions
        .iter()
        .find(|c| c.type_ == "Enforced")
        .expect("Enforced");
    assert_eq!(
        (enforced.status.as_str(), enforced.reason.as_str()),
        ("False", "NoGatewayConnected")
    );
    let status = policy_status(&entry(1, 0), None, &Ok(()), &fleet, 1);
    assert_eq!(status.gateways.map(|g| g.summary), Some("0/0".into()));
    assert_eq!(status.enforced_epoch, None);
}

#[test]
fn a_gateway_connected_here_enforces_what_its_acknowledged_version_holds() {
    let mut fleet = Enforced::default();
    fleet.add_local(
        "g1",
        10,
        &BTreeMap::from([("uid-1".to_owned(), AppliedPolicy::from((3, 1)))]),
    );
    // The same gateway also relayed by a follower, with a session this replica ended later.
    let relayed: Arc<HashSet<String>> = Arc::new(HashSet::from(["s-late".to_owned()]));
    fleet.add_relayed("g1", &BTreeMap::new(), &relayed);
    fleet.add_local("g2", 8, &BTreeMap::new());
    assert_eq!(fleet.connected(), 2);
    let summary = |sid: &str, ended_at: Option<u64>| {
        session_status(
            sid,
            (ended_at, None),
            &AccessSessionStatus::default(),
            &fleet,
            1,
        )
        .enforcement
        .expect("enforcement")
        .summary
    };
    assert_eq!(summary("s-early", Some(8)), "2/2");
    assert_eq!(summary("s-mid", Some(10)), "1/2");
    assert_eq!(
        summary("s-late", Some(11)),
        "1/2",
        "known to g1 through the relay"
    );
    assert_eq!(summary("s-unknown", None), "0/2");
    let status = policy_status(&entry(3, 1), None, &Ok(()), &fleet, 1);
    assert_eq!(status.gateways.expect("gateways").summary, "1/2");
}

#[test]
fn the_signature_moves_with_what_status_depends_on_and_only_with_it() {
    let build = |acked: u64, changes: u64, gateways: &[&str]| {
        let mut fleet = Enforced::default();
        for g in gateways {
            fleet.add_local(
                g,
                acked,
                &BTreeMap::from([("uid-1".to_owned(), AppliedPolicy::from((1, 0)))]),
            );
        }
        fleet.add_relayed("g9", &BTreeMap::new(), &Arc::new(HashSet::new()));
        fleet.relayed_changes = changes;
        fleet.signature()
    };
    let base = build(5, 1, &["g1", "g2"]);
    assert_eq!(base, build(5, 1, &["g1", "g2"]));
    assert_ne!(
        base,
        build(6, 1, &["g1", "g2"]),
        "a new acknowledged version"
    );
    assert_ne!(
        base,
        build(5, 2, &["g1", "g2"]),
        "a relay that changed facts"
    );
    assert_ne!(base, build(5, 1, &["g1"]), "a gateway left");
}
