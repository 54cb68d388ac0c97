//! Namespaces keep out of each other's hosts, against the real API server, the real
//! `portcullis-operator` and a real cluster-mode gateway: two tenants, each allowed by RBAC to
//! write AccessPolicies in their own namespace only (the API server judges them, through
//! impersonation), and the tenant of namespace B trying to take namespace A's host with a
//! `Bypass` under a longer prefix. The claim is refused (condition and Event) and never routed:
//! the gateway keeps judging the host by A's policies, until a cluster administrator grants the
//! host to B with an `AccessHost`. And the operator reads Secrets only where it is granted to,
//! reporting a refusal on the policies that need them instead of stalling.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::{
    events::v1::Event,
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use portcullis_crds::{AccessHost, AccessPolicy};
use portcullis_tests::{
    cluster::TestCluster,
    fleet::{Fleet, FleetOptions},
};
use reqwest::StatusCode;
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Every test here runs its own operator, and each operator leads in its own namespace and
/// writes the status of every policy in the cluster: run one at a time, so no operator with
/// another configuration rewrites what the test reads.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Long enough for a refused watch to retry after its backoff.
const LIMIT: Duration = Duration::from_secs(90);

/// Lets `user` create and read AccessPolicies in `ns`, nothing else.
async fn tenant(admin: &Client, ns: &str, user: &str) -> Result<()> {
    let name = format!("{user}-policies");
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["access.portcullis.dev".into()]),
            resources: Some(vec!["accesspolicies".into()]),
            verbs: [
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]
            .map(String::from)
            .to_vec(),
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .context("creating the tenant Role")?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .context("creating the tenant RoleBinding")?;
    Ok(())
}

/// A client acting as `user` (the admin impersonating it: the API server applies `user`'s RBAC).
async fn as_user(kubeconfig: &Path, user: &str) -> Result<Client> {
    let mut config = portcullis_tests::kubeconfig::client_config(kubeconfig).await?;
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).context("building an impersonating client")
}

/// `ns/name` on `host` under `prefix`, letting everyone through to a closed port.
fn bypass(ns: &str, name: &str, host: &str, prefix: &str) -> Result<AccessPolicy> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hosts": [host], "paths": [prefix],
            "upstream": {"url": "http://127.0.0.1:9"},
            "rules": [{"action": "Bypass", "include": [{"everyone": true}]}]
        }
    }))
    .context("building the policy")
}

/// `Ready` of a policy as (status, reason, message).
async fn ready(client: &Client, ns: &str, name: &str) -> Result<Option<(String, String, String)>> {
    let policy = Api::<AccessPolicy>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    Ok(policy.status.and_then(|s| {
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status, c.reason, c.message))
    }))
}

async fn wait_ready(
    client: &Client,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> Result<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let seen = ready(client, ns, name).await?;
        if let Some((s, r, message)) = &seen
            && s == status
            && r == reason
        {
            return Ok(message.clone());
        }
        if Instant::now() > deadline {
            bail!("{ns}/{name}: Ready is {seen:?}, not {status}/{reason}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a Warning Event with `reason` about policy `ns/name`.
async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> Result<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + LIMIT;
    loop {
        let found = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("AccessPolicy")
            });
        if let Some(event) = found {
            return Ok(event);
        }
        if Instant::now() > deadline {
            bail!("no {reason} Event on {ns}/{name}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the gateway answers an anonymous request to `path` on the app host: a redirect to the
/// login (A's `Allow` policy) or 502 (a `Bypass` let it through to the closed upstream port).
async fn answer(fleet: &Fleet, path: &str) -> Result<StatusCode> {
    let gateway = fleet.gateways.first().context("no gateway")?;
    let response = gateway
        .browser()?
        .get(format!("{}{path}", gateway.origin(&fleet.app)))
        .send()
        .await?;
    Ok(response.status())
}

/// Waits until the answer to `path` is `what` says.
async fn wait_answer(
    fleet: &Fleet,
    path: &str,
    what: &str,
    want: impl Fn(StatusCode) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = answer(fleet, path).await?;
        if want(got) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{path} answers {got}, not {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn to_login(status: StatusCode) -> bool {
    status.is_redirection()
}

fn bypassed(status: StatusCode) -> bool {
    status == StatusCode::BAD_GATEWAY
}

/// Runs `story(admin, kubeconfig, ns, other)` one test at a time, in a fresh namespace
/// (`prefix`) and a second one (`other_prefix`), both removed afterwards.
async fn in_two_namespaces<F, Fut>(prefix: &str, other_prefix: &str, story: F) -> Result<()>
where
    F: FnOnce(Client, PathBuf, String, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    let other = cluster.namespace(other_prefix).await?;
    let elsewhere = other.name().to_owned();
    let outcome = cluster
        .with_temp_ns(prefix, |admin: Client, ns: String| {
            story(admin, kubeconfig, ns, elsewhere.clone())
        })
        .await;
    if outcome.is_err() {
        eprintln!("{}", cluster.diagnostics(&elsewhere).await);
    }
    other.cleanup().await?;
    outcome
}

#[tokio::test]
async fn a_tenant_cannot_take_another_namespaces_host_unless_an_access_host_grants_it() -> Result<()>
{
    in_two_namespaces("tenancy-a", "tenancy-b", |admin, kubeconfig, ns_a, ns_b| async move {
        exercise(&admin, &kubeconfig, &ns_a, &ns_b).await
    })
    .await
}

async fn exercise(admin: &Client, kubeconfig: &Path, ns_a: &str, ns_b: &str) -> Result<()> {
    let dir = portcullis_tests::fsutil::scratch_dir("tenancy", "hosts")?;
    // A's policy (Allow for example.com, on the fleet's app host), an operator and a gateway.
    let fleet = Fleet::start(FleetOptions {
        dir: &dir,
        client: admin,
        kubeconfig,
        namespace: ns_a,
        gateway_bin: &portcullis_tests::fsutil::sibling_binary("portcullis-gateway")?,
        operator_bin: &portcullis_tests::fsutil::sibling_binary("portcullis-operator")?,
        gateways: 1,
        gateway_env: Vec::new(),
        // Both tenants' namespaces: the operator judges B's claim on A's host.
        operator_env: vec![(
            "PORTCULLIS_WATCH_NAMESPACES".to_owned(),
            format!("{ns_a},{ns_b}"),
        )],
    })
    .await?;
    let result = story(admin, kubeconfig, &fleet, ns_a, ns_b).await;
    let grant: Api<AccessHost> = Api::all(admin.clone());
    let _ = grant
        .delete(&grant_name(ns_a), &DeleteParams::default())
        .await;
    fleet.stop().await?;
    result
}

fn grant_name(ns_a: &str) -> String {
    format!("{ns_a}-app")
}

async fn story(
    admin: &Client,
    kubeconfig: &Path,
    fleet: &Fleet,
    ns_a: &str,
    ns_b: &str,
) -> Result<()> {
    let app = fleet.app.clone();
    tenant(admin, ns_a, "tenant-a").await?;
    tenant(admin, ns_b, "tenant-b").await?;
    let tenant_a = as_user(kubeconfig, "tenant-a").await?;
    let tenant_b = as_user(kubeconfig, "tenant-b").await?;

    // Each tenant writes in its own namespace only: A protects /admin with a login.
    let mut admin_area = AccessPolicy::new("admin-area", fleet_policy_spec(admin, ns_a).await?);
    admin_area.metadata.namespace = Some(ns_a.to_owned());
    admin_area.spec.paths = vec!["/admin".into()];
    let written_by_b = Api::<AccessPolicy>::namespaced(tenant_b.clone(), ns_a)
        .create(&PostParams::default(), &admin_area)
        .await;
    ensure!(
        matches!(&written_by_b, Err(kube::Error::Api(s)) if s.code == 403),
        "tenant-b wrote in namespace A: {written_by_b:?}"
    );
    Api::<AccessPolicy>::namespaced(tenant_a.clone(), ns_a)
        .create(&PostParams::default(), &admin_area)
        .await
        .context("tenant-a writing its own policy")?;
    wait_ready(admin, ns_a, "admin-area", "True", "Accepted").await?;
    wait_answer(fleet, "/admin/x", "a redirect to the login", to_login).await?;

    // B claims A's host under a longer prefix, with a Bypass: RBAC lets it write the object,
    // ownership refuses the claim.
    Api::<AccessPolicy>::namespaced(tenant_b.clone(), ns_b)
        .create(
            &PostParams::default(),
            &bypass(ns_b, "grab", &app, "/admin/secrets")?,
        )
        .await
        .context("tenant-b writing in its own namespace")?;
    let message = wait_ready(admin, ns_b, "grab", "False", "HostNotAllowed").await?;
    ensure!(
        message.contains(&app) && message.contains(ns_a),
        "the condition does not say whose host it is: {message}"
    );
    let event = wait_event(admin, ns_b, "grab", "HostNotAllowed").await?;
    ensure!(
        event.note.as_deref().is_some_and(|n| n.contains(&app)),
        "{event:?}"
    );
    // Still A's: the refused Bypass never reaches the gateway (its state moved on since).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for path in ["/admin/secrets", "/admin/secrets/x", "/admin/x", "/"] {
        let got = answer(fleet, path).await?;
        ensure!(to_login(got), "{path} answers {got}: B's Bypass is routed");
    }
    // A's policies stay accepted: a refused claim is no conflict.
    wait_ready(admin, ns_a, "admin-area", "True", "Accepted").await?;

    // A cluster administrator grants the host to B: B's claim is routed, A's are refused.
    let grant: AccessHost = serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessHost",
        "metadata": {"name": grant_name(ns_a)},
        "spec": {"hostnames": [app], "allowedNamespaces": {"from": "Names", "names": [ns_b]}}
    }))?;
    let created = Api::<AccessHost>::all(tenant_a.clone())
        .create(&PostParams::default(), &grant)
        .await;
    ensure!(
        matches!(&created, Err(kube::Error::Api(s)) if s.code == 403),
        "a tenant wrote an AccessHost: {created:?}"
    );
    Api::<AccessHost>::all(admin.clone())
        .create(&PostParams::default(), &grant)
        .await?;
    wait_ready(admin, ns_b, "grab", "True", "Accepted").await?;
    wait_ready(admin, ns_a, "admin-area", "False", "HostNotAllowed").await?;
    wait_answer(fleet, "/admin/secrets/x", "bypassed (502)", bypassed).await?;

    // Without the grant the host is A's again (its claims are the oldest).
    Api::<AccessHost>::all(admin.clone())
        .delete(&grant_name(ns_a), &DeleteParams::default())
        .await?;
    wait_ready(admin, ns_b, "grab", "False", "HostNotAllowed").await?;
    wait_ready(admin, ns_a, "admin-area", "True", "Accepted").await?;
    wait_answer(
        fleet,
        "/admin/secrets/x",
        "a redirect to the login",
        to_login,
    )
    .await
}

/// The spec of the fleet's own policy (login required), to copy under another prefix.
async fn fleet_policy_spec(admin: &Client, ns: &str) -> Result<portcullis_crds::AccessPolicySpec> {
    let policy = Api::<AccessPolicy>::namespaced(admin.clone(), ns)
        .get(portcullis_tests::fleet::POLICY)
        .await?;
    Ok(policy.spec)
}

/// A kubeconfig acting as `user`: the admin's, impersonating (`as`), so the API server applies
/// `user`'s RBAC to everything the process does.
fn impersonating_kubeconfig(admin: &Path, user: &str, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(admin)?;
    let mut config: serde_json::Value = serde_saphyr::from_str(&text)?;
    let users = config
        .get_mut("users")
        .and_then(|u| u.as_array_mut())
        .context("kubeconfig without users")?;
    for entry in users {
        if let Some(user_map) = entry.get_mut("user").and_then(|u| u.as_object_mut()) {
            user_map.insert("as".into(), serde_json::Value::String(user.to_owned()));
        }
    }
    std::fs::write(file, serde_json::to_vec(&config)?)?;
    Ok(())
}

/// Everything the operator needs, except Secrets.
async fn operator_role_without_secrets(admin: &Client, user: &str) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(user.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(
                "access.portcullis.dev",
                &[
                    "accesspolicies",
                    "accesspolicies/status",
                    "accesshosts",
                    "accesssessions",
                    "accesssessions/status",
                ],
                &["*"],
            ),
            rule("", &["namespaces"], &["get", "list", "watch"]),
            rule("", &["events"], &["create", "patch"]),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
            rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
            rule("coordination.k8s.io", &["leases"], &["*"]),
        ]),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(user.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: user.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.to_owned(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Lets `user` read the Secrets of `ns` (what the chart's `operator.secretNamespaces` renders).
async fn secret_reader(admin: &Client, ns: &str, user: &str) -> Result<()> {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("operator-secrets".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: ["get", "list", "watch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("operator-secrets".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "operator-secrets".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.to_owned(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// A policy whose `ServiceAuth` rule needs the service token `ci` (Secret `ci-token`).
fn tokened(ns: &str) -> Result<AccessPolicy> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "tokened", "namespace": ns},
        "spec": {
            "hosts": [format!("{ns}.portcullis.test")],
            "serviceTokens": [{"name": "ci", "secretName": "ci-token"}],
            "rules": [{"action": "ServiceAuth", "include": [{"serviceTokens": ["ci"]}]}]
        }
    }))
    .context("building the policy")
}

/// The operator reads Secrets only in `--secret-namespaces`, through a Role there: without the
/// Role it still serves (the API server's refusal is reported on the policies that need those
/// Secrets, not a stalled stream), a policy elsewhere is told its namespace is not read, and
/// once the Role exists the watch recovers by itself.
#[tokio::test]
async fn the_operator_reads_secrets_only_where_granted_and_reports_a_refusal() -> Result<()> {
    in_two_namespaces(
        "secrets-scoped",
        "secrets-elsewhere",
        |admin, kubeconfig, ns, elsewhere| async move {
            secrets_story(&admin, &kubeconfig, &ns, &elsewhere).await
        },
    )
    .await
}

/// Starts the operator as `user` with Secrets read in `ns` only, and walks the story.
async fn scoped_operator(
    admin: &Client,
    dir: &Path,
    kubeconfig: &Path,
    user: &str,
    ns: &str,
    elsewhere: &str,
) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let pki = portcullis_tests::pki::Pki::generate(&dir.join("pki"))?;
    // Ready (every watch listed or refused) within start_with's deadline, without any Secret
    // access at all.
    let mut operator = portcullis_tests::operator::OperatorProcess::start_with(
        &portcullis_tests::fsutil::sibling_binary("portcullis-operator")?,
        &dir.join("operator"),
        &pki,
        kubeconfig,
        ns,
        &[format!("{ns}:gateway")],
        vec![
            ("PORTCULLIS_SECRET_NAMESPACES".into(), ns.to_owned()),
            // Policies in both: the one elsewhere is told its Secrets are not read.
            (
                "PORTCULLIS_WATCH_NAMESPACES".into(),
                format!("{ns},{elsewhere}"),
            ),
        ],
    )
    .await?;
    let log = dir
        .join("operator")
        .join(format!("operator-{}.log", operator.addr.port()));
    let result = async {
        let refused = wait_ready(admin, ns, "tokened", "False", "SecretNotReadable").await?;
        ensure!(refused.contains("refuses"), "{refused}");
        wait_event(admin, ns, "tokened", "SecretNotReadable").await?;
        let unread = wait_ready(admin, elsewhere, "tokened", "False", "SecretNotReadable").await?;
        ensure!(unread.contains("not among"), "{unread}");

        // Granted: the watch recovers on its own; the Secret then decides.
        secret_reader(admin, ns, user).await?;
        wait_ready(admin, ns, "tokened", "False", "MissingSecret").await?;
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "ci-token", "namespace": ns},
            "stringData": {"client-id": "ci", "client-secret": "s3cret-value"}
        }))?;
        Api::<Secret>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await?;
        wait_ready(admin, ns, "tokened", "True", "Accepted").await?;
        // Still never read elsewhere.
        wait_ready(admin, elsewhere, "tokened", "False", "SecretNotReadable").await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!(
            "operator log:\n{}",
            portcullis_tests::fsutil::tail(&log, 40)
        );
    }
    operator.stop().await?;
    result
}

async fn secrets_story(admin: &Client, kubeconfig: &Path, ns: &str, elsewhere: &str) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let user = format!("operator-{ns}");
    operator_role_without_secrets(admin, &user).await?;
    let result = async {
        let dir = portcullis_tests::fsutil::scratch_dir("tenancy", "secrets")?;
        let scoped = dir.join("kubeconfig");
        impersonating_kubeconfig(kubeconfig, &user, &scoped)?;
        for namespace in [ns, elsewhere] {
            Api::<AccessPolicy>::namespaced(admin.clone(), namespace)
                .create(&PostParams::default(), &tokened(namespace)?)
                .await?;
        }
        scoped_operator(admin, &dir, &scoped, &user, ns, elsewhere).await
    }
    .await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&user, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(admin.clone())
        .delete(&user, &DeleteParams::default())
        .await;
    result
}

/// An operator serves the policies of its `--watch-namespaces` only: another installation's
/// policy, in a namespace it does not watch, gets no status from it, while the policy of its own
/// namespace is reported Ready.
#[tokio::test]
async fn an_operator_leaves_the_policies_of_namespaces_it_does_not_watch_alone() -> Result<()> {
    in_two_namespaces(
        "watched",
        "unwatched",
        |admin, kubeconfig, ns, elsewhere| async move {
            watched_story(&admin, &kubeconfig, &ns, &elsewhere).await
        },
    )
    .await
}

async fn watched_story(admin: &Client, kubeconfig: &Path, ns: &str, elsewhere: &str) -> Result<()> {
    for namespace in [elsewhere, ns] {
        let host = format!("{namespace}.portcullis.test");
        Api::<AccessPolicy>::namespaced(admin.clone(), namespace)
            .create(
                &PostParams::default(),
                &bypass(namespace, "apps", &host, "/")?,
            )
            .await?;
    }
    let dir = portcullis_tests::fsutil::scratch_dir("tenancy", "watched")?;
    let pki = portcullis_tests::pki::Pki::generate(&dir.join("pki"))?;
    let mut operator = portcullis_tests::operator::OperatorProcess::start_with(
        &portcullis_tests::fsutil::sibling_binary("portcullis-operator")?,
        &dir.join("operator"),
        &pki,
        kubeconfig,
        ns,
        &[format!("{ns}:gateway")],
        vec![("PORTCULLIS_WATCH_NAMESPACES".into(), ns.to_owned())],
    )
    .await?;
    let result = async {
        wait_ready(admin, ns, "apps", "True", "Accepted").await?;
        // Several status passes later (one a second), still nothing written elsewhere.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let unwatched = Api::<AccessPolicy>::namespaced(admin.clone(), elsewhere)
            .get("apps")
            .await?;
        ensure!(
            unwatched.status.is_none(),
            "the operator wrote the status of a policy it does not watch: {:?}",
            unwatched.status
        );
        Ok(())
    }
    .await;
    operator.stop().await?;
    result
}
