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

pub mod file_store;
pub mod refresh;
pub mod seal;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
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
    store: Store,
}

/// The API server (cluster mode) or the gateway's own records (standalone mode): the same
/// objects and the same patches either way.
#[derive(Clone)]
enum Store {
    Cluster(Box<Api<AccessSession>>),
    Local(std::sync::Arc<crate::sessions::file_store::LocalStore>),
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
    /// The refresh token, already sealed for this session (see [`crate::seal`]).
    pub sealed_refresh_token: Option<String>,
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
    #[error("session {0} kept changing while it was being revoked")]
    Contended(String),
    #[error("invalid session times")]
    Time,
}

impl SessionRecorder {
    /// Records sessions in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            store: Store::Cluster(Box::new(Api::namespaced(client, namespace))),
        }
    }

    /// Records sessions in the gateway's own store (standalone mode).
    pub fn local(store: std::sync::Arc<crate::sessions::file_store::LocalStore>) -> Self {
        Self {
            store: Store::Local(store),
        }
    }

    async fn create_object(&self, object: &AccessSession) -> Result<(), kube::Error> {
        match &self.store {
            Store::Cluster(api) => api.create(&PostParams::default(), object).await.map(|_| ()),
            Store::Local(store) => store.create(object).map(|_| ()),
        }
    }

    async fn get_object(&self, sid: &str) -> Result<Option<AccessSession>, kube::Error> {
        match &self.store {
            Store::Cluster(api) => api.get_opt(sid).await,
            Store::Local(store) => Ok(store.get(sid)),
        }
    }

    /// A JSON merge patch of the object (`status: false`) or its status subresource.
    async fn patch_object(
        &self,
        sid: &str,
        patch: &serde_json::Value,
        status: bool,
    ) -> Result<Option<String>, kube::Error> {
        let written = match &self.store {
            Store::Cluster(api) => {
                let params = PatchParams::default();
                let patch = Patch::Merge(patch);
                if status {
                    api.patch_status(sid, &params, &patch).await?
                } else {
                    api.patch(sid, &params, &patch).await?
                }
            }
            Store::Local(store) => store.patch(sid, patch, status)?,
        };
        Ok(written.metadata.resource_version)
    }

    /// Creates the `AccessSession` of a login, retrying transient failures, then stores its
    /// sealed refresh token in its status. A session whose token cannot be stored is revoked
    /// again and the login refused: a session the gateways could never confirm with the
    /// identity provider is a half-made one.
    pub async fn record(&self, session: &NewSession<'_>) -> Result<(), RecordError> {
        self.create(session).await?;
        let Some(sealed) = &session.sealed_refresh_token else {
            return Ok(());
        };
        let patch = serde_json::json!({
            "status": { "refresh": {
                "sealedToken": sealed,
                "lastRefreshedAt": rfc3339(session.issued_at.max(now_secs())),
            } }
        });
        let stored = retry(|| async {
            self.patch_object(session.sid, &patch, true)
                .await
                .map(|_| ())
        })
        .await;
        if let Err(error) = stored {
            let _ = self
                .revoke(session.sid, "the login could not be completed")
                .await;
            return Err(error);
        }
        Ok(())
    }

    async fn create(&self, session: &NewSession<'_>) -> Result<(), RecordError> {
        let object = build(session)?;
        match retry(|| async { self.create_object(&object).await }).await {
            // Our own earlier attempt got through and its answer was lost: the same login.
            Err(RecordError::Refused(kube::Error::Api(status))) if status.code == 409 => {
                match self.get_object(session.sid).await {
                    Ok(Some(existing)) if existing.spec.subject == session.subject => Ok(()),
                    Ok(_) => Err(RecordError::Collision(session.sid.to_owned())),
                    Err(error) => Err(RecordError::Unavailable(error)),
                }
            }
            other => other,
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
        let now = i64::try_from(crate::clock::now()).unwrap_or(i64::MAX);
        match self.get_object(sid).await {
            // Past its expiry it is over, also when an administrator moved `expiresAt` earlier.
            Ok(Some(session))
                if !session.spec.revoked
                    && session.spec.subject == subject
                    && session.spec.expires_at.0.as_second() > now =>
            {
                Liveness::Live
            }
            Ok(_) => Liveness::Ended,
            Err(error) => {
                warn!(%error, "cannot read the session; treating it as unknown");
                Liveness::Unknown
            }
        }
    }

    /// Marks the session revoked, with `reason`. A session already revoked keeps its first
    /// reason (an administrator's "compromised" is not overwritten by a later logout); a session
    /// gone is fine. Transient failures are retried; the write is conditioned on the version
    /// read, so a concurrent change is read again rather than overwritten.
    pub async fn revoke(&self, sid: &str, reason: &str) -> Result<(), RecordError> {
        for _ in 0..ATTEMPTS {
            let current = match self.get_object(sid).await {
                Ok(Some(current)) => current,
                Ok(None) => return Ok(()),
                Err(error) => {
                    warn!(%error, sid, "reading the session to revoke failed; retrying");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
            if current.spec.revoked {
                return Ok(());
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": current.metadata.resource_version },
                "spec": { "revoked": true, "revocationReason": truncate(reason, 250) },
            });
            let written = retry(|| async {
                match self.patch_object(sid, &patch, false).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(error) => Err(error),
                }
            })
            .await;
            match written {
                Ok(()) => return Ok(()),
                Err(RecordError::Refused(kube::Error::Api(status))) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Err(RecordError::Contended(sid.to_owned()))
    }
}

/// Runs `call` until it succeeds, fails for good, or [`ATTEMPTS`] transient failures.
async fn retry<F, Fut>(mut call: F) -> Result<(), RecordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let mut pause = BACKOFF;
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(status)) if !is_transient(status.code) => {
                return Err(RecordError::Refused(kube::Error::Api(status)));
            }
            Err(error) if attempt >= ATTEMPTS => return Err(RecordError::Unavailable(error)),
            Err(error) => {
                warn!(%error, attempt, "writing the session failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
}

fn now_secs() -> u64 {
    crate::clock::now()
}

/// RFC 3339 text of a unix time, as `metav1.Time` serializes.
fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn unix(time: &Time) -> u64 {
    u64::try_from(time.0.as_second()).unwrap_or(0)
}

/// A refresh lease this gateway holds: until when, and the object's resourceVersion after the
/// lease was written (the outcome is written conditioned on it).
#[derive(Clone, Debug)]
pub struct HeldLease {
    pub until: u64,
    resource_version: Option<String>,
}

/// The outcome of asking for the refresh lease of a session.
#[derive(Debug)]
pub enum Lease {
    /// This gateway holds the lease: redeem the token and report with
    /// [`SessionRecorder::finish_refresh`] before `held.until`.
    Acquired {
        held: HeldLease,
        sealed_token: String,
        subject: String,
        identity_provider: String,
        email: Option<String>,
        groups: Vec<String>,
        /// Set while the provider was failing, kept until a success.
        failing_since: Option<u64>,
    },
    /// Confirmed recently, or another gateway holds the lease, or a failed attempt waits for
    /// its retry: look again at `at` (unix seconds).
    NotDue { at: u64 },
    /// Revoked, expired or gone: stop tracking it.
    Ended,
    /// The session has no refresh token (the provider issued none, or no session key is
    /// configured): nothing to confirm.
    NoToken,
}

/// How a refresh went, to be written back.
#[derive(Debug)]
pub enum RefreshOutcome {
    Confirmed {
        /// A rotated refresh token, sealed.
        sealed_token: Option<String>,
        /// The identity as the provider states it now, when it changed.
        identity: Option<(Option<String>, Vec<String>)>,
    },
    Rejected {
        reason: String,
    },
    Failed {
        error: String,
        since: u64,
        retry_at: u64,
        /// A token the provider rotated before the failure (its ID token did not verify):
        /// stored all the same, or the session could never be confirmed again.
        sealed_token: Option<String>,
    },
    /// Not this gateway's to judge (the token is sealed with a session key it does not have,
    /// mid-rotation): the lease is given back and nothing else is written, so the session is
    /// neither marked failing nor refused while a replica with the key confirms it.
    Deferred {
        reason: String,
    },
}

/// Why the outcome of a refresh was not written.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Another gateway holds the lease now (this one took too long); its outcome wins.
    #[error("the refresh lease was lost before the outcome was written")]
    LostLease,
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl SessionRecorder {
    /// Takes the single-flight refresh lease of `sid` for `holder` when the session is due
    /// (`interval` after its last confirmation). The lease is a status write conditioned on the
    /// resourceVersion just read: of two gateways racing, exactly one write succeeds, and the
    /// other sees `NotDue`. The lease lasts `lease` from the moment it is written — longer than
    /// the caller lets the provider call and the write-back take — so a holder that dies frees
    /// it.
    pub async fn acquire_refresh(
        &self,
        sid: &str,
        holder: &str,
        interval: Duration,
        lease: Duration,
    ) -> Result<Lease, kube::Error> {
        let Some(session) = self.get_object(sid).await? else {
            return Ok(Lease::Ended);
        };
        let now = now_secs();
        if session.spec.revoked
            || session.metadata.deletion_timestamp.is_some()
            || unix(&session.spec.expires_at) <= now
        {
            return Ok(Lease::Ended);
        }
        let refresh = session
            .status
            .as_ref()
            .and_then(|s| s.refresh.clone())
            .unwrap_or_default();
        let Some(sealed_token) = refresh.sealed_token.clone() else {
            return Ok(Lease::NoToken);
        };
        let due = refresh
            .last_refreshed_at
            .as_ref()
            .map_or(0, |t| unix(t) + interval.as_secs());
        let leased = refresh.lease_until.as_ref().map_or(0, unix);
        if due > now || leased > now {
            return Ok(Lease::NotDue {
                at: due.max(leased),
            });
        }
        let until = now_secs() + lease.as_secs();
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": session.metadata.resource_version },
            "status": { "refresh": {
                "holder": holder,
                "leaseUntil": rfc3339(until),
            } }
        });
        match self.patch_object(sid, &patch, true).await {
            Ok(resource_version) => Ok(Lease::Acquired {
                held: HeldLease {
                    until,
                    resource_version,
                },
                sealed_token,
                subject: session.spec.subject,
                identity_provider: session.spec.identity_provider,
                email: session.spec.email,
                groups: session.spec.groups,
                failing_since: refresh.failing_since.as_ref().map(unix),
            }),
            // Someone else wrote first (another gateway's lease, a revocation): look again soon.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Lease::NotDue { at: now + 1 })
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Lease::Ended),
            Err(error) => Err(error),
        }
    }

    /// Writes the outcome of a refresh this gateway holds the lease `held` for.
    ///
    /// The refresh status — above all a rotated refresh token, which is the only one the
    /// provider still accepts — is written first, conditioned on the lease still being ours:
    /// after a conflict (the operator wrote its status, say) the object is read again and the
    /// write repeated as long as `holder` still holds this very lease; transient failures are
    /// retried until the lease runs out. A refusal revokes the session before anything else; a
    /// changed identity is written last.
    pub async fn finish_refresh(
        &self,
        sid: &str,
        holder: &str,
        held: &HeldLease,
        outcome: &RefreshOutcome,
    ) -> Result<(), FinishError> {
        let now = now_secs();
        let refresh = match outcome {
            RefreshOutcome::Confirmed { sealed_token, .. } => {
                let mut r = serde_json::json!({
                    "lastRefreshedAt": rfc3339(now),
                    "failingSince": null,
                    "lastError": null,
                    "holder": null,
                    "leaseUntil": null,
                });
                if let Some(sealed) = sealed_token {
                    r["sealedToken"] = sealed.clone().into();
                }
                r
            }
            RefreshOutcome::Rejected { reason } => serde_json::json!({
                "lastError": truncate(reason, 500),
                "sealedToken": null,
                "holder": null,
                "leaseUntil": null,
            }),
            RefreshOutcome::Failed {
                error,
                since,
                retry_at,
                sealed_token,
            } => {
                let mut r = serde_json::json!({
                    "failingSince": rfc3339(*since),
                    "lastError": truncate(error, 500),
                    "holder": null,
                    "leaseUntil": rfc3339(*retry_at),
                });
                if let Some(sealed) = sealed_token {
                    r["sealedToken"] = sealed.clone().into();
                }
                r
            }
            RefreshOutcome::Deferred { .. } => serde_json::json!({
                "holder": null,
                "leaseUntil": null,
            }),
        };
        if let RefreshOutcome::Rejected { reason } = outcome {
            self.revoke(
                sid,
                &format!("the identity provider refused to refresh the session ({reason})"),
            )
            .await?;
        }
        self.write_under_lease(sid, holder, held, &refresh).await?;
        if let RefreshOutcome::Confirmed {
            identity: Some((email, groups)),
            ..
        } = outcome
        {
            let patch = serde_json::json!({ "spec": { "email": email, "groups": groups } });
            if let Err(error) =
                retry(|| async { self.patch_object(sid, &patch, false).await.map(|_| ()) }).await
            {
                // The token is safe; the identity is re-read at the next refresh.
                warn!(%error, sid, "could not record the session's new identity");
            }
        }
        Ok(())
    }

    async fn write_under_lease(
        &self,
        sid: &str,
        holder: &str,
        held: &HeldLease,
        refresh: &serde_json::Value,
    ) -> Result<(), FinishError> {
        let mut resource_version = held.resource_version.clone();
        let mut pause = BACKOFF;
        loop {
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "status": { "refresh": refresh },
            });
            match self.patch_object(sid, &patch, true).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let current = self
                        .get_object(sid)
                        .await
                        .map_err(|e| FinishError::Record(RecordError::Unavailable(e)))?;
                    let Some(current) = current else {
                        return Ok(());
                    };
                    let lease = current
                        .status
                        .as_ref()
                        .and_then(|s| s.refresh.as_ref())
                        .map(|r| (r.holder.clone(), r.lease_until.as_ref().map(unix)));
                    if lease != Some((Some(holder.to_owned()), Some(held.until))) {
                        return Err(FinishError::LostLease);
                    }
                    resource_version = current.metadata.resource_version;
                }
                Err(kube::Error::Api(status)) if !is_transient(status.code) => {
                    return Err(RecordError::Refused(kube::Error::Api(status)).into());
                }
                Err(error) => {
                    if now_secs() + pause.as_secs() + 1 >= held.until {
                        return Err(RecordError::Unavailable(error).into());
                    }
                    warn!(%error, sid, "writing the refresh outcome failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// At most `max` characters (the CRD's limits are in characters).
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
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
