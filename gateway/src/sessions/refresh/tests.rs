use super::*;

#[test]
fn confirmations_keep_their_metric_labels() {
    let labels = [
        Confirmation::Confirmed,
        Confirmation::Rejected,
        Confirmation::Failed,
        Confirmation::Deferred,
        Confirmation::Unrecorded,
    ]
    .map(Confirmation::label);
    assert_eq!(
        labels,
        ["confirmed", "rejected", "failed", "deferred", "unrecorded"]
    );
}

#[test]
fn failures_and_deferrals_wait_the_same_capped_delay() {
    let hour = Duration::from_secs(3600);
    let second = Duration::from_secs(1);
    assert_eq!(retry_delay(hour), 15);
    assert_eq!(retry_delay(second), 1);
    let deferred = RefreshOutcome::Deferred {
        reason: "unknown key".to_owned(),
    };
    assert_eq!(
        written("s1", "dex", &deferred, 100, hour),
        (Confirmation::Deferred, Some(115))
    );
    let confirmed = RefreshOutcome::Confirmed {
        sealed_token: None,
        sealed_id_token: None,
        identity: None,
    };
    assert_eq!(
        written("s1", "dex", &confirmed, 100, hour),
        (Confirmation::Confirmed, Some(3700))
    );
}

#[test]
fn a_session_is_kept_for_an_interval_and_the_reservation_after_its_last_request() {
    let (seen, interval) = (1_000, 300);
    // The reservation of a confirmation at `seen` lets its gateway confirm without a claim
    // until `seen + interval + CLAIM / 2`: the session is kept that long.
    assert!(still_served(seen, interval, seen + interval));
    assert!(still_served(seen, interval, seen + interval + 45));
    assert!(!still_served(seen, interval, seen + interval + 46));
    // Short intervals keep a session a minute; an interval of zero turns confirming off.
    assert!(still_served(seen, 10, seen + 105));
    assert!(!still_served(seen, 10, seen + 106));
    assert!(!still_served(seen, 0, seen));
}
