//! The metrics of key material read again from its files while the gateway runs: how each
//! reload ended, and whether the files on disk are being refused right now, so an alert can
//! fire while a rotation is stuck rather than once when it failed.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

const KEY_RELOADS: &str = "\
    Key files read again after they changed, by kind (signing, session, client_secret) and \
    result: success (the new keys are in use), failure (they did not load; the keys in use \
    were kept)";
const KEY_FILES_REJECTED: &str = "\
    1 while the key files of a kind have changed but do not load, and the gateway still uses \
    the keys it had (alert on it)";

/// Key material the gateway reloads: the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The token signing keys (current, next, previous).
    Signing,
    /// The session keys that seal refresh tokens.
    Session,
    /// The identity providers' client secrets.
    ClientSecret,
}

impl KeyKind {
    pub const ALL: [Self; 3] = [Self::Signing, Self::Session, Self::ClientSecret];

    pub fn label(self) -> &'static str {
        match self {
            Self::Signing => "signing",
            Self::Session => "session",
            Self::ClientSecret => "client_secret",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    kind: &'static str,
    result: &'static str,
}

/// The key-reload series.
#[derive(Clone, Default)]
pub(super) struct KeyMetrics {
    reloads: Family<ReloadLabel, Counter>,
    rejected: Family<KindLabel, Gauge>,
}

impl KeyMetrics {
    pub(super) fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = Self::default();
        registry.register("key_reloads", KEY_RELOADS, metrics.reloads.clone());
        registry.register(
            "key_files_rejected",
            KEY_FILES_REJECTED,
            metrics.rejected.clone(),
        );
        metrics
    }

    /// Every kind and result at zero.
    pub(super) fn initialize(&self) {
        for kind in KeyKind::ALL {
            for result in ["success", "failure"] {
                let _ = self.reloads.get_or_create(&ReloadLabel {
                    kind: kind.label(),
                    result,
                });
            }
            let _ = self
                .rejected
                .get_or_create(&KindLabel { kind: kind.label() });
        }
    }

    /// Counts one reload of `kind`.
    pub(super) fn reloaded(&self, kind: KeyKind, loaded: bool) {
        let result = if loaded { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadLabel {
                kind: kind.label(),
                result,
            })
            .inc();
    }

    /// Notes whether files of `kind` are refused now.
    pub(super) fn rejecting(&self, kind: KeyKind, rejecting: bool) {
        self.rejected
            .get_or_create(&KindLabel { kind: kind.label() })
            .set(i64::from(rejecting));
    }
}
