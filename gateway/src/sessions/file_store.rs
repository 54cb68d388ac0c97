//! Standalone mode's session records: the same `AccessSession` objects the cluster would hold,
//! kept by the gateway itself, in memory and (with `--session-store-file`) in a file that
//! survives restarts.
//!
//! Every write goes through the same JSON merge patches the gateway sends the API server
//! (with the same resourceVersion precondition and the same one-way rules), and the session
//! index is fed from the same objects, so a login, a logout, a refresh claim and a refusal
//! behave exactly as in a cluster. One replica only: two gateways would each hold their own
//! records (use cluster mode for a fleet).

use super::store::{Part, SessionPatch, SessionStore, StoreError, unix};
use crate::state::session_index::SessionIndex;
use futures::future::BoxFuture;
use portcullis_crds::AccessSession;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};
use tokio::sync::watch;
use tracing::warn;

/// Why the store file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    #[error("cannot read the session store {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the session store {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the session store {path} could not be saved: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The gateway's own session records.
pub struct LocalStore {
    sessions: Mutex<Records>,
    file: Option<PathBuf>,
    index: watch::Sender<Arc<SessionIndex>>,
}

#[derive(Default)]
struct Records {
    objects: BTreeMap<String, AccessSession>,
    /// resourceVersion of the last write, as the API server's: preconditions work the same.
    version: u64,
}

impl LocalStore {
    /// Opens the store, loading `file` when it exists.
    pub fn open(file: Option<PathBuf>) -> Result<Arc<Self>, LocalStoreError> {
        let mut records = Records::default();
        if let Some(path) = &file
            && path.exists()
        {
            let text = std::fs::read(path).map_err(|source| LocalStoreError::Read {
                path: path.clone(),
                source,
            })?;
            let objects: Vec<AccessSession> =
                serde_json::from_slice(&text).map_err(|source| LocalStoreError::Parse {
                    path: path.clone(),
                    source,
                })?;
            for object in objects {
                let version = object
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                records.version = records.version.max(version);
                if let Some(name) = object.metadata.name.clone() {
                    records.objects.insert(name, object);
                }
            }
        }
        let (index, _) = watch::channel(Arc::new(SessionIndex::default()));
        let store = Arc::new(Self {
            sessions: Mutex::new(records),
            file,
            index,
        });
        store.publish(&store.lock());
        Ok(store)
    }

    /// The session index built from the records, updated on every write.
    pub fn index(&self) -> watch::Receiver<Arc<SessionIndex>> {
        self.index.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a session; a conflict if the name is taken, as at the API server.
    pub fn create(&self, object: &AccessSession) -> Result<AccessSession, StoreError> {
        let mut records = self.lock();
        let name = object.metadata.name.clone().unwrap_or_default();
        if records.objects.contains_key(&name) {
            return Err(StoreError::Conflict);
        }
        let mut object = object.clone();
        object.status = None;
        validate(&object)?;
        self.commit(&mut records, name, object)
    }

    pub fn get(&self, sid: &str) -> Option<AccessSession> {
        self.lock().objects.get(sid).cloned()
    }

    /// Applies a JSON merge patch, as sent to the API server ([`SessionPatch::body`]), to the
    /// spec or the status subresource, honouring a `metadata.resourceVersion` precondition and
    /// the CRD's one-way rules.
    pub fn patch(
        &self,
        sid: &str,
        patch: &serde_json::Value,
        part: Part,
    ) -> Result<AccessSession, StoreError> {
        let mut records = self.lock();
        let current = records
            .objects
            .get(sid)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if let Some(expected) = patch
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            && Some(expected) != current.metadata.resource_version.as_deref()
        {
            return Err(StoreError::Conflict);
        }
        let mut value = serde_json::to_value(&current).map_err(invalid)?;
        // Like the API server: the main resource ignores status, the subresource everything
        // but status.
        let part = part.field();
        if let Some(change) = patch.get(part) {
            let target = value
                .as_object_mut()
                .map(|o| o.entry(part).or_insert(serde_json::Value::Null));
            if let Some(target) = target {
                merge(target, change);
            }
        }
        let updated: AccessSession = serde_json::from_value(value).map_err(invalid)?;
        if current.spec.revoked && !updated.spec.revoked {
            return Err(StoreError::Refused(
                "a revoked session cannot be un-revoked".to_owned(),
            ));
        }
        if updated.spec.expires_at.0 > current.spec.expires_at.0
            || updated.spec.subject != current.spec.subject
            || updated.spec.identity_provider != current.spec.identity_provider
            || updated.spec.issued_at != current.spec.issued_at
        {
            return Err(StoreError::Refused("immutable session fields".to_owned()));
        }
        if updated == current {
            return Ok(current);
        }
        validate(&updated)?;
        self.commit(&mut records, sid.to_owned(), updated)
    }

    /// Stores `object` under a new resourceVersion, durably: when the file cannot be written the
    /// change is undone and the caller gets an error (a logout is not reported done and then
    /// lost at the next restart).
    fn commit(
        &self,
        records: &mut Records,
        name: String,
        mut object: AccessSession,
    ) -> Result<AccessSession, StoreError> {
        let now = crate::clock::now();
        let skew = portcullis_core::token::CLOCK_SKEW_SECS;
        records
            .objects
            .retain(|_, s| unix(&s.spec.expires_at) + skew > now);
        records.version += 1;
        object.metadata.resource_version = Some(records.version.to_string());
        let previous = records.objects.insert(name.clone(), object.clone());
        if let Some(path) = &self.file
            && let Err(error) = persist(path, records)
        {
            match previous {
                Some(previous) => records.objects.insert(name, previous),
                None => records.objects.remove(&name),
            };
            warn!(%error, path = %path.display(), "could not save the session store");
            return Err(StoreError::Unavailable(Box::new(LocalStoreError::Write {
                path: path.clone(),
                source: error,
            })));
        }
        self.publish(records);
        Ok(object)
    }

    fn publish(&self, records: &Records) {
        let now = crate::clock::now();
        let mut index = SessionIndex::from_objects(records.objects.values(), now);
        index.synced = true;
        self.index.send_replace(Arc::new(index));
    }
}

/// The limits the CRD's schema puts on what the gateway writes, checked here as the API server
/// would: a write the cluster refuses is refused in standalone mode too.
fn validate(session: &AccessSession) -> Result<(), StoreError> {
    let chars = |s: &str| s.chars().count();
    let spec = &session.spec;
    let refresh = session.status.as_ref().and_then(|s| s.refresh.as_ref());
    let problem = if spec.expires_at.0 <= spec.issued_at.0 {
        Some("expiresAt must be after issuedAt")
    } else if spec.groups.len() > 512 || spec.groups.iter().any(|g| chars(g) > 256) {
        Some("groups: at most 512 of at most 256 characters")
    } else if spec.email.as_deref().is_some_and(|e| chars(e) > 320) {
        Some("email: at most 320 characters")
    } else if spec
        .revocation_reason
        .as_deref()
        .is_some_and(|r| chars(r) > 256)
    {
        Some("revocationReason: at most 256 characters")
    } else if spec
        .provider_session_id
        .as_deref()
        .is_some_and(|p| p.is_empty() || chars(p) > 255)
    {
        Some("providerSessionId: 1 to 255 characters")
    } else if refresh.is_some_and(|r| {
        r.sealed_token.as_deref().is_some_and(|t| chars(t) > 8192)
            || r.sealed_id_token
                .as_deref()
                .is_some_and(|t| chars(t) > 16384)
            || r.last_error.as_deref().is_some_and(|e| chars(e) > 512)
            || r.holder.as_deref().is_some_and(|h| chars(h) > 253)
    }) {
        Some("status.refresh: a field is too long")
    } else {
        None
    };
    match problem {
        Some(message) => Err(StoreError::Refused(message.to_owned())),
        None => Ok(()),
    }
}

/// Writes the records atomically (a new file, synced, renamed over the old one, and the
/// directory synced so the rename survives a crash).
fn persist(path: &Path, records: &Records) -> std::io::Result<()> {
    let all: Vec<&AccessSession> = records.objects.values().collect();
    let text = serde_json::to_vec(&all).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(target) = target.as_object_mut() {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(
                    target.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    }
}

/// An object the patch made unreadable, refused as the API server refuses what its schema does
/// not allow.
fn invalid(error: serde_json::Error) -> StoreError {
    StoreError::Refused(error.to_string())
}

/// The same writes, answered at once: the records are in memory (and the file is written before
/// a write returns).
impl SessionStore for LocalStore {
    fn create<'a>(&'a self, session: &'a AccessSession) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(
            LocalStore::create(self, session).map(|_| ()),
        ))
    }

    fn get<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<Option<AccessSession>, StoreError>> {
        Box::pin(std::future::ready(Ok(LocalStore::get(self, sid))))
    }

    fn patch<'a>(
        &'a self,
        sid: &'a str,
        patch: &'a SessionPatch,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let written = LocalStore::patch(self, sid, &patch.body(), patch.part);
        Box::pin(std::future::ready(
            written.map(|object| object.metadata.resource_version),
        ))
    }

    fn list_by_provider<'a>(
        &'a self,
        identity_provider: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AccessSession>, StoreError>> {
        let found = self
            .lock()
            .objects
            .values()
            .filter(|s| s.spec.identity_provider == identity_provider)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[cfg(test)]
mod tests;
