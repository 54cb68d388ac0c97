//! Every login becomes an `AccessSession` in the cluster, so it can be listed, audited and
//! revoked with `kubectl`. Its name is the session id (`sid`) in every token of the login.
//!
//! The record is written before the browser gets its SSO cookie: a login that cannot be
//! recorded is refused (a clear error page), never half-made. The create is idempotent — the
//! name is chosen by the gateway, so a retry after a lost answer finds its own object — and
//! retried a bounded number of times while the API server is briefly unavailable.
//!
//! The gateway only ever *creates* sessions (and, at logout, sets `revoked`); it never applies
//! a whole spec again, so it cannot write `revoked: false` over a revocation. The API server's
//! CEL rules refuse that anyway.
//!
//! The objects live in a [`store::SessionStore`]: the API server ([`api_store`]) or, in
//! standalone mode, the gateway's own records ([`file_store`]). [`record`] writes a login and
//! its revocation, [`redeemed`] the fleet-wide single use of hand-off tickets, [`claim`] the
//! single-flight refresh claim and its outcome, and [`refresh`]
//! is the background task that confirms sessions with their identity provider; [`seal`] keeps
//! refresh tokens unreadable in the records.

pub mod api_store;
pub mod claim;
pub mod file_store;
pub mod pending;
pub mod record;
pub mod redeemed;
pub mod refresh;
pub mod seal;
pub mod store;

pub use claim::{Claimed, FinishError, HeldClaim, RefreshClaim, RefreshOutcome};
pub use record::{Liveness, NewSession, RecordError, SessionRecorder, user_label};
pub use redeemed::Redemption;
pub use store::{SessionStore, StoreError};
