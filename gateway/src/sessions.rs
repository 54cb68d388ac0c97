//! Every login becomes an `AccessSession` in the cluster, so it can be listed, audited and
//! revoked with `kubectl`. Its name is the session id (`sid`) in every token of the login.
//!
//! The record is written before the browser gets its SSO cookie: a login that cannot be
//! recorded is refused (a clear error page), never half-made. The create is idempotent — the
//! name is chosen by the gateway, so a retry after a lost answer finds its own object — and
//! retried a bounded number of times while the API server is briefly unavailable.
//!
//! The gateway only ever *creates* sessions (and, at logout, sets `revoked`); it never applies
//! a whole spec again, so it cannot write `revoked: false` over a revocation. The API server's
//! CEL rules refuse that anyway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use portcullis_crds::{
    AccessSession, AccessSessionSpec, session::IDENTITY_PROVIDER_LABEL, session::USER_LABEL,
};
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, time::Duration};
use tracing::warn;

/// Attempts to create a session record before giving up.
const ATTEMPTS: u32 = 4;
/// First pause between attempts; doubled each time (0.2 + 0.4 + 0.8 s at most).
const BACKOFF: Duration = Duration::from_millis(200);

/// Where session records go.
#[derive(Clone)]
pub struct SessionRecorder {
    api: Api<AccessSession>,
}

/// A login to record.
#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    pub sid: &'a str,
    pub subject: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    pub identity_provider: &'a str,
    /// When the user authenticated at the identity provider (unix seconds).
    pub issued_at: u64,
    /// The absolute end of the session (unix seconds).
    pub expires_at: u64,
}

/// Why a login could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the Kubernetes API did not accept the session after {ATTEMPTS} attempts: {0}")]
    Unavailable(#[source] kube::Error),
    #[error("the Kubernetes API refused the session: {0}")]
    Refused(#[source] kube::Error),
    #[error("a different session already has the id {0}")]
    Collision(String),
    #[error("invalid session times")]
    Time,
}

impl SessionRecorder {
    /// Records sessions in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// Creates the `AccessSession` of a login, retrying transient failures.
    pub async fn record(&self, session: &NewSession<'_>) -> Result<(), RecordError> {
        let object = build(session)?;
        let mut pause = BACKOFF;
        let mut attempt = 1;
        loop {
            match self.api.create(&PostParams::default(), &object).await {
                Ok(_) => return Ok(()),
                // Our own earlier attempt got through and its answer was lost: the same login.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return match self.api.get(session.sid).await {
                        Ok(existing) if existing.spec.subject == session.subject => Ok(()),
                        Ok(_) => Err(RecordError::Collision(session.sid.to_owned())),
                        Err(error) => Err(RecordError::Unavailable(error)),
                    };
                }
                Err(kube::Error::Api(status)) if !is_transient(status.code) => {
                    return Err(RecordError::Refused(kube::Error::Api(status)));
                }
                Err(error) if attempt >= ATTEMPTS => return Err(RecordError::Unavailable(error)),
                Err(error) => {
                    warn!(%error, attempt, "recording the session failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// What the auth host knows about a session when it is asked to hand it to another app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Live,
    /// Revoked, deleted, or never recorded: absence is not validity.
    Ended,
    /// The API server could not say; the caller fails closed.
    Unknown,
}

impl SessionRecorder {
    /// Whether the session `sid` may still be handed to an app. One read of the API server per
    /// single-sign-on bounce (never per request).
    pub async fn liveness(&self, sid: &str, subject: &str) -> Liveness {
        match self.api.get_opt(sid).await {
            Ok(Some(session)) if !session.spec.revoked && session.spec.subject == subject => {
                Liveness::Live
            }
            Ok(_) => Liveness::Ended,
            Err(error) => {
                warn!(%error, "cannot read the session; treating it as unknown");
                Liveness::Unknown
            }
        }
    }

    /// Marks the session revoked (logout). A session already revoked or gone is fine.
    pub async fn revoke(&self, sid: &str, reason: &str) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "spec": { "revoked": true, "revocationReason": reason } });
        match self
            .api
            .patch(
                sid,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

fn is_transient(code: u16) -> bool {
    matches!(code, 429 | 500 | 502 | 503 | 504)
}

/// The label value that selects every session of one user: the subject itself is not a valid
/// label value in general (length, characters), a digest of it always is.
pub fn user_label(subject: &str) -> String {
    let digest = Sha256::digest(subject.as_bytes());
    crate::hex::encode(&digest[..20])
}

fn build(session: &NewSession<'_>) -> Result<AccessSession, RecordError> {
    let time = |secs: u64| -> Result<Time, RecordError> {
        let secs = i64::try_from(secs).map_err(|_| RecordError::Time)?;
        let at = k8s_openapi::jiff::Timestamp::from_second(secs).map_err(|_| RecordError::Time)?;
        Ok(Time(at))
    };
    let mut labels = BTreeMap::new();
    labels.insert(USER_LABEL.to_owned(), user_label(session.subject));
    if is_label_value(session.identity_provider) {
        labels.insert(
            IDENTITY_PROVIDER_LABEL.to_owned(),
            session.identity_provider.to_owned(),
        );
    }
    Ok(AccessSession {
        metadata: ObjectMeta {
            name: Some(session.sid.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: AccessSessionSpec {
            subject: session.subject.to_owned(),
            email: session.email.map(str::to_owned),
            groups: session.groups.to_vec(),
            identity_provider: session.identity_provider.to_owned(),
            issued_at: time(session.issued_at)?,
            expires_at: time(session.expires_at)?,
            revoked: false,
            revocation_reason: None,
        },
        status: None,
    })
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
