use super::*;

fn session(sid: &str) -> AccessSession {
    portcullis_tests::fixtures::session(sid, false, crate::clock::now())
}

/// The HTTP status the API server answers the same write with.
fn code(result: Result<AccessSession, StoreError>) -> u16 {
    match result {
        Err(StoreError::Conflict) => 409,
        Err(StoreError::NotFound) => 404,
        Err(StoreError::Refused(_)) => 422,
        Err(StoreError::Unavailable(_)) => 500,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn writes_follow_the_api_servers_rules() {
    let store = LocalStore::open(None).expect("store");
    let created = store.create(&session("s1")).expect("created");
    assert_eq!(code(store.create(&session("s1"))), 409);
    // A stale precondition conflicts; the current one applies.
    let stale = serde_json::json!({ "metadata": { "resourceVersion": "0" },
        "status": { "refresh": { "holder": "g1" } } });
    assert_eq!(code(store.patch("s1", &stale, Part::Status)), 409);
    let fresh = serde_json::json!({ "metadata": { "resourceVersion": created.metadata.resource_version },
        "status": { "refresh": { "holder": "g1" } } });
    let claimed = store.patch("s1", &fresh, Part::Status).expect("claimed");
    // Status writes leave the spec alone, and the other way round.
    let sneaky = serde_json::json!({ "spec": { "revoked": true } });
    let same = store.patch("s1", &sneaky, Part::Status).expect("ignored");
    assert!(!same.spec.revoked);
    assert_eq!(
        same.metadata.resource_version,
        claimed.metadata.resource_version
    );
    store.patch("s1", &sneaky, Part::Spec).expect("revoked");
    let undo = serde_json::json!({ "spec": { "revoked": false } });
    assert_eq!(code(store.patch("s1", &undo, Part::Spec)), 422);
    let later = serde_json::json!({ "spec": { "expiresAt": "2999-01-01T00:00:00Z" } });
    assert_eq!(code(store.patch("s1", &later, Part::Spec)), 422);
    let long = serde_json::json!({ "spec": { "groups": ["x".repeat(257)] } });
    assert_eq!(code(store.patch("s1", &long, Part::Spec)), 422);
    assert!(store.index().borrow().entries["s1"].ended);
    assert_eq!(code(store.patch("nope", &sneaky, Part::Spec)), 404);
}

#[test]
fn a_write_that_cannot_be_saved_is_refused_and_undone() {
    let dir = std::env::temp_dir().join(format!("portcullis-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("sessions.json");
    let store = LocalStore::open(Some(file.clone())).expect("store");
    store.create(&session("s1")).expect("created");
    // The store survives a restart.
    let reopened = LocalStore::open(Some(file.clone())).expect("reopened");
    assert!(reopened.get("s1").is_some());
    // The directory goes away: the revocation is refused, not pretended.
    std::fs::remove_dir_all(&dir).expect("remove");
    let revoke = serde_json::json!({ "spec": { "revoked": true } });
    assert_eq!(code(reopened.patch("s1", &revoke, Part::Spec)), 500);
    assert!(!reopened.get("s1").expect("kept").spec.revoked);
    assert!(!reopened.index().borrow().entries["s1"].ended);
}
