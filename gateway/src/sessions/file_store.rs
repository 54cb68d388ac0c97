//! Standalone mode's session records: the same `AccessSession` objects the cluster would hold,
//! kept by the gateway itself, in memory and (with `--session-store-file`) in a file that
//! survives restarts.
//!
//! Every write goes through the same JSON merge patches the gateway sends the API server
//! (with the same resourceVersion precondition and the same one-way rules), and the session
//! index is fed from the same objects, so a login, a logout, a refresh lease and a refusal
//! behave exactly as in a cluster. One replica only: two gateways would each hold their own
//! records (use cluster mode for a fleet).

use crate::state::session_index::SessionIndex;
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

    /// Creates a session; 409 if the name is taken, as at the API server.
    pub fn create(&self, object: &AccessSession) -> Result<AccessSession, kube::Error> {
        let mut records = self.lock();
        let name = object.metadata.name.clone().unwrap_or_default();
        if records.objects.contains_key(&name) {
            return Err(api_error(
                409,
                "AlreadyExists",
                "the session already exists",
            ));
        }
        let mut object = object.clone();
        object.status = None;
        validate(&object)?;
        self.commit(&mut records, name, object)
    }

    pub fn get(&self, sid: &str) -> Option<AccessSession> {
        self.lock().objects.get(sid).cloned()
    }

    /// Applies a JSON merge patch to the spec (`status: false`) or the status subresource,
    /// honouring a `metadata.resourceVersion` precondition and the CRD's one-way rules.
    pub fn patch(
        &self,
        sid: &str,
        patch: &serde_json::Value,
        status: bool,
    ) -> Result<AccessSession, kube::Error> {
        let mut records = self.lock();
        let current = records
            .objects
            .get(sid)
            .cloned()
            .ok_or_else(|| api_error(404, "NotFound", "no such session"))?;
        if let Some(expected) = patch
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            && Some(expected) != current.metadata.resource_version.as_deref()
        {
            return Err(api_error(409, "Conflict", "the object has been modified"));
        }
        let mut value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
        // Like the API server: the main resource ignores status, the subresource everything
        // but status.
        let part = if status { "status" } else { "spec" };
        if let Some(change) = patch.get(part) {
            let target = value
                .as_object_mut()
                .map(|o| o.entry(part).or_insert(serde_json::Value::Null));
            if let Some(target) = target {
                merge(target, change);
            }
        }
        let updated: AccessSession =
            serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
        if current.spec.revoked && !updated.spec.revoked {
            return Err(api_error(
                422,
                "Invalid",
                "a revoked session cannot be un-revoked",
            ));
        }
        if updated.spec.expires_at.0 > current.spec.expires_at.0
            || updated.spec.subject != current.spec.subject
            || updated.spec.identity_provider != current.spec.identity_provider
            || updated.spec.issued_at != current.spec.issued_at
        {
            return Err(api_error(422, "Invalid", "immutable session fields"));
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
    ) -> Result<AccessSession, kube::Error> {
        let now = crate::clock::now();
        let skew = portcullis_core::token::CLOCK_SKEW_SECS;
        records.objects.retain(|_, s| expiry(s) + skew > now);
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
            return Err(api_error(
                500,
                "InternalError",
                "the session store could not be saved",
            ));
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

fn expiry(session: &AccessSession) -> u64 {
    u64::try_from(session.spec.expires_at.0.as_second()).unwrap_or(0)
}

/// The limits the CRD's schema puts on what the gateway writes, checked here as the API server
/// would: a write the cluster refuses is refused in standalone mode too.
fn validate(session: &AccessSession) -> Result<(), kube::Error> {
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
    } else if refresh.is_some_and(|r| {
        r.sealed_token.as_deref().is_some_and(|t| chars(t) > 8192)
            || r.last_error.as_deref().is_some_and(|e| chars(e) > 512)
            || r.holder.as_deref().is_some_and(|h| chars(h) > 253)
    }) {
        Some("status.refresh: a field is too long")
    } else {
        None
    };
    match problem {
        Some(message) => Err(api_error(422, "Invalid", message)),
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

fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
    kube::Error::Api(Box::new(kube::core::Status {
        code,
        reason: reason.to_owned(),
        message: message.to_owned(),
        ..kube::core::Status::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sid: &str) -> AccessSession {
        portcullis_tests::fixtures::session(sid, false, crate::clock::now())
    }

    fn code(result: Result<AccessSession, kube::Error>) -> u16 {
        match result {
            Err(kube::Error::Api(status)) => status.code,
            other => panic!("expected an API error, got {other:?}"),
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
        assert_eq!(code(store.patch("s1", &stale, true)), 409);
        let fresh = serde_json::json!({ "metadata": { "resourceVersion": created.metadata.resource_version },
            "status": { "refresh": { "holder": "g1" } } });
        let leased = store.patch("s1", &fresh, true).expect("leased");
        // Status writes leave the spec alone, and the other way round.
        let sneaky = serde_json::json!({ "spec": { "revoked": true } });
        let same = store.patch("s1", &sneaky, true).expect("ignored");
        assert!(!same.spec.revoked);
        assert_eq!(
            same.metadata.resource_version,
            leased.metadata.resource_version
        );
        store.patch("s1", &sneaky, false).expect("revoked");
        let undo = serde_json::json!({ "spec": { "revoked": false } });
        assert_eq!(code(store.patch("s1", &undo, false)), 422);
        let later = serde_json::json!({ "spec": { "expiresAt": "2999-01-01T00:00:00Z" } });
        assert_eq!(code(store.patch("s1", &later, false)), 422);
        let long = serde_json::json!({ "spec": { "groups": ["x".repeat(257)] } });
        assert_eq!(code(store.patch("s1", &long, false)), 422);
        assert!(store.index().borrow().entries["s1"].ended);
        assert_eq!(code(store.patch("nope", &sneaky, false)), 404);
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
        assert_eq!(code(reopened.patch("s1", &revoke, false)), 500);
        assert!(!reopened.get("s1").expect("kept").spec.revoked);
        assert!(!reopened.index().borrow().entries["s1"].ended);
    }
}
