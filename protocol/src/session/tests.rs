//! The session rule, one invariant each, then every order of a session's history.

use super::*;

const SKEW: u64 = 30;
const NOW: u64 = 1_000_000;

fn seen(expires_at: u64) -> SessionEntry {
    SessionEntry {
        sid: "s".into(),
        subject: "alice".into(),
        expires_at,
        ended: false,
        refresh_failing_since: None,
        refreshed_at: None,
        email: None,
        groups: Vec::new(),
    }
}

/// An observation of the refresh state: failing since, last confirmed at.
fn refresh(failing_since: Option<u64>, refreshed_at: Option<u64>) -> SessionEntry {
    SessionEntry {
        refresh_failing_since: failing_since,
        refreshed_at,
        ..seen(NOW + 3600)
    }
}

#[test]
fn ended_stays_ended_and_a_changed_subject_ends_it() {
    let mut s = MergedSession::new(&seen(NOW + 100));
    assert!(!s.ended);
    let mut revoked = seen(NOW + 100);
    revoked.ended = true;
    assert!(s.observe(&revoked));
    assert!(
        !s.observe(&seen(NOW + 100)),
        "a live observation changes nothing"
    );
    assert!(s.ended);

    let mut s = MergedSession::new(&seen(NOW + 100));
    let mut other = seen(NOW + 100);
    other.subject = "mallory".into();
    assert!(s.observe(&other));
    assert!(s.ended);
    assert_eq!(s.subject, "alice", "the first subject is kept");
}

#[test]
fn expiry_only_moves_earlier_and_retention_only_later() {
    let mut s = MergedSession::new(&seen(NOW + 100));
    assert!(s.observe(&seen(NOW + 50)));
    assert!(s.observe(&seen(NOW + 200)), "retention grows");
    assert_eq!((s.expires_at, s.retain_until), (NOW + 50, NOW + 200));
    assert!(!s.observe(&seen(NOW + 200)), "a replay changes nothing");
    assert!(s.retained(NOW + 200 + SKEW - 1, SKEW));
    assert!(!s.retained(NOW + 200 + SKEW, SKEW));
}

#[test]
fn an_expired_observation_ends_a_known_session_and_is_ignored_otherwise() {
    let mut map = Sessions::new();
    assert!(!observe(&mut map, Cow::Owned(seen(NOW - SKEW)), NOW, SKEW));
    assert!(map.is_empty());
    assert!(observe(&mut map, Cow::Owned(seen(NOW + 100)), NOW, SKEW));
    assert!(observe(&mut map, Cow::Owned(seen(NOW - 60)), NOW, SKEW));
    assert!(map["s"].ended);
    assert_eq!(map["s"].expires_at, NOW - 60);
    assert!(
        !observe(&mut map, Cow::Owned(seen(NOW - 60)), NOW, SKEW),
        "nothing more"
    );
    assert!(!observe(&mut map, Cow::Owned(seen(NOW + 100)), NOW, SKEW));
    assert!(map["s"].ended && map["s"].expires_at == NOW - 60);
}

#[test]
fn an_owned_and_a_borrowed_observation_make_the_same_entry() {
    let mut observation = seen(NOW + 100);
    observation.email = Some("alice@example.com".into());
    observation.groups = vec!["eng".into()];
    let (mut owned, mut borrowed) = (Sessions::new(), Sessions::new());
    assert!(observe(
        &mut owned,
        Cow::Owned(observation.clone()),
        NOW,
        SKEW
    ));
    assert!(observe(
        &mut borrowed,
        Cow::Borrowed(&observation),
        NOW,
        SKEW
    ));
    assert_eq!(owned, borrowed);
    assert_eq!(owned["s"], MergedSession::new(&observation));
    assert_eq!(owned["s"].identity.groups, ["eng"]);
}

#[test]
fn the_map_ends_and_forgets() {
    let mut map = Sessions::new();
    assert!(!end(&mut map, "s"), "unknown");
    observe(&mut map, Cow::Owned(seen(NOW + 100)), NOW, SKEW);
    assert!(end(&mut map, "s"));
    assert!(!end(&mut map, "s"), "already ended");
    assert!(!forget_expired(&mut map, NOW + 100 + SKEW - 1, SKEW));
    assert!(forget_expired(&mut map, NOW + 100 + SKEW, SKEW));
    assert!(map.is_empty());
}

#[test]
fn identity_follows_the_latest_observation() {
    let mut s = MergedSession::new(&seen(NOW + 100));
    let mut changed = seen(NOW + 100);
    changed.email = Some("a@example.com".into());
    changed.groups = vec!["ops".into()];
    assert!(s.observe(&changed));
    assert_eq!(s.identity.groups, ["ops"]);
    assert!(s.observe(&seen(NOW + 100)));
    assert!(s.identity.email.is_none() && s.identity.groups.is_empty());
}

#[test]
fn a_failure_ends_only_with_a_confirmation_after_it_began() {
    let mut s = MergedSession::new(&refresh(None, Some(NOW - 600)));
    assert!(s.observe(&refresh(Some(NOW - 100), Some(NOW - 600))));
    assert_eq!(s.refresh_failing_since, Some(NOW - 100));
    // Older observations (before the failure, or never refreshed): the failure stands.
    for older in [refresh(None, Some(NOW - 600)), refresh(None, None)] {
        assert!(!s.observe(&older), "{older:?}");
        assert_eq!(s.refresh_failing_since, Some(NOW - 100));
    }
    // A confirmation no later than the failure's start: the failure stands, and the
    // confirmation still counts as the session's last use.
    assert!(s.observe(&refresh(None, Some(NOW - 100))));
    assert_eq!(s.refresh_failing_since, Some(NOW - 100));
    assert_eq!(s.confirmed_at, Some(NOW - 100));
    // An older failure's report does not move the start back; the object's later start wins.
    assert!(!s.observe(&refresh(Some(NOW - 150), Some(NOW - 600))));
    assert_eq!(s.refresh_failing_since, Some(NOW - 100));
    assert!(s.observe(&refresh(Some(NOW - 50), Some(NOW - 600))));
    assert_eq!(s.refresh_failing_since, Some(NOW - 50));
    // Confirmed after it began: recovered.
    assert!(s.observe(&refresh(None, Some(NOW - 10))));
    assert_eq!(s.refresh_failing_since, None);
    // A new failure after that confirmation replaces an old one it outlived.
    let mut s = MergedSession::new(&refresh(Some(NOW - 900), Some(NOW - 1000)));
    assert!(s.observe(&refresh(Some(NOW - 100), Some(NOW - 500))));
    assert_eq!(s.refresh_failing_since, Some(NOW - 100));
}

#[test]
fn the_last_confirmation_only_moves_later() {
    let mut s = MergedSession::new(&refresh(None, Some(NOW - 600)));
    assert_eq!(s.confirmed_at, Some(NOW - 600));
    assert!(s.observe(&refresh(None, Some(NOW - 10))));
    assert_eq!(s.confirmed_at, Some(NOW - 10));
    // A lagging replica's older object, or one never refreshed, does not take it back.
    for older in [refresh(None, Some(NOW - 300)), refresh(None, None)] {
        assert!(!s.observe(&older), "{older:?}");
        assert_eq!(s.confirmed_at, Some(NOW - 10));
    }
}

/// A session's refresh history as the API server holds it, in order.
fn history() -> Vec<SessionEntry> {
    vec![
        refresh(None, None),
        refresh(None, Some(NOW - 1000)),
        refresh(Some(NOW - 800), Some(NOW - 1000)),
        refresh(None, Some(NOW - 700)),
        refresh(Some(NOW - 300), Some(NOW - 700)),
        refresh(Some(NOW - 300), Some(NOW - 700)),
    ]
}

fn permutations(items: &[SessionEntry]) -> Vec<Vec<SessionEntry>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

#[test]
fn no_order_or_replay_of_a_failing_history_loses_the_current_failure() {
    // The latest state fails since NOW - 300. Whatever order the observations arrive in, from
    // the moment the latest has been seen the session fails since exactly then, through any
    // replay of what came before.
    let current = Some(NOW - 300);
    for order in permutations(&history()) {
        let mut s = MergedSession::new(&order[0]);
        let mut seen_latest = order[0].refresh_failing_since == current;
        for (i, o) in order.iter().enumerate().skip(1) {
            s.observe(o);
            seen_latest |= o.refresh_failing_since == current;
            if seen_latest {
                for replay in &order[..=i] {
                    s.observe(replay);
                    assert_eq!(s.refresh_failing_since, current, "{order:?}");
                }
            }
        }
        assert_eq!(s.refresh_failing_since, current, "{order:?}");
    }
}

#[test]
fn a_recovery_clears_the_failure_in_every_order_that_ends_with_it() {
    let mut history = history();
    let recovered = refresh(None, Some(NOW - 10));
    history.pop();
    for mut order in permutations(&history) {
        order.push(recovered.clone());
        let mut s = MergedSession::new(&order[0]);
        for o in &order[1..] {
            s.observe(o);
        }
        assert_eq!(s.refresh_failing_since, None, "{order:?}");
        // Any older observation replayed after the recovery: a failure it carries was over
        // before the recovery, but this holder cannot know that and takes it (the safe side);
        // the next observation of the current object clears it again.
        for old in &history {
            s.observe(old);
            s.observe(&recovered);
            assert_eq!(s.refresh_failing_since, None, "{old:?}");
        }
    }
}

#[test]
fn an_object_is_observed_by_its_name_times_and_deletion() {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    let time = |s: i64| Time(Timestamp::from_second(s).expect("time"));
    let mut object: AccessSession = serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1",
        "kind": "AccessSession",
        "metadata": {"name": "s1", "namespace": "portcullis"},
        "spec": {
            "subject": "alice",
            "email": "a@example.com",
            "groups": ["ops"],
            "identityProvider": "dex",
            "issuedAt": "2027-01-15T08:00:00Z",
            "expiresAt": "2027-01-15T20:00:00Z",
        },
    }))
    .expect("a valid object");
    let entry = SessionEntry::try_from(&object).expect("named");
    assert_eq!(entry.sid, "s1");
    assert_eq!(entry.expires_at, 1_800_043_200);
    assert!(!entry.ended);
    assert_eq!(entry.email.as_deref(), Some("a@example.com"));
    assert_eq!(entry.groups, ["ops"]);
    assert_eq!(
        (entry.refresh_failing_since, entry.refreshed_at),
        (None, None)
    );

    let status = object.status.get_or_insert_with(Default::default);
    let refresh = status.refresh.get_or_insert_with(Default::default);
    refresh.failing_since = Some(time(1_800_000_100));
    refresh.last_refreshed_at = Some(time(1_800_000_000));
    object.metadata.deletion_timestamp = Some(time(1_800_000_200));
    let entry = SessionEntry::try_from(&object).expect("named");
    assert!(entry.ended, "being deleted ends it");
    assert_eq!(
        (entry.refresh_failing_since, entry.refreshed_at),
        (Some(1_800_000_100), Some(1_800_000_000))
    );
    object.metadata.deletion_timestamp = None;
    object.spec.revoked = true;
    assert!(SessionEntry::try_from(&object).expect("named").ended);
    object.metadata.name = None;
    assert_eq!(SessionEntry::try_from(&object), Err(Unnamed));
}
