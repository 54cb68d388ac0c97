use super::*;
use serde_json::json;

#[test]
fn a_revocation_is_the_same_merge_patch() {
    assert_eq!(
        revocation(&"r".repeat(300))
            .if_version(Some("7".to_owned()))
            .body(),
        json!({
            "metadata": { "resourceVersion": "7" },
            "spec": { "revoked": true, "revocationReason": "r".repeat(250) },
        })
    );
}

#[test]
fn a_login_is_an_access_session_with_its_labels() {
    let groups = ["staff".to_owned()];
    let login = NewSession {
        sid: "s1",
        subject: "alice",
        email: Some("alice@example.com"),
        groups: &groups,
        identity_provider: "dex",
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
        sealed_refresh_token: None,
        sealed_id_token: None,
        attempt: "a1",
        provider_session_id: None,
    };
    let session = build(&login).expect("valid times");
    assert_eq!(attempt_of(&session), Some("a1"));
    let labels = session.metadata.labels.expect("labels");
    assert_eq!(labels[USER_LABEL], user_label("alice"));
    assert_eq!(labels[IDENTITY_PROVIDER_LABEL], "dex");
    assert!(!session.spec.revoked);
    assert!(session.status.is_none());
    let far = NewSession {
        expires_at: u64::MAX,
        ..login
    };
    assert!(matches!(build(&far), Err(RecordError::Time)));
}

#[tokio::test]
async fn a_second_login_under_the_same_id_is_a_collision_not_a_retry() {
    let recorder = SessionRecorder::local(
        crate::sessions::file_store::LocalStore::open(None).expect("in-memory store"),
    );
    let start = crate::clock::now();
    let login = |attempt| NewSession {
        sid: "0123456789abcdef0123456789abcdef",
        subject: "alice",
        email: None,
        groups: &[],
        identity_provider: "dex",
        issued_at: start,
        expires_at: start + 3600,
        sealed_refresh_token: None,
        sealed_id_token: None,
        attempt,
        provider_session_id: None,
    };
    recorder.record(&login("first")).await.expect("recorded");
    // The same attempt again (its answer was lost): the same login.
    recorder.record(&login("first")).await.expect("idempotent");
    // Another attempt under the same id (the same login state used twice), for the same user
    // or another: refused.
    assert!(matches!(
        recorder.record(&login("second")).await,
        Err(RecordError::Collision(_))
    ));
}

#[test]
fn a_back_channel_logout_names_sessions_by_provider_sid_else_by_subject() {
    let groups = [];
    let login = |sid: Option<&'static str>| NewSession {
        sid: "s1",
        subject: "alice",
        email: None,
        groups: &groups,
        identity_provider: "keycloak",
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
        sealed_refresh_token: None,
        sealed_id_token: None,
        attempt: "a1",
        provider_session_id: sid,
    };
    let with_sid = build(&login(Some("kc-1"))).expect("valid").spec;
    let without = build(&login(None)).expect("valid").spec;
    assert_eq!(with_sid.provider_session_id.as_deref(), Some("kc-1"));
    assert!(named_by_logout(&with_sid, Some("kc-1"), None));
    assert!(named_by_logout(&with_sid, Some("kc-1"), Some("alice")));
    assert!(!named_by_logout(&with_sid, Some("kc-1"), Some("bob")));
    assert!(!named_by_logout(&with_sid, Some("kc-2"), Some("alice")));
    assert!(named_by_logout(&with_sid, None, Some("alice")));
    assert!(!named_by_logout(&with_sid, None, Some("bob")));
    assert!(!named_by_logout(&with_sid, None, None));
    assert!(!named_by_logout(&without, Some("kc-1"), Some("alice")));
    assert!(named_by_logout(&without, None, Some("alice")));
}

#[tokio::test]
async fn an_id_token_the_store_refuses_is_left_out_unless_a_refresh_token_goes_with_it() {
    let store = crate::sessions::file_store::LocalStore::open(None).expect("in-memory store");
    let recorder = SessionRecorder::local(store.clone());
    let start = crate::clock::now();
    // Longer than the CRD allows: the store refuses the status write.
    let refused = "v1.k.".to_owned() + &"x".repeat(16_400);
    let login = |sid, refresh: Option<String>| NewSession {
        sid,
        subject: "alice",
        email: None,
        groups: &[],
        identity_provider: "dex",
        issued_at: start,
        expires_at: start + 3600,
        sealed_refresh_token: refresh,
        sealed_id_token: Some(refused.clone()),
        attempt: sid,
        provider_session_id: None,
    };
    recorder
        .record(&login("s-id-only", None))
        .await
        .expect("the session stands without its ID token");
    let kept = store.get("s-id-only").expect("recorded");
    assert!(!kept.spec.revoked);
    assert!(kept.status.and_then(|s| s.refresh).is_none());

    let with_refresh = recorder
        .record(&login("s-both", Some("v1.k.refresh".to_owned())))
        .await;
    assert!(
        matches!(with_refresh, Err(RecordError::Refused(_))),
        "{with_refresh:?}"
    );
    assert!(store.get("s-both").expect("recorded").spec.revoked);
}
