//! Files of third-party projects the tests need but the repository must not carry (their
//! CRDs), read from their published Go modules: downloaded into the Go module cache at test
//! time, never committed.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Downloads `module@version` into the Go module cache and returns its directory.
pub fn download(module: &str, version: &str) -> Result<PathBuf> {
    // `go mod download` runs in a folder of its own (an empty one is enough), one per call.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let scratch = crate::fsutil::scratch_dir("gomod", &call.to_string())?;
    let out = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .current_dir(&scratch)
        .env("GOFLAGS", "-mod=mod")
        .output()
        .context("running go (needed to fetch third-party files)");
    let _ = std::fs::remove_dir_all(&scratch);
    let out = out?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "go mod download {module}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(error) = info.get("Error").and_then(|e| e.as_str()) {
        bail!("go mod download {module}@{version}: {error}");
    }
    info.get("Dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .context("no Dir in go mod download output")
}
