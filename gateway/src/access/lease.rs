//! Leases: what keeps an admitted exchange that outlives its request (an upgraded WebSocket
//! connection, a response body still streaming) honest. A request is judged once; a connection
//! that stays open for hours must end when a request in its place would be refused: its session
//! revoked or unconfirmed, its policy's epoch raised, the policy deleted or created again, its
//! rules no longer admitting the user, or its absolute lifetime over.
//!
//! The lease costs nothing while nothing changes: it waits on the gateway's two state channels
//! (access snapshot and session index) and on the absolute deadline, and judges again only when
//! one of them fires. A revocation therefore cuts open exchanges as soon as it reaches the
//! gateway's memory, the same bound every new request sees.

use super::authenticate::bound_to_policy;
pub use crate::metrics::Lapsed;
use crate::{clock::now, gateway::Gateway};
use portcullis_core::{
    Decision, Policy, RequestFacts,
    session::{self},
    token::AppClaims,
};
use std::{net::IpAddr, sync::Arc, time::Duration};

/// The standing of one signed-in user's admission to one policy, for as long as the exchange
/// lasts.
#[derive(Clone)]
pub struct Lease {
    gateway: Gateway,
    policy: Arc<Policy>,
    claims: Arc<AppClaims>,
    client_ip: IpAddr,
}

impl Lease {
    /// The lease of `claims`' session on `policy`, admitted from `client_ip`.
    pub fn new(
        gateway: &Gateway,
        policy: Arc<Policy>,
        claims: Arc<AppClaims>,
        client_ip: IpAddr,
    ) -> Self {
        Self {
            gateway: gateway.clone(),
            policy,
            claims,
            client_ip,
        }
    }

    /// The gateway whose state the lease follows.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The session the lease is for.
    pub fn sid(&self) -> &str {
        &self.claims.sid
    }

    /// The user the lease is for.
    pub fn user(&self) -> crate::audit::User<'_> {
        crate::audit::User::new(&self.claims.sub, self.claims.email.as_deref())
    }

    /// The policy the lease is for, as `namespace/name`.
    pub fn policy(&self) -> String {
        self.policy.id.to_string()
    }

    /// Judges the admission again against the state in force now: `Ok` while a request in
    /// the exchange's place would still be let through, with the session's absolute deadline
    /// under the policy as it stands.
    pub fn judge(&self, now: u64) -> Result<u64, Lapsed> {
        let snapshot = self.gateway.snapshot();
        let Some(policy) = snapshot.policies.get(&self.policy.id) else {
            return Err(Lapsed::PolicyRevoked);
        };
        bound_to_policy(policy, &self.claims).map_err(|_| Lapsed::PolicyRevoked)?;
        let absolute = session::deadlines(&self.claims, &policy.session).absolute;
        if now >= absolute {
            return Err(Lapsed::Expired);
        }
        if let Some(index) = self.gateway.session_index() {
            let index = index.borrow();
            let Ok(session) = index.live(&self.claims.sid, &self.claims.sub, now) else {
                return Err(Lapsed::SessionEnded);
            };
            if let Some(since) = session.refresh_failing_since
                && !policy.session.refresh_failure.admits(since, now)
            {
                return Err(Lapsed::SessionEnded);
            }
        }
        let facts = RequestFacts {
            client_ip: self.client_ip,
            service_token: None,
            bearer: None,
        };
        match policy.evaluate(&facts, Some(&self.claims.identity())) {
            Decision::Allow { .. } => Ok(absolute),
            _ => Err(Lapsed::NoLongerAllowed),
        }
    }

    /// Resolves when the admission lapses. The channels are marked seen before the first
    /// judgement, so a change landing between the two wakes the loop instead of being missed.
    pub async fn lapsed(&self) -> Lapsed {
        let mut state = self.gateway.watch_state();
        let mut index = self.gateway.session_index().clone();
        loop {
            state.mark_unchanged();
            if let Some(index) = &mut index {
                index.mark_unchanged();
            }
            let now = now();
            let absolute = match self.judge(now) {
                Ok(absolute) => absolute,
                Err(lapsed) => return lapsed,
            };
            let until_absolute = Duration::from_secs(absolute.saturating_sub(now));
            tokio::select! {
                changed = state.changed() => {
                    // The state source is gone (shutdown): keep the exchange on what was last
                    // known rather than spinning; the deadline still applies.
                    if changed.is_err() {
                        tokio::time::sleep(until_absolute).await;
                    }
                }
                changed = index_changed(&mut index) => {
                    if changed.is_err() {
                        index = None;
                    }
                }
                () = tokio::time::sleep(until_absolute) => {}
            }
        }
    }
}

/// Waits for the session index to change; never, without one.
async fn index_changed(
    index: &mut Option<
        tokio::sync::watch::Receiver<Arc<crate::state::session_index::SessionIndex>>,
    >,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match index {
        Some(index) => index.changed().await,
        None => std::future::pending().await,
    }
}
