//! The Lease record as the election reads it: who holds it, whether it changed, what to do
//! about it ([`decide`], pure), and where a follower finds the leader ([`leader_url`]).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Api;
use std::time::{Duration, Instant};

/// Annotation naming the holder that published [`LEADER_URL_ANNOTATION`].
pub const LEADER_IDENTITY_ANNOTATION: &str = "access.portcullis.dev/leader-identity";
/// Annotation with the holder's `--advertise-url`.
pub const LEADER_URL_ANNOTATION: &str = "access.portcullis.dev/leader-url";
/// How long a lease is valid without renewal: a killed leader is replaced within about this
/// (plus the election's retry period).
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// What to do with the Lease as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it lapse: take it.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// The part of a Lease record that changes when its holder renews or changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    transitions: Option<i32>,
}

impl Record {
    /// Who holds the Lease, if anyone.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    pub fn of(spec: Option<&LeaseSpec>) -> Self {
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0.to_string())),
            transitions: spec.and_then(|s| s.lease_transitions),
        }
    }
}

/// Decides from the record read, when this replica first saw that same record, and the lease
/// duration the record announces. Pure, so the rules are unit-tested.
pub fn decide(
    record: &Record,
    me: &str,
    unchanged_since: Instant,
    duration: Duration,
    now: Instant,
) -> Step {
    match &record.holder {
        None => Step::Acquire,
        Some(holder) if holder == me => Step::Renew,
        Some(_) if now.saturating_duration_since(unchanged_since) >= duration => Step::Acquire,
        Some(_) => Step::Follow,
    }
}

/// The leader's URL if another replica holds the Lease and published it.
pub async fn leader_url(
    leases: &Api<Lease>,
    name: &str,
    me: &str,
) -> Result<Option<String>, kube::Error> {
    let Some(lease) = leases.get_opt(name).await? else {
        return Ok(None);
    };
    let holder = Record::of(lease.spec.as_ref()).holder;
    let annotations = lease.metadata.annotations.unwrap_or_default();
    let published = annotations.get(LEADER_IDENTITY_ANNOTATION);
    Ok(match (holder, published) {
        (Some(holder), Some(published)) if holder == *published && holder != me => {
            annotations.get(LEADER_URL_ANNOTATION).cloned()
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, renew: &str) -> Record {
        Record {
            holder: holder.map(str::to_owned),
            renew_time: Some(renew.to_owned()),
            transitions: Some(1),
        }
    }

    #[test]
    fn a_free_lease_is_taken_at_once_and_our_own_is_renewed() {
        let now = Instant::now();
        let d = LEASE_DURATION;
        assert_eq!(decide(&record(None, "t"), "me", now, d, now), Step::Acquire);
        assert_eq!(decide(&Record::of(None), "me", now, d, now), Step::Acquire);
        let empty = Record::of(Some(&LeaseSpec {
            holder_identity: Some(String::new()),
            ..LeaseSpec::default()
        }));
        assert_eq!(decide(&empty, "me", now, d, now), Step::Acquire);
        // A replica restarted under the same identity continues its own lease.
        assert_eq!(
            decide(&record(Some("me"), "t"), "me", now, d, now),
            Step::Renew
        );
    }

    #[test]
    fn another_holder_is_followed_until_its_record_stood_still_for_the_duration() {
        let seen = Instant::now();
        let d = LEASE_DURATION;
        let other = record(Some("other"), "t");
        assert_eq!(decide(&other, "me", seen, d, seen), Step::Follow);
        assert_eq!(
            decide(&other, "me", seen, d, seen + d - Duration::from_millis(1)),
            Step::Follow
        );
        assert_eq!(decide(&other, "me", seen, d, seen + d), Step::Acquire);
        // The duration the record announces counts, not ours.
        let long = Duration::from_secs(60);
        assert_eq!(decide(&other, "me", seen, long, seen + d), Step::Follow);
    }

    #[test]
    fn records_differ_when_the_holder_renews_or_changes() {
        assert_ne!(record(Some("a"), "t1"), record(Some("a"), "t2"));
        assert_ne!(record(Some("a"), "t1"), record(Some("b"), "t1"));
        assert_eq!(record(Some("a"), "t1"), record(Some("a"), "t1"));
    }
}
