//! Objects for unit tests that need an `AccessSession` but no cluster.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::api::ObjectMeta;
use portcullis_crds::{AccessSession, AccessSessionSpec};

/// Session `name` of subject `alice` at identity provider `dex`, logged in at `issued_at`
/// (unix seconds) for an hour.
pub fn session(name: &str, revoked: bool, issued_at: u64) -> AccessSession {
    let at = |s: u64| {
        Time(Timestamp::from_second(i64::try_from(s).expect("time in range")).expect("time"))
    };
    AccessSession {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: AccessSessionSpec {
            subject: "alice".into(),
            email: None,
            groups: vec![],
            identity_provider: "dex".into(),
            issued_at: at(issued_at),
            expires_at: at(issued_at + 3600),
            revoked,
            revocation_reason: None,
        },
        status: None,
    }
}
