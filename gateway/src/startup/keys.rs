//! The keys the gateway runs with, read from files (never from argv): the token signing keys
//! (current, next, previous), the session keys that seal refresh tokens, and the identity
//! providers' client secrets. Each is read at start, where a key that does not load stops the
//! gateway, and again whenever its files change (`reload`), where it leaves the keys in use.
//!
//! A next or previous key file that is empty holds no key: a deployment can name those files
//! once and fill or empty them in later rotations, without changing its arguments.

use super::reload::{Follower, KeyFiles};
use crate::{
    config,
    idp::Provider,
    metrics::KeyKind,
    sessions::seal::{KeyRing, SessionKey},
    signing::Signing,
};
use anyhow::Context as _;
use portcullis_core::token::KeySet;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::sync::watch;

/// The file at `path`, or an error naming it.
pub(super) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The content of an optional key file: `None` when it holds nothing but whitespace.
fn present(content: &[u8]) -> Option<&[u8]> {
    (!content.iter().all(u8::is_ascii_whitespace)).then_some(content)
}

/// The signing key files, in the order [`signing_keys`] reads their contents: current, next
/// (when configured), previous.
fn signing_files(keys: &config::KeyArgs) -> KeyFiles {
    let mut paths = vec![keys.signing_key_file.clone()];
    paths.extend(keys.next_signing_key_file.clone());
    paths.extend(keys.previous_signing_key_files.iter().cloned());
    KeyFiles::new(paths)
}

/// The token signing keys in `contents` (read from [`signing_files`]): the current one, the
/// next one published ahead of a rotation, and previous ones still accepted. Each file is
/// checked on its own first, so an error names the file that does not load.
fn signing_keys(keys: &config::KeyArgs, contents: &[Vec<u8>]) -> anyhow::Result<KeySet> {
    let mut paths = vec![&keys.signing_key_file];
    paths.extend(&keys.next_signing_key_file);
    paths.extend(&keys.previous_signing_key_files);
    let mut pems = paths.iter().zip(contents).map(|(path, content)| {
        let Some(pem) = present(content) else {
            return Ok(None);
        };
        KeySet::from_pems(pem, None, &[])
            .map(|_| Some(pem))
            .with_context(|| format!("loading the signing key in {}", path.display()))
    });
    let current = pems
        .next()
        .transpose()?
        .flatten()
        .with_context(|| format!("{} holds no key", keys.signing_key_file.display()))?;
    let next = match keys.next_signing_key_file {
        Some(_) => pems.next().transpose()?.flatten(),
        None => None,
    };
    let previous: Vec<&[u8]> = pems
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    KeySet::from_pems(current, next, &previous).context("loading signing keys")
}

/// The ids of every key `keys` accepts (current, next, previous).
fn accepted_kids(keys: &KeySet) -> impl Iterator<Item = &str> {
    keys.jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.as_deref())
}

/// The key ids of `keys`, for the log: the current one, then every one accepted.
fn describe_signing(keys: &KeySet) -> String {
    let accepted: Vec<&str> = accepted_kids(keys).collect();
    format!("current {}; published {accepted:?}", keys.current_kid())
}

/// Refuses a reload whose keys no longer include `in_use`, the key that signs or seals now:
/// everything `made` with it would stop working at once (everyone logged out, or every stored
/// refresh token unreadable). That is what a rotation looks like that forgot to keep the old
/// key as a previous one, or a Secret updated before the one holding the previous keys. A
/// restart drops a key on purpose.
fn keeps<'a>(
    in_use: &str,
    mut accepted: impl Iterator<Item = &'a str>,
    made: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        accepted.any(|id| id == in_use),
        "the files no longer hold key {in_use}, the one in use: {made} would stop working at \
         once. Keep it as a previous key (or restart the gateway to drop it on purpose)"
    );
    Ok(())
}

/// The signing keys as configured, published to the gateway through a channel, and the
/// follower that publishes a new set (with fresh verifiers for `issuer`) when the files change.
pub(super) fn signing(
    keys: &config::KeyArgs,
    issuer: &str,
) -> anyhow::Result<(watch::Receiver<Arc<Signing>>, Follower)> {
    let mut files = signing_files(keys);
    let set = signing_keys(keys, &files.read()?)?;
    tracing::info!(keys = %describe_signing(&set), "signing keys loaded");
    let (publish, receiver) = watch::channel(Arc::new(Signing::new(Arc::new(set), issuer)));
    let (keys, issuer) = (keys.clone(), issuer.to_owned());
    let apply = Box::new(move |contents: &[Vec<u8>]| {
        let set = signing_keys(&keys, contents)?;
        let in_use = publish.borrow().keys().current_kid().to_owned();
        keeps(&in_use, accepted_kids(&set), "tokens signed with it")?;
        let in_force = describe_signing(&set);
        publish.send_replace(Arc::new(Signing::new(Arc::new(set), &issuer)));
        Ok(in_force)
    });
    Ok((receiver, Follower::new(KeyKind::Signing, files, apply)))
}

/// The session keys in `contents` (read from `current`, then `previous`): the current one
/// seals, previous ones still open what they sealed.
fn session_ring(
    current: &Path,
    previous: &[PathBuf],
    contents: &[Vec<u8>],
) -> anyhow::Result<KeyRing> {
    let load = |path: &Path, content: &[u8]| {
        SessionKey::from_file_content(content)
            .with_context(|| format!("loading the session key in {}", path.display()))
    };
    let mut contents = contents.iter();
    let first = contents.next().map(Vec::as_slice).unwrap_or_default();
    let first = present(first).with_context(|| format!("{} holds no key", current.display()))?;
    let previous = previous
        .iter()
        .zip(contents)
        .filter_map(|(path, content)| present(content).map(|content| load(path, content)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(KeyRing::new(load(current, first)?, previous))
}

/// The key ids of `ring`, for the log.
fn describe_session(ring: &KeyRing) -> String {
    let previous: Vec<&str> = ring.previous_ids().collect();
    format!("current {}; previous {previous:?}", ring.current_id())
}

/// The session keys as configured, through a channel, and the follower that publishes a new
/// ring when their files change.
pub(super) fn session(
    current: &Path,
    previous: &[PathBuf],
) -> anyhow::Result<(watch::Receiver<Arc<KeyRing>>, Follower)> {
    let mut paths = vec![current.to_owned()];
    paths.extend(previous.iter().cloned());
    let mut files = KeyFiles::new(paths);
    let ring = session_ring(current, previous, &files.read()?)?;
    tracing::info!(
        keys = %describe_session(&ring),
        "refresh tokens are sealed and sessions confirmed"
    );
    let (publish, receiver) = watch::channel(Arc::new(ring));
    let (current, previous) = (current.to_owned(), previous.to_vec());
    let apply = Box::new(move |contents: &[Vec<u8>]| {
        let ring = session_ring(&current, &previous, contents)?;
        let in_use = publish.borrow().current_id().to_owned();
        let accepted = std::iter::once(ring.current_id()).chain(ring.previous_ids());
        keeps(&in_use, accepted, "refresh tokens sealed with it")?;
        let in_force = describe_session(&ring);
        publish.send_replace(Arc::new(ring));
        Ok(in_force)
    });
    Ok((receiver, Follower::new(KeyKind::Session, files, apply)))
}

/// The follower of `provider`'s client secret: a changed secret is used from the provider's
/// next token call on. An empty one is refused (every call would fail with it).
pub(super) fn client_secret(provider: Arc<Provider>) -> Follower {
    let config = provider.config();
    let (name, path) = (config.name.clone(), config.client_secret_file.clone());
    let mut files = KeyFiles::new(vec![path.clone()]);
    // The baseline: the secret the provider was built with was read from this file just now.
    let _ = files.read();
    let apply = Box::new(move |contents: &[Vec<u8>]| {
        let content = contents.first().map(Vec::as_slice).unwrap_or_default();
        let secret = std::str::from_utf8(content)
            .map_err(|_| anyhow::anyhow!("{} is not text", path.display()))?
            .trim();
        anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
        provider.set_secret(secret.to_owned());
        Ok(format!("client secret of {name}"))
    });
    Follower::new(KeyKind::ClientSecret, files, apply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use portcullis_core::token::{AppClaims, TokenKind};
    use std::time::Duration;

    const ISSUER: &str = "https://auth.example.test";

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portcullis-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn replace(path: &Path, content: &[u8]) {
        let staged = path.with_extension("new");
        std::fs::write(&staged, content).expect("write");
        std::fs::rename(&staged, path).expect("rename");
    }

    fn signing_pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_pem()
    }

    fn kid(pem: &str) -> String {
        KeySet::from_pems(pem.as_bytes(), None, &[])
            .expect("key")
            .current_kid()
            .to_owned()
    }

    fn app_token(signing: &Signing, now: u64) -> String {
        let claims = AppClaims {
            iss: ISSUER.into(),
            aud: "team/app".into(),
            sub: "alice".into(),
            email: None,
            groups: Vec::new(),
            ext: serde_json::Map::new(),
            sid: "s1".into(),
            idp: "dex".into(),
            epoch: 0,
            iat: now,
            exp: now + 600,
            auth_time: now,
            sexp: None,
            puid: None,
        };
        signing.keys().sign(TokenKind::App, &claims).expect("sign")
    }

    fn published(signing: &Signing) -> Vec<String> {
        let mut kids: Vec<String> = signing
            .keys()
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        kids.sort();
        kids
    }

    fn sorted<const N: usize>(kids: [&String; N]) -> Vec<String> {
        let mut kids: Vec<String> = kids.into_iter().cloned().collect();
        kids.sort();
        kids
    }

    #[test]
    fn a_rotation_logs_nobody_out_and_garbage_keeps_the_keys_in_force() {
        let dir = scratch("signing");
        let (current, next, previous) = (dir.join("cur"), dir.join("next"), dir.join("prev"));
        let (a, b, c) = (signing_pem(), signing_pem(), signing_pem());
        replace(&current, a.as_bytes());
        replace(&next, b.as_bytes());
        // An empty previous file: no key there yet.
        replace(&previous, b"");
        let args = config::KeyArgs {
            signing_key_file: current.clone(),
            next_signing_key_file: Some(next.clone()),
            previous_signing_key_files: vec![previous.clone()],
            key_reload_interval: Duration::from_secs(1),
        };
        let (receiver, follower) = signing(&args, ISSUER).expect("loads");
        let mut followers = [follower];
        let before = receiver.borrow().clone();
        assert_eq!(before.keys().current_kid(), kid(&a));
        let now = crate::clock::now();
        let old = app_token(&before, now);

        // Rotate: current → previous, next → current, a new next.
        replace(&previous, a.as_bytes());
        replace(&current, b.as_bytes());
        replace(&next, c.as_bytes());
        let metrics = Metrics::new();
        super::super::reload::check_all(&mut followers, &metrics);
        let after = receiver.borrow().clone();
        assert_eq!(after.keys().current_kid(), kid(&b));
        assert_eq!(published(&after), sorted([&kid(&a), &kid(&b), &kid(&c)]));
        let claims = after.app_tokens().verify(&old, Some("team/app"), now);
        assert!(claims.is_ok(), "a token of the previous key: {claims:?}");
        let fresh = app_token(&after, now);
        let header = jsonwebtoken::decode_header(&fresh).expect("header");
        assert_eq!(header.kid, Some(kid(&b)));

        // A rotation that drops the key in use (not kept as previous) would log everyone out:
        // refused, the set in force stays.
        replace(&current, signing_pem().as_bytes());
        replace(&previous, b"");
        super::super::reload::check_all(&mut followers, &metrics);
        assert!(
            Arc::ptr_eq(&receiver.borrow().clone(), &after),
            "the key in use was dropped"
        );
        replace(&current, b.as_bytes());
        replace(&previous, a.as_bytes());

        // Garbage, then a current key gone: the set in force stays.
        for broken in [b"not a key".as_slice(), b"\n"] {
            replace(&current, broken);
            super::super::reload::check_all(&mut followers, &metrics);
            let kept = receiver.borrow().clone();
            assert!(Arc::ptr_eq(&kept, &after), "a broken set replaced the keys");
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"portcullis_gateway_key_reloads_total{kind="signing",result="failure"} 3"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(&a) && !text.contains(&b),
            "key material in metrics"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_session_key_seals_and_the_previous_one_still_opens() {
        let dir = scratch("session");
        let (current, previous) = (dir.join("key"), dir.join("previous"));
        replace(&current, &[1u8; 32]);
        replace(&previous, b"");
        let (ring, follower) = session(&current, std::slice::from_ref(&previous)).expect("loads");
        let mut followers = [follower];
        let sealed = ring.borrow().seal("sid", "refresh-token").expect("seal");
        let old_id = ring.borrow().current_id().to_owned();

        replace(&previous, &[1u8; 32]);
        replace(&current, &[2u8; 32]);
        let metrics = Metrics::new();
        super::super::reload::check_all(&mut followers, &metrics);
        let rotated = ring.borrow().clone();
        assert_ne!(rotated.current_id(), old_id);
        assert_eq!(
            rotated.open("sid", &sealed).expect("opens"),
            "refresh-token"
        );
        assert!(rotated.is_stale(&sealed));
        let new = rotated.seal("sid", "refresh-token").expect("seal");
        assert!(new.starts_with(&format!("v1.{}.", rotated.current_id())));

        // A ring without the key that seals now would strand what it sealed: refused.
        replace(&current, &[4u8; 32]);
        replace(&previous, &[1u8; 32]);
        super::super::reload::check_all(&mut followers, &metrics);
        assert!(Arc::ptr_eq(&ring.borrow().clone(), &rotated));
        replace(&current, &[2u8; 32]);

        // A key of the wrong length keeps the ring.
        replace(&current, &[3u8; 31]);
        super::super::reload::check_all(&mut followers, &metrics);
        assert!(Arc::ptr_eq(&ring.borrow().clone(), &rotated));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
