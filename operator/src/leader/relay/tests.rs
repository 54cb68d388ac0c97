//! Deltas: what a follower sends after the leader accepted a relay, and that the leader's view
//! built from a full relay and deltas is what a full relay would say.

use super::*;
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_protocol::PeerAcks;
use std::collections::BTreeSet;

const NOW: u64 = 1_800_000_000;

fn session(name: &str, revoked: bool) -> AccessSession {
    portcullis_tests::fixtures::session(name, revoked, NOW)
}

fn policy(name: &str, epoch: i64) -> AccessPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"hosts": [format!("{name}.example.com")], "identityProviders": ["dex"],
                 "revocationEpoch": epoch,
                 "rules": [{"action": "Allow", "include": [{"everyone": true}]}]}
    }))
    .expect("policy")
}

/// `n` live sessions `s0..`, then the first `revoked` of them revoked.
fn index_with(n: usize, revoked: usize) -> Index {
    let mut index = Index::new("follower-1".into(), 100_000);
    index.apply_policy(&policy("app", 0), NOW);
    for i in 0..n {
        index.apply_session(&session(&format!("s{i}"), false), NOW);
    }
    for i in 0..revoked {
        index.apply_session(&session(&format!("s{i}"), true), NOW);
    }
    index
}

fn revoke(index: &mut Index, sid: &str) {
    index.apply_session(&session(sid, true), NOW);
}

fn gateway(id: &str, acked: u64) -> Connected {
    Connected {
        id: id.into(),
        acked,
        last_seen: NOW,
    }
}

fn ended(body: &RelayBody, gateway: &str) -> BTreeSet<String> {
    body.gateways
        .iter()
        .find(|g| g.gateway == gateway)
        .map(|g| g.ended_sessions.iter().cloned().collect())
        .unwrap_or_default()
}

/// What a full relay would say of a gateway that acknowledged `acked`.
fn full_view(index: &Index, acked: u64) -> (BTreeMap<String, AppliedPolicy>, BTreeSet<String>) {
    (
        index.policy_facts(None, acked),
        index
            .ended_between(None, acked)
            .map(str::to_owned)
            .collect(),
    )
}

fn leader_view(
    leader: &Relayed,
    gateway: &str,
) -> (BTreeMap<String, AppliedPolicy>, BTreeSet<String>) {
    leader
        .fresh(NOW, 30)
        .find(|(id, _)| *id == gateway)
        .map(|(_, g)| (g.policies.clone(), g.ended.iter().cloned().collect()))
        .unwrap_or_default()
}

/// Sends the next relay to `leader` and feeds the answer back, as the relay loop does.
fn exchange(
    relayer: &mut Relayer,
    leader: &mut Relayed,
    gateways: &[Connected],
    index: &Index,
    now: u64,
) -> RelayBody {
    let (body, pending) = relayer.next("leader-a", gateways, index, now);
    match leader.apply(body.clone(), now) {
        Ok(confirmed) => relayer.accepted(pending, confirmed),
        Err(_) => relayer.failed(),
    }
    body
}

#[test]
fn after_an_accepted_relay_only_newly_ended_sessions_are_sent() {
    let mut index = index_with(1_000, 100);
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let acked = index.version();
    let (first, pending) = relayer.next("leader-a", &[gateway("g1", acked)], &index, NOW);
    assert!(pending.is_full() && first.base.is_none());
    assert_eq!(ended(&first, "g1").len(), 100);
    assert_eq!(first.gateways[0].policies.len(), 1);
    relayer.accepted(pending, first.relay);

    // Nothing new: the gateway is listed (it is still connected) with no facts.
    let (idle, pending) = relayer.next("leader-a", &[gateway("g1", acked)], &index, NOW + 1);
    assert_eq!(idle.base, first.relay);
    assert!(idle.gateways[0].ended_sessions.is_empty() && idle.gateways[0].policies.is_empty());
    relayer.accepted(pending, idle.relay);

    // Three more revoked, two of them acknowledged so far.
    for sid in ["s500", "s501", "s502"] {
        revoke(&mut index, sid);
    }
    let (delta, pending) = relayer.next(
        "leader-a",
        &[gateway("g1", index.version() - 1)],
        &index,
        NOW + 2,
    );
    assert_eq!(delta.base, idle.relay);
    assert_eq!(
        ended(&delta, "g1"),
        BTreeSet::from(["s500".to_owned(), "s501".to_owned()])
    );
    relayer.accepted(pending, delta.relay);
    let (rest, _) = relayer.next(
        "leader-a",
        &[gateway("g1", index.version())],
        &index,
        NOW + 3,
    );
    assert_eq!(ended(&rest, "g1"), BTreeSet::from(["s502".to_owned()]));
}

#[test]
fn a_changed_policy_is_sent_once_the_gateway_acknowledged_it() {
    let mut index = index_with(10, 0);
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let (first, pending) = relayer.next("leader-a", &[gateway("g1", index.version())], &index, NOW);
    relayer.accepted(pending, first.relay);
    let before = index.version();
    index.apply_policy(&policy("app", 3), NOW);
    let (not_yet, pending) = relayer.next("leader-a", &[gateway("g1", before)], &index, NOW);
    assert!(not_yet.gateways[0].policies.is_empty());
    relayer.accepted(pending, not_yet.relay);
    let (now_acked, _) = relayer.next("leader-a", &[gateway("g1", index.version())], &index, NOW);
    assert_eq!(
        now_acked.gateways[0].policies.get("uid-app"),
        Some(&AppliedPolicy::from((1, 3)))
    );
}

#[test]
fn a_full_relay_follows_a_new_leader_a_failure_an_old_leader_and_the_backstop_period() {
    let index = index_with(10, 5);
    let gateways = [gateway("g1", index.version())];
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let (body, pending) = relayer.next("leader-a", &gateways, &index, NOW);
    relayer.accepted(pending, body.relay);
    let (body, pending) = relayer.next("leader-a", &gateways, &index, NOW + 1);
    assert!(!pending.is_full(), "a delta after an accepted relay");
    relayer.accepted(pending, body.relay);

    // Another leader.
    let (body, pending) = relayer.next("leader-b", &gateways, &index, NOW + 2);
    assert!(pending.is_full() && body.base.is_none());
    assert_eq!(ended(&body, "g1").len(), 5);
    relayer.accepted(pending, body.relay);

    // A failed POST.
    let (_, pending) = relayer.next("leader-b", &gateways, &index, NOW + 3);
    assert!(!pending.is_full());
    relayer.failed();
    let (_, pending) = relayer.next("leader-b", &gateways, &index, NOW + 4);
    assert!(pending.is_full(), "full after a failure");
    relayer.accepted(pending, None);

    // A leader that answered without confirming (one that predates deltas): full again.
    let (body, pending) = relayer.next("leader-b", &gateways, &index, NOW + 5);
    assert!(pending.is_full());
    relayer.accepted(pending, body.relay);

    // The backstop.
    let (_, pending) = relayer.next("leader-b", &gateways, &index, NOW + 5 + FULL_EVERY - 1);
    assert!(!pending.is_full());
    relayer.accepted(pending, Some(u64::MAX));
    let (_, pending) = relayer.next("leader-b", &gateways, &index, NOW + 6);
    assert!(
        pending.is_full(),
        "an unconfirmed answer counts as not accepted"
    );
    let at = NOW + 6;
    relayer.accepted(pending.clone(), Some(pending.relay));
    let (_, pending) = relayer.next("leader-b", &gateways, &index, at + FULL_EVERY);
    assert!(pending.is_full(), "full every {FULL_EVERY} s");
}

#[test]
fn the_leader_view_built_from_deltas_equals_a_full_relay_at_every_step() {
    let mut index = index_with(200, 10);
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let mut leader = Relayed::default();
    let mut acked = [index.version(), index.version()];
    for step in 0..60u64 {
        // Sessions end, a policy changes, the gateways acknowledge at their own pace.
        revoke(&mut index, &format!("s{}", 10 + step));
        if step % 17 == 0 {
            index.apply_policy(&policy("app", i64::try_from(step).expect("small")), NOW);
        }
        acked[0] = index.version();
        if step % 3 == 0 {
            acked[1] = index.version();
        }
        let gateways = [gateway("g1", acked[0]), gateway("g2", acked[1])];
        let body = exchange(&mut relayer, &mut leader, &gateways, &index, NOW + step);
        if step > 0 {
            assert!(body.base.is_some(), "step {step} should be a delta");
            assert!(
                ended(&body, "g1").len() <= 1,
                "step {step} resent old facts"
            );
        }
        for (g, a) in [("g1", acked[0]), ("g2", acked[1])] {
            let (policies, ended) = leader_view(&leader, g);
            let (want_policies, want_ended) = full_view(&index, a);
            assert_eq!(ended, want_ended, "{g} at step {step}");
            // A full relay leaves out a policy changed since the gateway's ack; the leader
            // keeps the form the gateway did acknowledge (it still enforces that one).
            for (uid, enforced) in &want_policies {
                assert_eq!(policies.get(uid), Some(enforced), "{g} at step {step}");
            }
            assert_eq!(policies.len(), 1, "{g} at step {step}");
        }
    }
}

#[test]
fn a_leader_without_the_base_asks_for_a_full_relay_and_recovers() {
    let index = index_with(50, 20);
    let gateways = [gateway("g1", index.version())];
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let mut leader = Relayed::default();
    exchange(&mut relayer, &mut leader, &gateways, &index, NOW);
    // The leader restarted under the same identity and URL: it knows nothing.
    let mut restarted = Relayed::default();
    let (delta, pending) = relayer.next("leader-a", &gateways, &index, NOW + 1);
    assert!(delta.base.is_some());
    assert!(restarted.apply(delta, NOW + 1).is_err());
    relayer.failed();
    drop(pending);
    let full = exchange(&mut relayer, &mut restarted, &gateways, &index, NOW + 2);
    assert!(full.base.is_none());
    assert_eq!(
        leader_view(&restarted, "g1"),
        full_view(&index, index.version())
    );
    // A delta from another process of the same replica (it restarted) is refused too.
    let mut other = Relayer::new("follower".into(), "follower-2".into());
    let (first, pending) = other.next("leader-a", &gateways, &index, NOW + 3);
    other.accepted(pending, first.relay);
    let mut stolen = relayer.next("leader-a", &gateways, &index, NOW + 4).0;
    stolen.instance = Some("follower-2".into());
    stolen.base = first.relay.map(|r| r + 100);
    assert!(restarted.apply(stolen, NOW + 4).is_err());
}

#[test]
fn a_gateway_that_left_the_follower_leaves_the_leader_view_and_comes_back_whole() {
    let index = index_with(20, 4);
    let v = index.version();
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let mut leader = Relayed::default();
    exchange(
        &mut relayer,
        &mut leader,
        &[gateway("g1", v), gateway("g2", v)],
        &index,
        NOW,
    );
    exchange(
        &mut relayer,
        &mut leader,
        &[gateway("g1", v)],
        &index,
        NOW + 1,
    );
    assert!(leader.fresh(NOW + 1, 30).all(|(id, _)| id == "g1"));
    let back = exchange(
        &mut relayer,
        &mut leader,
        &[gateway("g1", v), gateway("g2", v)],
        &index,
        NOW + 2,
    );
    assert!(back.base.is_some());
    assert_eq!(
        ended(&back, "g2").len(),
        4,
        "a returning gateway is sent whole"
    );
    assert_eq!(leader_view(&leader, "g2"), full_view(&index, v));
}

#[test]
fn relays_and_gateways_not_heard_from_for_the_window_do_not_count() {
    let index = index_with(5, 1);
    let mut leader = Relayed::default();
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let mut stale = gateway("g1", index.version());
    stale.last_seen = NOW - 40;
    exchange(
        &mut relayer,
        &mut leader,
        &[stale, gateway("g2", 1)],
        &index,
        NOW,
    );
    let ids: Vec<&str> = leader.fresh(NOW, 30).map(|(id, _)| id).collect();
    assert_eq!(ids, ["g2"]);
    assert_eq!(leader.fresh(NOW + 31, 30).count(), 0);
    leader.collect(NOW + 31, 30);
    assert!(
        leader
            .apply(relayer.next("leader-a", &[], &index, NOW + 32).0, NOW + 32)
            .is_err()
    );
}

#[test]
fn the_wire_format_stays_readable_both_ways() {
    // A follower that predates deltas: a full relay, nothing to confirm.
    let old = PeerAcks {
        replica: "r".into(),
        gateways: vec![GatewayFacts {
            gateway: "g1".into(),
            acked_at: NOW,
            policies: BTreeMap::new(),
            ended_sessions: vec!["s1".into()],
        }],
    };
    let body: RelayBody = serde_json::from_value(serde_json::to_value(&old).expect("json"))
        .expect("an old body reads");
    let mut leader = Relayed::default();
    assert_eq!(leader.apply(body, NOW).expect("applied"), None);
    assert_eq!(
        leader_view(&leader, "g1").1,
        BTreeSet::from(["s1".to_owned()])
    );
    // A leader that predates deltas reads a full relay as it always did.
    let index = index_with(3, 2);
    let mut relayer = Relayer::new("r".into(), "r-1".into());
    let (full, _) = relayer.next("leader-a", &[gateway("g1", index.version())], &index, NOW);
    let read: PeerAcks =
        serde_json::from_value(serde_json::to_value(&full).expect("json")).expect("old reader");
    assert_eq!(read.gateways, full.gateways);
}

#[test]
fn only_relays_that_change_facts_or_membership_count_as_changes() {
    let mut index = index_with(10, 2);
    let mut relayer = Relayer::new("follower".into(), "follower-1".into());
    let mut leader = Relayed::default();
    let v = index.version();
    exchange(&mut relayer, &mut leader, &[gateway("g1", v)], &index, NOW);
    let after_full = leader.changes();
    assert!(after_full >= 1);
    for t in 1..5 {
        exchange(
            &mut relayer,
            &mut leader,
            &[gateway("g1", v)],
            &index,
            NOW + t,
        );
    }
    assert_eq!(leader.changes(), after_full, "still acking changes nothing");
    revoke(&mut index, "s5");
    exchange(
        &mut relayer,
        &mut leader,
        &[gateway("g1", index.version())],
        &index,
        NOW + 6,
    );
    assert_eq!(leader.changes(), after_full + 1);
    exchange(&mut relayer, &mut leader, &[], &index, NOW + 7);
    assert_eq!(leader.changes(), after_full + 2, "the gateway left");
}
