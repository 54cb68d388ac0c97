//! The signing keys in force and the verifiers built on them, as one value.
//!
//! The keys can change while the gateway runs (a rotation picked up from the mounted files), so
//! the gateway holds them behind a `watch` channel: a request borrows the current value once,
//! the reloader publishes a new one. Keys and verifiers are swapped together, because a
//! verifier's cache belongs to the keys it checked signatures with (`Verifier`'s documentation):
//! a new set starts with empty caches, and each live token pays one signature check again
//! after a rotation, never one per request.

use crate::{
    identity_cache::TokenMemo,
    tokens::{HandoffClaims, LoginClaims, SsoClaims},
};
use portcullis_core::token::{AppClaims, KeySet, TokenKind, Verifier};
use std::sync::Arc;
use tokio::sync::watch;

/// Verified tokens kept per kind (each entry is a few hundred bytes).
const VERIFIER_CAPACITY: usize = 100_000;
/// Verified hand-off tickets and login states kept: both live a minute or so.
const SHORT_LIVED_CAPACITY: usize = 1024;

/// One key set and the verifiers of every token kind the gateway reads.
pub struct Signing {
    keys: Arc<KeySet>,
    /// App tokens carry the identity headers made for them in their cache entries.
    app_tokens: Verifier<AppClaims, TokenMemo>,
    sso_tokens: Verifier<SsoClaims>,
    handoffs: Verifier<HandoffClaims>,
    logins: Verifier<LoginClaims>,
}

impl Signing {
    /// `keys` with empty verifiers for tokens issued by `issuer`.
    pub fn new(keys: Arc<KeySet>, issuer: &str) -> Self {
        Self {
            app_tokens: Verifier::new(keys.clone(), TokenKind::App, issuer, VERIFIER_CAPACITY),
            sso_tokens: Verifier::new(keys.clone(), TokenKind::Sso, issuer, VERIFIER_CAPACITY),
            handoffs: Verifier::new(
                keys.clone(),
                TokenKind::Handoff,
                issuer,
                SHORT_LIVED_CAPACITY,
            ),
            logins: Verifier::new(keys.clone(), TokenKind::Login, issuer, SHORT_LIVED_CAPACITY),
            keys,
        }
    }

    /// The keys new tokens are signed with and the JWKS is served from.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn app_tokens(&self) -> &Verifier<AppClaims, TokenMemo> {
        &self.app_tokens
    }

    pub fn sso_tokens(&self) -> &Verifier<SsoClaims> {
        &self.sso_tokens
    }

    pub fn handoffs(&self) -> &Verifier<HandoffClaims> {
        &self.handoffs
    }

    pub fn logins(&self) -> &Verifier<LoginClaims> {
        &self.logins
    }
}

/// Where a gateway's signing keys come from: a fixed set (tests, benchmarks) or a channel the
/// reloader publishes new sets on.
pub struct SigningSource(Source);

enum Source {
    Fixed(Arc<KeySet>),
    Following(watch::Receiver<Arc<Signing>>),
}

impl SigningSource {
    /// The channel the gateway reads its keys from; `issuer` builds the verifiers of a fixed set.
    pub fn into_receiver(self, issuer: &str) -> watch::Receiver<Arc<Signing>> {
        match self.0 {
            Source::Following(receiver) => receiver,
            Source::Fixed(keys) => {
                // The sender is dropped: the value stays readable and never changes.
                let (_, receiver) = watch::channel(Arc::new(Signing::new(keys, issuer)));
                receiver
            }
        }
    }
}

impl From<Arc<KeySet>> for SigningSource {
    fn from(keys: Arc<KeySet>) -> Self {
        Self(Source::Fixed(keys))
    }
}

impl From<watch::Receiver<Arc<Signing>>> for SigningSource {
    fn from(receiver: watch::Receiver<Arc<Signing>>) -> Self {
        Self(Source::Following(receiver))
    }
}
