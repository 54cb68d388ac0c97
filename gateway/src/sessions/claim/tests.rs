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
    outcome_patch(outcome, NOW)
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
                "holder": null,
                "leaseUntil": null,
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
            "holder": null,
            "leaseUntil": null,
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
