//! The listener's certificate, read from its PEM files and read again when they change, so a
//! renewal (cert-manager writing the Secret, the kubelet swapping the mounted files) reaches
//! new connections without a restart.
//!
//! The files are looked at on a TLS handshake, at most once per [`RECHECK`]: two `stat` calls,
//! and a read only when their modification time, size or inode changed. A pair that does not
//! load (a key that does not match the certificate, a file half written) is logged and the
//! current certificate kept; the next change is tried again. Connections already open keep the
//! certificate they were made with, as TLS does.
//!
//! Whoever keeps the metrics is told the leaf's expiry at start and at every reload, so an
//! alert can fire before a renewal that never arrived turns into failed handshakes.

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

/// Told the expiry (unix seconds) of each certificate the listener starts presenting.
pub type ExpiryObserver = Box<dyn Fn(i64) + Send + Sync>;

/// The certificate in use and what it was read from.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' versions when last looked at (`None` for a file that could not be stat'ed).
    seen: [Option<Version>; 2],
    checked: Instant,
}

/// A server certificate that follows its files.
pub struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
    observer: ExpiryObserver,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Reads `cert` (the chain, leaf first) and `key`; fails when they do not load, so a
    /// listener never starts without a certificate. `observer` is told the leaf's expiry now
    /// and after every reload.
    pub fn open(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        observer: ExpiryObserver,
    ) -> Result<Self, CertificateError> {
        let seen = versions(cert, key);
        let certified = load(cert, key, &provider)?;
        observe(&certified, &observer);
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            loaded: Mutex::new(Loaded {
                key: Arc::new(certified),
                seen,
                checked: Instant::now(),
            }),
            observer,
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
                        observe(&certified, &self.observer);
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

/// Tells `observer` when the leaf of `certified` expires (nothing for a leaf it cannot read).
fn observe(certified: &CertifiedKey, observer: &ExpiryObserver) {
    if let Some(not_after) = certified.cert.first().and_then(|leaf| not_after(leaf)) {
        observer(not_after);
    }
}

/// The `notAfter` of a DER certificate, in unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
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

    fn ignore() -> ExpiryObserver {
        Box::new(|_| {})
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

    /// The resolver of the `tls.crt` and `tls.key` in `dir`.
    fn open_in(
        dir: &Path,
        observer: ExpiryObserver,
    ) -> Result<ReloadingCertificate, CertificateError> {
        ReloadingCertificate::open(
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            provider(),
            observer,
        )
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
        let resolver = open_in(&dir, ignore()).expect("loads");
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
        let resolver = open_in(&dir, ignore()).expect("loads");
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
    fn the_observer_hears_the_expiry_of_each_certificate_presented() {
        let dir = scratch("expiry");
        let dated = |days: i64| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params =
                rcgen::CertificateParams::new(vec!["a.example.test".to_owned()]).expect("params");
            params.not_before = rcgen::date_time_ymd(2026, 1, 1);
            params.not_after =
                params.not_before + std::time::Duration::from_secs(days as u64 * 86_400);
            let cert = params.self_signed(&key).expect("cert");
            (cert.pem(), key.serialize_pem())
        };
        replace(&dir, &dated(30));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let record = heard.clone();
        let resolver = open_in(
            &dir,
            Box::new(move |t| record.lock().expect("lock").push(t)),
        )
        .expect("loads");
        replace(&dir, &dated(90));
        std::thread::sleep(RECHECK);
        let _ = resolver.current();
        let jan_1 = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(
            *heard.lock().expect("lock"),
            [jan_1 + 30 * 86_400, jan_1 + 90 * 86_400]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_listener_does_not_start_without_a_loadable_pair() {
        let dir = scratch("missing");
        let missing = open_in(&dir, ignore());
        assert!(matches!(missing, Err(CertificateError::Read { .. })));
        let (cert, _) = pair("a.example.test");
        let (_, key) = pair("a.example.test");
        replace(&dir, &(cert, key));
        let mismatched = open_in(&dir, ignore());
        assert!(matches!(mismatched, Err(CertificateError::Invalid(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
