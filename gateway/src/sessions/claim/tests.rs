//! The refresh writes are built from the CRD's types; on the wire they are the very merge
//! patches the gateway always sent (written out here by hand, as they were).

use super::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

/// RFC 3339 text of a unix time, as the patches spelled times before they were typed.
fn rfc3339(secs: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).expect("in range"))
        .expect("in range")
        .to_string()
}

fn sent(outcome: &RefreshOutcome) -> serde_json::Value {
    let next = Reservation {
        holder: "gateway-0",
        until: NOW + 390,
    };
    outcome_patch(outcome, NOW, &next)
        .if_version(Some("7".to_owned()))
        .body()
}

#[test]
fn outcomes_are_written_as_the_same_merge_patches() {
    let confirmed = RefreshOutcome::Confirmed {
        sealed_token: Some("v1.k.new".to_owned()),
        sealed_id_token: Some("v1.k.id".to_owned()),
        identity: None,
    };
    assert_eq!(
        sent(&confirmed),
        json!({
            "metadata": { "resourceVersion": "7" },
            "status": { "refresh": {
                "lastRefreshedAt": rfc3339(NOW),
                "failingSince": null,
                "lastError": null,
                "holder": "gateway-0",
                "leaseUntil": rfc3339(NOW + 390),
                "sealedToken": "v1.k.new",
                "sealedIdToken": "v1.k.id",
            } }
        })
    );
    let unrotated = RefreshOutcome::Confirmed {
        sealed_token: None,
        sealed_id_token: None,
        identity: None,
    };
    assert_eq!(
        sent(&unrotated)["status"]["refresh"],
        json!({
            "lastRefreshedAt": rfc3339(NOW),
            "failingSince": null,
            "lastError": null,
            "holder": "gateway-0",
            "leaseUntil": rfc3339(NOW + 390),
        })
    );
    let rejected = RefreshOutcome::Rejected {
        reason: "x".repeat(600),
    };
    assert_eq!(
        sent(&rejected)["status"]["refresh"],
        json!({
            "lastError": "x".repeat(500),
            "sealedToken": null,
            "sealedIdToken": null,
            "holder": null,
            "leaseUntil": null,
        })
    );
    let failed = RefreshOutcome::Failed {
        error: "unreachable".to_owned(),
        since: NOW - 60,
        retry_at: NOW + 15,
        sealed_token: Some("v1.k.rotated".to_owned()),
    };
    assert_eq!(
        sent(&failed)["status"]["refresh"],
        json!({
            "failingSince": rfc3339(NOW - 60),
            "lastError": "unreachable",
            "holder": null,
            "leaseUntil": rfc3339(NOW + 15),
            "sealedToken": "v1.k.rotated",
        })
    );
    let deferred = RefreshOutcome::Deferred {
        reason: "unknown key".to_owned(),
    };
    assert_eq!(
        sent(&deferred),
        json!({
            "metadata": { "resourceVersion": "7" },
            "status": { "refresh": { "holder": null, "leaseUntil": null } }
        })
    );
}

#[test]
fn a_claim_and_a_recorded_token_are_the_same_merge_patches() {
    let claim = RefreshStatus {
        holder: Some("gateway-0/1".to_owned()),
        lease_until: Some(time(NOW + 90)),
        ..RefreshStatus::default()
    };
    assert_eq!(
        SessionPatch::refresh(claim, Clear::default())
            .if_version(Some("7".to_owned()))
            .body(),
        json!({
            "metadata": { "resourceVersion": "7" },
            "status": { "refresh": {
                "holder": "gateway-0/1",
                "leaseUntil": rfc3339(NOW + 90),
            } }
        })
    );
    let recorded = RefreshStatus {
        sealed_token: Some("v1.k.sealed".to_owned()),
        last_refreshed_at: Some(time(NOW)),
        ..RefreshStatus::default()
    };
    assert_eq!(
        SessionPatch::refresh(recorded, Clear::default()).body(),
        json!({
            "status": { "refresh": {
                "sealedToken": "v1.k.sealed",
                "lastRefreshedAt": rfc3339(NOW),
            } }
        })
    );
}

#[test]
fn a_claim_is_held_by_its_holder_until_its_end() {
    let mut session = portcullis_tests::fixtures::session("s1", false, NOW);
    let held = HeldClaim {
        until: NOW + 90,
        resource_version: None,
        reserve: Duration::from_secs(390),
    };
    assert!(!holds(&session, "g1", &held));
    session.status = Some(portcullis_crds::session::AccessSessionStatus {
        refresh: Some(RefreshStatus {
            holder: Some("g1".to_owned()),
            lease_until: Some(time(NOW + 90)),
            ..RefreshStatus::default()
        }),
        ..Default::default()
    });
    assert!(holds(&session, "g1", &held));
    assert!(!holds(&session, "g2", &held));
}

#[test]
fn a_new_identity_is_the_same_merge_patch() {
    let groups = ["staff".to_owned(), "ops".to_owned()];
    assert_eq!(
        identity_patch(&Some("a@example.com".to_owned()), &groups).body(),
        json!({ "spec": { "email": "a@example.com", "groups": ["staff", "ops"] } })
    );
    // No email and no groups any more: both are stated, the email removed.
    assert_eq!(
        identity_patch(&None, &[]).body(),
        json!({ "spec": { "email": null, "groups": [] } })
    );
}

/// A session last confirmed at `confirmed`, its claim `(holder, until)`.
fn claimed_session(confirmed: u64, claim: Option<(&str, u64)>) -> AccessSession {
    let mut session = portcullis_tests::fixtures::session("s1", false, NOW);
    session.spec.expires_at = time(NOW + 86_400);
    session.status = Some(portcullis_crds::session::AccessSessionStatus {
        refresh: Some(RefreshStatus {
            sealed_token: Some("v1.k.sealed".to_owned()),
            last_refreshed_at: Some(time(confirmed)),
            holder: claim.map(|(h, _)| h.to_owned()),
            lease_until: claim.map(|(_, u)| time(u)),
            ..RefreshStatus::default()
        }),
        ..Default::default()
    });
    session
}

#[test]
fn the_gateway_that_confirmed_a_session_redeems_it_next_without_a_claim_write() {
    let interval = Duration::from_secs(300);
    let claim = Duration::from_secs(90);
    let confirmed = NOW - 300;
    // The confirmation at `confirmed` reserved the next round for g1.
    let session = claimed_session(confirmed, Some(("g1", confirmed + 390)));
    let refresh = |s: &AccessSession| s.status.clone().and_then(|s| s.refresh).expect("refresh");

    // Due now: g1 goes ahead on its reservation, with the 90 s a claim gives...
    assert!(claimable(&session, "g1", interval, NOW).is_continue());
    assert_eq!(
        reserved_for(&refresh(&session), "g1", claim, NOW),
        Some(NOW + 90)
    );
    // ...while every other gateway waits until the reservation has run out.
    match claimable(&session, "g2", interval, NOW) {
        ControlFlow::Break(RefreshClaim::NotDue { at }) => assert_eq!(at, NOW + 90),
        other => panic!("g2 should wait, got {other:?}"),
    }
    // Not due yet: g1 waits for the interval, not for its own reservation.
    match claimable(&session, "g1", interval, NOW - 100) {
        ControlFlow::Break(RefreshClaim::NotDue { at }) => assert_eq!(at, NOW),
        other => panic!("g1 is not due, got {other:?}"),
    }
    // Late, with less than half a claim left: g1 writes a claim again rather than race the end.
    assert!(claimable(&session, "g1", interval, NOW + 50).is_continue());
    assert_eq!(
        reserved_for(&refresh(&session), "g1", claim, NOW + 50),
        None
    );
    // Once the reservation has run out anyone may claim it (with a write).
    assert!(claimable(&session, "g2", interval, NOW + 91).is_continue());
    assert_eq!(
        reserved_for(&refresh(&session), "g2", claim, NOW + 91),
        None
    );

    // A session without a reservation (a failure gave the claim back) is claimed by a write.
    let unreserved = claimed_session(confirmed, None);
    assert!(claimable(&unreserved, "g1", interval, NOW).is_continue());
    assert_eq!(reserved_for(&refresh(&unreserved), "g1", claim, NOW), None);
}
