//! The merge rules, one scenario each: no order, replay or age of frames can un-revoke.

use crate::{Applied, FleetState, Frame, MergeError, PolicyEntry, SecretEntry, SessionEntry};

const SKEW: u64 = 30;
const NOW: u64 = 1_000_000;

fn policy(name: &str, uid: &str, generation: i64, epoch: i64, raised_at: u64) -> PolicyEntry {
    let spec = serde_json::from_value(serde_json::json!({
        "hosts": ["app.example.test"],
        "identityProviders": ["dex"],
        "rules": [{"action": "Allow", "include": [{"everyone": true}]}],
        "revocationEpoch": epoch,
    }))
    .expect("valid spec");
    PolicyEntry {
        namespace: "apps".into(),
        name: name.into(),
        uid: uid.into(),
        generation,
        spec,
        epoch_raised_at: raised_at,
    }
}

fn session(sid: &str, subject: &str, expires_at: u64, ended: bool) -> SessionEntry {
    SessionEntry {
        sid: sid.into(),
        subject: subject.into(),
        expires_at,
        ended,
        refresh_failing_since: None,
        refreshed_at: None,
        email: None,
        groups: Vec::new(),
    }
}

fn snapshot(
    instance: &str,
    version: u64,
    policies: Vec<PolicyEntry>,
    sessions: Vec<SessionEntry>,
) -> Frame {
    Frame::Snapshot {
        instance: instance.into(),
        version,
        policies,
        secrets: vec![],
        sessions,
    }
}

fn ended(state: &FleetState, sid: &str) -> Option<bool> {
    state.sessions().get(sid).map(|s| s.ended)
}

fn epoch_of(state: &FleetState, name: &str) -> Option<(i64, u64)> {
    state
        .policies()
        .find(|p| p.name == name)
        .map(|p| (p.spec.revocation_epoch, p.epoch_raised_at))
}

#[test]
fn frames_round_trip_as_one_json_line_each() {
    let frames = [
        snapshot(
            "a",
            3,
            vec![policy("p", "u1", 1, 2, 50)],
            vec![session("s", "alice", NOW, false)],
        ),
        Frame::PolicyRemoved {
            version: 4,
            namespace: "apps".into(),
            name: "p".into(),
            uid: "u1".into(),
            withdrawn: false,
        },
        Frame::PolicyRemoved {
            version: 4,
            namespace: "apps".into(),
            name: "p".into(),
            uid: "u1".into(),
            withdrawn: true,
        },
        Frame::Secret {
            version: 5,
            secret: SecretEntry {
                namespace: "apps".into(),
                name: "t".into(),
                data: [("client-id".to_owned(), "aWQ=".to_owned())].into(),
            },
        },
        Frame::Heartbeat {
            version: 5,
            sent_at: NOW,
        },
    ];
    for frame in frames {
        let line = crate::frame::render_line(&frame);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let parsed = crate::frame::parse_line(&line[..line.len() - 1]).expect("parses");
        assert_eq!(parsed, frame);
    }
    let heartbeat = String::from_utf8(crate::frame::render_line(&Frame::Heartbeat {
        version: 7,
        sent_at: 9,
    }))
    .expect("utf-8");
    assert_eq!(
        heartbeat,
        "{\"type\":\"heartbeat\",\"version\":7,\"sentAt\":9}\n"
    );
}

#[test]
fn malformed_line_is_an_error_not_a_panic() {
    assert!(crate::frame::parse_line(b"{\"type\":\"nonsense\"}").is_err());
    assert!(crate::frame::parse_line(b"\xff\xfe").is_err());
    assert!(crate::frame::parse_line(b"{\"type\":\"session\",\"version\":1}").is_err());
}

#[test]
fn nothing_before_the_first_snapshot() {
    let mut state = FleetState::new(SKEW);
    assert!(!state.has_snapshot());
    let delta = Frame::Session {
        version: 1,
        session: session("s", "alice", NOW + 100, false),
    };
    assert_eq!(state.apply(delta, NOW), Err(MergeError::NoSnapshot));
    assert!(state.sessions().is_empty());
    assert_eq!(
        state.apply(snapshot("a", 0, vec![], vec![]), NOW),
        Ok(Applied::Policies)
    );
    assert!(state.has_snapshot());
}

#[test]
fn deltas_must_follow_in_order() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(snapshot("a", 10, vec![], vec![]), NOW)
        .expect("snapshot");
    let gap = Frame::Session {
        version: 12,
        session: session("s", "alice", NOW + 100, false),
    };
    assert_eq!(
        state.apply(gap, NOW),
        Err(MergeError::OutOfOrder { had: 10, got: 12 })
    );
    let next = Frame::Session {
        version: 11,
        session: session("s", "alice", NOW + 100, false),
    };
    assert_eq!(state.apply(next.clone(), NOW), Ok(Applied::Sessions));
    // A replay of an applied frame changes nothing.
    assert_eq!(state.apply(next, NOW), Ok(Applied::Unchanged));
    assert_eq!(state.position(), Some(("a", 11)));
    // A heartbeat ahead of us means frames were lost.
    let ahead = Frame::Heartbeat {
        version: 13,
        sent_at: NOW,
    };
    assert_eq!(
        state.apply(ahead, NOW),
        Err(MergeError::OutOfOrder { had: 11, got: 13 })
    );
    let current = Frame::Heartbeat {
        version: 11,
        sent_at: NOW,
    };
    assert_eq!(state.apply(current, NOW), Ok(Applied::Unchanged));
}

#[test]
fn an_ended_session_stays_ended_whatever_comes_later() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    let revoke = Frame::Session {
        version: 2,
        session: session("s", "alice", NOW + 100, true),
    };
    assert_eq!(state.apply(revoke, NOW), Ok(Applied::Sessions));
    assert_eq!(ended(&state, "s"), Some(true));
    // The same stream replaying the live object, a newer delta carrying it live, an old snapshot
    // from another replica: none of them un-revokes.
    let live = Frame::Session {
        version: 3,
        session: session("s", "alice", NOW + 100, false),
    };
    state.apply(live, NOW).expect("delta");
    assert_eq!(ended(&state, "s"), Some(true));
    state
        .apply(
            snapshot(
                "b",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(ended(&state, "s"), Some(true));
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(ended(&state, "s"), Some(true));
}

#[test]
fn a_known_session_missing_from_a_snapshot_is_ended_and_stays_so() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![
                    session("s", "alice", NOW + 100, false),
                    session("t", "bob", NOW + 100, false),
                ],
            ),
            NOW,
        )
        .expect("snapshot");
    // Deleted while the gateway was away: the next snapshot lacks it.
    state
        .apply(
            snapshot("b", 7, vec![], vec![session("t", "bob", NOW + 100, false)]),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(ended(&state, "s"), Some(true));
    assert_eq!(ended(&state, "t"), Some(false));
    // An old snapshot that still lists it does not bring it back.
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(ended(&state, "s"), Some(true));
}

#[test]
fn a_reused_session_name_with_another_subject_ends_the_session() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    state
        .apply(
            Frame::Session {
                version: 2,
                session: session("s", "mallory", NOW + 100, false),
            },
            NOW,
        )
        .expect("delta");
    let merged = &state.sessions()["s"];
    assert!(merged.ended);
    assert_eq!(merged.subject, "alice");
}

#[test]
fn expiry_only_moves_earlier() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    state
        .apply(
            Frame::Session {
                version: 2,
                session: session("s", "alice", NOW + 50, false),
            },
            NOW,
        )
        .expect("delta");
    state
        .apply(
            Frame::Session {
                version: 3,
                session: session("s", "alice", NOW + 500, false),
            },
            NOW,
        )
        .expect("delta");
    assert_eq!(state.sessions()["s"].expires_at, NOW + 50);
}

#[test]
fn sessions_are_forgotten_only_after_expiry_plus_skew() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot("a", 1, vec![], vec![session("s", "alice", NOW + 10, true)]),
            NOW,
        )
        .expect("snapshot");
    let at = |t| Frame::Heartbeat {
        version: 1,
        sent_at: t,
    };
    state.apply(at(NOW + 10), NOW + 10).expect("heartbeat");
    state.apply(at(NOW + 39), NOW + 39).expect("heartbeat");
    assert_eq!(ended(&state, "s"), Some(true), "kept through the skew");
    assert_eq!(
        state.apply(at(NOW + 40), NOW + 40),
        Ok(Applied::Sessions),
        "forgetting changes the index the gateway publishes"
    );
    assert_eq!(ended(&state, "s"), None);
    assert_eq!(state.apply(at(NOW + 41), NOW + 41), Ok(Applied::Unchanged));
    // An expired session arriving late is not resurrected as live.
    state
        .apply(
            Frame::Session {
                version: 2,
                session: session("s", "alice", NOW + 10, false),
            },
            NOW + 40,
        )
        .expect("delta");
    assert_eq!(ended(&state, "s"), None);
}

#[test]
fn epochs_only_go_up_per_policy_object() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot("a", 1, vec![policy("p", "u1", 1, 0, 0)], vec![]),
            NOW,
        )
        .expect("snapshot");
    state
        .apply(
            Frame::Policy {
                version: 2,
                policy: Box::new(policy("p", "u1", 2, 3, NOW - 5)),
            },
            NOW,
        )
        .expect("delta");
    assert_eq!(epoch_of(&state, "p"), Some((3, NOW - 5)));
    // A lagging replica's snapshot with the old generation and epoch: the epoch stays, so does
    // the newer generation.
    state
        .apply(
            snapshot("b", 4, vec![policy("p", "u1", 1, 0, 0)], vec![]),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(epoch_of(&state, "p"), Some((3, NOW - 5)));
    assert_eq!(state.policies().next().map(|p| p.generation), Some(2));
    // A newer generation that still carries a lower epoch (cannot happen at the API server, CEL
    // forbids it; a replayed object could): the spec updates, the epoch does not drop.
    state
        .apply(
            Frame::Policy {
                version: 5,
                policy: Box::new(policy("p", "u1", 3, 1, 0)),
            },
            NOW,
        )
        .expect("delta");
    assert_eq!(epoch_of(&state, "p"), Some((3, NOW - 5)));
    assert_eq!(state.policies().next().map(|p| p.generation), Some(3));
}

#[test]
fn a_later_raise_time_for_the_same_epoch_wins() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot("a", 1, vec![policy("p", "u1", 2, 1, NOW - 10)], vec![]),
            NOW,
        )
        .expect("snapshot");
    state
        .apply(
            snapshot("b", 1, vec![policy("p", "u1", 2, 1, NOW - 8)], vec![]),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(epoch_of(&state, "p"), Some((1, NOW - 8)));
    state
        .apply(
            snapshot("a", 2, vec![policy("p", "u1", 2, 1, NOW - 10)], vec![]),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(epoch_of(&state, "p"), Some((1, NOW - 8)));
}

#[test]
fn a_recreated_policy_is_a_new_object_with_its_own_epoch() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot("a", 1, vec![policy("p", "u1", 4, 5, NOW - 100)], vec![]),
            NOW,
        )
        .expect("snapshot");
    state
        .apply(
            Frame::PolicyRemoved {
                version: 2,
                namespace: "apps".into(),
                name: "p".into(),
                uid: "u1".into(),
                withdrawn: false,
            },
            NOW,
        )
        .expect("delta");
    assert_eq!(epoch_of(&state, "p"), None);
    state
        .apply(
            Frame::Policy {
                version: 3,
                policy: Box::new(policy("p", "u2", 1, 0, 0)),
            },
            NOW,
        )
        .expect("delta");
    assert_eq!(epoch_of(&state, "p"), Some((0, 0)));
    // An old snapshot bringing back the deleted object: its uid is gone for good.
    state
        .apply(
            snapshot("b", 9, vec![policy("p", "u1", 4, 5, NOW - 100)], vec![]),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(
        state.policies().next().map(|p| p.uid),
        Some("u2".to_owned())
    );
}

#[test]
fn a_withdrawn_policy_comes_back_a_deleted_one_never_and_a_deletion_reads_as_before() {
    let removed = |version, withdrawn| Frame::PolicyRemoved {
        version,
        namespace: "apps".into(),
        name: "p".into(),
        uid: "u1".into(),
        withdrawn,
    };
    let again = |version| Frame::Policy {
        version,
        policy: Box::new(policy("p", "u1", 2, 0, 0)),
    };
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot("a", 1, vec![policy("p", "u1", 1, 0, 0)], vec![]),
            NOW,
        )
        .expect("snapshot");
    // Its namespace lost the host, then got it back: the same object is enforced again.
    state.apply(removed(2, true), NOW).expect("withdrawn");
    assert!(state.policies().next().is_none());
    state.apply(again(3), NOW).expect("back");
    assert_eq!(
        state.policies().next().map(|p| p.uid),
        Some("u1".to_owned())
    );
    // Deleted: the uid never comes back.
    state.apply(removed(4, false), NOW).expect("deleted");
    state.apply(again(5), NOW).expect("replayed");
    assert!(state.policies().next().is_none());
    // A deletion carries no `withdrawn` on the wire, as before the field existed; a frame
    // without it is a deletion.
    let wire = serde_json::to_string(&removed(6, false)).expect("json");
    assert!(!wire.contains("withdrawn"), "{wire}");
    let old = r#"{"type":"policyRemoved","version":6,"namespace":"apps","name":"p","uid":"u1"}"#;
    assert_eq!(
        serde_json::from_str::<Frame>(old).expect("old frame"),
        removed(6, false)
    );
}

#[test]
fn a_policy_missing_from_a_lagging_snapshot_comes_back_with_its_epoch() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot("a", 1, vec![policy("p", "u1", 2, 4, NOW - 1)], vec![]),
            NOW,
        )
        .expect("snapshot");
    state
        .apply(snapshot("b", 1, vec![], vec![]), NOW)
        .expect("snapshot");
    assert_eq!(epoch_of(&state, "p"), None);
    state
        .apply(
            snapshot("a", 2, vec![policy("p", "u1", 1, 0, 0)], vec![]),
            NOW,
        )
        .expect("snapshot");
    assert_eq!(epoch_of(&state, "p"), Some((4, NOW - 1)));
}

#[test]
fn every_order_of_the_same_frames_ends_the_same_sessions() {
    // Three snapshots from replicas at different points in time; whichever order they arrive
    // in, the revoked session is ended and the live one is live.
    let old = snapshot(
        "a",
        1,
        vec![],
        vec![
            session("r", "alice", NOW + 100, false),
            session("l", "bob", NOW + 100, false),
        ],
    );
    let revoked = snapshot(
        "b",
        5,
        vec![],
        vec![
            session("r", "alice", NOW + 100, true),
            session("l", "bob", NOW + 100, false),
        ],
    );
    let deleted = snapshot("c", 9, vec![], vec![session("l", "bob", NOW + 100, false)]);
    let frames = [old, revoked, deleted];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let mut state = FleetState::new(SKEW);
        for i in order {
            state.apply(frames[i].clone(), NOW).expect("snapshot");
        }
        assert_eq!(ended(&state, "l"), Some(false), "order {order:?}");
        assert_eq!(ended(&state, "r"), Some(true), "order {order:?}");
    }
}

#[test]
fn identity_and_refresh_failure_follow_the_latest_frame_but_never_revive() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 100, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    let mut changed = session("s", "alice", NOW + 100, false);
    changed.email = Some("alice@example.com".into());
    changed.groups = vec!["ops".into()];
    changed.refresh_failing_since = Some(NOW - 5);
    state
        .apply(
            Frame::Session {
                version: 2,
                session: changed.clone(),
            },
            NOW,
        )
        .expect("delta");
    let merged = &state.sessions()["s"];
    assert_eq!(merged.identity.groups, ["ops"]);
    assert_eq!(merged.refresh_failing_since, Some(NOW - 5));
    // A success (confirmed after the failure began) clears the failure; an ended session stays
    // ended whatever its identity does.
    changed.refresh_failing_since = None;
    changed.refreshed_at = Some(NOW);
    changed.groups = vec![];
    changed.ended = true;
    state
        .apply(
            Frame::Session {
                version: 3,
                session: changed.clone(),
            },
            NOW,
        )
        .expect("delta");
    changed.ended = false;
    state
        .apply(
            Frame::Session {
                version: 4,
                session: changed,
            },
            NOW,
        )
        .expect("delta");
    let merged = &state.sessions()["s"];
    assert!(merged.identity.groups.is_empty() && merged.refresh_failing_since.is_none());
    assert!(merged.ended);
}

#[test]
fn applied_says_what_to_rebuild() {
    let mut state = FleetState::new(SKEW);
    assert_eq!(
        state.apply(
            snapshot("a", 1, vec![policy("p", "u1", 1, 0, 0)], vec![]),
            NOW
        ),
        Ok(Applied::Policies)
    );
    let mut next = 1;
    let mut delta = |state: &mut FleetState, frame: fn(u64) -> Frame| {
        next += 1;
        state.apply(frame(next), NOW)
    };
    assert_eq!(
        delta(&mut state, |version| Frame::Session {
            version,
            session: session("s", "alice", NOW + 100, false),
        }),
        Ok(Applied::Sessions)
    );
    assert_eq!(
        delta(&mut state, |version| Frame::Policy {
            version,
            policy: Box::new(policy("p", "u1", 2, 1, NOW)),
        }),
        Ok(Applied::Policies)
    );
    assert_eq!(
        delta(&mut state, |version| Frame::Session {
            version,
            session: session("s", "alice", NOW + 100, false),
        }),
        Ok(Applied::Unchanged),
        "the same session again changes nothing"
    );
    assert_eq!(Applied::Sessions.and(Applied::Policies), Applied::Policies);
    assert_eq!(Applied::Unchanged.and(Applied::Sessions), Applied::Sessions);
    assert_eq!(
        Applied::Unchanged.and(Applied::Unchanged),
        Applied::Unchanged
    );
}

#[test]
fn a_published_copy_of_the_sessions_does_not_see_later_changes() {
    let mut state = FleetState::new(SKEW);
    let sessions: Vec<_> = (0..1000)
        .map(|i| session(&format!("s{i}"), "alice", NOW + 100, false))
        .collect();
    state
        .apply(snapshot("a", 1, vec![], sessions), NOW)
        .expect("snapshot");
    let published = state.sessions().clone();
    state
        .apply(
            Frame::Session {
                version: 2,
                session: session("s7", "alice", NOW + 100, true),
            },
            NOW,
        )
        .expect("delta");
    assert_eq!(ended(&state, "s7"), Some(true));
    assert!(
        !published["s7"].ended,
        "the request path's copy is a snapshot"
    );
    assert_eq!(published.len(), 1000);
}

#[test]
fn an_expiry_moved_into_the_past_ends_the_session_and_a_lagging_frame_does_not_revive_it() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(
            snapshot(
                "a",
                1,
                vec![],
                vec![session("s", "alice", NOW + 3600, false)],
            ),
            NOW,
        )
        .expect("snapshot");
    // An administrator moved expiresAt an hour into the past.
    let shortened = Frame::Session {
        version: 2,
        session: session("s", "alice", NOW - 3600, true),
    };
    assert_eq!(state.apply(shortened, NOW), Ok(Applied::Sessions));
    assert_eq!(ended(&state, "s"), Some(true));
    assert_eq!(state.sessions()["s"].expires_at, NOW - 3600);
    // A lagging replica's snapshot still carries the original, live object: kept ended, and
    // the entry is retained until the original expiry, so it cannot come back as new.
    state
        .apply(
            snapshot(
                "b",
                7,
                vec![],
                vec![session("s", "alice", NOW + 3600, false)],
            ),
            NOW + 100,
        )
        .expect("old snapshot");
    assert_eq!(ended(&state, "s"), Some(true));
    let beat = |t: u64| Frame::Heartbeat {
        version: 7,
        sent_at: t,
    };
    state
        .apply(beat(NOW + 3600), NOW + 3600)
        .expect("heartbeat");
    assert_eq!(
        ended(&state, "s"),
        Some(true),
        "retained until the latest expiry"
    );
    state
        .apply(beat(NOW + 3600 + SKEW), NOW + 3600 + SKEW)
        .expect("heartbeat");
    assert_eq!(ended(&state, "s"), None);
}

#[test]
fn an_expired_frame_for_an_unknown_session_is_ignored() {
    let mut state = FleetState::new(SKEW);
    state
        .apply(snapshot("a", 1, vec![], vec![]), NOW)
        .expect("snapshot");
    let expired = Frame::Session {
        version: 2,
        session: session("s", "alice", NOW - 3600, false),
    };
    assert_eq!(state.apply(expired, NOW), Ok(Applied::Unchanged));
    assert!(state.sessions().is_empty());
}

#[test]
fn a_lagging_snapshot_does_not_clear_a_refresh_failure_and_a_recovery_does() {
    let mut state = FleetState::new(SKEW);
    let mut failing = session("s", "alice", NOW + 100, false);
    failing.refresh_failing_since = Some(NOW - 5);
    failing.refreshed_at = Some(NOW - 600);
    state
        .apply(snapshot("a", 1, vec![], vec![failing]), NOW)
        .expect("snapshot");
    // Another replica that has not seen the failure yet.
    let mut before = session("s", "alice", NOW + 100, false);
    before.refreshed_at = Some(NOW - 600);
    state
        .apply(snapshot("b", 7, vec![], vec![before.clone()]), NOW)
        .expect("snapshot");
    assert_eq!(state.sessions()["s"].refresh_failing_since, Some(NOW - 5));
    // The replayed confirmation from before the failure, then the recovery.
    let mut recovered = before;
    for (version, refreshed_at, failing_since) in [(8, NOW - 600, Some(NOW - 5)), (9, NOW, None)] {
        recovered.refreshed_at = Some(refreshed_at);
        state
            .apply(
                Frame::Session {
                    version,
                    session: recovered.clone(),
                },
                NOW,
            )
            .expect("delta");
        assert_eq!(state.sessions()["s"].refresh_failing_since, failing_since);
    }
}

#[test]
fn a_stream_entry_compiles_as_the_object_it_was_read_from() {
    use portcullis_core::{Policy, PolicySource};
    let entry = policy("web", "uid-1", 4, 2, NOW);
    let mut object = portcullis_crds::AccessPolicy::new("web", entry.spec.clone());
    object.metadata.namespace = Some("apps".into());
    object.metadata.uid = Some("uid-1".into());
    object.metadata.generation = Some(4);
    let from_entry = entry.compile().expect("compiles");
    let from_object = Policy::try_from(&object).expect("compiles");
    assert_eq!(from_entry.id, from_object.id);
    assert_eq!(from_entry.uid.as_deref(), Some("uid-1"));
    assert_eq!(from_entry.uid, from_object.uid);
    assert_eq!(from_entry.epoch, 2);
    assert_eq!(from_entry.epoch, from_object.epoch);
    assert_eq!(from_entry.hosts, from_object.hosts);
    assert_eq!(format!("{from_entry:?}"), format!("{from_object:?}"));
    // A spec that does not compile fails the same way from either.
    let mut bad = entry.clone();
    bad.spec.hosts = vec!["Not A Host".into()];
    object.spec = bad.spec.clone();
    assert_eq!(
        bad.compile().map_err(|e| e.to_string()).err(),
        Policy::try_from(&object).map_err(|e| e.to_string()).err()
    );
    assert!(bad.compile().is_err());
}

#[test]
fn applied_policies_keep_their_pair_form_on_the_wire() {
    use crate::{AppliedPolicy, GatewayFacts};
    let facts = GatewayFacts {
        gateway: "g1".into(),
        acked_at: 5,
        policies: [(
            "uid-1".to_owned(),
            AppliedPolicy {
                generation: 3,
                epoch: 1,
            },
        )]
        .into(),
        ended_sessions: vec![],
    };
    let json = serde_json::to_value(&facts).expect("serializes");
    assert_eq!(json["policies"]["uid-1"], serde_json::json!([3, 1]));
    let back: GatewayFacts = serde_json::from_value(json).expect("parses");
    assert_eq!(back, facts);
    // The newer of two is the later generation, then the higher epoch.
    let older = AppliedPolicy::from((2, 9));
    let newer = AppliedPolicy::from((3, 1));
    assert_eq!(older.max(newer), newer);
    assert_eq!(
        AppliedPolicy::from((3, 1))
            .max(AppliedPolicy::from((3, 2)))
            .epoch,
        2
    );
}

#[test]
fn an_older_snapshot_of_the_same_instance_is_a_replay() {
    // Found by the `stream_frames` fuzz target: the position moved back from 3 to 2.
    let mut state = FleetState::new(SKEW);
    let live = session("s1", "u1", NOW + 3600, false);
    state
        .apply(snapshot("op-1", 3, vec![], vec![live.clone()]), NOW)
        .expect("snapshot");
    let older = state
        .apply(snapshot("op-1", 2, vec![], vec![]), NOW)
        .expect("a replay is not an error");
    assert_eq!(older, Applied::Unchanged);
    assert_eq!(state.position(), Some(("op-1", 3)));
    assert_eq!(
        ended(&state, "s1"),
        Some(false),
        "a replayed list ended a session"
    );
    // Another instance's snapshot is a new stream, whatever its version.
    state
        .apply(snapshot("op-2", 1, vec![], vec![live]), NOW)
        .expect("another instance");
    assert_eq!(state.position(), Some(("op-2", 1)));
}
