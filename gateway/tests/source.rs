//! Standalone mode: policies from a directory, reloaded when a file changes, failing closed on
//! bad manifests.

use portcullis_core::{CanonicalPath, Host, Route};
use portcullis_gateway::{
    shutdown,
    state::{Snapshot, directory},
};
use std::{path::Path, sync::Arc, time::Duration};
use tokio::sync::watch;

fn policy(name: &str, host: &str, epoch: i64, idp: &str) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: {name} }}
spec:
  hosts: [{host}]
  identityProviders: [{idp}]
  revocationEpoch: {epoch}
  rules: [{{ action: Allow, include: [{{ everyone: true }}] }}]
"#
    )
}

fn route(snapshot: &Snapshot, host: &str) -> String {
    let host = Host::parse(host).expect("host");
    match snapshot
        .routes
        .route(&host, &CanonicalPath::parse("/x").expect("path"))
    {
        Some(Route::Policy(p)) => format!("{} epoch {}", p.id, p.epoch),
        Some(Route::Invalid { id, .. }) => format!("invalid {id}"),
        Some(Route::Conflict { .. }) => "conflict".into(),
        None => "none".into(),
    }
}

async fn next_version(rx: &mut watch::Receiver<Arc<Snapshot>>, after: u64) -> Arc<Snapshot> {
    let wait = rx.wait_for(|s| s.version > after);
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("no reload within 10s")
        .expect("watcher gone")
        .clone()
}

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(file)).expect("rename");
}

#[tokio::test]
async fn policies_reload_on_change_and_bad_manifests_fail_closed() {
    let dir = std::env::temp_dir().join(format!("portcullis-source-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    write(&dir, "a.yaml", &policy("a", "a.example.test", 0, "dex"));
    write(&dir, "notes.txt", "not a manifest, not read");
    let (_trigger, signal) = shutdown::channel();
    let mut rx = directory::watch_directory(
        dir.clone(),
        Arc::new(|n: &str| n == "dex"),
        Duration::from_millis(50),
        signal,
    )
    .expect("first load");
    let first = rx.borrow().clone();
    assert_eq!(route(&first, "a.example.test"), "default/a epoch 0");

    // An edit (the epoch raised) applies without a restart.
    write(&dir, "a.yaml", &policy("a", "a.example.test", 3, "dex"));
    let second = next_version(&mut rx, first.version).await;
    assert_eq!(route(&second, "a.example.test"), "default/a epoch 3");

    // A policy naming an unknown identity provider still claims its host, as a denial.
    write(&dir, "b.yaml", &policy("b", "b.example.test", 0, "nope"));
    let third = next_version(&mut rx, second.version).await;
    assert_eq!(route(&third, "b.example.test"), "invalid default/b");
    assert!(
        third
            .problems
            .iter()
            .any(|p| p.contains("unknown identity provider")),
        "{:?}",
        third.problems
    );

    // A file that is no longer YAML, or no longer an AccessPolicy, is never half-applied: the
    // policies in force stay, until the directory is readable again.
    write(&dir, "a.yaml", "apiVersion: [unclosed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    write(
        &dir,
        "a.yaml",
        "apiVersion: access.portcullis.dev/v1alpha1\nkind: AccessPolicy\nspec: { hosts: 7 }\n",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.borrow().version,
        third.version,
        "a broken manifest was applied"
    );
    assert_eq!(route(&rx.borrow(), "a.example.test"), "default/a epoch 3");
    write(&dir, "a.yaml", &policy("a", "a.example.test", 4, "dex"));
    let fourth = next_version(&mut rx, third.version).await;
    assert_eq!(route(&fourth, "a.example.test"), "default/a epoch 4");

    // Epochs only go up: a rollback of the file, or removing the policy and adding it back with
    // epoch 0, does not un-revoke anything.
    write(&dir, "a.yaml", &policy("a", "a.example.test", 2, "dex"));
    let fifth = next_version(&mut rx, fourth.version).await;
    assert_eq!(route(&fifth, "a.example.test"), "default/a epoch 4");
    assert!(
        fifth.problems.iter().any(|p| p.contains("lower than 4")),
        "{:?}",
        fifth.problems
    );
    std::fs::remove_file(dir.join("a.yaml")).expect("remove");
    let sixth = next_version(&mut rx, fifth.version).await;
    assert_eq!(route(&sixth, "a.example.test"), "none");
    write(&dir, "a.yaml", &policy("a", "a.example.test", 0, "dex"));
    let seventh = next_version(&mut rx, sixth.version).await;
    assert_eq!(route(&seventh, "a.example.test"), "default/a epoch 4");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_broken_manifest_at_start_is_an_error() {
    let dir = std::env::temp_dir().join(format!("portcullis-source-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    write(&dir, "a.yaml", "kind: AccessPolicy\nspec: [not, a, spec]\n");
    let (_trigger, signal) = shutdown::channel();
    let started = directory::watch_directory(
        dir.clone(),
        Arc::new(|_: &str| true),
        Duration::from_secs(1),
        signal,
    );
    let Err(error) = started else {
        panic!("a broken manifest was accepted");
    };
    assert!(error.to_string().contains("a.yaml"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_directory_is_an_error_not_an_empty_policy_set() {
    let (_trigger, signal) = shutdown::channel();
    let missing = std::env::temp_dir().join("portcullis-no-such-dir-for-sure");
    assert!(
        directory::watch_directory(
            missing,
            Arc::new(|_: &str| true),
            Duration::from_secs(1),
            signal
        )
        .is_err()
    );
}

/// A policy of `namespace` on `host` under `prefix` letting everyone through.
fn bypass(namespace: &str, name: &str, host: &str, prefix: &str) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: {name}, namespace: {namespace} }}
spec:
  hosts: [{host}]
  paths: ["{prefix}"]
  rules: [{{ action: Bypass, include: [{{ everyone: true }}] }}]
"#
    )
}

fn route_at(snapshot: &Snapshot, host: &str, path: &str) -> String {
    let host = Host::parse(host).expect("host");
    match snapshot
        .routes
        .route(&host, &CanonicalPath::parse(path).expect("path"))
    {
        Some(Route::Policy(p)) => p.id.to_string(),
        Some(Route::Invalid { id, .. }) => format!("invalid {id}"),
        Some(Route::Conflict { .. }) => "conflict".into(),
        None => "none".into(),
    }
}

#[test]
fn a_manifest_claiming_another_namespaces_host_is_left_out_unless_granted() {
    let dir = std::env::temp_dir().join(format!("portcullis-source-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let load = |version| {
        directory::load(&dir, version, &|_: &str| true, &mut Default::default()).expect("loads")
    };
    // team-a's file sorts after team-b's: the owner is decided by namespace, not file order.
    write(
        &dir,
        "z-a.yaml",
        &bypass("team-a", "app", "app.example.test", "/"),
    );
    write(
        &dir,
        "b.yaml",
        &bypass("team-b", "grab", "app.example.test", "/admin"),
    );
    write(
        &dir,
        "b-own.yaml",
        &bypass("team-b", "own", "b.example.test", "/"),
    );
    let first = load(1);
    assert_eq!(
        route_at(&first, "app.example.test", "/admin/x"),
        "team-a/app"
    );
    assert_eq!(route_at(&first, "b.example.test", "/"), "team-b/own");
    assert!(
        first
            .problems
            .iter()
            .any(|p| p.contains("team-b/grab") && p.contains("not routed")),
        "{:?}",
        first.problems
    );

    // A grant to labelled namespaces lets team-b in, and keeps team-a out of it.
    write(
        &dir,
        "hosts.yaml",
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessHost
metadata: { name: app }
spec:
  hostnames: ["*.example.test"]
  allowedNamespaces:
    from: Selector
    selector: { matchLabels: { tenant: b } }
---
apiVersion: v1
kind: Namespace
metadata: { name: team-b, labels: { tenant: b } }
"#,
    );
    let second = load(2);
    assert_eq!(
        route_at(&second, "app.example.test", "/admin/x"),
        "team-b/grab"
    );
    assert_eq!(route_at(&second, "app.example.test", "/"), "none");
    assert_eq!(route_at(&second, "b.example.test", "/"), "team-b/own");
    let _ = std::fs::remove_dir_all(&dir);
}
