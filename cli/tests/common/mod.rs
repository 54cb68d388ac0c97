//! Running the built `kubectl-portcullis` against the shared test cluster, and the objects the
//! tests give it to work on.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod admission;

use std::path::Path;

use anyhow::{Context as _, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use portcullis_crds::{AccessPolicy, AccessSession, AccessSessionSpec};

/// The binary under test, built by cargo for this test target.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-portcullis");

/// What one run of the plugin did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fails with the whole output unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Result<Self> {
        anyhow::ensure!(
            self.code == Some(code),
            "expected exit code {code}, got {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

/// Runs the plugin with `--kubeconfig` and `--session-namespace` (nothing from the caller's
/// environment) and `args`.
pub async fn plugin(kubeconfig: &Path, session_namespace: &str, args: &[&str]) -> Result<Run> {
    let mut command = tokio::process::Command::new(PLUGIN);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--session-namespace")
        .arg(session_namespace);
    run(command, args).await
}

/// Runs a prepared plugin command with `args`, the caller's `KUBECONFIG` and
/// `PORTCULLIS_SESSION_NAMESPACE` removed unless the command sets them.
pub async fn run(mut command: tokio::process::Command, args: &[&str]) -> Result<Run> {
    let out = command
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {PLUGIN} {args:?}"))?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A time `offset` from now.
pub fn from_now(offset: SignedDuration) -> Time {
    Time(
        Timestamp::now()
            .saturating_add(offset)
            .unwrap_or(Timestamp::now()),
    )
}

/// A session as the gateway creates it at login: issued five minutes ago, valid for an hour
/// from then.
pub fn session(name: &str, subject: &str, email: Option<&str>, idp: &str) -> AccessSession {
    session_issued(name, subject, email, idp, SignedDuration::from_mins(-5))
}

/// [`session`] issued at now + `issued` (negative: in the past).
pub fn session_issued(
    name: &str,
    subject: &str,
    email: Option<&str>,
    idp: &str,
    issued: SignedDuration,
) -> AccessSession {
    AccessSession::new(
        name,
        AccessSessionSpec {
            subject: subject.to_owned(),
            email: email.map(str::to_owned),
            groups: Vec::new(),
            identity_provider: idp.to_owned(),
            issued_at: from_now(issued),
            expires_at: from_now(issued + SignedDuration::from_hours(1)),
            revoked: false,
            revocation_reason: None,
            revoked_by: None,
            provider_session_id: None,
        },
    )
}

/// Creates `sessions` in the namespace of `api`.
pub async fn create(api: &Api<AccessSession>, sessions: Vec<AccessSession>) -> Result<()> {
    for s in sessions {
        let name = s.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &s)
            .await
            .with_context(|| format!("creating session {name}"))?;
    }
    Ok(())
}

/// Whether the session is revoked, and its reason.
pub async fn revoked(api: &Api<AccessSession>, name: &str) -> Result<(bool, Option<String>)> {
    let s = api
        .get(name)
        .await
        .with_context(|| format!("reading {name}"))?;
    Ok((s.spec.revoked, s.spec.revocation_reason))
}

/// A policy `name` in `namespace` protecting `host`, at epoch 0.
pub fn policy(namespace: &str, name: &str, host: &str) -> Result<AccessPolicy> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "identityProviders": ["dex"],
            "upstream": {"url": "http://127.0.0.1:9"},
            "rules": [{"action": "Allow", "include": [{"emailDomains": ["example.com"]}]}]
        }
    }))
    .context("policy fixture")
}

/// Writes a kubeconfig (JSON, which is YAML) with the given contexts; the first is current.
/// Each context is (name, server, credentials as a kubeconfig `user`, namespace).
pub fn write_kubeconfig(
    path: &Path,
    ca_file: &Path,
    contexts: &[(&str, &str, serde_json::Value, Option<&str>)],
) -> Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": contexts.iter().map(|(name, server, _, _)| serde_json::json!({
            "name": name, "cluster": {"server": server, "certificate-authority": ca_file}
        })).collect::<Vec<_>>(),
        "users": contexts.iter().map(|(name, _, user, _)| serde_json::json!({
            "name": name, "user": user
        })).collect::<Vec<_>>(),
        "contexts": contexts.iter().map(|(name, _, _, ns)| {
            let mut context = serde_json::json!({"cluster": name, "user": name});
            if let Some(ns) = ns {
                context["namespace"] = serde_json::json!(ns);
            }
            serde_json::json!({"name": name, "context": context})
        }).collect::<Vec<_>>(),
        "current-context": contexts.first().map(|c| c.0).unwrap_or_default(),
    });
    portcullis_tests::fsutil::write_private(path, serde_json::to_string_pretty(&doc)?.as_bytes())
}

/// The admin identity of the stack as a kubeconfig `user`.
pub fn admin_user(info: &portcullis_tests::StackInfo) -> serde_json::Value {
    serde_json::json!({
        "client-certificate": info.admin.cert,
        "client-key": info.admin.key,
    })
}
