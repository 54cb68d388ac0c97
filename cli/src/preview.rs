//! `preview`: who a change affects, before it is made. An epoch raise logs every session of the
//! policy out of its apps; a rule change locks some users out and lets others in. Each live
//! session's identity (subject, email, groups, identity provider: what its AccessSession
//! records) is judged by the policy's rules through the same code the gateways run
//! ([`portcullis_core::Policy::judge_user`]), old and new side by side. Nothing is written.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use portcullis_core::{Judgement, Policy, identity::Identity};
use portcullis_crds::{AccessPolicy, AccessSession};

use crate::cli::{PreviewEpochArgs, PreviewPolicyArgs, SessionFilter};
use crate::error::{Error, Target};
use crate::output::{ago, table};
use crate::printer::Printer;
use crate::retry;
use crate::sessions::{Sessions, active};

/// `preview epoch NAME`: the live sessions a raise of the policy's epoch would log out.
pub async fn epoch(
    out: &mut Printer<impl Write>,
    client: kube::Client,
    namespace: &str,
    sessions: &Sessions,
    args: &PreviewEpochArgs,
) -> Result<(), Error> {
    let current = fetch(client, namespace, &args.name)
        .await?
        .ok_or_else(|| not_found(namespace, &args.name))?;
    let policy = compile(&current, namespace)?;
    let now = Timestamp::now();
    let live = live_sessions(sessions, now).await?;
    let uid = current.metadata.uid.as_deref();
    let rows: Vec<Row> = live
        .iter()
        .map(|s| Row::new(s, Judgement::Refused, logged_out(&policy, uid, s)))
        .filter(|row| row.after != Judgement::Refused)
        .collect();
    let (sure, unsure) = split_sure(&rows);
    out.put(table(&EPOCH_HEADERS, &cells(&rows, now, false)).as_bytes());
    out.line(format!(
        "Raising the epoch of {namespace}/{} logs out {sure} of {} live sessions ({} users) from \
         its apps; they log in again at the identity provider.{}",
        args.name,
        live.len(),
        users(rows.iter().filter(|r| r.after == Judgement::Allowed)),
        undecided_note(unsure)
    ));
    Ok(())
}

/// `preview policy -f FILE`: the live sessions that would lose or gain access if the policy in
/// `FILE` replaced the one in the cluster.
pub async fn policy(
    out: &mut Printer<impl Write>,
    client: kube::Client,
    context_namespace: &str,
    sessions: &Sessions,
    args: &PreviewPolicyArgs,
) -> Result<(), Error> {
    let proposed = read_manifest(&args.file)?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| proposed.metadata.namespace.clone())
        .unwrap_or_else(|| context_namespace.to_owned());
    let name = proposed.metadata.name.clone().ok_or_else(|| {
        Error::Usage(format!("{}: metadata.name is missing", args.file.display()))
    })?;
    let after = compile(&proposed, &namespace)?;
    let before = match fetch(client, &namespace, &name).await? {
        Some(current) => Some(compile(&current, &namespace)?),
        None => None,
    };
    let now = Timestamp::now();
    let live = live_sessions(sessions, now).await?;
    let rows: Vec<Row> = live
        .iter()
        .map(|s| {
            let was = before.as_ref().map_or(Judgement::Refused, |p| judge(p, s));
            Row::new(s, was, judge(&after, s))
        })
        .filter(|row| row.before != row.after || matches!(row.after, Judgement::Undecided(_)))
        .collect();
    out.put(table(&POLICY_HEADERS, &cells(&rows, now, true)).as_bytes());
    let lose = rows.iter().filter(|r| r.loses()).count();
    let gain = rows.iter().filter(|r| r.gains()).count();
    out.line(format!(
        "Applying {} to {namespace}/{name}{}: {lose} live sessions lose access, {gain} gain it \
         (of {} live).{}",
        args.file.display(),
        if before.is_none() {
            " (a new policy)"
        } else {
            ""
        },
        live.len(),
        undecided_note(split_sure(&rows).1)
    ));
    Ok(())
}

const EPOCH_HEADERS: [&str; 6] = ["NAME", "USER", "IDP", "ISSUED", "CONFIRMED", "NOW"];
const POLICY_HEADERS: [&str; 7] = ["NAME", "USER", "IDP", "ISSUED", "CONFIRMED", "NOW", "AFTER"];

/// One session and how the policy judges it before and after the change.
struct Row<'a> {
    session: &'a AccessSession,
    before: Judgement,
    after: Judgement,
}

impl<'a> Row<'a> {
    fn new(session: &'a AccessSession, before: Judgement, after: Judgement) -> Self {
        Self {
            session,
            before,
            after,
        }
    }

    fn loses(&self) -> bool {
        self.before == Judgement::Allowed && self.after == Judgement::Refused
    }

    fn gains(&self) -> bool {
        self.before == Judgement::Refused && self.after == Judgement::Allowed
    }
}

fn cells(rows: &[Row<'_>], now: Timestamp, with_before: bool) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| {
            let spec = &row.session.spec;
            let confirmed = row
                .session
                .status
                .as_ref()
                .and_then(|s| s.refresh.as_ref())
                .and_then(|r| r.last_refreshed_at.as_ref())
                .map_or_else(|| "-".to_owned(), |t| ago(t.0, now));
            let mut cells = vec![
                row.session.metadata.name.clone().unwrap_or_default(),
                spec.email.clone().unwrap_or_else(|| spec.subject.clone()),
                spec.identity_provider.clone(),
                ago(spec.issued_at.0, now),
                confirmed,
            ];
            if with_before {
                cells.push(verdict(&row.before));
            }
            cells.push(verdict(&row.after));
            cells
        })
        .collect()
}

fn verdict(judgement: &Judgement) -> String {
    match judgement {
        Judgement::Allowed => "allowed".to_owned(),
        Judgement::Refused => "refused".to_owned(),
        Judgement::Undecided(unknown) => unknown.to_string(),
    }
}

/// Sessions whose judgement is certain, and those that depend on something unknown.
fn split_sure(rows: &[Row<'_>]) -> (usize, usize) {
    let unsure = rows
        .iter()
        .filter(|r| matches!(r.after, Judgement::Undecided(_)))
        .count();
    (rows.len() - unsure, unsure)
}

fn undecided_note(unsure: usize) -> String {
    if unsure == 0 {
        String::new()
    } else {
        format!(
            " {unsure} more depend on what a session record does not hold (the client's \
             address or an ID-token claim): shown as such above."
        )
    }
}

fn users<'a>(rows: impl Iterator<Item = &'a Row<'a>>) -> usize {
    rows.map(|r| (&r.session.spec.identity_provider, &r.session.spec.subject))
        .collect::<BTreeSet<_>>()
        .len()
}

/// Whether an epoch raise of `policy` (the object `uid`) logs `session` out: exactly when a
/// gateway handed the session to that object, if the session records where it was handed
/// (`USED_POLICY_PREFIX` annotations); a session that records nothing (from an older gateway)
/// may hold a token wherever the rules admit its identity.
fn logged_out(policy: &Policy, uid: Option<&str>, session: &AccessSession) -> Judgement {
    let mut used = portcullis_crds::session::used_policies(session).peekable();
    match uid {
        Some(uid) if used.peek().is_some() => {
            if used.any(|u| u == uid) {
                Judgement::Allowed
            } else {
                Judgement::Refused
            }
        }
        _ => judge(policy, session),
    }
}

fn judge(policy: &Policy, session: &AccessSession) -> Judgement {
    let spec = &session.spec;
    let identity = Identity {
        subject: spec.subject.clone(),
        email: spec.email.clone(),
        groups: spec.groups.clone(),
        claims: serde_json::Map::new(),
    };
    policy.judge_user(&identity, &spec.identity_provider)
}

async fn live_sessions(sessions: &Sessions, now: Timestamp) -> Result<Vec<AccessSession>, Error> {
    let mut live = sessions.list(&SessionFilter::default()).await?;
    live.retain(|s| active(s, now));
    live.sort_by(|a, b| {
        (a.spec.issued_at.0, &a.metadata.name).cmp(&(b.spec.issued_at.0, &b.metadata.name))
    });
    Ok(live)
}

async fn fetch(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<AccessPolicy>, Error> {
    let api: Api<AccessPolicy> = Api::namespaced(client, namespace);
    let target = Target {
        verb: "get",
        resource: "accesspolicies",
        kind: "AccessPolicy",
        namespace: Some(namespace),
        name: Some(name),
    };
    retry::transient(|| async { api.get_opt(name).await.map_err(|e| target.error(e)) }).await
}

fn not_found(namespace: &str, name: &str) -> Error {
    Error::Usage(format!(
        "AccessPolicy {name:?} not found in namespace {namespace} (-n names the policy's \
         namespace)"
    ))
}

/// The policy as the gateways would compile it; a policy they would refuse is an error here.
fn compile(policy: &AccessPolicy, namespace: &str) -> Result<Policy, Error> {
    let mut policy = policy.clone();
    policy.metadata.namespace = Some(namespace.to_owned());
    Policy::try_from(&policy).map_err(|e| {
        Error::Usage(format!(
            "the gateways would refuse this policy (it would deny everyone): {e}"
        ))
    })
}

fn read_manifest(path: &Path) -> Result<AccessPolicy, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("reading {}: {e}", path.display())))?;
    let value: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| Error::Usage(format!("{} is not YAML: {e}", path.display())))?;
    if value["kind"] != "AccessPolicy" || value["apiVersion"] != "access.portcullis.dev/v1alpha1" {
        return Err(Error::Usage(format!(
            "{} holds a {} {}, not an access.portcullis.dev/v1alpha1 AccessPolicy",
            path.display(),
            value["apiVersion"],
            value["kind"]
        )));
    }
    serde_json::from_value(value).map_err(|e| {
        Error::Usage(format!(
            "{} is not a valid AccessPolicy: {e}",
            path.display()
        ))
    })
}
