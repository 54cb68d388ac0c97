//! The access log: one structured event per request on the gateway's HTTPS listener, with the
//! decision and its reason, so "why was I refused?" and "who reached /admin?" are answered from
//! the log rather than from a debugger.
//!
//! The check that decides ([`crate::serve::check`]) notes its outcome in a task-local slot that
//! the router opens around each request ([`scope`]); the router writes the line once the
//! response head is known. A request that never reaches the check (the auth host, a bad path)
//! is logged with `decision = "none"`.
//!
//! Cost is kept off the request path where it can be: nothing is formatted unless a line is
//! written, and allowed requests can be sampled (`--access-log-sample`); refusals and server
//! errors are always written, because they are the lines someone will look for. Events go to the
//! tracing target `portcullis::access`, so `RUST_LOG=info,portcullis::access=off` also silences
//! them. The query string is never logged (it may carry codes or tokens), nor are cookies.

use crate::{access::Outcome, metrics::CheckResult, settings::AccessLogSettings};
use http::{HeaderValue, Method, StatusCode, Uri};
use portcullis_core::{Decision, Policy, token::AppClaims};
use std::{cell::RefCell, future::Future, net::IpAddr, sync::Arc, time::Duration};

tokio::task_local! {
    static NOTE: RefCell<Option<Note>>;
}

/// Longest path written to the log; longer ones are cut (with `…`), so a hostile 8 KB path does
/// not become an 8 KB log line.
const MAX_LOGGED_PATH: usize = 256;

/// What the access check decided about one request.
#[derive(Clone, Debug)]
pub struct Note {
    pub policy: Option<Arc<Policy>>,
    pub result: CheckResult,
    /// The decision or refusal code: `allow`, `bypass`, `service_auth`, a login reason
    /// (`login_required`, `session_revoked`, …), a denial (`denied_by_rule`, …), `no_policy`,
    /// `not_ready`.
    pub code: &'static str,
    /// Index of the rule that decided, when one did.
    pub rule: Option<usize>,
    pub principal: Principal,
}

/// Who stands behind a request, as far as the check established it.
#[derive(Clone, Debug)]
pub enum Principal {
    Anonymous,
    User(Arc<AppClaims>),
    ServiceToken(Arc<str>),
}

impl Note {
    /// The note for `outcome`.
    pub fn of(outcome: &Outcome) -> Self {
        let (policy, code, rule, principal) = match outcome {
            Outcome::Allow {
                policy,
                user,
                decision,
                service_token,
                bearer,
            } => {
                let (code, rule) = match *decision {
                    Decision::Bypass { rule } => ("bypass", Some(rule)),
                    Decision::ServiceAuth { rule } => ("service_auth", Some(rule)),
                    Decision::Allow { rule } => ("allow", Some(rule)),
                    _ => ("allow", None),
                };
                let principal = match (user, service_token, bearer) {
                    (Some(user), _, _) => Principal::User(user.claims.clone()),
                    (None, Some(name), _) => Principal::ServiceToken(name.clone()),
                    // Logged as `bearer:<client id>`: an id the rule's allow-list holds.
                    (None, None, Some(token)) => {
                        Principal::ServiceToken(format!("bearer:{}", token.client_id).into())
                    }
                    (None, None, None) => Principal::Anonymous,
                };
                (Some(policy.clone()), code, rule, principal)
            }
            Outcome::Login { policy, reason, .. } => (
                Some(policy.clone()),
                reason.code(),
                None,
                Principal::Anonymous,
            ),
            Outcome::Deny { reason, policy } => {
                (policy.clone(), reason.code(), None, Principal::Anonymous)
            }
            Outcome::NoPolicy => (None, "no_policy", None, Principal::Anonymous),
            Outcome::NotReady => (None, "not_ready", None, Principal::Anonymous),
        };
        Self {
            policy,
            result: outcome.result(),
            code,
            rule,
            principal,
        }
    }
}

/// Records the check's outcome for the access-log line of the request being served; a no-op
/// outside [`scope`] (tests that drive a surface directly).
pub fn note(outcome: &Outcome) {
    let _ = NOTE.try_with(|slot| *slot.borrow_mut() = Some(Note::of(outcome)));
}

/// Runs `serve` with an empty note slot and returns its response with what the check noted.
pub async fn scope<F, R>(serve: F) -> (R, Option<Note>)
where
    F: Future<Output = R>,
{
    NOTE.scope(RefCell::new(None), async move {
        let response = serve.await;
        let note = NOTE.with(|slot| slot.borrow_mut().take());
        (response, note)
    })
    .await
}

/// One request as the router saw it.
pub struct Line<'a> {
    pub request_id: &'a HeaderValue,
    pub client_ip: IpAddr,
    pub method: &'a Method,
    pub host: Option<&'a str>,
    pub uri: &'a Uri,
    pub status: StatusCode,
    pub elapsed: Duration,
    pub note: Option<&'a Note>,
}

/// Whether `line` is written under `settings`: always for refusals and server errors, for a
/// sampled share of the rest.
pub fn should_write(settings: &AccessLogSettings, line: &Line<'_>) -> bool {
    if !settings.enabled {
        return false;
    }
    let refused = line.note.is_some_and(|n| n.result != CheckResult::Allow);
    if refused || line.status.is_server_error() || settings.sample >= 1.0 {
        return true;
    }
    settings.sample > 0.0 && rand::random::<f64>() < settings.sample
}

/// Writes `line` when [`should_write`] says so.
pub fn write(settings: &AccessLogSettings, line: &Line<'_>) {
    // The filter is asked first: when it drops the event anyway (`portcullis::access=off`),
    // the line is not assembled (the policy's name and the rule are formatted for it).
    if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO)
        || !should_write(settings, line)
    {
        return;
    }
    let note = line.note;
    let policy = note
        .and_then(|n| n.policy.as_ref())
        .map(|p| p.id.to_string());
    let rule = note.and_then(|n| {
        let index = n.rule?;
        let named = n.policy.as_ref()?.rules.get(index)?.name.clone();
        Some(named.unwrap_or_else(|| format!("#{index}")))
    });
    let (user, service_token) = match note.map(|n| &n.principal) {
        Some(Principal::User(claims)) => {
            (Some(claims.email.as_deref().unwrap_or(&claims.sub)), None)
        }
        Some(Principal::ServiceToken(name)) => (None, Some(&**name)),
        _ => (None, None),
    };
    let session = match note.map(|n| &n.principal) {
        Some(Principal::User(claims)) => claims.sid.as_str(),
        _ => "",
    };
    // Display (`%`) throughout: `key=value` in the text format, strings in JSON.
    tracing::info!(
        target: "portcullis::access",
        request_id = %line.request_id.to_str().unwrap_or(""),
        client_ip = %line.client_ip,
        method = %line.method,
        host = %line.host.unwrap_or(""),
        path = %logged_path(line.uri.path()),
        status = line.status.as_u16(),
        duration_us = u64::try_from(line.elapsed.as_micros()).unwrap_or(u64::MAX),
        decision = %note.map_or("none", |n| n.result.label()),
        reason = %note.map_or("", |n| n.code),
        policy = %policy.as_deref().unwrap_or(""),
        rule = %rule.as_deref().unwrap_or(""),
        user = %user.unwrap_or(""),
        session = %session,
        service_token = %service_token.unwrap_or(""),
        "access"
    );
}

/// `path` cut to [`MAX_LOGGED_PATH`] bytes at a character boundary, control characters escaped
/// (a path is client input: it must not forge a second log line in text format).
fn logged_path(path: &str) -> String {
    let mut end = path.len().min(MAX_LOGGED_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = path[..end].escape_debug().collect();
    if end < path.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(
        id: &'a HeaderValue,
        uri: &'a Uri,
        status: StatusCode,
        note: Option<&'a Note>,
    ) -> Line<'a> {
        Line {
            request_id: id,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            method: &Method::GET,
            host: None,
            uri,
            status,
            elapsed: Duration::from_micros(10),
            note,
        }
    }

    fn note(result: CheckResult) -> Note {
        Note {
            policy: None,
            result,
            code: "x",
            rule: None,
            principal: Principal::Anonymous,
        }
    }

    #[test]
    fn refusals_and_errors_are_written_whatever_the_sampling() {
        let id = HeaderValue::from_static("r1");
        let uri = Uri::from_static("/a");
        let none = AccessLogSettings {
            enabled: true,
            sample: 0.0,
        };
        let denied = note(CheckResult::Deny);
        let login = note(CheckResult::Login);
        let allowed = note(CheckResult::Allow);
        assert!(should_write(
            &none,
            &line(&id, &uri, StatusCode::FORBIDDEN, Some(&denied))
        ));
        assert!(should_write(
            &none,
            &line(&id, &uri, StatusCode::FOUND, Some(&login))
        ));
        assert!(should_write(
            &none,
            &line(&id, &uri, StatusCode::BAD_GATEWAY, Some(&allowed))
        ));
        assert!(!should_write(
            &none,
            &line(&id, &uri, StatusCode::OK, Some(&allowed))
        ));
        let all = AccessLogSettings {
            enabled: true,
            sample: 1.0,
        };
        assert!(should_write(
            &all,
            &line(&id, &uri, StatusCode::OK, Some(&allowed))
        ));
        let off = AccessLogSettings {
            enabled: false,
            sample: 1.0,
        };
        assert!(!should_write(
            &off,
            &line(&id, &uri, StatusCode::FORBIDDEN, Some(&denied))
        ));
    }

    #[test]
    fn sampling_writes_about_the_share_asked_for() {
        let id = HeaderValue::from_static("r1");
        let uri = Uri::from_static("/a");
        let allowed = note(CheckResult::Allow);
        let tenth = AccessLogSettings {
            enabled: true,
            sample: 0.1,
        };
        let written = (0..20_000)
            .filter(|_| should_write(&tenth, &line(&id, &uri, StatusCode::OK, Some(&allowed))))
            .count();
        // 2000 expected; ±5 standard deviations (σ ≈ 42).
        assert!((1_790..=2_210).contains(&written), "{written}");
    }

    #[test]
    fn paths_are_cut_and_cannot_forge_lines() {
        assert_eq!(logged_path("/a/b"), "/a/b");
        assert_eq!(logged_path("/a\nb"), "/a\\nb");
        let long = format!("/{}", "é".repeat(300));
        let logged = logged_path(&long);
        assert!(logged.ends_with('…'));
        assert!(logged.len() <= MAX_LOGGED_PATH + '…'.len_utf8());
    }
}
