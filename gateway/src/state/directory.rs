//! Standalone mode's source of access state: `AccessPolicy` and `Secret` manifests (the same
//! YAML users `kubectl apply`) in a directory, reloaded when a file changes. `AccessHost` and
//! `Namespace` manifests state which namespace may claim which host, judged by the same rule as
//! in a cluster ([`portcullis_core::tenancy`]): a refused policy is left out and reported.
//!
//! The directory is polled (a fingerprint of names, sizes and modification times each second)
//! rather than watched with inotify: polling works the same on every filesystem, including the
//! symlink swaps of mounted ConfigMaps.

use crate::state::{self, SecretManifest, Snapshot, manifest::DEFAULT_NAMESPACE};
use portcullis_core::tenancy::{Claim, HostGrant, Labels, Ownership, Unclaimed};
use portcullis_crds::{AccessHost, AccessPolicy};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::watch;
use tracing::{info, warn};

/// Why the directory could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read policy directory {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A manifest that cannot be read is never half-applied: its policies would vanish and
    /// their paths fall to a shorter (perhaps public) prefix.
    #[error("{file}: {detail}")]
    Manifest { file: String, detail: String },
}

/// Loads every manifest in `dir` into a snapshot with `version`.
pub fn load(
    dir: &Path,
    version: u64,
    known_idps: &dyn Fn(&str) -> bool,
    highest_epochs: &mut HashMap<(String, String), i64>,
) -> Result<Snapshot, SourceError> {
    let mut manifests = Manifests::default();
    for file in manifest_files(dir)? {
        manifests.read(&file)?;
    }
    let Manifests {
        mut policies,
        secrets,
        mut problems,
        grants,
        namespaces,
    } = manifests;
    keep_claimed_hosts(&mut policies, &grants, &namespaces, &mut problems);
    keep_highest_epochs(&mut policies, highest_epochs, &mut problems);
    let mut snapshot = state::build(version, &policies, &secrets, known_idps);
    problems.append(&mut snapshot.problems);
    snapshot.problems = problems;
    Ok(snapshot)
}

/// The `.yaml` and `.yml` files of `dir`, sorted: the same files always load the same way.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| SourceError::Read {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The manifests read so far, and what was skipped.
#[derive(Default)]
struct Manifests {
    policies: Vec<AccessPolicy>,
    secrets: HashMap<(String, String), SecretManifest>,
    problems: Vec<String>,
    grants: Vec<HostGrant>,
    /// Labels of the `Namespace` manifests, for selector grants.
    namespaces: HashMap<String, Labels>,
}

impl Manifests {
    /// Adds every document of `file`. A document that cannot be read fails the whole load (see
    /// [`SourceError::Manifest`]); one of another kind is skipped, and said so.
    fn read(&mut self, file: &Path) -> Result<(), SourceError> {
        let broken = |detail: String| SourceError::Manifest {
            file: file.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(file).map_err(|e| broken(e.to_string()))?;
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| broken(format!("not YAML: {e}")))?;
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            let kind = document
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            match kind.as_str() {
                "AccessPolicy" => self.add_policy(document).map_err(&broken)?,
                "Secret" => self.add_secret(document).map_err(&broken)?,
                "AccessHost" => {
                    let host = serde_json::from_value::<AccessHost>(document)
                        .map_err(|error| broken(format!("invalid AccessHost: {error}")))?;
                    self.grants.push(HostGrant::from(&host));
                }
                "Namespace" => {
                    let namespace = serde_json::from_value::<NamespaceManifest>(document)
                        .map_err(|error| broken(format!("invalid Namespace: {error}")))?;
                    let labels = namespace.metadata.labels.unwrap_or_default();
                    self.namespaces.insert(namespace.metadata.name, labels);
                }
                other => self
                    .problems
                    .push(format!("{}: ignoring kind {other:?}", file.display())),
            }
        }
        Ok(())
    }

    fn add_policy(&mut self, document: serde_json::Value) -> Result<(), String> {
        let mut policy = serde_json::from_value::<AccessPolicy>(document)
            .map_err(|error| format!("invalid AccessPolicy: {error}"))?;
        policy
            .metadata
            .namespace
            .get_or_insert_with(|| DEFAULT_NAMESPACE.into());
        self.policies.push(policy);
        Ok(())
    }

    fn add_secret(&mut self, document: serde_json::Value) -> Result<(), String> {
        let secret = serde_json::from_value::<SecretManifest>(document)
            .map_err(|error| format!("invalid Secret: {error}"))?;
        let namespace = secret
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.secrets.insert((namespace, name), secret);
        Ok(())
    }
}

/// A `Namespace` manifest, as far as host grants read it.
#[derive(serde::Deserialize)]
struct NamespaceManifest {
    metadata: NamespaceMetadata,
}

#[derive(serde::Deserialize)]
struct NamespaceMetadata {
    name: String,
    #[serde(default)]
    labels: Option<Labels>,
}

/// Leaves out every policy whose namespace may not claim its hosts: the manifests carry no
/// creation time, so among claims on a host no `AccessHost` covers, the first by namespace and
/// name owns it.
fn keep_claimed_hosts(
    policies: &mut Vec<AccessPolicy>,
    grants: &[HostGrant],
    namespaces: &HashMap<String, Labels>,
    problems: &mut Vec<String>,
) {
    let claims: Vec<Claim> = policies
        .iter()
        .filter_map(|p| Claim::of(p, None, p.metadata.uid.as_deref()))
        .collect();
    let labels = |ns: &str| namespaces.get(ns);
    let refused = Ownership {
        grants,
        labels: &labels,
        unclaimed: Unclaimed::FirstClaim,
    }
    .refusals(&claims);
    policies.retain(|p| {
        let Some(id) = Claim::of(p, None, None).map(|c| c.id) else {
            return true;
        };
        match refused.get(&id) {
            Some(refusal) => {
                problems.push(format!("{id}: not routed: {refusal}"));
                false
            }
            None => true,
        }
    });
}

/// Epochs only go up, as at the API server: a file rolled back to a lower epoch, or a policy
/// removed and added again with epoch 0, keeps the highest epoch this gateway has seen.
fn keep_highest_epochs(
    policies: &mut [AccessPolicy],
    highest_epochs: &mut HashMap<(String, String), i64>,
    problems: &mut Vec<String>,
) {
    for policy in policies {
        let key = (
            policy.metadata.namespace.clone().unwrap_or_default(),
            policy.metadata.name.clone().unwrap_or_default(),
        );
        let highest = highest_epochs
            .entry(key)
            .or_insert(policy.spec.revocation_epoch);
        if policy.spec.revocation_epoch < *highest {
            problems.push(format!(
                "{}/{}: revocationEpoch {} is lower than {} already enforced; keeping {}",
                policy.metadata.namespace.as_deref().unwrap_or_default(),
                policy.metadata.name.as_deref().unwrap_or_default(),
                policy.spec.revocation_epoch,
                highest,
                highest
            ));
            policy.spec.revocation_epoch = *highest;
        }
        *highest = (*highest).max(policy.spec.revocation_epoch);
    }
}

/// Names, sizes, modification times and a content hash of every file: an edit that keeps the
/// size within the same mtime tick is still a change.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>, u64)> {
    use std::hash::{Hash, Hasher};
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            // Follow symlinks: mounted ConfigMaps swap a `..data` link.
            let meta = std::fs::metadata(&path).ok()?;
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            if meta.is_file() {
                std::fs::read(&path).ok()?.hash(&mut hasher);
            }
            Some((path, meta.len(), meta.modified().ok(), hasher.finish()))
        })
        .collect();
    entries.sort();
    entries
}

/// Polls `dir` and publishes a new snapshot whenever its files change. The first snapshot is
/// published before this returns, or the error returned.
pub fn watch_directory(
    dir: PathBuf,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    interval: Duration,
    shutdown: crate::shutdown::Signal,
) -> Result<watch::Receiver<Arc<Snapshot>>, SourceError> {
    // Fingerprint before loading: a change that lands while (or after) the first load runs is
    // then seen as a change by the first poll, never folded into the baseline.
    let mut seen = fingerprint(&dir);
    let mut highest_epochs = HashMap::new();
    let mut first = load(&dir, 1, known_idps.as_ref(), &mut highest_epochs)?;
    first.track_epochs(None, crate::clock::now());
    log_problems(&first);
    info!(policies = first.policies.len(), dir = %dir.display(), "loaded policies");
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut version = 1;
        let mut ticker = tokio::time::interval(interval);
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.wait() => return,
            }
            let now = fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            version += 1;
            match load(&dir, version, known_idps.as_ref(), &mut highest_epochs) {
                Ok(mut snapshot) => {
                    snapshot.track_epochs(Some(&tx.borrow()), crate::clock::now());
                    log_problems(&snapshot);
                    info!(
                        policies = snapshot.policies.len(),
                        version, "reloaded policies"
                    );
                    tx.send_replace(Arc::new(snapshot));
                }
                Err(error) => warn!(%error, "keeping the previous policies"),
            }
        }
    });
    Ok(rx)
}

fn log_problems(snapshot: &Snapshot) {
    for problem in &snapshot.problems {
        warn!(problem = %problem, "manifest not applied as written");
    }
}
