//! The keys the gateway starts with, read from files (never from argv): the token signing keys
//! (current, next, previous) and the session keys that seal refresh tokens.

use crate::{
    config,
    sessions::seal::{KeyRing, SessionKey},
};
use anyhow::Context as _;
use portcullis_core::token::KeySet;
use std::path::{Path, PathBuf};
use tracing::info;

/// The file at `path`, or an error naming it.
pub(super) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The token signing keys: the current one, the next one published ahead of a rotation, and
/// previous ones still accepted.
pub(super) fn signing_keys(keys: &config::KeyArgs) -> anyhow::Result<KeySet> {
    let current = read(&keys.signing_key_file)?;
    let next = keys
        .next_signing_key_file
        .as_deref()
        .map(read)
        .transpose()?;
    let previous = keys
        .previous_signing_key_files
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let previous: Vec<&[u8]> = previous.iter().map(Vec::as_slice).collect();
    KeySet::from_pems(&current, next.as_deref(), &previous).context("loading signing keys")
}

/// The session keys: the current one seals, previous ones still open what they sealed.
pub(super) fn session_keys(current: &Path, previous: &[PathBuf]) -> anyhow::Result<KeyRing> {
    let load = |path: &Path| {
        SessionKey::from_file_content(&read(path)?)
            .with_context(|| format!("loading {}", path.display()))
    };
    let previous = previous
        .iter()
        .map(|p| load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = KeyRing::new(load(current)?, previous);
    info!(
        key = key.current_id(),
        previous = ?key.previous_ids().collect::<Vec<_>>(),
        "refresh tokens are sealed and sessions confirmed"
    );
    Ok(key)
}
