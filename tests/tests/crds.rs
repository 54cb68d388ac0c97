//! The CRDs in a real kube-apiserver: installed and Established, objects round-trip, every bad
//! manifest a user could write is refused with a message they can act on, one-way fields stay
//! one-way whatever the writer (merge patch, server-side apply, another field manager), and
//! `kubectl get` shows useful columns.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_tests::{cluster::TestCluster, tools::Tool};
use std::{io::Write as _, process::Stdio};

struct Kubectl {
    status: bool,
    stdout: String,
    stderr: String,
}

/// The admin kubeconfig of the shared cluster (started by the first test that asks).
static KUBECONFIG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

async fn cluster() -> &'static TestCluster {
    let cluster = TestCluster::shared().await;
    KUBECONFIG.get_or_init(|| cluster.info().kubeconfig.clone());
    cluster
}

/// Runs the stack's kubectl against the shared cluster, with `stdin` as input.
fn kubectl(args: &[&str], stdin: &str) -> Result<Kubectl> {
    let kubeconfig = KUBECONFIG.get().context("call cluster() first")?;
    let mut child = std::process::Command::new(Tool::Kubectl.path()?)
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(Kubectl {
        status: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn policy_yaml(ns: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: apps, namespace: {ns} }}
spec:
  hosts: [myserver.example.test]
  paths: [/wordpress, /express]
  identityProviders: [dex]
  rules:
    - action: Allow
      include: [{{ emailDomains: [example.com] }}]
{extra}"#
    )
}

fn session_yaml(ns: &str, name: &str, subject: &str, revoked: bool) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessSession
metadata: {{ name: {name}, namespace: {ns} }}
spec:
  subject: {subject}
  email: {subject}@example.com
  identityProvider: dex
  issuedAt: "2026-11-23T08:00:00Z"
  expiresAt: "2099-11-23T20:00:00Z"
  revoked: {revoked}
"#
    )
}

fn apply(yaml: &str) -> Result<Kubectl> {
    kubectl(&["apply", "-f", "-"], yaml)
}

/// Applies `yaml` and expects the API server to refuse it with `message`.
fn refused(yaml: &str, message: &str) -> Result<()> {
    let out = apply(yaml)?;
    ensure!(
        !out.status,
        "accepted, expected a refusal mentioning {message:?}:\n{yaml}"
    );
    ensure!(
        out.stderr.contains(message),
        "refused, but without {message:?}: {}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn crds_are_established_with_names_categories_and_selectable_fields() -> Result<()> {
    let client = cluster().await.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    // (name, short name, has a status written by the operator)
    for (name, short, status) in [
        ("accesspolicies.access.portcullis.dev", "ap", true),
        ("accesssessions.access.portcullis.dev", "as", true),
        ("accesshosts.access.portcullis.dev", "ah", false),
    ] {
        let crd = crds.get(name).await?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        ensure!(established, "{name} is not Established");
        let names = &crd.spec.names;
        ensure!(
            names
                .short_names
                .as_ref()
                .is_some_and(|s| s.iter().any(|n| n == short)),
            "{name}: short names"
        );
        ensure!(
            names
                .categories
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == "portcullis")),
            "{name}: category"
        );
        ensure!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
                == status,
            "{name}: status subresource"
        );
    }
    Ok(())
}

#[tokio::test]
async fn objects_round_trip_with_defaults_applied() -> Result<()> {
    cluster()
        .await
        .with_temp_ns("crd-roundtrip", |client: Client, ns: String| async move {
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            let manifest: AccessPolicy = serde_saphyr::from_str(&policy_yaml(&ns, ""))?;
            let created = policies.create(&PostParams::default(), &manifest).await?;
            let fetched = policies.get("apps").await?;
            ensure!(fetched.spec == created.spec, "spec changed on the way back");
            ensure!(
                fetched.spec.session.token_lifetime == std::time::Duration::from_secs(300),
                "default tokenLifetime"
            );
            ensure!(fetched.spec.revocation_epoch == 0, "default epoch");

            let sessions: Api<AccessSession> = Api::namespaced(client, &ns);
            let session: AccessSession =
                serde_saphyr::from_str(&session_yaml(&ns, "s-1", "alice", false))?;
            sessions.create(&PostParams::default(), &session).await?;
            let status = serde_json::json!({ "status": { "revokedAt": "2026-11-23T09:00:00Z",
                "enforcement": { "enforcedBy": 2, "connected": 3, "summary": "2/3" } } });
            sessions
                .patch_status("s-1", &PatchParams::default(), &Patch::Merge(&status))
                .await?;
            let fetched = sessions.get("s-1").await?;
            ensure!(
                fetched
                    .status
                    .and_then(|s| s.enforcement)
                    .is_some_and(|e| e.summary == "2/3"),
                "status subresource"
            );
            ensure!(!fetched.spec.revoked, "revoked defaults to false");
            Ok::<_, anyhow::Error>(())
        })
        .await
}

#[tokio::test]
async fn bad_policies_are_refused_with_a_clear_message() -> Result<()> {
    cluster()
        .await
        .with_temp_ns("crd-bad-policy", |_client: Client, ns: String| async move {
            let ok = policy_yaml(&ns, "");
            refused(
                &ok.replace("[myserver.example.test]", "[MyServer.Example.test]"),
                "hosts must be lowercase DNS names",
            )?;
            refused(
                &ok.replace("[myserver.example.test]", "[\"myserver.example.test.\"]"),
                "hosts must be lowercase DNS names",
            )?;
            refused(
                &ok.replace("[myserver.example.test]", "[\"*.example.test\"]"),
                "hosts must be lowercase DNS names",
            )?;
            refused(
                &ok.replace("[/wordpress, /express]", "[/wordpress/../admin]"),
                "paths must be absolute, canonical prefixes",
            )?;
            refused(
                &ok.replace("action: Allow", "action: Permit"),
                "Unsupported value: \"Permit\"",
            )?;
            refused(
                &ok.replace("emailDomains: [example.com]", "ipRanges: [10.0.0.0/33]"),
                "ipRanges must be CIDRs",
            )?;
            refused(
                &ok.replace("emailDomains: [example.com]", "ipRanges: [300.0.0.0/8]"),
                "ipRanges must be CIDRs",
            )?;
            refused(
                &ok.replace(
                    "include: [{ emailDomains: [example.com] }]",
                    "include: [{ emailDomains: [example.com], groups: [x] }]",
                ),
                "a selector sets exactly one of",
            )?;
            refused(
                &policy_yaml(&ns, "  session: { tokenLifetime: 48h }"),
                "tokenLifetime must be between 10s and 24h",
            )?;
            refused(
                &policy_yaml(&ns, "  revocationEpoch: -1"),
                "greater than or equal to 0",
            )?;
            Ok::<_, anyhow::Error>(())
        })
        .await
}

/// AccessHosts are cluster-scoped (tenants with namespaced RBAC cannot write them) and their
/// hostnames and namespace choice are checked by the API server.
#[tokio::test]
async fn access_hosts_are_cluster_scoped_and_malformed_ones_refused() -> Result<()> {
    let client = cluster().await.client().await?;
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("accesshosts.access.portcullis.dev")
        .await?;
    ensure!(crd.spec.scope == "Cluster", "scope {}", crd.spec.scope);
    let name = format!("crd-test-{}", std::process::id());
    let yaml = |hostnames: &str, allowed: &str| {
        format!(
            "apiVersion: access.portcullis.dev/v1alpha1\nkind: AccessHost\nmetadata: {{ name: {name} }}\n\
             spec:\n  hostnames: {hostnames}\n  allowedNamespaces: {allowed}\n"
        )
    };
    for (hostnames, allowed, message) in [
        (
            "[\"a.*.example.test\"]",
            "{ from: All }",
            "spec.hostnames[0]",
        ),
        ("[App.example.test]", "{ from: All }", "spec.hostnames[0]"),
        ("[\"*\"]", "{ from: All }", "spec.hostnames[0]"),
        ("[]", "{ from: All }", "spec.hostnames"),
        (
            "[a.example.test]",
            "{ from: Names }",
            "from: Names needs at least one entry",
        ),
        (
            "[a.example.test]",
            "{ from: Selector }",
            "from: Selector needs a selector",
        ),
        (
            "[a.example.test]",
            "{ from: Some }",
            "Unsupported value: \"Some\"",
        ),
        (
            "[a.example.test]",
            "{ from: Names, names: [Bad_NS] }",
            "spec.allowedNamespaces.names[0]",
        ),
    ] {
        refused(&yaml(hostnames, allowed), message)?;
    }
    let ok = yaml(
        "[a.example.test, \"*.a.example.test\"]",
        "{ from: Selector, selector: { matchLabels: { tenant: a } } }",
    );
    let out = apply(&ok)?;
    ensure!(out.status, "{}", out.stderr);
    let deleted = kubectl(&["delete", "accesshost", &name], "")?;
    ensure!(deleted.status, "{}", deleted.stderr);
    Ok(())
}

#[tokio::test]
async fn the_revocation_epoch_only_goes_up() -> Result<()> {
    cluster()
        .await
        .with_temp_ns("crd-epoch", |_client: Client, ns: String| async move {
            ensure!(
                apply(&policy_yaml(&ns, "  revocationEpoch: 3"))?.status,
                "create"
            );
            refused(
                &policy_yaml(&ns, "  revocationEpoch: 2"),
                "revocationEpoch can only be raised",
            )?;
            // Dropping the field would default it to 0: also a lowering.
            refused(&policy_yaml(&ns, ""), "revocationEpoch can only be raised")?;
            let out = kubectl(
                &[
                    "patch",
                    "accesspolicy",
                    "apps",
                    "-n",
                    &ns,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"spec":{"revocationEpoch":4}}"#,
                ],
                "",
            )?;
            ensure!(out.status, "raising failed: {}", out.stderr);
            Ok::<_, anyhow::Error>(())
        })
        .await
}

#[tokio::test]
async fn a_revoked_session_stays_revoked_whoever_writes() -> Result<()> {
    cluster()
        .await
        .with_temp_ns("crd-revoke", |client: Client, ns: String| async move {
            ensure!(
                apply(&session_yaml(&ns, "s-1", "alice", false))?.status,
                "create"
            );
            let revoke = kubectl(
                &[
                    "patch",
                    "accesssession",
                    "s-1",
                    "-n",
                    &ns,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"spec":{"revoked":true}}"#,
                ],
                "",
            )?;
            ensure!(revoke.status, "revoking failed: {}", revoke.stderr);

            // kubectl apply of the original manifest (revoked: false).
            refused(
                &session_yaml(&ns, "s-1", "alice", false),
                "a revoked session cannot be un-revoked",
            )?;
            // Removing the field (it defaults back to false).
            let out = kubectl(
                &[
                    "patch",
                    "accesssession",
                    "s-1",
                    "-n",
                    &ns,
                    "--type",
                    "json",
                    "-p",
                    r#"[{"op":"remove","path":"/spec/revoked"}]"#,
                ],
                "",
            )?;
            ensure!(
                !out.status && out.stderr.contains("cannot be un-revoked"),
                "removing revoked: {}",
                out.stderr
            );
            // A server-side apply by another field manager (a stale gateway) carrying revoked: false.
            let sessions: Api<AccessSession> = Api::namespaced(client, &ns);
            let stale: AccessSession =
                serde_saphyr::from_str(&session_yaml(&ns, "s-1", "alice", false))?;
            let result = sessions
                .patch(
                    "s-1",
                    &PatchParams::apply("stale-gateway").force(),
                    &Patch::Apply(&stale),
                )
                .await;
            ensure!(result.is_err(), "server-side apply un-revoked the session");
            ensure!(
                sessions.get("s-1").await?.spec.revoked,
                "the session is no longer revoked"
            );

            // The subject never changes.
            refused(
                &session_yaml(&ns, "s-1", "mallory", true),
                "subject is immutable",
            )?;
            Ok::<_, anyhow::Error>(())
        })
        .await
}

#[tokio::test]
async fn kubectl_get_shows_useful_columns_and_selects_by_subject() -> Result<()> {
    cluster()
        .await
        .with_temp_ns("crd-columns", |_client: Client, ns: String| async move {
            ensure!(
                apply(&policy_yaml(&ns, "  revocationEpoch: 7"))?.status,
                "policy"
            );
            for (name, subject) in [("s-a1", "alice"), ("s-a2", "alice"), ("s-b1", "bob")] {
                ensure!(
                    apply(&session_yaml(&ns, name, subject, false))?.status,
                    "session {name}"
                );
            }
            let out = kubectl(&["get", "accesspolicies", "-n", &ns], "")?;
            let header = out.stdout.lines().next().unwrap_or_default().to_owned();
            for column in ["NAME", "HOSTS", "EPOCH", "GATEWAYS", "READY", "AGE"] {
                ensure!(header.contains(column), "missing {column} in {header}");
            }
            ensure!(
                out.stdout.contains("myserver.example.test") && out.stdout.contains(" 7 "),
                "{}",
                out.stdout
            );

            let out = kubectl(&["get", "as", "-n", &ns], "")?;
            let header = out.stdout.lines().next().unwrap_or_default().to_owned();
            for column in [
                "NAME", "USER", "IDP", "REVOKED", "ENFORCED", "EXPIRES", "AGE",
            ] {
                ensure!(header.contains(column), "missing {column} in {header}");
            }
            ensure!(out.stdout.contains("alice@example.com"), "{}", out.stdout);

            let out = kubectl(
                &[
                    "get",
                    "accesssessions",
                    "-n",
                    &ns,
                    "--field-selector",
                    "spec.subject=alice",
                    "-o",
                    "name",
                ],
                "",
            )?;
            ensure!(out.status, "{}", out.stderr);
            let mut names: Vec<&str> = out.stdout.lines().collect();
            names.sort();
            ensure!(
                names
                    == [
                        "accesssession.access.portcullis.dev/s-a1",
                        "accesssession.access.portcullis.dev/s-a2"
                    ],
                "field selector returned {names:?}"
            );
            // The category lists both kinds.
            let out = kubectl(&["get", "portcullis", "-n", &ns, "-o", "name"], "")?;
            ensure!(out.stdout.lines().count() == 4, "{}", out.stdout);
            Ok::<_, anyhow::Error>(())
        })
        .await
}
