//! Small file helpers shared by the harness.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes a secret (key, client secret, password file) readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(path, bytes, 0o600)
}

/// Writes a non-secret file (certificates, configs without secrets).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(path, bytes, 0o644)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    // Write to a temporary name and rename, so a concurrent reader (another test binary
    // reading stack.json) never sees a half-written file.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A fresh, empty scratch directory for one test: `<tmp>/portcullis-<suite>-<name>-<pid>`,
/// emptied first if an earlier run of the same process id left it behind.
pub fn scratch_dir(suite: &str, name: &str) -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("portcullis-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A [`scratch_dir`] removed with everything in it when the value is dropped (the end of the
/// test, passed or failed).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh [`scratch_dir`].
    pub fn new(suite: &str, name: &str) -> Result<Self> {
        scratch_dir(suite, name).map(Self)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A binary of the workspace next to the running test binary (`target/<profile>/<name>`, or
/// one level up from `deps/`), built by `cargo build` or the workspace test run.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found (looked at {candidates:?}); build it first (`cargo build \
                 --workspace --all-targets` builds every binary)"
            )
        })
}

/// The last `lines` lines of a log file, for error messages; never fails.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
