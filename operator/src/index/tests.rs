//! The index: garbage-collection candidates, ended-session ranges, the delta log.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portcullis_core::token::CLOCK_SKEW_SECS;
use portcullis_crds::AccessSession;
use portcullis_protocol::SessionEntry;
use portcullis_runtime::Relist;
use portcullis_tests::fixtures::session;

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
    // A refresh that changes nothing else streams nothing.
    let before = index.version();
    index.apply_session(&refreshing(now, None, now), now);
    assert_eq!(index.version(), before);
    assert_eq!(streamed(&index, "a").refreshed_at, Some(now));
}
