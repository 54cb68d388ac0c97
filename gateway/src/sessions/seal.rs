//! Sealing refresh tokens for storage in `AccessSession.status.refresh`.
//!
//! Anyone who may read AccessSessions (auditors, dashboards, `kubectl get -o yaml`) must not
//! learn a refresh token: it would let them mint ID tokens for the user at the identity
//! provider. So the token is encrypted with AES-256-GCM under a key only the gateways hold (a
//! mounted Secret), and the session's name is the associated data: a sealed token copied into
//! another session does not open there.
//!
//! Format: `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id (a digest prefix of
//! the key) lets a gateway say "sealed with a key I do not have" instead of "corrupt", and lets a
//! [`KeyRing`] open tokens sealed with a previous key while the key is being rotated: new tokens
//! are sealed with the current key, and every confirmation re-seals an old one.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "v1";

/// Why a key could not be loaded or a token opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the session key must be the base64 of 32 random bytes (or those bytes, raw)")]
    KeyLength,
    #[error("the sealed token is malformed")]
    Malformed,
    #[error("the token was sealed with key {0}, which this gateway does not have")]
    UnknownKey(String),
    #[error("the sealed token does not open (tampered, or sealed for another session)")]
    Open,
    #[error("the system random generator failed")]
    Random,
    #[error("the sealed ID token would be longer than {MAX_SEALED_ID_TOKEN} characters")]
    TooLong,
}

/// The longest sealed ID token stored (the CRD's limit on `status.refresh.sealedIdToken`).
pub const MAX_SEALED_ID_TOKEN: usize = 16384;

/// The gateways' session key.
pub struct SessionKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SessionKey {
    /// Loads a key from a file's content: 32 raw bytes, or their base64 (what `openssl rand
    /// -base64 32` prints, with or without a trailing newline).
    pub fn from_file_content(content: &[u8]) -> Result<Self, SealError> {
        // Base64 first; raw bytes only when they are not text (32 printable characters are a
        // passphrase, far weaker than a key).
        let decoded = std::str::from_utf8(content).ok().and_then(|text| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .filter(|raw| raw.len() == 32)
        });
        let raw = match decoded {
            Some(raw) => raw,
            None if content.len() == 32
                && !content.iter().all(|b| b.is_ascii_graphic() || *b == b' ') =>
            {
                content.to_vec()
            }
            None => return Err(SealError::KeyLength),
        };
        if raw.len() != 32 {
            return Err(SealError::KeyLength);
        }
        let id = crate::hex::encode(&Sha256::digest(&raw)[..6]);
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::KeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            id,
        })
    }

    /// The key's id, as it appears in sealed tokens.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `secret` for the session `sid`.
    pub fn seal(&self, sid: &str, secret: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buffer = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(sid.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(format!(
            "{PREFIX}.{}.{}",
            self.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Decrypts a token sealed for the session `sid`.
    pub fn open(&self, sid: &str, sealed: &str) -> Result<String, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        if id != self.id {
            return Err(SealError::UnknownKey(id.to_owned()));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(sid.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

/// The current session key, which seals, and the previous ones, which still open what they
/// sealed: rotating the key then logs nobody out (see `docs/operations.md`).
#[derive(Debug)]
pub struct KeyRing {
    current: SessionKey,
    previous: Vec<SessionKey>,
}

impl KeyRing {
    /// A ring of `current` and `previous`; a previous key equal to the current one is dropped.
    pub fn new(current: SessionKey, previous: Vec<SessionKey>) -> Self {
        let previous = previous
            .into_iter()
            .filter(|key| key.id != current.id)
            .collect();
        Self { current, previous }
    }

    /// The id of the key new tokens are sealed with.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// The ids of the keys that only open.
    pub fn previous_ids(&self) -> impl Iterator<Item = &str> {
        self.previous.iter().map(SessionKey::id)
    }

    /// Seals with the current key.
    pub fn seal(&self, sid: &str, secret: &str) -> Result<String, SealError> {
        self.current.seal(sid, secret)
    }

    /// Opens with whichever key of the ring sealed it.
    pub fn open(&self, sid: &str, sealed: &str) -> Result<String, SealError> {
        let id = key_id(sealed).ok_or(SealError::Malformed)?;
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?
            .open(sid, sealed)
    }

    /// Seals the ID token of session `sid` with the current key, under
    /// [`id_token_context`]: a sealed ID token is not a sealed refresh token.
    /// One longer than [`MAX_SEALED_ID_TOKEN`] is refused: the store would refuse the whole
    /// write, and with it the login.
    pub fn seal_id_token(&self, sid: &str, id_token: &str) -> Result<String, SealError> {
        let sealed = self.seal(&id_token_context(sid), id_token)?;
        if sealed.len() > MAX_SEALED_ID_TOKEN {
            return Err(SealError::TooLong);
        }
        Ok(sealed)
    }

    /// Opens the sealed ID token of session `sid`.
    pub fn open_id_token(&self, sid: &str, sealed: &str) -> Result<String, SealError> {
        self.open(&id_token_context(sid), sealed)
    }

    /// Whether `sealed` should be sealed again with the current key.
    pub fn is_stale(&self, sealed: &str) -> bool {
        key_id(sealed).is_some_and(|id| id != self.current.id)
    }
}

/// The associated data an ID token of session `sid` is sealed with. The ID token is sent to
/// the browser (as `id_token_hint`), the refresh token never is: if whoever may write the
/// status moved a sealed refresh token into the ID token's field, it must not open there, or
/// logout would hand the refresh token to the browser. A session's name never holds a `/`, so
/// this context is never another session's name either.
fn id_token_context(sid: &str) -> String {
    format!("{sid}/id_token")
}

/// The key id of a sealed token.
fn key_id(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(PREFIX), Some(id), Some(_)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey::from_file_content(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn an_id_token_opens_only_as_the_id_token_of_its_session_and_a_huge_one_is_refused() {
        let ring = KeyRing::new(key(7), vec![]);
        let sealed = ring.seal_id_token("sid-a", "h.p.s").expect("seal");
        assert_eq!(ring.open_id_token("sid-a", &sealed).expect("open"), "h.p.s");
        assert!(matches!(ring.open("sid-a", &sealed), Err(SealError::Open)));
        assert!(ring.open_id_token("sid-b", &sealed).is_err());
        let refresh = ring.seal("sid-a", "refresh-secret").expect("seal");
        assert!(ring.open_id_token("sid-a", &refresh).is_err());
        // Base64 and the envelope make the sealed form longer than the token.
        let huge = "x".repeat(MAX_SEALED_ID_TOKEN);
        assert!(matches!(
            ring.seal_id_token("sid-a", &huge),
            Err(SealError::TooLong)
        ));
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key(7);
        let sealed = k.seal("sid-a", "refresh-secret").expect("seal");
        assert!(!sealed.contains("refresh-secret"));
        assert_eq!(k.open("sid-a", &sealed).expect("open"), "refresh-secret");
        // Bound to its session.
        assert!(matches!(k.open("sid-b", &sealed), Err(SealError::Open)));
        // Fresh nonce every time.
        assert_ne!(sealed, k.seal("sid-a", "refresh-secret").expect("seal"));
    }

    #[test]
    fn wrong_key_tampering_and_garbage_are_refused() {
        let sealed = key(1).seal("sid", "secret").expect("seal");
        assert!(matches!(
            key(2).open("sid", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(matches!(
            key(1).open("sid", &tampered),
            Err(SealError::Open)
        ));
        for garbage in ["", "v1", "v1.x", "v2.a.b", "v1.zz.!!!", "v1.zz.AAAA"] {
            assert!(key(1).open("sid", garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn keys_load_raw_or_base64_and_nothing_else() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let a = SessionKey::from_file_content(format!("{b64}\n").as_bytes()).expect("base64");
        assert_eq!(a.id(), key(9).id());
        assert!(SessionKey::from_file_content(&[1u8; 31]).is_err());
        assert!(SessionKey::from_file_content(b"not base64 at all").is_err());
        // 32 printable characters are a passphrase, not a key.
        assert!(SessionKey::from_file_content(b"correct horse battery staple!!!!").is_err());
        // Debug never prints key material.
        assert!(!format!("{a:?}").contains(&b64));
    }

    #[test]
    fn a_ring_seals_with_the_current_key_and_opens_with_any() {
        let old = key(1).seal("sid", "old-secret").expect("seal");
        let ring = KeyRing::new(key(2), vec![key(1), key(2)]);
        assert_eq!(
            ring.previous_ids().count(),
            1,
            "the current key is not also previous"
        );
        assert_eq!(ring.open("sid", &old).expect("open"), "old-secret");
        assert!(ring.is_stale(&old));
        let new = ring.seal("sid", "new-secret").expect("seal");
        assert!(new.starts_with(&format!("v1.{}.", ring.current_id())));
        assert!(!ring.is_stale(&new));
        assert_eq!(key(2).open("sid", &new).expect("open"), "new-secret");
        // Still bound to its session, whichever key opens it.
        assert!(matches!(ring.open("other", &old), Err(SealError::Open)));
        // A key outside the ring is named, not mistaken for tampering.
        let foreign = key(3).seal("sid", "x").expect("seal");
        assert!(matches!(
            ring.open("sid", &foreign),
            Err(SealError::UnknownKey(_))
        ));
        assert!(matches!(
            ring.open("sid", "garbage"),
            Err(SealError::Malformed)
        ));
    }
}
