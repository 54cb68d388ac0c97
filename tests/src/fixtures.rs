//! Objects for tests: an `AccessSession` for unit tests that need no cluster, and policy
//! manifests for a gateway's policy directory.

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
            revoked_by: None,
            provider_session_id: None,
        },
        status: None,
    }
}

/// Policy manifests (namespace `demo`) admitting `@example.com` through Dex, one per (name,
/// host), all in front of `upstream` (`host:port`).
pub fn email_domain_policies(upstream: &str, policies: &[(&str, &str)]) -> String {
    policies
        .iter()
        .map(|(name, host)| {
            format!(
                r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: {name}, namespace: demo }}
spec:
  hosts: [{host}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
---"#
            )
        })
        .collect()
}
