//! `status`: the fleet at a glance, from what the operator writes into status: each policy's
//! readiness, gateways and epochs, and how many revoked sessions every gateway enforces.

use std::io::Write;

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;
use portcullis_crds::AccessPolicy;

use crate::cli::SessionFilter;
use crate::error::{Error, Target};
use crate::output::table;
use crate::printer::Printer;
use crate::retry;
use crate::sessions::{Sessions, expired};
use crate::wait::{SessionState, session_state};

/// The policies table and the summary lines.
pub fn render(policies: &[AccessPolicy], namespace: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = policies.iter().map(policy_row).collect();
    let scope = namespace.map_or_else(|| "all namespaces".to_owned(), |n| format!("namespace {n}"));
    if policies.is_empty() {
        return format!("No AccessPolicies in {scope}.\n");
    }
    let mut out = table(
        &[
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "GATEWAYS",
            "EPOCH",
            "ENFORCED-EPOCH",
        ],
        &rows,
    );
    out += &policies_summary(policies, &scope);
    out
}

/// One policy's row of the table.
fn policy_row(p: &AccessPolicy) -> Vec<String> {
    let status = p.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    vec![
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
        ready.map_or_else(|| "?".to_owned(), |c| c.status.clone()),
        ready.map_or_else(|| "-".to_owned(), |c| c.reason.clone()),
        status
            .and_then(|s| s.gateways.as_ref())
            .map_or_else(|| "-".to_owned(), |g| g.summary.clone()),
        p.spec.revocation_epoch.to_string(),
        status
            .and_then(|s| s.enforced_epoch)
            .map_or_else(|| "-".to_owned(), |e| e.to_string()),
    ]
}

/// The lines under the table: how many policies are ready, how many have a raised epoch not
/// enforced yet, and how many gateways are connected.
fn policies_summary(policies: &[AccessPolicy], scope: &str) -> String {
    let ready = policies
        .iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count();
    let behind = policies
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.enforced_epoch)
                .unwrap_or(0)
                < p.spec.revocation_epoch
        })
        .count();
    // Every policy's status counts the same fleet; the most recent write has the best count.
    let connected = policies
        .iter()
        .filter_map(|p| p.status.as_ref()?.gateways.as_ref().map(|g| g.connected))
        .max();
    let mut out = format!(
        "\n{} {} in {scope}: {ready} ready, {} not ready",
        policies.len(),
        if policies.len() == 1 {
            "policy"
        } else {
            "policies"
        },
        policies.len() - ready
    );
    if behind > 0 {
        out += &format!(", {behind} with a raised epoch not yet enforced by every gateway");
    }
    out += ".\n";
    out += &match connected {
        Some(n) => format!("Gateways connected to the operator: {n}.\n"),
        None => "Gateways connected to the operator: unknown (no policy has status yet: is the \
                 operator running?).\n"
            .to_owned(),
    };
    out
}

/// The sessions line: active, revoked and enforced, revoked and not yet enforced.
pub fn sessions_line(
    sessions: &[portcullis_crds::AccessSession],
    namespace: &str,
    now: Timestamp,
) -> String {
    let mut active = 0;
    let mut enforced = 0;
    let mut pending = 0;
    let mut expired_count = 0;
    for s in sessions {
        if expired(s, now) {
            expired_count += 1;
        } else if !s.spec.revoked {
            active += 1;
        } else if matches!(session_state(s, now), SessionState::Enforced(_)) {
            enforced += 1;
        } else {
            pending += 1;
        }
    }
    let mut line = format!(
        "Sessions in namespace {namespace}: {active} active, {} revoked ({enforced} enforced by \
         every gateway, {pending} not yet)",
        enforced + pending
    );
    if expired_count > 0 {
        line += &format!(", {expired_count} expired (collected by the operator)");
    }
    line + ".\n"
}

/// `status`.
pub async fn status(
    out: &mut Printer<impl Write>,
    client: kube::Client,
    namespace: Option<&str>,
    sessions: &Sessions,
) -> Result<(), Error> {
    let api: Api<AccessPolicy> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let target = Target {
        verb: "list",
        resource: "accesspolicies",
        kind: "AccessPolicy",
        namespace,
        name: None,
    };
    let mut params = ListParams::default().limit(500);
    let mut policies = Vec::new();
    loop {
        let page =
            retry::transient(|| async { api.list(&params).await.map_err(|e| target.error(e)) })
                .await?;
        policies.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    out.put(render(&policies, namespace).as_bytes());
    let listed = sessions.list(&SessionFilter::default()).await?;
    out.put(sessions_line(&listed, &sessions.namespace, Timestamp::now()).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::tests::session;

    #[test]
    fn the_sessions_line_counts_each_state() {
        let now = Timestamp::from_second(1_500).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut revoked = session("b", "dex", "s", "e");
        revoked.spec.revoked = true;
        let mut old = session("c", "dex", "s", "e");
        old.spec.expires_at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_200).unwrap_or(Timestamp::UNIX_EPOCH),
        );
        let line = sessions_line(
            &[session("a", "dex", "s", "e"), revoked, old],
            "portcullis",
            now,
        );
        assert_eq!(
            line,
            "Sessions in namespace portcullis: 1 active, 1 revoked (0 enforced by every gateway, \
             1 not yet), 1 expired (collected by the operator).\n"
        );
    }

    #[test]
    fn no_policies_says_so() {
        assert_eq!(
            render(&[], Some("x")),
            "No AccessPolicies in namespace x.\n"
        );
    }
}
