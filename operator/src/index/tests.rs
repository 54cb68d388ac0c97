//! The index: garbage-collection candidates, ended-session ranges, the delta log.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portcullis_core::token::CLOCK_SKEW_SECS;
use portcullis_crds::{AccessHost, AccessPolicy, AccessSession};
use portcullis_protocol::SessionEntry;
use portcullis_runtime::Relist;
use portcullis_tests::fixtures::session;
use std::collections::{BTreeMap, BTreeSet};

/// A relist listing `sessions`, as the watch applies it.
fn relist(index: &mut Index, sessions: &[AccessSession], now: u64) {
    let mut relist = Relist::default();
    relist.start();
    for s in sessions {
        relist.listed(s.metadata.name.clone().expect("named"));
    }
    let vanished = relist.finish(index.session_ids());
    index.reset_sessions(sessions, &vanished, now);
}

fn expiring(name: &str, expires_at: u64) -> AccessSession {
    let mut s = session(name, false, expires_at - 3600);
    s.metadata.uid = Some(format!("uid-{name}"));
    s
}

#[test]
fn garbage_collection_candidates_are_the_existing_sessions_expired_before_the_cutoff() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    // Listed long expired, expired a while ago, live; one deleted.
    relist(
        &mut index,
        &[
            expiring("old", now - 7200),
            expiring("old-deleted", now - 7200),
            expiring("recent", now - 60),
            expiring("live", now + 600),
        ],
        now,
    );
    index.delete_session("old-deleted", now);
    let mut got = index.expired_before(now - 3600, 100);
    got.sort();
    assert_eq!(got, ["old"]);
    let mut got = index.expired_before(now, 100);
    got.sort();
    assert_eq!(got, ["old", "recent"]);
    assert_eq!(index.expired_before(now, 1).len(), 1, "bounded");

    // A live session the index forgets at expiry stays a candidate while it exists; a
    // deleted one does not.
    index.apply_session(&expiring("soon", now + 10), now);
    index.apply_session(&expiring("soon-deleted", now + 10), now);
    index.delete_session("soon-deleted", now);
    index.collect(now + 100);
    let mut got = index.expired_before(now + 100, 100);
    got.sort();
    assert_eq!(got, ["old", "recent", "soon"]);
    // Deleted by the collector (the watch says so), or vanished in a relist.
    index.delete_session("recent", now + 100);
    relist(
        &mut index,
        &[expiring("soon", now + 10), expiring("live", now + 600)],
        now + 100,
    );
    assert_eq!(index.expired_before(now + 100, 100), ["soon"]);
    index.forget_lingering("soon");
    assert!(index.expired_before(now + 100, 100).is_empty());
}

#[test]
fn an_expiry_moved_into_the_past_is_streamed_as_an_end() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    index.apply_session(&session("a", false, now - 600), now);
    let before = index.version();
    // An administrator moved expiresAt a minute into the past (after issuedAt).
    let mut shortened = session("a", false, now - 600);
    shortened.spec.expires_at = Time(
        k8s_openapi::jiff::Timestamp::from_second(i64::try_from(now - 60).expect("fits"))
            .expect("time"),
    );
    index.apply_session(&shortened, now);
    let deltas = index.deltas_since(before).expect("in the log");
    match deltas.as_slice() {
        [Frame::Session { session, .. }] => {
            assert!(session.ended, "streamed as ended: {session:?}");
            assert_eq!(session.expires_at, now - 60);
        }
        other => panic!("expected one session frame, got {other:?}"),
    }
    // Applying the same object again streams nothing more.
    index.apply_session(&shortened, now);
    assert_eq!(index.deltas_since(before).expect("in the log").len(), 1);
}

#[test]
fn ended_sessions_are_found_by_version_range_and_forgotten_with_their_session() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    index.apply_session(&session("a", false, now), now);
    let before = index.version();
    index.apply_session(&session("a", true, now), now);
    let ended_a = index.version();
    index.apply_session(&session("b", true, now), now);
    let all: Vec<&str> = index.ended_between(None, index.version()).collect();
    assert_eq!(all, ["a", "b"]);
    assert_eq!(
        index
            .ended_between(Some(before), ended_a)
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(
        index
            .ended_between(Some(ended_a), index.version())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        index
            .ended_between(Some(index.version()), index.version())
            .count(),
        0
    );
    assert_eq!(index.ended_between(Some(10), 3).count(), 0);
    // Ending again changes nothing; expiry forgets it.
    index.delete_session("a", now);
    assert_eq!(index.session_ended_at("a"), Some(ended_a));
    index.collect(now + 3600 + CLOCK_SKEW_SECS);
    assert_eq!(index.ended_between(None, index.version()).count(), 0);
}

#[test]
fn deltas_since_returns_exactly_the_newer_deltas_and_gives_up_past_the_log() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 50);
    for n in 0..40 {
        index.apply_session(&session(&format!("s{n}"), false, now), now);
    }
    for n in 0..40 {
        index.apply_session(&session(&format!("s{n}"), true, now), now);
    }
    let top = index.version();
    for from in [top - 30, top - 1] {
        let deltas = index.deltas_since(from).expect("within the log");
        let versions: Vec<u64> = deltas.iter().map(Frame::version).collect();
        assert_eq!(
            versions,
            ((from + 1)..=top).collect::<Vec<_>>(),
            "from {from}"
        );
    }
    assert_eq!(index.deltas_since(top).map(|d| d.len()), Some(0));
    // Older than what the log keeps: the caller must send a snapshot.
    assert!(index.deltas_since(top - 60).is_none());
    assert!(index.deltas_since(top + 1).is_none());
}

/// `session("a")` refreshing: failing since, last confirmed at.
fn refreshing(now: u64, failing_since: Option<u64>, refreshed_at: u64) -> AccessSession {
    let at = |s: u64| {
        Time(
            k8s_openapi::jiff::Timestamp::from_second(i64::try_from(s).expect("fits"))
                .expect("time"),
        )
    };
    let mut s = session("a", false, now);
    let refresh = s
        .status
        .get_or_insert_with(Default::default)
        .refresh
        .get_or_insert_with(Default::default);
    refresh.failing_since = failing_since.map(at);
    refresh.last_refreshed_at = Some(at(refreshed_at));
    s
}

fn streamed(index: &Index, sid: &str) -> SessionEntry {
    match index.snapshot() {
        Frame::Snapshot { sessions, .. } => sessions
            .into_iter()
            .find(|s| s.sid == sid)
            .expect("streamed"),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[test]
fn a_refresh_failure_is_streamed_and_only_a_later_confirmation_clears_it() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    index.apply_session(&refreshing(now, Some(now - 10), now - 600), now);
    assert_eq!(streamed(&index, "a").refresh_failing_since, Some(now - 10));
    // A relist served from a lagging cache: the object before the failure.
    let before = index.version();
    index.apply_session(&refreshing(now, None, now - 600), now);
    assert_eq!(index.version(), before, "nothing to stream");
    assert_eq!(streamed(&index, "a").refresh_failing_since, Some(now - 10));
    // Recovered: streamed with the confirmation time that tells gateways so.
    index.apply_session(&refreshing(now, None, now - 5), now);
    let entry = streamed(&index, "a");
    assert_eq!(
        (entry.refresh_failing_since, entry.refreshed_at),
        (None, Some(now - 5))
    );
    // A later confirmation is streamed: it is the session's last known use, which its idle
    // deadline counts from on every gateway.
    let before = index.version();
    index.apply_session(&refreshing(now, None, now), now);
    assert_eq!(index.version(), before + 1);
    assert_eq!(streamed(&index, "a").refreshed_at, Some(now));
    // A replayed older one streams nothing.
    let before = index.version();
    index.apply_session(&refreshing(now, None, now - 5), now);
    assert_eq!(index.version(), before, "nothing to stream");
}

/// Policy `ns/name` on `host`, created at unix second `created`.
fn claiming(ns: &str, name: &str, host: &str, prefix: &str, created: i64) -> AccessPolicy {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: {ns}, uid: uid-{ns}-{name}, generation: 1, \
         creationTimestamp: '{}'}}\n\
         spec:\n  hosts: [{host}]\n  paths: [{prefix}]\n  rules: [{{action: Bypass, include: [{{everyone: true}}]}}]\n",
        k8s_openapi::jiff::Timestamp::from_second(created).expect("time")
    );
    serde_saphyr::from_str(&yaml).expect("policy parses")
}

fn grant(name: &str, hostnames: &[&str], names: &[&str]) -> AccessHost {
    let yaml = format!(
        "metadata: {{name: {name}}}\nspec:\n  hostnames: [{}]\n  allowedNamespaces: {{from: Names, names: [{}]}}\n",
        hostnames
            .iter()
            .map(|h| format!("'{h}'"))
            .collect::<Vec<_>>()
            .join(", "),
        names.join(", ")
    );
    serde_saphyr::from_str(&yaml).expect("grant parses")
}

/// The policies a gateway holds: from a snapshot, and again by replaying every delta since
/// `from` onto `base` (the two must agree).
fn held(index: &Index) -> BTreeSet<String> {
    let Frame::Snapshot { policies, .. } = index.snapshot() else {
        panic!("a snapshot");
    };
    policies
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn replay(index: &Index, from: u64, mut base: BTreeSet<String>) -> BTreeSet<String> {
    for frame in index.deltas_since(from).expect("deltas") {
        match frame {
            Frame::Policy { policy, .. } => {
                base.insert(format!("{}/{}", policy.namespace, policy.name));
            }
            Frame::PolicyRemoved {
                namespace, name, ..
            } => {
                base.remove(&format!("{namespace}/{name}"));
            }
            _ => {}
        }
    }
    base
}

fn names(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_claim_on_another_namespaces_host_is_never_streamed_and_the_owner_keeps_it() {
    let mut index = Index::new("i".into(), 1000);
    let owner = claiming("team-a", "app", "app.example.com", "/", 100);
    let grab = claiming("team-b", "grab", "app.example.com", "/admin", 200);
    // Listed in any order: only the owner is ever streamed, even for a moment.
    index.reset_policies(&[grab.clone(), owner.clone()], &[], 1);
    assert_eq!(held(&index), names(&["team-a/app"]));
    assert_eq!(replay(&index, 0, BTreeSet::new()), names(&["team-a/app"]));
    let refusal = index
        .host_refusals()
        .get(&("team-b".into(), "grab".into()))
        .expect("refused");
    assert!(refusal.to_string().contains("team-a"), "{refusal}");

    // Applied one by one, the later claim is refused as it arrives.
    let mut index = Index::new("i".into(), 1000);
    index.apply_policy(&owner, 1);
    let v = index.version();
    index.apply_policy(&grab, 1);
    assert_eq!(index.version(), v, "no frame for a refused claim");
    // An edit of the refused policy streams nothing either.
    let mut edited = grab.clone();
    edited.spec.paths = vec!["/other".into()];
    index.apply_policy(&edited, 1);
    assert_eq!(index.version(), v);

    // The owner leaves: the host falls to the next claim, streamed after the removal (a
    // deletion, which gateways never take back).
    index.delete_policy("team-a", "app");
    assert!(matches!(
        index.deltas_since(v).expect("deltas").first(),
        Some(Frame::PolicyRemoved {
            withdrawn: false,
            ..
        })
    ));
    assert_eq!(held(&index), names(&["team-b/grab"]));
    assert_eq!(
        replay(&index, v, names(&["team-a/app"])),
        names(&["team-b/grab"])
    );
}

#[test]
fn an_access_host_moves_a_host_to_the_granted_namespace_and_back() {
    let mut index = Index::new("i".into(), 1000);
    let first = claiming("team-b", "first", "app.example.com", "/", 100);
    let granted = claiming("team-a", "app", "app.example.com", "/", 200);
    index.reset_policies(&[first, granted], &[], 1);
    index.reset_hosts(&[]);
    assert_eq!(held(&index), names(&["team-b/first"]));
    let v = index.version();
    index.apply_host(&grant("app", &["app.example.com"], &["team-a"]));
    assert_eq!(held(&index), names(&["team-a/app"]));
    assert_eq!(
        replay(&index, v, names(&["team-b/first"])),
        names(&["team-a/app"])
    );
    // Withdrawn, not deleted: a gateway must take the same object back later.
    let withdrawn: Vec<bool> = index
        .deltas_since(v)
        .expect("deltas")
        .into_iter()
        .filter_map(|f| match f {
            Frame::PolicyRemoved { withdrawn, .. } => Some(withdrawn),
            _ => None,
        })
        .collect();
    assert_eq!(withdrawn, [true]);
    // The gateways' facts never count a refused policy as applied.
    let facts = index.policy_facts(None, index.version());
    assert!(facts.contains_key("uid-team-a-app") && !facts.contains_key("uid-team-b-first"));

    // A wildcard grant for another namespace does not override the exact one.
    index.apply_host(&grant("wild", &["*.example.com"], &["team-b"]));
    assert_eq!(held(&index), names(&["team-a/app"]));
    let v = index.version();
    index.delete_host("app");
    assert_eq!(held(&index), names(&["team-b/first"]));
    assert_eq!(
        replay(&index, v, names(&["team-a/app"])),
        names(&["team-b/first"])
    );
}

#[test]
fn refuse_mode_streams_only_granted_hosts_and_their_secrets() {
    use portcullis_core::tenancy::Unclaimed;
    let mut index = Index::new("i".into(), 1000).with_unclaimed(Unclaimed::Refuse);
    let mut with_token = claiming("team-a", "app", "app.example.com", "/", 100);
    with_token.spec.service_tokens = vec![portcullis_crds::ServiceToken {
        name: "ci".into(),
        secret_name: "ci-token".into(),
    }];
    let data = BTreeMap::from([("client-id".to_owned(), "aWQ=".to_owned())]);
    index.apply_secret("team-a", "ci-token", data);
    index.reset_policies(&[with_token], &[], 1);
    let secrets = |index: &Index| match index.snapshot() {
        Frame::Snapshot { secrets, .. } => secrets.len(),
        _ => unreachable!(),
    };
    assert!(held(&index).is_empty());
    assert_eq!(
        secrets(&index),
        0,
        "a refused policy's Secret is not streamed"
    );
    index.apply_host(&grant("app", &["app.example.com"], &["team-a"]));
    assert_eq!(held(&index), names(&["team-a/app"]));
    assert_eq!(secrets(&index), 1);
}

#[test]
fn a_login_is_a_notice_only_after_the_first_list_and_only_once() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    // The first list (an operator start): the sessions that exist are no logins.
    relist(&mut index, &[expiring("existing", now + 600)], now);
    assert_eq!(index.take_notices(), Vec::new());
    let mut new = expiring("new", now + 600);
    new.spec.email = Some("bob@example.com".into());
    index.apply_session(&new, now);
    index.apply_session(&new, now);
    let notices = index.take_notices();
    assert!(
        matches!(notices.as_slice(), [Notice::LoggedIn { sid, user, .. }]
            if sid == "new" && user == "bob@example.com"),
        "{notices:?}"
    );
    // A relist raises only what it shows is new.
    let later = expiring("later", now + 600);
    relist(
        &mut index,
        &[expiring("existing", now + 600), new, later],
        now,
    );
    let notices = index.take_notices();
    assert!(
        matches!(notices.as_slice(), [Notice::LoggedIn { sid, user, .. }]
            if sid == "later" && user == "alice"),
        "{notices:?}"
    );
}

#[test]
fn a_failing_refresh_is_a_notice_once_per_failing_period() {
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    let failing = |since: u64| {
        let mut s = expiring("s", now + 600);
        let status = s.status.get_or_insert_with(Default::default);
        let refresh = status.refresh.get_or_insert_with(Default::default);
        refresh.failing_since = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(since as i64).expect("time"),
        ));
        refresh.last_error = Some("dex unreachable".into());
        s
    };
    // Already failing at the first list: no notice (a restart replays nothing).
    relist(&mut index, &[failing(now - 60)], now);
    index.apply_session(&failing(now - 60), now);
    assert_eq!(index.take_notices(), Vec::new());
    // Recovered, then failing again: one notice, however often the watch repeats it.
    index.apply_session(&expiring("s", now + 600), now);
    index.apply_session(&failing(now), now);
    index.apply_session(&failing(now), now);
    let notices = index.take_notices();
    assert!(
        matches!(notices.as_slice(), [Notice::RefreshFailing { sid, error: Some(_), .. }] if sid == "s"),
        "{notices:?}"
    );
}

#[test]
fn who_revoked_a_session_is_kept_while_it_is_revoked() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    let now = 1_800_000_000;
    let mut index = Index::new("i".into(), 1000);
    let mut s = expiring("s", now + 600);
    s.spec.revoked = true;
    s.spec.revocation_reason = Some("left".into());
    s.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("kubectl-portcullis".into()),
        fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:revoked": {}}}))),
        ..ManagedFieldsEntry::default()
    }]);
    relist(&mut index, &[s], now);
    let by = index.revoked_by("s").expect("attributed");
    assert_eq!(
        by.describe(),
        "spec.revoked set by kubectl-portcullis (reason: left)"
    );
    index.delete_session("s", now);
    assert!(index.revoked_by("s").is_none());
}

#[test]
fn every_stream_sends_the_same_rendered_delta_and_snapshot() {
    let now = 1_800_000_000;
    let shared = SharedIndex::new(Index::new("i".into(), 100), crate::metrics::Metrics::new());
    shared.update(|index| index.apply_session(&session("a", false, now), now));
    let before = shared.lock().version();
    shared.update(|index| index.apply_session(&session("a", true, now), now));

    // Two gateways catching up from the same version get the very same buffer: the delta was
    // serialized once, when it was made, not once per gateway.
    let first = shared.catch_up(Some(before));
    let second = shared.catch_up(Some(before));
    assert!(!first.snapshot);
    assert_eq!(first.version, before + 1);
    let [one] = first.lines.as_slice() else {
        panic!("one delta, got {}", first.lines.len());
    };
    let [two] = second.lines.as_slice() else {
        panic!("one delta, got {}", second.lines.len());
    };
    assert_eq!(one.bytes.as_ptr(), two.bytes.as_ptr());
    match serde_json::from_slice(&one.bytes).expect("a frame") {
        Frame::Session { session, .. } => assert!(session.ended, "{session:?}"),
        other => panic!("expected the revocation, got {other:?}"),
    }

    // Snapshots too, while the version stays; a change renders a new one.
    let a = shared.catch_up(None);
    let b = shared.catch_up(Some(before + 5));
    assert!(
        a.snapshot && b.snapshot,
        "no version of ours, or a future one"
    );
    assert_eq!(a.lines[0].bytes.as_ptr(), b.lines[0].bytes.as_ptr());
    shared.update(|index| index.apply_session(&session("b", false, now), now));
    let c = shared.catch_up(None);
    assert_eq!(c.version, before + 2);
    assert_ne!(a.lines[0].bytes, c.lines[0].bytes);
    match serde_json::from_slice(&c.lines[0].bytes).expect("a frame") {
        Frame::Snapshot { sessions, .. } => assert_eq!(sessions.len(), 2),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}
