//! Small file helpers shared by the harness.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
