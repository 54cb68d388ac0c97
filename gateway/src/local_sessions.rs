//! Standalone mode's session records: the same `AccessSession` objects the cluster would hold,
//! kept by the gateway itself, in memory and (with `--session-store-file`) in a file that
//! survives restarts.
//!
//! Every write goes through the same JSON merge patches the gateway sends the API server
//! (with the same resourceVersion precondition and the same one-way rules), and the session
//! index is fed from the same objects, so a login, a logout, a refresh lease and a refusal
//! behave exactly as in a cluster. One replica only: two gateways would each hold their own
//! records (use cluster mode for a fleet).

use crate::session_index::SessionIndex;
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
        records.version += 1;
        let mut object = object.clone();
        object.metadata.resource_version = Some(records.version.to_string());
        object.status = None;
        records.objects.insert(name, object.clone());
        self.persist_and_publish(&records);
        Ok(object)
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
        let mut updated: AccessSession =
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
        records.version += 1;
        updated.metadata.resource_version = Some(records.version.to_string());
        records.objects.insert(sid.to_owned(), updated.clone());
        self.persist_and_publish(&records);
        Ok(updated)
    }

    fn persist_and_publish(&self, records: &Records) {
        let now = crate::gateway::now();
        if let Some(path) = &self.file
            && let Err(error) = persist(path, records, now)
        {
            warn!(%error, path = %path.display(), "could not save the session store");
        }
        self.publish(records);
    }

    fn publish(&self, records: &Records) {
        let now = crate::gateway::now();
        let mut index = SessionIndex::from_objects(records.objects.values(), now);
        index.synced = true;
        self.index.send_replace(Arc::new(index));
    }
}

/// Writes the records that can still matter (not past expiry plus clock skew) atomically.
fn persist(path: &Path, records: &Records, now: u64) -> std::io::Result<()> {
    let skew = portcullis_core::token::CLOCK_SKEW_SECS;
    let live: Vec<&AccessSession> = records
        .objects
        .values()
        .filter(|s| u64::try_from(s.spec.expires_at.0.as_second()).unwrap_or(0) + skew > now)
        .collect();
    let text = serde_json::to_vec(&live).map_err(std::io::Error::other)?;
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
    std::fs::rename(&tmp, path)
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
