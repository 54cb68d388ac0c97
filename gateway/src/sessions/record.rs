//! Recording a login, asking whether it is still live, and revoking it.

use super::{
    api_store::ApiStore,
    file_store::LocalStore,
    store::{Clear, SessionPatch, SessionStore, StoreError, time, try_time},
};
use kube::{Client, api::ObjectMeta};
use portcullis_crds::{
    AccessSession, AccessSessionSpec, session::IDENTITY_PROVIDER_LABEL, session::RefreshStatus,
    session::USER_LABEL,
};
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tracing::warn;

/// Attempts to create a session record before giving up.
pub(super) const ATTEMPTS: u32 = 4;
/// First pause between attempts; doubled each time (0.2 + 0.4 + 0.8 s at most).
pub(super) const BACKOFF: Duration = Duration::from_millis(200);

/// Where session records go.
#[derive(Clone)]
pub struct SessionRecorder {
    /// The API server (cluster mode) or the gateway's own records (standalone mode): the same
    /// objects and the same patches either way.
    pub(super) store: Arc<dyn SessionStore>,
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
    /// The refresh token, already sealed for this session (see [`super::seal`]).
    pub sealed_refresh_token: Option<String>,
    /// The login's ID token, already sealed for this session
    /// ([`super::seal::KeyRing::seal_id_token`]), for `id_token_hint` at logout.
    pub sealed_id_token: Option<String>,
    /// A random value of this one attempt to record the login, kept on the object: a create
    /// that finds the name taken by an object with the same value is this attempt's own (an
    /// answer lost on the way), any other is a second login under the same id.
    pub attempt: &'a str,
    /// The provider's own session id (the ID token's `sid`), for back-channel logout.
    pub provider_session_id: Option<&'a str>,
}

/// The annotation holding [`NewSession::attempt`].
pub const ATTEMPT_ANNOTATION: &str = "access.portcullis.dev/login-attempt";

impl NewSession<'_> {
    /// The session as its object reads once recorded: live, until its expiry.
    pub fn observed(&self) -> portcullis_protocol::SessionEntry {
        portcullis_protocol::SessionEntry {
            sid: self.sid.to_owned(),
            subject: self.subject.to_owned(),
            expires_at: self.expires_at,
            ended: false,
            refresh_failing_since: None,
            refreshed_at: None,
            email: self.email.map(str::to_owned),
            groups: self.groups.to_vec(),
        }
    }
}

/// Why a login could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the session store did not accept the session after {ATTEMPTS} attempts: {0}")]
    Unavailable(#[source] StoreError),
    #[error("the session store refused the session: {0}")]
    Refused(#[source] StoreError),
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
        Self::with_store(Arc::new(ApiStore::new(client, namespace)))
    }

    /// Records sessions in the gateway's own store (standalone mode).
    pub fn local(store: Arc<LocalStore>) -> Self {
        Self::with_store(store)
    }

    /// Records sessions in `store`.
    pub fn with_store(store: Arc<dyn SessionStore>) -> Self {
        Self { store }
    }

    /// Creates the `AccessSession` of a login, retrying transient failures, then stores its
    /// sealed refresh and ID tokens in its status. A session whose refresh token cannot be
    /// stored is revoked again and the login refused: a session the gateways could never
    /// confirm with the identity provider is a half-made one. A session with only an ID token
    /// to store stands without it (logout then sends no `id_token_hint`).
    pub async fn record(&self, session: &NewSession<'_>) -> Result<(), RecordError> {
        self.create(session).await?;
        if session.sealed_refresh_token.is_none() && session.sealed_id_token.is_none() {
            return Ok(());
        }
        let refresh = RefreshStatus {
            sealed_token: session.sealed_refresh_token.clone(),
            sealed_id_token: session.sealed_id_token.clone(),
            last_refreshed_at: session
                .sealed_refresh_token
                .as_ref()
                .map(|_| time(session.issued_at.max(crate::clock::now()))),
            ..RefreshStatus::default()
        };
        let patch = SessionPatch::refresh(refresh, Clear::default());
        let stored =
            retry(|| async { self.store.patch(session.sid, &patch).await.map(|_| ()) }).await;
        match stored {
            Err(error) if session.sealed_refresh_token.is_none() => {
                warn!(%error, sid = session.sid, "could not keep the session's ID token");
                Ok(())
            }
            Err(error) => {
                let _ = self
                    .revoke(session.sid, "the login could not be completed")
                    .await;
                Err(error)
            }
            Ok(()) => Ok(()),
        }
    }

    /// The session object `sid` as the store has it now, if it exists (one read, no retry: the
    /// caller is a request waiting for the answer).
    pub async fn read(&self, sid: &str) -> Result<Option<AccessSession>, StoreError> {
        self.store.get(sid).await
    }

    async fn create(&self, session: &NewSession<'_>) -> Result<(), RecordError> {
        let object = build(session)?;
        match retry(|| self.store.create(&object)).await {
            // Our own earlier attempt got through and its answer was lost: the same login. An
            // object made by another attempt (another callback of the same login state, on
            // this replica or another) is a collision, never adopted.
            Err(RecordError::Refused(StoreError::Conflict)) => {
                match self.store.get(session.sid).await {
                    Ok(Some(existing)) if attempt_of(&existing) == Some(session.attempt) => Ok(()),
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
        match self.store.get(sid).await {
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
            let current = match self.store.get(sid).await {
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
            let patch = revocation(reason).if_version(current.metadata.resource_version);
            let written = retry(|| async {
                match self.store.patch(sid, &patch).await {
                    Ok(_) | Err(StoreError::NotFound) => Ok(()),
                    Err(error) => Err(error),
                }
            })
            .await;
            match written {
                Ok(()) => return Ok(()),
                Err(RecordError::Refused(StoreError::Conflict)) => {}
                Err(error) => return Err(error),
            }
        }
        Err(RecordError::Contended(sid.to_owned()))
    }
}

impl SessionRecorder {
    /// The sessions of `identity_provider` a back-channel logout names and that are not yet
    /// revoked (see [`named_by_logout`]).
    pub async fn named_by_logout(
        &self,
        identity_provider: &str,
        provider_sid: Option<&str>,
        subject: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let sessions = self.store.list_by_provider(identity_provider).await?;
        Ok(sessions
            .into_iter()
            .filter(|s| !s.spec.revoked && named_by_logout(&s.spec, provider_sid, subject))
            .filter_map(|s| s.metadata.name)
            .collect())
    }
}

/// Whether a back-channel logout naming the provider session `provider_sid` and/or the user
/// `subject` ends `session`: with a `sid`, only the sessions recorded with that `sid` (and,
/// when `sub` is given too, of that subject); with only `sub`, every session of the subject.
/// A session recorded without a `sid` (an older one, or a provider that sends none) is ended
/// only by a `sub`-only logout.
pub fn named_by_logout(
    session: &AccessSessionSpec,
    provider_sid: Option<&str>,
    subject: Option<&str>,
) -> bool {
    match (provider_sid, subject) {
        (Some(sid), subject) => {
            session.provider_session_id.as_deref() == Some(sid)
                && subject.is_none_or(|sub| session.subject == sub)
        }
        (None, Some(sub)) => session.subject == sub,
        (None, None) => false,
    }
}

/// The write that revokes a session with `reason`.
fn revocation(reason: &str) -> SessionPatch {
    // The spec has no partial type to serialize (its required fields would be sent too): the
    // two fields a revocation sets, by name.
    SessionPatch::spec(serde_json::json!({
        "revoked": true,
        "revocationReason": truncate(reason, 250),
    }))
}

/// Runs `call` until it succeeds, fails for good, or [`ATTEMPTS`] transient failures.
pub(super) async fn retry<F, Fut>(mut call: F) -> Result<(), RecordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut pause = BACKOFF;
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(()) => return Ok(()),
            Err(error) if !error.is_transient() => return Err(RecordError::Refused(error)),
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

/// At most `max` characters (the CRD's limits are in characters).
pub(super) fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The label value that selects every session of one user: the subject itself is not a valid
/// label value in general (length, characters), a digest of it always is.
pub fn user_label(subject: &str) -> String {
    let digest = Sha256::digest(subject.as_bytes());
    crate::hex::encode(&digest[..20])
}

fn build(session: &NewSession<'_>) -> Result<AccessSession, RecordError> {
    let time = |secs: u64| try_time(secs).ok_or(RecordError::Time);
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
            annotations: Some(BTreeMap::from([(
                ATTEMPT_ANNOTATION.to_owned(),
                session.attempt.to_owned(),
            )])),
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
            revoked_by: None,
            provider_session_id: session.provider_session_id.map(str::to_owned),
        },
        status: None,
    })
}

/// The login attempt that created `session`.
fn attempt_of(session: &AccessSession) -> Option<&str> {
    session
        .metadata
        .annotations
        .as_ref()?
        .get(ATTEMPT_ANNOTATION)
        .map(String::as_str)
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests;
