//! `kubectl-portcullis` against the real API server of the shared test cluster, run as the
//! built binary (and once through kubectl's own plugin discovery): listing and filtering,
//! revoking sessions, users and policies, the errors a platform engineer meets (not found,
//! ambiguous email, RBAC), and kubeconfig handling. No operator runs here, so `--wait` can only
//! time out: `wait.rs` runs the operator and a gateway for the other half.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::admission::Webhook;
use common::{
    PLUGIN, Run, admin_user, create, plugin, policy, revoked, run, session, session_issued,
    write_kubeconfig,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_tests::TestCluster;
use portcullis_tests::fsutil::scratch_dir;
use portcullis_tests::tools::Tool;

fn kubeconfig(cluster: &TestCluster) -> PathBuf {
    cluster.info().kubeconfig.clone()
}

fn rows(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn sessions_lists_and_filters_server_and_client_side() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-list", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            // A subject with the characters a field selector must escape.
            let alice = "alice=,x";
            let mut bob = session_issued(
                "s-bob",
                "bob",
                Some("bob@example.com"),
                "dex",
                SignedDuration::from_mins(-3),
            );
            bob.spec.revoked = true;
            create(
                &api,
                vec![
                    session("s-alice-1", alice, Some("Alice@Example.com"), "dex"),
                    session_issued(
                        "s-alice-2",
                        alice,
                        Some("alice@example.com"),
                        "google",
                        SignedDuration::from_mins(-1),
                    ),
                    bob,
                    session_issued("s-old", "bob", None, "dex", SignedDuration::from_hours(-2)),
                ],
            )
            .await?;
            let kc = kubeconfig(cluster);
            let list = |args: &'static [&'static str]| {
                let kc = kc.clone();
                let ns = ns.clone();
                async move { plugin(&kc, &ns, args).await?.expect(0) }
            };

            let all = list(&["sessions"]).await?;
            let header: Vec<&str> = all
                .stdout
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            ensure!(
                header
                    == [
                        "NAME", "USER", "IDP", "ISSUED", "EXPIRES", "REVOKED", "ENFORCED"
                    ],
                "{}",
                all.stdout
            );
            // Oldest login first.
            ensure!(
                rows(&all.stdout) == ["s-old", "s-alice-1", "s-bob", "s-alice-2"],
                "{}",
                all.stdout
            );
            ensure!(all.stdout.contains("expired"), "{}", all.stdout);

            let by_subject = list(&["sessions", "--user", "alice=,x"]).await?;
            ensure!(
                rows(&by_subject.stdout) == ["s-alice-1", "s-alice-2"],
                "{}",
                by_subject.stdout
            );
            let by_idp = list(&["sessions", "--user", "alice=,x", "--idp", "dex"]).await?;
            ensure!(rows(&by_idp.stdout) == ["s-alice-1"], "{}", by_idp.stdout);
            let by_email = list(&["sessions", "--email", "ALICE@example.COM"]).await?;
            ensure!(
                rows(&by_email.stdout) == ["s-alice-1", "s-alice-2"],
                "{}",
                by_email.stdout
            );
            let active = list(&["sessions", "--active"]).await?;
            ensure!(
                rows(&active.stdout) == ["s-alice-1", "s-alice-2"],
                "{}",
                active.stdout
            );
            let wide = list(&["sessions", "-o", "wide", "--subject", "alice=,x"]).await?;
            ensure!(
                wide.stdout
                    .lines()
                    .next()
                    .is_some_and(|h| h.contains("SUBJECT"))
                    && wide.stdout.contains("alice=,x"),
                "{}",
                wide.stdout
            );

            let json = list(&["sessions", "-o", "json"]).await?;
            let value: serde_json::Value = serde_json::from_str(&json.stdout)
                .with_context(|| format!("-o json is not JSON:\n{}", json.stdout))?;
            ensure!(value["kind"] == "List", "{value}");
            let items = value["items"].as_array().context("no items")?;
            let names: BTreeSet<&str> = items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .collect();
            ensure!(
                names == BTreeSet::from(["s-alice-1", "s-alice-2", "s-bob", "s-old"]),
                "{names:?}"
            );
            // The objects themselves, typed: what kubectl -o json would give.
            for item in items {
                let parsed: AccessSession = serde_json::from_value(item.clone())?;
                ensure!(parsed.metadata.namespace.as_deref() == Some(ns.as_str()));
            }
            let yaml = list(&["sessions", "-o", "yaml", "--active"]).await?;
            let value: serde_json::Value = serde_saphyr::from_str(&yaml.stdout)
                .with_context(|| format!("-o yaml is not YAML:\n{}", yaml.stdout))?;
            ensure!(
                value["items"].as_array().map(Vec::len) == Some(2),
                "{value}"
            );
            let names = list(&["sessions", "-o", "name", "--idp", "google"]).await?;
            ensure!(
                names.stdout == "accesssession.access.portcullis.dev/s-alice-2\n",
                "{}",
                names.stdout
            );

            // Without --session-namespace the context's namespace is used, as kubectl would.
            let in_context = kc.with_extension("in-context");
            let yaml = std::fs::read_to_string(&kc)?;
            ensure!(yaml.contains("namespace: default"), "{yaml}");
            std::fs::write(
                &in_context,
                yaml.replace("namespace: default", &format!("namespace: {ns}")),
            )?;
            let mut command = tokio::process::Command::new(PLUGIN);
            command
                .arg("--kubeconfig")
                .arg(&in_context)
                .env_remove("PORTCULLIS_SESSION_NAMESPACE");
            let from_context = run(command, &["sessions", "--active", "-o", "name"])
                .await?
                .expect(0)?;
            ensure!(
                from_context.stdout.lines().count() == 2,
                "the context's namespace was not used: {} {}",
                from_context.stdout,
                from_context.stderr
            );

            // An empty namespace: nothing on stdout, a hint on stderr, success.
            let empty = plugin(&kc, &format!("{ns}-none"), &["sessions"])
                .await?
                .expect(0)?;
            ensure!(empty.stdout.is_empty(), "{}", empty.stdout);
            ensure!(
                empty
                    .stderr
                    .contains(&format!("No AccessSessions in namespace {ns}-none"))
                    && empty.stderr.contains("chosen by --session-namespace"),
                "{}",
                empty.stderr
            );
            Ok(())
        })
        .await;
    result.expect("sessions");
}

#[tokio::test]
async fn revoke_session_is_idempotent_and_names_what_is_missing() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-revoke-session", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(
                &api,
                vec![
                    session("a", "ann", Some("ann@example.com"), "dex"),
                    session("b", "ben", Some("ben@example.com"), "dex"),
                ],
            )
            .await?;
            let kc = kubeconfig(cluster);

            let first = plugin(
                &kc,
                &ns,
                &["revoke", "session", "a", "--reason", "laptop stolen"],
            )
            .await?
            .expect(0)?;
            ensure!(
                first.stdout == "accesssession/a revoked\n",
                "{}",
                first.stdout
            );
            ensure!(
                revoked(&api, "a").await? == (true, Some("laptop stolen".into())),
                "a not revoked with its reason"
            );
            ensure!(!revoked(&api, "b").await?.0, "b was revoked too");

            // Again: nothing written, the first reason kept.
            let again = plugin(&kc, &ns, &["revoke", "session", "a", "--reason", "other"])
                .await?
                .expect(0)?;
            ensure!(
                again.stdout == "accesssession/a already revoked (unchanged)\n",
                "{}",
                again.stdout
            );
            ensure!(revoked(&api, "a").await?.1.as_deref() == Some("laptop stolen"));

            let missing = plugin(&kc, &ns, &["revoke", "session", "nope"])
                .await?
                .expect(1)?;
            ensure!(
                missing.stderr.trim()
                    == format!("error: AccessSession \"nope\" not found in namespace {ns}"),
                "{}",
                missing.stderr
            );

            // One missing among several: the others are still revoked, the exit code says it.
            let mixed = plugin(&kc, &ns, &["revoke", "session", "nope", "b"])
                .await?
                .expect(1)?;
            ensure!(
                mixed.stdout == "accesssession/b revoked\n",
                "{}",
                mixed.stdout
            );
            ensure!(
                mixed.stderr.contains("\"nope\" not found")
                    && mixed.stderr.contains(
                        "error: not revoked: accesssession/nope (the errors are above); the \
                         other 1 session is revoked"
                    ),
                "{}",
                mixed.stderr
            );
            ensure!(revoked(&api, "b").await?.0, "b not revoked");

            // -n is for policies: a session command explains where sessions live.
            let wrong = plugin(&kc, &ns, &["revoke", "session", "b", "-n", &ns])
                .await?
                .expect(2)?;
            ensure!(
                wrong.stderr.contains("--session-namespace"),
                "{}",
                wrong.stderr
            );
            Ok(())
        })
        .await;
    result.expect("revoke session");
}

#[tokio::test]
async fn revoke_user_ends_only_that_subjects_sessions() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-revoke-user", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            let mut earlier = session("dave-2", "dave", Some("dave@example.com"), "dex");
            earlier.spec.revoked = true;
            earlier.spec.revocation_reason = Some("logged out".into());
            create(
                &api,
                vec![
                    session("dave-1", "dave", Some("dave@example.com"), "dex"),
                    earlier,
                    session("dave-3", "dave", Some("dave@corp.example"), "google"),
                    session_issued(
                        "dave-old",
                        "dave",
                        None,
                        "dex",
                        SignedDuration::from_hours(-3),
                    ),
                    session("erin-1", "erin", Some("erin@example.com"), "dex"),
                    // Another user whose subject merely starts the same.
                    session("dave2-1", "dave2", Some("dave2@example.com"), "dex"),
                ],
            )
            .await?;
            let kc = kubeconfig(cluster);
            let state = |name: &'static str| {
                let api = api.clone();
                async move { revoked(&api, name).await }
            };

            // A subject names a user only within its identity provider: dave has sessions to
            // revoke under dex and google, so without --idp nothing is revoked and the exact
            // commands are printed.
            let ambiguous = plugin(&kc, &ns, &["revoke", "user", "dave", "--reason", "offboarded"])
                .await?
                .expect(2)?;
            for needle in [
                "the subject dave has sessions under 2 identity providers",
                "nothing was revoked",
                "  kubectl portcullis revoke user dave --idp dex --reason offboarded    # 2 sessions\n",
                "  kubectl portcullis revoke user dave --idp google --reason offboarded    # 1 session",
            ] {
                ensure!(ambiguous.stderr.contains(needle), "{needle}:\n{}", ambiguous.stderr);
            }
            ensure!(ambiguous.stdout.is_empty(), "{}", ambiguous.stdout);
            for name in ["dave-1", "dave-3", "dave-old"] {
                ensure!(!state(name).await?.0, "{name} revoked although the subject is ambiguous");
            }

            let dex_only = plugin(
                &kc,
                &ns,
                &[
                    "revoke",
                    "user",
                    "dave",
                    "--idp",
                    "dex",
                    "--reason",
                    "offboarded",
                ],
            )
            .await?
            .expect(0)?;
            ensure!(
                dex_only.stdout.ends_with(
                    "subject dave (dex): 2 revoked, 1 of them past their expiresAt, 1 already \
                     revoked\n"
                ),
                "{}",
                dex_only.stdout
            );
            ensure!(
                dex_only
                    .stdout
                    .contains("accesssession/dave-old revoked (it was past its expiresAt)"),
                "{}",
                dex_only.stdout
            );
            ensure!(state("dave-1").await? == (true, Some("offboarded".into())));
            ensure!(
                state("dave-2").await? == (true, Some("logged out".into())),
                "reason overwritten"
            );
            ensure!(
                !state("dave-3").await?.0,
                "--idp dex revoked a google session"
            );
            // Expired, but an admin may have moved expiresAt earlier to end it: revoked too.
            ensure!(
                state("dave-old").await? == (true, Some("offboarded".into())),
                "an expired session was left unrevoked"
            );
            ensure!(!state("erin-1").await?.0, "another user was revoked");
            ensure!(
                !state("dave2-1").await?.0,
                "a subject with the same prefix was revoked"
            );

            // Now only google has sessions of dave left to revoke: no ambiguity.
            let rest = plugin(&kc, &ns, &["revoke", "user", "dave"])
                .await?
                .expect(0)?;
            ensure!(
                rest.stdout.contains("accesssession/dave-3 revoked")
                    && rest.stdout.ends_with("subject dave (google): 1 revoked\n"),
                "{}",
                rest.stdout
            );
            ensure!(state("dave-3").await?.0);
            ensure!(!state("erin-1").await?.0 && !state("dave2-1").await?.0);

            let nobody = plugin(&kc, &ns, &["revoke", "user", "nobody"])
                .await?
                .expect(0)?;
            ensure!(
                nobody.stdout.trim()
                    == format!("subject nobody: no sessions in namespace {ns}: nothing to revoke"),
                "{}",
                nobody.stdout
            );
            Ok(())
        })
        .await;
    result.expect("revoke user");
}

#[tokio::test]
async fn revoke_user_by_email_only_when_it_names_one_user() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-revoke-email", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(
                &api,
                vec![
                    session("f1", "frank-dex", Some("frank@example.com"), "dex"),
                    session("f2", "frank-google", Some("Frank@example.com"), "google"),
                    session("g1", "gina", Some("gina@example.com"), "dex"),
                    session("g2", "gina", Some("gina@example.com"), "dex"),
                ],
            )
            .await?;
            let kc = kubeconfig(cluster);

            let ambiguous = plugin(
                &kc,
                &ns,
                &["revoke", "user", "--email", "frank@example.com"],
            )
            .await?
            .expect(2)?;
            for needle in [
                "does not name one user",
                "revoke user frank-dex --idp dex",
                "revoke user frank-google --idp google",
            ] {
                ensure!(
                    ambiguous.stderr.contains(needle),
                    "{needle}:\n{}",
                    ambiguous.stderr
                );
            }
            for name in ["f1", "f2"] {
                ensure!(
                    !revoked(&api, name).await?.0,
                    "{name} revoked although ambiguous"
                );
            }

            let narrowed = plugin(
                &kc,
                &ns,
                &[
                    "revoke",
                    "user",
                    "--email",
                    "frank@example.com",
                    "--idp",
                    "google",
                ],
            )
            .await?
            .expect(0)?;
            ensure!(
                narrowed.stdout.starts_with(
                    "frank@example.com is subject frank-google of identity provider google\n"
                ),
                "{}",
                narrowed.stdout
            );
            ensure!(revoked(&api, "f2").await?.0 && !revoked(&api, "f1").await?.0);

            plugin(&kc, &ns, &["revoke", "user", "--email", "GINA@example.com"])
                .await?
                .expect(0)?;
            ensure!(revoked(&api, "g1").await?.0 && revoked(&api, "g2").await?.0);
            Ok(())
        })
        .await;
    result.expect("revoke user --email");
}

/// Waits until the session `name` is revoked (the command's first pass has run).
async fn until_revoked(api: &Api<AccessSession>, name: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !revoked(api, name).await?.0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} never revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A login in flight without `--wait`: the user authenticated at the identity provider before
/// the command started (its `issuedAt`, the provider's `auth_time`), and the gateway's record of
/// it lands two seconds after the command's first pass. The command keeps listing until 5 s
/// after it started, so it is revoked all the same.
#[tokio::test]
async fn revoke_user_catches_a_login_in_flight() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-in-flight", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(&api, vec![session("h-1", "hank", Some("hank@example.com"), "dex")]).await?;
            let kc = kubeconfig(cluster);
            let authenticated = SignedDuration::from_secs(-1);
            let spawned = tokio::time::Instant::now();
            let command = plugin(&kc, &ns, &["revoke", "user", "hank", "--idp", "dex"]);
            let late = async {
                until_revoked(&api, "h-1").await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let issued = authenticated - SignedDuration::try_from(spawned.elapsed())?;
                create(
                    &api,
                    vec![session_issued("h-late", "hank", None, "dex", issued)],
                )
                .await
            };
            let (run, late) = tokio::join!(command, late);
            late?;
            let run = run?.expect(0)?;
            ensure!(
                run.stdout.contains(
                    "accesssession/h-late revoked (a login that was in flight when the command started)"
                ) && run.stdout.ends_with(
                    "subject hank (dex): 2 revoked, 1 of them logins in flight, caught after the \
                     first pass\n"
                ),
                "{}",
                run.stdout
            );
            ensure!(revoked(&api, "h-late").await?.0, "the in-flight login was not revoked");
            Ok(())
        })
        .await;
    result.expect("revoke user, login in flight");
}

/// With `--wait` the user's sessions are listed again on every poll while the command waits:
/// a single-sign-on login made meanwhile keeps the `auth_time` of the user's earlier
/// authentication at the identity provider, so its `issuedAt` is before the command started and
/// it is revoked; a login that authenticated afresh more than 5 s after the command started is
/// left alone. No operator runs, so the wait itself times out with exit code 3 and says why.
#[tokio::test]
async fn revoke_user_wait_keeps_catching_logins_with_an_earlier_authentication() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-in-flight-wait", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            // Authenticated at the identity provider ten minutes ago; logged in to one app then.
            let authenticated = SignedDuration::from_mins(-10);
            create(
                &api,
                vec![session_issued("i-1", "ines", Some("ines@example.com"), "dex", authenticated)],
            )
            .await?;
            let kc = kubeconfig(cluster);
            let spawned = tokio::time::Instant::now();
            let command = plugin(&kc, &ns, &["revoke", "user", "ines", "--wait=15s"]);
            let logins = async {
                until_revoked(&api, "i-1").await?;
                // At least 7 s after the command started: past its 5 s allowance.
                tokio::time::sleep(Duration::from_secs(7)).await;
                let sso = authenticated - SignedDuration::try_from(spawned.elapsed())?;
                create(
                    &api,
                    vec![
                        session_issued("i-sso", "ines", None, "dex", sso),
                        session_issued("i-fresh", "ines", None, "dex", SignedDuration::ZERO),
                    ],
                )
                .await
            };
            let (run, logins) = tokio::join!(command, logins);
            logins?;
            let run = run?.expect(3)?;
            ensure!(
                run.stdout.contains(
                    "accesssession/i-sso revoked (a login that was in flight when the command started)"
                ),
                "{}",
                run.stdout
            );
            ensure!(revoked(&api, "i-sso").await?.0, "the single-sign-on login was not revoked");
            ensure!(!revoked(&api, "i-fresh").await?.0, "a later authentication was revoked");
            ensure!(
                run.stdout.ends_with(
                    "subject ines (dex): 2 revoked, 1 of them logins in flight, caught after the \
                     first pass, 1 issued after the command started (left alone)\n"
                ),
                "{}",
                run.stdout
            );
            ensure!(
                run.stderr.contains("not shown as enforced by every connected gateway after 15s")
                    && run.stderr.contains("no Enforced condition"),
                "{}",
                run.stderr
            );
            Ok(())
        })
        .await;
    result.expect("revoke user --wait, single-sign-on login");
}

/// `kubectl portcullis revoke user pat | head -1`: the reader goes away before the first line.
/// Every session is revoked all the same, and the exit code says the report is incomplete; a
/// read-only command whose reader went away simply succeeds.
#[tokio::test]
async fn a_closed_stdout_never_stops_a_revocation() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-closed-stdout", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            let names: Vec<String> = (1..=6).map(|i| format!("p-{i}")).collect();
            create(
                &api,
                names
                    .iter()
                    .map(|n| session(n, "pat", Some("pat@example.com"), "dex"))
                    .collect(),
            )
            .await?;
            let kc = kubeconfig(cluster);
            let closed = |args: &[&str]| {
                let mut command = tokio::process::Command::new(common::PLUGIN);
                command
                    .arg("--kubeconfig")
                    .arg(&kc)
                    .arg("--session-namespace")
                    .arg(&ns)
                    .args(args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true);
                async move {
                    let mut child = command.spawn()?;
                    // The reader is gone before the plugin has printed anything.
                    drop(child.stdout.take());
                    let out = child.wait_with_output().await?;
                    Ok::<_, anyhow::Error>(Run {
                        code: out.status.code(),
                        stdout: String::new(),
                        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    })
                }
            };

            let run = closed(&["revoke", "user", "pat"]).await?.expect(1)?;
            ensure!(
                run.stderr.contains("writing the report to stdout failed")
                    && run.stderr.contains("every revocation was still attempted"),
                "{}",
                run.stderr
            );
            for name in &names {
                ensure!(
                    revoked(&api, name).await?.0,
                    "{name} left unrevoked by a closed stdout"
                );
            }
            let run = closed(&["sessions"]).await?.expect(0)?;
            ensure!(run.stderr.is_empty(), "{}", run.stderr);
            Ok(())
        })
        .await;
    result.expect("closed stdout");
}

/// One session the API server refuses to change (an admission webhook denies it) does not stop
/// the others, and one that fails a few times with 500, 503 and 429 is retried until it is
/// revoked; what was not revoked is named, with exit code 1.
#[tokio::test]
async fn one_failing_session_does_not_stop_the_others() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-partial", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(
                &api,
                ["x-1", "x-2-blocked", "x-3-flaky", "x-4"]
                    .into_iter()
                    .map(|n| session(n, "xavier", Some("xavier@example.com"), "dex"))
                    .chain([session("y-flaky", "yara", None, "dex")])
                    .collect(),
            )
            .await?;
            let dir = scratch_dir("cli", &ns)?;
            let webhook = Webhook::start(
                &client,
                &ns,
                &dir,
                Box::new(|name: &str, nth: u32| {
                    if name.contains("blocked") {
                        return Some((422, "changes to this session are frozen".to_owned()));
                    }
                    let transient = [(500, "etcd leader changed"), (503, "overloaded"), (429, "slow down")];
                    match (name.contains("flaky"), nth) {
                        (true, 1..=3) => transient
                            .get(usize::try_from(nth - 1).unwrap_or(0))
                            .map(|(code, why)| (*code, (*why).to_owned())),
                        _ => None,
                    }
                }),
            )
            .await?;
            let outcome = async {
                // The API server picks the webhook up from its informer: wait until a dry run
                // on the blocked session is refused.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                let probe = PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                };
                let touch = Patch::Merge(serde_json::json!({"metadata": {"labels": {"probe": "1"}}}));
                while api.patch("x-2-blocked", &probe, &touch).await.is_ok() {
                    ensure!(tokio::time::Instant::now() < deadline, "the webhook never took effect");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let kc = kubeconfig(cluster);

                let run = plugin(&kc, &ns, &["revoke", "user", "xavier", "--idp", "dex"])
                    .await?
                    .expect(1)?;
                for name in ["x-1", "x-3-flaky", "x-4"] {
                    ensure!(revoked(&api, name).await?.0, "{name} not revoked:\n{}", run.stderr);
                }
                ensure!(!revoked(&api, "x-2-blocked").await?.0);
                ensure!(
                    run.stdout.ends_with(
                        "subject xavier (dex): 3 revoked, 1 NOT revoked (see the errors)\n"
                    ),
                    "{}",
                    run.stdout
                );
                ensure!(
                    run.stderr.contains("error: accesssession/x-2-blocked not revoked: the API server refused to patch")
                        && run.stderr.contains("changes to this session are frozen")
                        && run.stderr.ends_with(
                            "error: not revoked: accesssession/x-2-blocked (the errors are above); the \
                             other 3 sessions are revoked\n"
                        ),
                    "{}",
                    run.stderr
                );
                ensure!(webhook.calls("x-3-flaky") == 4, "{} calls", webhook.calls("x-3-flaky"));

                // One session by name, failing three times before it is let through.
                let run = plugin(&kc, &ns, &["revoke", "session", "y-flaky"]).await?.expect(0)?;
                ensure!(run.stdout == "accesssession/y-flaky revoked\n", "{}\n{}", run.stdout, run.stderr);
                ensure!(webhook.calls("y-flaky") == 4, "{} calls", webhook.calls("y-flaky"));
                Ok::<(), anyhow::Error>(())
            }
            .await;
            webhook.remove().await?;
            let _ = std::fs::remove_dir_all(&dir);
            outcome
        })
        .await;
    result.expect("partial failure");
}

/// `--wait` settles a session without the operator's proof only by facts that end it at every
/// gateway: its deletion (streamed as ended), or its expiry plus the gateways' 30 s clock-skew
/// allowance, on this machine's clock. A session that expired 27 s ago is waited for until then.
#[tokio::test]
async fn wait_settles_deleted_sessions_and_expired_ones_only_past_the_skew() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-wait-settle", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            let lifetime = SignedDuration::from_hours(1);
            create(
                &api,
                vec![
                    session_issued(
                        "e-recent",
                        "eve",
                        None,
                        "dex",
                        -lifetime - SignedDuration::from_secs(27),
                    ),
                    session_issued("e-old", "eve", None, "dex", SignedDuration::from_hours(-3)),
                    session("d-1", "dan", None, "dex"),
                ],
            )
            .await?;
            let expires = api.get("e-recent").await?.spec.expires_at.0;
            let kc = kubeconfig(cluster);

            let run = plugin(
                &kc,
                &ns,
                &["revoke", "session", "e-recent", "e-old", "--wait=40s"],
            )
            .await?
            .expect(0)?;
            let ended = k8s_openapi::jiff::Timestamp::now();
            ensure!(
                ended >= expires.saturating_add(SignedDuration::from_secs(30))?,
                "returned at {ended}, before expiresAt {expires} + 30 s:\n{}",
                run.stdout
            );
            for name in ["e-recent", "e-old"] {
                ensure!(
                    run.stdout
                        .contains(&format!("accesssession/{name} revoked\n"))
                        && run.stdout.contains(&format!(
                            "accesssession/{name} expired more than 30s ago (refused everywhere)\n"
                        )),
                    "{}",
                    run.stdout
                );
            }

            let command = plugin(&kc, &ns, &["revoke", "session", "d-1", "--wait=30s"]);
            let delete = async {
                until_revoked(&api, "d-1").await?;
                api.delete("d-1", &Default::default()).await?;
                Ok::<(), anyhow::Error>(())
            };
            let (run, deleted) = tokio::join!(command, delete);
            deleted?;
            let run = run?.expect(0)?;
            ensure!(
                run.stdout
                    == "accesssession/d-1 revoked\naccesssession/d-1 deleted (ended everywhere)\n",
                "{}",
                run.stdout
            );
            Ok(())
        })
        .await;
    result.expect("--wait settles deleted and expired sessions");
}

/// Four people press "revoke existing tokens" at the same moment: the epoch goes up by four,
/// each run reports a different step.
#[tokio::test]
async fn concurrent_policy_revocations_each_raise_the_epoch() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-revoke-policy", |client, ns| async move {
            let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
            policies
                .create(
                    &PostParams::default(),
                    &policy(&ns, "apps", &format!("{ns}.example"))?,
                )
                .await?;
            let kc = kubeconfig(cluster);
            let args = [
                "revoke",
                "policy",
                "apps",
                "-n",
                ns.as_str(),
                "--reason",
                "drill",
            ];
            let runs = futures::future::join_all((0..4).map(|_| plugin(&kc, &ns, &args))).await;
            let mut steps = BTreeSet::new();
            for run in runs {
                let run = run?.expect(0)?;
                let step = run
                    .stdout
                    .split_once("revocationEpoch ")
                    .and_then(|(_, rest)| rest.split_once(" (namespace"))
                    .map(|(step, _)| step.to_owned())
                    .with_context(|| format!("no epoch step in {}", run.stdout))?;
                steps.insert(step);
            }
            ensure!(
                steps == BTreeSet::from(["0 → 1", "1 → 2", "2 → 3", "3 → 4"].map(String::from)),
                "{steps:?}"
            );
            let policy = policies.get("apps").await?;
            ensure!(
                policy.spec.revocation_epoch == 4,
                "epoch {}",
                policy.spec.revocation_epoch
            );
            let annotation = policy
                .metadata
                .annotations
                .unwrap_or_default()
                .remove("access.portcullis.dev/revocation-reason");
            ensure!(
                annotation.as_deref() == Some("epoch 4: drill"),
                "{annotation:?}"
            );

            let missing = plugin(&kc, &ns, &["revoke", "policy", "nope", "-n", &ns])
                .await?
                .expect(1)?;
            ensure!(
                missing.stderr.trim()
                    == format!("error: AccessPolicy \"nope\" not found in namespace {ns}"),
                "{}",
                missing.stderr
            );

            // Without -n: the kubeconfig context's namespace, as kubectl does.
            let with_ns = std::env::temp_dir().join(format!("portcullis-cli-{ns}.kubeconfig"));
            write_kubeconfig(
                &with_ns,
                &cluster.info().ca_file,
                &[(
                    "ctx",
                    cluster.info().apiserver_url(),
                    admin_user(cluster.info()),
                    Some(&ns),
                )],
            )?;
            let run = plugin(&with_ns, &ns, &["revoke", "policy", "apps"])
                .await?
                .expect(0)?;
            let _ = std::fs::remove_file(&with_ns);
            ensure!(run.stdout.contains("4 → 5"), "{}", run.stdout);
            ensure!(policies.get("apps").await?.spec.revocation_epoch == 5);
            Ok(())
        })
        .await;
    result.expect("revoke policy");
}

/// kubectl finds the plugin on PATH: `kubectl portcullis ...` runs it, with kubectl's
/// `KUBECONFIG` in the environment.
#[tokio::test]
async fn kubectl_runs_it_as_a_plugin() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-kubectl", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(
                &api,
                vec![session("k1", "kim", Some("kim@example.com"), "dex")],
            )
            .await?;
            let bin = std::env::temp_dir().join(format!("portcullis-cli-{ns}-bin"));
            std::fs::create_dir_all(&bin)?;
            let _ = std::fs::remove_file(bin.join("kubectl-portcullis"));
            std::os::unix::fs::symlink(common::PLUGIN, bin.join("kubectl-portcullis"))?;
            let kubectl = Tool::Kubectl.path()?;
            let path = std::env::join_paths(
                [
                    bin.clone(),
                    kubectl.parent().map(Path::to_owned).unwrap_or_default(),
                ]
                .into_iter()
                .chain(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                )),
            )?;
            let mut command = tokio::process::Command::new(&kubectl);
            command
                .env("PATH", &path)
                .env("KUBECONFIG", kubeconfig(cluster))
                .env("PORTCULLIS_SESSION_NAMESPACE", &ns)
                .args(["portcullis"]);
            let run = common::run(command, &["sessions", "-o", "name"]).await;
            let _ = std::fs::remove_dir_all(&bin);
            let run = run?.expect(0)?;
            ensure!(
                run.stdout == "accesssession.access.portcullis.dev/k1\n",
                "{}\n{}",
                run.stdout,
                run.stderr
            );
            Ok(())
        })
        .await;
    result.expect("kubectl portcullis");
}

/// `--context` picks the context; the current one is used otherwise, and an unreachable API
/// server is an error that says what it was doing.
#[tokio::test]
async fn context_is_chosen_like_kubectl() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-context", |_client, ns| async move {
            let info = cluster.info();
            let path = std::env::temp_dir().join(format!("portcullis-cli-{ns}.kubeconfig"));
            write_kubeconfig(
                &path,
                &info.ca_file,
                &[
                    ("unreachable", "https://127.0.0.1:1", admin_user(info), None),
                    ("stack", info.apiserver_url(), admin_user(info), None),
                ],
            )?;
            let current = plugin(&path, &ns, &["sessions"]).await;
            let chosen = plugin(&path, &ns, &["sessions", "--context", "stack"]).await;
            let unknown = plugin(&path, &ns, &["sessions", "--context", "nope"]).await;
            let _ = std::fs::remove_file(&path);
            let current = current?.expect(1)?;
            ensure!(
                current.stderr.starts_with(&format!(
                    "error: could not list accesssessions in namespace {ns}: "
                )),
                "{}",
                current.stderr
            );
            chosen?.expect(0)?;
            let unknown = unknown?.expect(1)?;
            ensure!(
                unknown.stderr.contains("loading the kubeconfig"),
                "{}",
                unknown.stderr
            );
            Ok(())
        })
        .await;
    result.expect("--context");
}

/// A token for ServiceAccount `name` (created here) that the API server accepts.
async fn service_account_token(client: &kube::Client, ns: &str, name: &str) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut account = ServiceAccount::default();
    account.metadata.name = Some(name.to_owned());
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(issued.status.context("token request without status")?.token)
}

fn kubectl_apply(kubeconfig: &Path, manifest: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(Tool::Kubectl.path()?)
        .env("KUBECONFIG", kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl apply:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The RBAC block of docs/cli.md, renamed for this namespace.
fn documented_rbac(ns: &str) -> Result<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md"))?;
    let start = doc
        .find("```yaml\n# RBAC for kubectl-portcullis")
        .context("docs/cli.md has no RBAC block")?;
    let block = &doc[start + "```yaml\n".len()..];
    let block = &block[..block.find("```").context("unterminated RBAC block")?];
    Ok(block
        .replace("namespace: portcullis", &format!("namespace: {ns}"))
        .replace("name: portcullis-revoker", &format!("name: {ns}-revoker"))
        .replace("name: platform-team", &format!("name: {ns}-revoker")))
}

/// A ServiceAccount without rights is told which verb on which resource it lacks; bound to the
/// RBAC docs/cli.md documents, it can do everything the plugin does.
#[tokio::test]
async fn rbac_refusals_are_explained_and_the_documented_rbac_suffices() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-rbac", |client, ns| async move {
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            create(
                &api,
                vec![
                    session("r1", "rita", Some("rita@example.com"), "dex"),
                    session("r2", "rita", Some("rita@example.com"), "dex"),
                ],
            )
            .await?;
            Api::<AccessPolicy>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &policy(&ns, "apps", &format!("{ns}.example"))?)
                .await?;
            let info = cluster.info();
            let token = service_account_token(&client, &ns, "revoker").await?;
            let path = std::env::temp_dir().join(format!("portcullis-cli-{ns}.kubeconfig"));
            write_kubeconfig(
                &path,
                &info.ca_file,
                &[("sa", info.apiserver_url(), serde_json::json!({"token": token}), Some(&ns))],
            )?;
            let outcome = async {
                let denied = plugin(&path, &ns, &["sessions"]).await?.expect(1)?;
                ensure!(
                    denied.stderr.starts_with(&format!(
                        "error: forbidden: you may not list accesssessions in namespace {ns}"
                    )) && denied.stderr.contains("docs/cli.md"),
                    "{}",
                    denied.stderr
                );
                let denied = plugin(&path, &ns, &["revoke", "policy", "apps"]).await?.expect(1)?;
                ensure!(
                    denied.stderr.starts_with(&format!(
                        "error: forbidden: you may not get accesspolicies in namespace {ns}"
                    )),
                    "{}",
                    denied.stderr
                );

                // The documented Role and ClusterRole, bound to the ServiceAccount.
                let rbac = documented_rbac(&ns)?;
                ensure!(rbac.contains(&format!("{ns}-revoker")), "{rbac}");
                let bindings = format!(
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: sessions\n  namespace: {ns}\n\
                     roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {ns}-revoker}}\n\
                     subjects: [{{kind: ServiceAccount, name: revoker, namespace: {ns}}}]\n---\n\
                     apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: policies\n  namespace: {ns}\n\
                     roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}-revoker}}\n\
                     subjects: [{{kind: ServiceAccount, name: revoker, namespace: {ns}}}]\n"
                );
                kubectl_apply(&info.kubeconfig, &format!("{rbac}\n---\n{bindings}"))?;
                // RBAC changes reach the authorizer through its informers: allow a moment.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    let run = plugin(&path, &ns, &["sessions", "-o", "name"]).await?;
                    if run.code == Some(0) {
                        break;
                    }
                    ensure!(tokio::time::Instant::now() < deadline, "still refused: {}", run.stderr);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                plugin(&path, &ns, &["revoke", "session", "r1"]).await?.expect(0)?;
                plugin(&path, &ns, &["revoke", "user", "rita"]).await?.expect(0)?;
                ensure!(revoked(&api, "r2").await?.0, "revoke user did nothing");
                plugin(&path, &ns, &["revoke", "policy", "apps"]).await?.expect(0)?;
                plugin(&path, &ns, &["status", "-n", &ns]).await?.expect(0)?;
                Ok::<(), anyhow::Error>(())
            }
            .await;
            let _ = std::fs::remove_file(&path);
            let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
                .delete(&format!("{ns}-revoker"), &Default::default())
                .await;
            outcome
        })
        .await;
    result.expect("RBAC");
}

/// `status` summarizes policies and sessions.
#[tokio::test]
async fn status_summarizes_policies_and_sessions() {
    let cluster = TestCluster::shared().await;
    let result: Result<()> = cluster
        .with_temp_ns("cli-status", |client, ns| async move {
            Api::<AccessPolicy>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &policy(&ns, "apps", &format!("{ns}.example"))?)
                .await?;
            let api: Api<AccessSession> = Api::namespaced(client.clone(), &ns);
            let mut gone = session("t2", "tom", None, "dex");
            gone.spec.revoked = true;
            create(&api, vec![session("t1", "tom", None, "dex"), gone]).await?;
            let run: Run = plugin(&kubeconfig(cluster), &ns, &["status", "-n", &ns]).await?.expect(0)?;
            let mut lines = run.stdout.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            ensure!(
                header == ["NAMESPACE", "NAME", "READY", "REASON", "GATEWAYS", "EPOCH", "ENFORCED-EPOCH"],
                "{}",
                run.stdout
            );
            let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            ensure!(row == [ns.as_str(), "apps", "?", "-", "-", "0", "-"], "{}", run.stdout);
            ensure!(
                run.stdout.contains(&format!("1 policy in namespace {ns}: 0 ready, 1 not ready."))
                    && run.stdout.contains("no policy has status yet: is the operator running?")
                    && run.stdout.contains(&format!(
                        "Sessions in namespace {ns}: 1 active, 1 revoked (0 enforced by every gateway, 1 not yet)."
                    )),
                "{}",
                run.stdout
            );
            Ok(())
        })
        .await;
    result.expect("status");
}
