//! Where `AccessSession` objects are kept: the API server in a cluster ([`super::api_store`]), the
//! gateway's own records in standalone mode ([`super::file_store`]). Both take the same writes —
//! a create, and JSON merge patches of the spec or the status, optionally conditioned on the
//! resourceVersion read — and answer with the same [`StoreError`]s, so the recorder never knows
//! which one it talks to.

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portcullis_crds::{AccessSession, session::AccessSessionStatus, session::RefreshStatus};

/// A store of `AccessSession` objects.
pub trait SessionStore: Send + Sync {
    /// Creates `session`; [`StoreError::Conflict`] when its name is taken.
    fn create<'a>(&'a self, session: &'a AccessSession) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The session named `sid`, `None` when there is none.
    fn get<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<Option<AccessSession>, StoreError>>;

    /// Applies `patch` to the session `sid` and returns its new resourceVersion.
    fn patch<'a>(
        &'a self,
        sid: &'a str,
        patch: &'a SessionPatch,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Every session that logged in through `identity_provider` (a back-channel logout
    /// picks among them).
    fn list_by_provider<'a>(
        &'a self,
        identity_provider: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AccessSession>, StoreError>>;
}

/// Why a store did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name of a new session is taken, or a write's resourceVersion precondition no longer
    /// holds (HTTP 409 at the API server).
    #[error("the session already exists or was changed meanwhile")]
    Conflict,
    /// No such session (HTTP 404).
    #[error("no such session")]
    NotFound,
    /// Refused for good (the CRD's schema or one-way rules, permissions): trying again does not
    /// help.
    #[error("refused: {0}")]
    Refused(String),
    /// Not reachable or not able to write right now: worth another try.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether trying the same call again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Which part of the object a patch writes (the API server's main resource ignores `status`,
/// the status subresource everything but `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Spec,
    Status,
    /// The object's metadata (annotations), written through the main resource.
    Metadata,
}

impl Part {
    /// The object's field this part is.
    pub fn field(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::Status => "status",
            Self::Metadata => "metadata",
        }
    }
}

/// A JSON merge patch (RFC 7386) of one part of a session.
#[derive(Clone, Debug)]
pub struct SessionPatch {
    /// Applied only while the object's resourceVersion is this one; otherwise
    /// [`StoreError::Conflict`].
    pub resource_version: Option<String>,
    pub part: Part,
    /// The merge patch of that part.
    pub change: serde_json::Value,
}

impl SessionPatch {
    /// A patch of the spec, unconditioned.
    pub fn spec(change: serde_json::Value) -> Self {
        Self {
            resource_version: None,
            part: Part::Spec,
            change,
        }
    }

    /// A patch of `status.refresh`: every field of `set` that has a value is written, and every
    /// field `clear` names is removed. `RefreshStatus` leaves its `None` fields out when
    /// serialized, so it cannot say "remove": a merge patch removes a field with an explicit
    /// `null`, which is added here for each cleared field.
    pub fn refresh(set: RefreshStatus, clear: Clear) -> Self {
        let status = AccessSessionStatus {
            refresh: Some(set),
            ..AccessSessionStatus::default()
        };
        let mut change = serde_json::to_value(&status).unwrap_or_default();
        // The one field of the status written is `refresh`.
        let refresh = change
            .as_object_mut()
            .and_then(|status| status.values_mut().next())
            .and_then(serde_json::Value::as_object_mut);
        if let Some(refresh) = refresh {
            for name in clear.names() {
                refresh.insert(name, serde_json::Value::Null);
            }
        }
        Self {
            resource_version: None,
            part: Part::Status,
            change,
        }
    }

    /// The same patch, conditioned on `resource_version`.
    pub fn if_version(mut self, resource_version: Option<String>) -> Self {
        self.resource_version = resource_version;
        self
    }

    /// The patch as sent: `{"metadata": {"resourceVersion": …}, "<part>": change}`, without
    /// `metadata` when unconditioned.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert(self.part.field().to_owned(), self.change.clone());
        if let Some(version) = &self.resource_version {
            let metadata = body
                .entry("metadata")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.insert(
                    "resourceVersion".to_owned(),
                    serde_json::Value::String(version.clone()),
                );
            }
        }
        serde_json::Value::Object(body)
    }
}

/// The fields of `status.refresh` a write removes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clear {
    pub sealed_token: bool,
    pub sealed_id_token: bool,
    pub holder: bool,
    pub lease_until: bool,
    pub last_refreshed_at: bool,
    pub failing_since: bool,
    pub last_error: bool,
}

impl Clear {
    /// The refresh claim (`holder`, `leaseUntil`), which every outcome of a refresh gives back.
    pub const CLAIM: Self = Self {
        sealed_token: false,
        sealed_id_token: false,
        holder: true,
        lease_until: true,
        last_refreshed_at: false,
        failing_since: false,
        last_error: false,
    };

    /// The names of the cleared fields as the CRD spells them: a `RefreshStatus` with a
    /// placeholder in each cleared field, serialized, has exactly those keys.
    fn names(self) -> Vec<String> {
        let text = |clear: bool| clear.then(String::new);
        let time = |clear: bool| clear.then(|| time(0));
        let marked = RefreshStatus {
            sealed_token: text(self.sealed_token),
            sealed_id_token: text(self.sealed_id_token),
            holder: text(self.holder),
            lease_until: time(self.lease_until),
            last_refreshed_at: time(self.last_refreshed_at),
            failing_since: time(self.failing_since),
            last_error: text(self.last_error),
        };
        match serde_json::to_value(marked) {
            Ok(serde_json::Value::Object(fields)) => fields.into_iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }
}

/// A unix time as `metav1.Time`; the epoch when it is out of range.
pub fn time(secs: u64) -> Time {
    try_time(secs).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

/// A unix time as `metav1.Time`, `None` when it is out of range.
pub fn try_time(secs: u64) -> Option<Time> {
    let secs = i64::try_from(secs).ok()?;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .ok()
        .map(Time)
}

/// A `metav1.Time` as unix seconds (0 before the epoch).
pub fn unix(time: &Time) -> u64 {
    u64::try_from(time.0.as_second()).unwrap_or(0)
}
