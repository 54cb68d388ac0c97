//! `--wait`: poll status until it proves that every connected gateway enforces a revocation.
//!
//! The proof is what the operator's leader writes from the gateways' acknowledgements: a revoked
//! session's `Enforced` condition turns `True` once every connected gateway refuses it (never
//! with no gateway connected, reason `NoGatewayConnected`); a policy's `status.enforcedEpoch`
//! is the epoch every connected gateway enforces. Neither can be true before the revocation was
//! written, since a revocation is one-way and an epoch only goes up.
//!
//! Two more facts settle a session without that condition: its deletion (the operator streams a
//! deleted session as ended, to every gateway) and its expiry plus the gateways' clock-skew
//! allowance (no gateway accepts it after that, revoked or not).
//!
//! Only gateways known to the operator are counted (a silent one stays counted, as behind, for
//! 120 s). One that lost its stream keeps enforcing the last state it received and follows the
//! API server itself after a few seconds; docs/cli.md states this.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use portcullis_crds::{AccessPolicy, AccessSession};
use tokio::time::Instant;

use crate::error::{Error, Target};
use crate::printer::Printer;
use crate::sanitize;
use crate::sessions::{GATEWAY_CLOCK_SKEW, Sessions, expired_everywhere};

/// How often status is read.
pub const POLL: Duration = Duration::from_millis(500);

/// Every request gets at least this long, even when the deadline is closer: the last look at
/// status must be able to complete.
const MIN_REQUEST_TIME: Duration = Duration::from_secs(2);

/// What a session's status says.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Every connected gateway refuses it (`enforcedBy/connected`).
    Enforced(String),
    /// Past its expiry plus the gateways' clock-skew allowance: every gateway refuses it anyway.
    Expired,
    /// Not shown yet, and why.
    Pending(String),
}

/// The enforcement of a revoked session, from its status.
pub fn session_state(session: &AccessSession, now: Timestamp) -> SessionState {
    let status = session.status.as_ref();
    let condition = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Enforced"));
    match condition {
        Some(c) if c.status == "True" => SessionState::Enforced(
            status
                .and_then(|s| s.enforcement.as_ref())
                .map_or_else(String::new, |e| e.summary.clone()),
        ),
        _ if expired_everywhere(session, now) => SessionState::Expired,
        Some(c) => SessionState::Pending(format!(
            "Enforced={}, {}: {}",
            sanitize::value(&c.status),
            sanitize::value(&c.reason),
            sanitize::value(&c.message)
        )),
        None => SessionState::Pending(
            "no Enforced condition in status: the operator has not written it (is it running, \
             and does it watch this namespace?)"
                .to_owned(),
        ),
    }
}

/// The enforcement of a raised epoch, from the policy's status: `Ok(summary)` once every
/// connected gateway (at least one) enforces `epoch` or a later one.
pub fn policy_state(
    policy: &AccessPolicy,
    uid: Option<&str>,
    epoch: i64,
) -> Result<String, String> {
    if uid.is_some() && policy.metadata.uid.as_deref() != uid {
        return Err("the policy was deleted and created again: a new object".to_owned());
    }
    let Some(status) = &policy.status else {
        return Err("no status: the operator has not written it (is it running?)".to_owned());
    };
    let (applied, connected) = status
        .gateways
        .as_ref()
        .map_or((0, 0), |g| (g.applied, g.connected));
    let not_ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status != "True")
        .map(|c| {
            format!(
                "; Ready={}, {}: {}",
                sanitize::value(&c.status),
                sanitize::value(&c.reason),
                sanitize::value(&c.message)
            )
        })
        .unwrap_or_default();
    match status.enforced_epoch {
        _ if connected == 0 => Err(format!(
            "no gateway is connected to the operator (gateways {applied}/{connected}), so none \
             enforces epoch {epoch} yet{not_ready}"
        )),
        Some(enforced) if enforced >= epoch => Ok(format!(
            "enforced by all {connected} connected gateways (status.enforcedEpoch {enforced})"
        )),
        enforced => Err(format!(
            "status.enforcedEpoch {}, gateways {applied}/{connected} applied{not_ready}",
            enforced.map_or_else(|| "unset".to_owned(), |e| e.to_string())
        )),
    }
}

/// Runs `request` until the deadline, but for at least [`MIN_REQUEST_TIME`].
pub async fn bounded<T>(deadline: Instant, request: impl Future<Output = T>) -> Option<T> {
    let until = deadline.max(Instant::now() + MIN_REQUEST_TIME);
    tokio::time::timeout_at(until, request).await.ok()
}

/// Sleeps until the next poll, or returns `false` when the deadline has passed.
pub async fn next_poll(deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    tokio::time::sleep(POLL.min(deadline - now)).await;
    true
}

pub fn timed_out(what: &str, timeout: Duration, pending: &BTreeMap<String, String>) -> Error {
    let mut message = format!(
        "{what} not shown as enforced by every connected gateway after {}s:",
        timeout.as_secs_f64()
    );
    for (name, why) in pending {
        message += &format!("\n  {name}: {why}");
    }
    message += "\nThe revocation itself is written and stays in force; it is the proof that is \
                missing. See `kubectl portcullis status`.";
    Error::NotEnforced(message)
}

/// Reports one session's state; returns whether it is settled.
pub fn settle(
    out: &mut Printer<impl Write>,
    name: &str,
    state: SessionState,
    pending: &mut BTreeMap<String, String>,
) -> bool {
    match state {
        SessionState::Enforced(summary) => {
            out.line(format_args!(
                "accesssession/{name} enforced by every connected gateway ({})",
                sanitize::value(&summary)
            ));
            true
        }
        SessionState::Expired => {
            out.line(format_args!(
                "accesssession/{name} expired more than {}s ago (refused everywhere)",
                GATEWAY_CLOCK_SKEW.as_secs()
            ));
            true
        }
        SessionState::Pending(why) => {
            pending.insert(name.to_owned(), why);
            false
        }
    }
}

/// Reports a deleted session, which is settled: the operator streams a deletion to every
/// gateway as ended.
pub fn report_deleted(out: &mut Printer<impl Write>, name: &str) {
    out.line(format_args!(
        "accesssession/{name} deleted (ended everywhere)"
    ));
}

/// Waits for revoked sessions by name.
pub async fn sessions(
    out: &mut Printer<impl Write>,
    sessions: &Sessions,
    names: &[String],
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut waiting: BTreeSet<String> = names.iter().cloned().collect();
    let mut pending = BTreeMap::new();
    loop {
        pending.clear();
        let now = Timestamp::now();
        let mut settled = Vec::new();
        for name in &waiting {
            match bounded(deadline, sessions.get(name)).await {
                Some(Ok(Some(session))) => {
                    if settle(out, name, session_state(&session, now), &mut pending) {
                        settled.push(name.clone());
                    }
                }
                Some(Ok(None)) => {
                    report_deleted(out, name);
                    settled.push(name.clone());
                }
                Some(Err(e)) if e.is_transient() => {
                    pending.insert(name.clone(), format!("could not read status: {e}"));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    pending.insert(
                        name.clone(),
                        "the API server did not answer in time".to_owned(),
                    );
                }
            }
        }
        for name in settled {
            waiting.remove(&name);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if !next_poll(deadline).await {
            return Err(timed_out("the revocation is", timeout, &pending));
        }
    }
}

/// Waits until the policy's status shows `epoch` enforced.
pub async fn policy(
    out: &mut Printer<impl Write>,
    api: &Api<AccessPolicy>,
    target: Target<'_>,
    uid: Option<&str>,
    epoch: i64,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let name = target.name.unwrap_or_default();
    let label = format!(
        "accesspolicy/{name} in namespace {}",
        target.namespace.unwrap_or_default()
    );
    let mut pending = BTreeMap::new();
    loop {
        match bounded(deadline, api.get_opt(name)).await {
            Some(Ok(Some(policy))) => match policy_state(&policy, uid, epoch) {
                Ok(summary) => {
                    out.line(format_args!("accesspolicy/{name} epoch {epoch} {summary}"));
                    return Ok(());
                }
                Err(why) => {
                    pending.insert(label.clone(), why);
                }
            },
            Some(Ok(None)) => {
                pending.insert(label.clone(), "deleted".to_owned());
            }
            Some(Err(e)) => {
                let e = target.error(e);
                if !e.is_transient() {
                    return Err(e);
                }
                pending.insert(label.clone(), format!("could not read status: {e}"));
            }
            None => {
                pending.insert(
                    label.clone(),
                    "the API server did not answer in time".to_owned(),
                );
            }
        }
        if !next_poll(deadline).await {
            return Err(timed_out(&format!("epoch {epoch} is"), timeout, &pending));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::tests::session;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use portcullis_crds::policy::GatewayProgress;
    use portcullis_crds::session::Enforcement;
    use portcullis_crds::{AccessPolicyStatus, AccessSessionStatus};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(at(0)),
        }
    }

    #[test]
    fn a_session_is_enforced_only_when_its_condition_says_so() {
        let mut s = session("s", "dex", "sub", "e");
        s.spec.revoked = true;
        assert!(
            matches!(session_state(&s, at(1_500)), SessionState::Pending(w) if w.contains("operator"))
        );
        s.status = Some(AccessSessionStatus {
            conditions: vec![
                condition("Revoked", "True", "Revoked"),
                condition("Enforced", "False", "NoGatewayConnected"),
            ],
            enforcement: Some(Enforcement {
                enforced_by: 0,
                connected: 0,
                summary: "0/0".into(),
            }),
            ..AccessSessionStatus::default()
        });
        assert_eq!(
            session_state(&s, at(1_500)),
            SessionState::Pending("Enforced=False, NoGatewayConnected: m".into())
        );
        // Expired on this clock, but a gateway whose clock is behind may accept it for the
        // clock-skew allowance (30 s) longer: not settled until then.
        assert!(matches!(
            session_state(&s, at(2_000)),
            SessionState::Pending(_)
        ));
        assert!(matches!(
            session_state(&s, at(2_029)),
            SessionState::Pending(_)
        ));
        assert_eq!(session_state(&s, at(2_030)), SessionState::Expired);
        if let Some(status) = s.status.as_mut() {
            status.conditions[1] = condition("Enforced", "True", "EnforcedByAllGateways");
            status.enforcement = Some(Enforcement {
                enforced_by: 2,
                connected: 2,
                summary: "2/2".into(),
            });
        }
        assert_eq!(
            session_state(&s, at(1_500)),
            SessionState::Enforced("2/2".into())
        );
    }

    fn policy(enforced: Option<i64>, applied: i32, connected: i32) -> AccessPolicy {
        let mut p: AccessPolicy = match serde_json::from_value(serde_json::json!({
            "apiVersion": "access.portcullis.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "apps", "namespace": "ns", "uid": "u1"},
            "spec": {"hosts": ["a.example"], "rules": [{"action": "Deny", "include": [{"everyone": true}]}]}
        })) {
            Ok(p) => p,
            Err(e) => panic!("fixture: {e}"),
        };
        p.status = Some(AccessPolicyStatus {
            enforced_epoch: enforced,
            gateways: Some(GatewayProgress {
                applied,
                connected,
                summary: format!("{applied}/{connected}"),
            }),
            conditions: vec![condition("Ready", "True", "Accepted")],
            ..AccessPolicyStatus::default()
        });
        p
    }

    #[test]
    fn an_epoch_is_enforced_when_every_connected_gateway_has_it() {
        assert!(policy_state(&policy(Some(3), 2, 2), Some("u1"), 3).is_ok());
        assert!(policy_state(&policy(Some(4), 2, 2), Some("u1"), 3).is_ok());
        let Err(why) = policy_state(&policy(Some(2), 1, 2), Some("u1"), 3) else {
            panic!("epoch 2 does not enforce 3");
        };
        assert_eq!(why, "status.enforcedEpoch 2, gateways 1/2 applied");
        // The last enforced epoch is kept when every gateway has gone: no proof then.
        let Err(why) = policy_state(&policy(Some(3), 0, 0), Some("u1"), 3) else {
            panic!("no gateway, no proof");
        };
        assert!(why.starts_with("no gateway is connected"), "{why}");
        assert!(policy_state(&policy(Some(3), 2, 2), Some("other"), 3).is_err());
        let mut bare = policy(None, 0, 0);
        bare.status = None;
        assert!(policy_state(&bare, None, 1).is_err_and(|w| w.contains("no status")));
    }
}
