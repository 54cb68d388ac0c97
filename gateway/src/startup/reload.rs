//! Key material that follows its files: the signing keys, the session keys and the identity
//! providers' client secrets are read again when their mounted files change (cert-manager or a
//! Secret update; the kubelet swaps a `..data` link, so every file of one Secret changes at
//! once), without a restart.
//!
//! A background task reads the files every `--key-reload-interval` and compares a digest of
//! their contents with the one last seen; only a change is loaded. The request path never looks
//! at a file: it reads whatever the last successful reload published.
//!
//! Fail closed, lose nothing: files that do not load (a key that does not parse, a current key
//! that is gone, a set without the key signing now: see `keys`) leave every key in use as it
//! was, are logged as an error (naming files, never their content) and counted
//! (`key_reloads_total{result="failure"}`), and `key_files_rejected` stays 1 until a later
//! change loads. Each change is tried once: a bad file is not reported again at every poll.

use crate::{
    metrics::{KeyKind, Metrics},
    shutdown,
};
use sha2::{Digest as _, Sha256};
use std::{path::PathBuf, time::Duration};
use tokio::task::JoinHandle;
use tracing::{error, info};

/// The files of one set of key material and a digest of their contents when last read.
pub(super) struct KeyFiles {
    paths: Vec<PathBuf>,
    seen: Option<[u8; 32]>,
}

impl KeyFiles {
    pub(super) fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, seen: None }
    }

    /// Every file's content, in order; the first one that cannot be read is the error. What
    /// was read (or failed) is remembered: the next change is one from here.
    pub(super) fn read(&mut self) -> anyhow::Result<Vec<Vec<u8>>> {
        let (digest, contents) = self.look();
        self.seen = Some(digest);
        contents
    }

    /// The files' contents when they changed since the last read, else `None`.
    fn changed(&mut self) -> Option<anyhow::Result<Vec<Vec<u8>>>> {
        let (digest, contents) = self.look();
        if self.seen == Some(digest) {
            return None;
        }
        self.seen = Some(digest);
        Some(contents)
    }

    /// Reads every file, and digests what was found: the contents, or for a file that cannot
    /// be read the kind of error (so it counts as one change, not one per poll).
    fn look(&self) -> ([u8; 32], anyhow::Result<Vec<Vec<u8>>>) {
        let mut digest = Sha256::new();
        let mut contents = Vec::with_capacity(self.paths.len());
        let mut failure = None;
        for path in &self.paths {
            match std::fs::read(path) {
                Ok(content) => {
                    digest.update((content.len() as u64).to_be_bytes());
                    digest.update(&content);
                    contents.push(content);
                }
                Err(error) => {
                    digest.update(u64::MAX.to_be_bytes());
                    digest.update(format!("{:?}", error.kind()));
                    failure.get_or_insert_with(|| {
                        anyhow::anyhow!("cannot read {}: {error}", path.display())
                    });
                }
            }
        }
        let digest = digest.finalize().into();
        (digest, failure.map_or(Ok(contents), Err))
    }

    fn display(&self) -> String {
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        paths.join(", ")
    }
}

/// Loads changed contents (in the order of their files) and puts them in force; says what is
/// in force now (key ids, provider names: never key material), for the log.
pub(super) type Apply = Box<dyn FnMut(&[Vec<u8>]) -> anyhow::Result<String> + Send>;

/// One set of key material that follows its files.
pub(super) struct Follower {
    kind: KeyKind,
    files: KeyFiles,
    apply: Apply,
    /// The files on disk did not load at the last change.
    rejecting: bool,
}

impl Follower {
    /// `files` as read at start (their digest is the baseline), put in force by `apply` when
    /// they change.
    pub(super) fn new(kind: KeyKind, files: KeyFiles, apply: Apply) -> Self {
        Self {
            kind,
            files,
            apply,
            rejecting: false,
        }
    }

    /// Looks at the files and applies a change; counts and logs the outcome.
    fn check(&mut self, metrics: &Metrics) {
        let Some(contents) = self.files.changed() else {
            return;
        };
        let kind = self.kind.label();
        match contents.and_then(|contents| (self.apply)(&contents)) {
            Ok(in_force) => {
                self.rejecting = false;
                metrics.key_reload(self.kind, true);
                info!(kind, keys = %in_force, "key files reloaded");
            }
            Err(error) => {
                self.rejecting = true;
                metrics.key_reload(self.kind, false);
                error!(
                    kind,
                    files = %self.files.display(),
                    error = format!("{error:#}"),
                    "key files changed but do not load; the keys in use are kept"
                );
            }
        }
    }
}

/// Looks at every follower's files once; then sets `key_files_rejected` of each kind (1 when
/// any set of that kind is refused).
pub(super) fn check_all(followers: &mut [Follower], metrics: &Metrics) {
    for follower in followers.iter_mut() {
        follower.check(metrics);
    }
    for kind in KeyKind::ALL {
        let rejecting = followers.iter().any(|f| f.kind == kind && f.rejecting);
        metrics.key_files_rejected(kind, rejecting);
    }
}

/// Follows the files of `followers` every `interval` until shutdown.
pub(super) fn spawn(
    mut followers: Vec<Follower>,
    interval: Duration,
    metrics: Metrics,
    mut signal: shutdown::Signal,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the files were just read.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = signal.wait() => return,
            }
            check_all(&mut followers, &metrics);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portcullis-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    /// Written the way the kubelet does it: a new file renamed over the old one.
    fn replace(path: &std::path::Path, content: &str) {
        let staged = path.with_extension("new");
        std::fs::write(&staged, content).expect("write");
        std::fs::rename(&staged, path).expect("rename");
    }

    fn sample(metrics: &Metrics, series: &str) -> Option<String> {
        metrics
            .encode()
            .lines()
            .find_map(|line| Some(line.strip_prefix(series)?.trim().to_owned()))
    }

    #[test]
    fn only_a_change_of_content_is_a_change_and_an_unreadable_file_counts_once() {
        let dir = scratch("digest");
        let (a, b) = (dir.join("a"), dir.join("b"));
        replace(&a, "one");
        replace(&b, "two");
        let mut files = KeyFiles::new(vec![a.clone(), b.clone()]);
        assert_eq!(
            files.read().expect("read"),
            [b"one".to_vec(), b"two".to_vec()]
        );
        assert!(files.changed().is_none(), "nothing changed");
        // Rewritten with the same content (a new inode, a new mtime): still no change.
        replace(&a, "one");
        assert!(files.changed().is_none(), "same content is no change");
        replace(&b, "three");
        let changed = files.changed().expect("a change").expect("readable");
        assert_eq!(changed[1], b"three");
        assert!(files.changed().is_none(), "a change is reported once");
        std::fs::remove_file(&a).expect("remove");
        let error = files.changed().expect("a change").expect_err("unreadable");
        assert!(error.to_string().contains("cannot read"), "{error}");
        assert!(files.changed().is_none(), "a missing file is reported once");
        replace(&a, "one");
        assert!(files.changed().expect("back").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A follower whose `apply` accepts any content but `bad`, and records what it put in
    /// force.
    fn follower(path: &std::path::Path) -> (Follower, Arc<Mutex<Vec<String>>>) {
        let mut files = KeyFiles::new(vec![path.to_owned()]);
        files.read().expect("read");
        let applied = Arc::new(Mutex::new(Vec::new()));
        let record = applied.clone();
        let apply: Apply = Box::new(move |contents: &[Vec<u8>]| {
            let text = String::from_utf8_lossy(&contents[0]).into_owned();
            anyhow::ensure!(text != "bad", "does not load");
            record.lock().expect("lock").push(text.clone());
            Ok(text)
        });
        (Follower::new(KeyKind::Session, files, apply), applied)
    }

    #[test]
    fn files_that_do_not_load_keep_what_is_in_force_and_are_counted_until_a_good_change() {
        let dir = scratch("follow");
        let key = dir.join("key");
        replace(&key, "first");
        let (follower, applied) = follower(&key);
        let mut followers = [follower];
        let metrics = Metrics::new();
        metrics.initialize([]);
        let failures = r#"portcullis_gateway_key_reloads_total{kind="session",result="failure"}"#;
        let successes = r#"portcullis_gateway_key_reloads_total{kind="session",result="success"}"#;
        let rejected = r#"portcullis_gateway_key_files_rejected{kind="session"}"#;

        check_all(&mut followers, &metrics);
        assert!(applied.lock().expect("lock").is_empty(), "nothing changed");
        assert_eq!(sample(&metrics, rejected).as_deref(), Some("0"));

        replace(&key, "bad");
        check_all(&mut followers, &metrics);
        check_all(&mut followers, &metrics);
        assert!(
            applied.lock().expect("lock").is_empty(),
            "a bad file was applied"
        );
        assert_eq!(
            sample(&metrics, failures).as_deref(),
            Some("1"),
            "counted once"
        );
        assert_eq!(sample(&metrics, rejected).as_deref(), Some("1"));

        replace(&key, "second");
        check_all(&mut followers, &metrics);
        assert_eq!(*applied.lock().expect("lock"), ["second"]);
        assert_eq!(sample(&metrics, successes).as_deref(), Some("1"));
        assert_eq!(sample(&metrics, rejected).as_deref(), Some("0"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
