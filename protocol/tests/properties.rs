//! Properties of the operator stream's decoder, for bounded random inputs on every test run
//! (the `stream_frames` fuzz target in `fuzz/` runs the same checks unbounded): any line decodes
//! or is refused without a panic; every frame the operator can write decodes to itself; and a
//! gateway merging any sequence of frames never takes back a session's end.

use portcullis_protocol::{
    FleetState, Frame, SecretEntry, SessionEntry,
    frame::{parse_line, render_line},
};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Text with the characters JSON escaping is made of.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just('0'),
            Just(' '),
            Just('"'),
            Just('\\'),
            Just('/'),
            Just('\n'),
            Just('\t'),
            Just('\u{0}'),
            Just('\u{7f}'),
            Just('é'),
            Just('€'),
            Just('😀'),
            Just('-'),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn session() -> impl Strategy<Value = SessionEntry> {
    (
        prop_oneof![Just("s0"), Just("s1"), Just("s2"), Just("s3")],
        text(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(text()),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(sid, subject, expires_at, ended, failing, refreshed, email, groups)| SessionEntry {
                sid: sid.to_owned(),
                subject,
                expires_at,
                ended,
                refresh_failing_since: failing,
                refreshed_at: refreshed,
                email,
                groups,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    let version = 0u64..20;
    prop_oneof![
        (version.clone(), session())
            .prop_map(|(version, session)| Frame::Session { version, session }),
        (version.clone(), any::<u64>())
            .prop_map(|(version, sent_at)| Frame::Heartbeat { version, sent_at }),
        (version.clone(), text(), text(), text(), any::<bool>()).prop_map(
            |(version, namespace, name, uid, withdrawn)| Frame::PolicyRemoved {
                version,
                namespace,
                name,
                uid,
                withdrawn,
            }
        ),
        (
            version.clone(),
            text(),
            text(),
            proptest::collection::btree_map(text(), text(), 0..3)
        )
            .prop_map(|(version, namespace, name, data)| Frame::Secret {
                version,
                secret: SecretEntry {
                    namespace,
                    name,
                    data,
                },
            }),
        (version.clone(), text(), text()).prop_map(|(version, namespace, name)| {
            Frame::SecretRemoved {
                version,
                namespace,
                name,
            }
        }),
        (
            prop_oneof![Just("op-1"), Just("op-2")],
            version,
            proptest::collection::vec(session(), 0..4)
        )
            .prop_map(|(instance, version, sessions)| Frame::Snapshot {
                instance: instance.to_owned(),
                version,
                policies: vec![],
                secrets: vec![],
                sessions,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever arrives on the wire is decoded or refused, never a panic.
    #[test]
    fn any_line_is_decoded_or_refused(line in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_line(&line);
    }

    /// Every frame the operator writes reads back as itself, on one line, so the gateway
    /// enforces exactly what the operator sent.
    #[test]
    fn a_written_frame_reads_back_as_itself(frame in frame()) {
        let line = render_line(&frame);
        prop_assert_eq!(line.last(), Some(&b'\n'));
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line per frame");
        let read = parse_line(&line[..line.len() - 1]);
        prop_assert!(read.is_ok(), "{:?}", read);
        prop_assert_eq!(read.ok(), Some(frame));
    }

    /// However frames arrive (out of order, replayed, from two operator instances), a session
    /// the gateway has seen ended is never live again: it stays ended, or is forgotten once
    /// expired (and an unknown session is not admitted on its token alone).
    #[test]
    fn a_merged_end_is_never_taken_back(frames in proptest::collection::vec(frame(), 1..24)) {
        let mut fleet = FleetState::new(30);
        let mut ended = BTreeSet::new();
        for frame in frames {
            let _ = fleet.apply(frame, 1_800_000_000);
            for (sid, session) in fleet.sessions().iter() {
                if session.ended {
                    ended.insert(sid.clone());
                }
            }
            for sid in &ended {
                let live = fleet.sessions().get(sid).is_some_and(|s| !s.ended);
                prop_assert!(!live, "session {} was ended, then live again", sid);
            }
        }
    }
}
