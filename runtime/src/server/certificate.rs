//! The listener's certificate, read from its PEM files and read again when they change, so a
//! renewal (cert-manager writing the Secret, the kubelet swapping the mounted files) reaches
//! new connections without a restart.
//!
//! The files are looked at on a TLS handshake, at most once per [`RECHECK`]: two `stat` calls,
//! and a read only when their modification time, size or inode changed. A pair that does not
//! load (a key that does not match the certificate, a file half written) is logged and the
//! current certificate kept; the next change is tried again. Connections already open keep the
//! certificate they were made with, as TLS does.

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::{
    fs::Metadata,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};
use tracing::{info, warn};

/// How often, at most, a handshake looks at the files.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    Empty { path: String },
    #[error("invalid certificate or key: {0}")]
    Invalid(#[from] rustls::Error),
}

/// What identifies one version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Version {
    fn of(metadata: &Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode,
        }
    }
}

/// The certificate in use and what it was read from.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' versions when last looked at (`None` for a file that could not be stat'ed).
    seen: [Option<Version>; 2],
    checked: Instant,
}

/// A server certificate that follows its files.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl ReloadingCertificate {
    /// Reads `cert` (the chain, leaf first) and `key`; fails when they do not load, so a
    /// listener never starts without a certificate.
    pub fn open(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, CertificateError> {
        let seen = versions(cert, key);
        let certified = load(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            loaded: Mutex::new(Loaded {
                key: Arc::new(certified),
                seen,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate for a new connection, read again first if the files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= RECHECK {
            loaded.checked = Instant::now();
            let seen = versions(&self.cert, &self.key);
            if seen != loaded.seen {
                loaded.seen = seen;
                match load(&self.cert, &self.key, &self.provider) {
                    Ok(certified) => {
                        info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        loaded.key = Arc::new(certified);
                    }
                    Err(error) => warn!(
                        cert = %self.cert.display(),
                        %error,
                        "the TLS certificate files changed but do not load; keeping the current certificate"
                    ),
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn versions(cert: &Path, key: &Path) -> [Option<Version>; 2] {
    [cert, key].map(|path| std::fs::metadata(path).ok().map(|m| Version::of(&m)))
}

fn load(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertificateError> {
    let read = |path: &Path| {
        let path = path.display().to_string();
        move |source| CertificateError::Read { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read(cert))?;
    if chain.is_empty() {
        return Err(CertificateError::Empty {
            path: cert.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(resolver: &ReloadingCertificate) -> Vec<u8> {
        resolver.current().cert[0].to_vec()
    }

    /// Files replaced the way the kubelet does it: new files, renamed over the old ones.
    fn replace(dir: &Path, (cert, key): &(String, String)) {
        for (name, contents) in [("tls.crt", cert), ("tls.key", key)] {
            let staged = dir.join(format!("{name}.new"));
            std::fs::write(&staged, contents).expect("write");
            std::fs::rename(&staged, dir.join(name)).expect("rename");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-certificate-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_renewed_certificate_is_served_after_the_recheck_interval() {
        let dir = scratch("renewed");
        let first = pair("a.example.test");
        replace(&dir, &first);
        let resolver =
            ReloadingCertificate::open(&dir.join("tls.crt"), &dir.join("tls.key"), provider())
                .expect("loads");
        let before = leaf(&resolver);
        let second = pair("a.example.test");
        replace(&dir, &second);
        // Within the interval the files are not looked at.
        assert_eq!(leaf(&resolver), before);
        std::thread::sleep(RECHECK);
        let after = leaf(&resolver);
        assert_ne!(after, before, "the renewed certificate was not picked up");
        let expected = CertificateDer::from_pem_slice(second.0.as_bytes()).expect("pem");
        assert_eq!(after, expected.to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pair_that_does_not_load_keeps_the_current_certificate_until_the_next_change() {
        let dir = scratch("mismatch");
        let first = pair("a.example.test");
        replace(&dir, &first);
        let resolver =
            ReloadingCertificate::open(&dir.join("tls.crt"), &dir.join("tls.key"), provider())
                .expect("loads");
        let before = leaf(&resolver);
        // A certificate whose key is not the one beside it, then garbage.
        let other = pair("a.example.test");
        replace(&dir, &(other.0.clone(), first.1.clone()));
        std::thread::sleep(RECHECK);
        assert_eq!(
            leaf(&resolver),
            before,
            "a mismatched pair replaced the certificate"
        );
        std::fs::write(dir.join("tls.crt"), "not a certificate").expect("write");
        std::thread::sleep(RECHECK);
        assert_eq!(leaf(&resolver), before, "garbage replaced the certificate");
        // The complete pair lands: it is served.
        replace(&dir, &other);
        std::thread::sleep(RECHECK);
        assert_ne!(leaf(&resolver), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_listener_does_not_start_without_a_loadable_pair() {
        let dir = scratch("missing");
        let missing =
            ReloadingCertificate::open(&dir.join("tls.crt"), &dir.join("tls.key"), provider());
        assert!(matches!(missing, Err(CertificateError::Read { .. })));
        let (cert, _) = pair("a.example.test");
        let (_, key) = pair("a.example.test");
        replace(&dir, &(cert, key));
        let mismatched =
            ReloadingCertificate::open(&dir.join("tls.crt"), &dir.join("tls.key"), provider());
        assert!(matches!(mismatched, Err(CertificateError::Invalid(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
