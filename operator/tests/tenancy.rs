//! Namespaces keep out of each other's hosts, against the real API server, the real
//! `portcullis-operator` and a real cluster-mode gateway: two tenants, each allowed by RBAC to
//! write AccessPolicies in their own namespace only (the API server judges them, through
//! impersonation), and the tenant of namespace B trying to take namespace A's host with a
//! `Bypass` under a longer prefix. The claim is refused (condition and Event) and never routed:
//! the gateway keeps judging the host by A's policies, until a cluster administrator grants the
//! host to B with an `AccessHost`.

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
    path::Path,
    time::{Duration, Instant},
};

const LIMIT: Duration = Duration::from_secs(30);

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

#[tokio::test]
async fn a_tenant_cannot_take_another_namespaces_host_unless_an_access_host_grants_it() -> Result<()>
{
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    let other = cluster.namespace("tenancy-b").await?;
    let ns_b = other.name().to_owned();
    let outcome = cluster
        .with_temp_ns("tenancy-a", |admin: Client, ns_a: String| {
            let kubeconfig = kubeconfig.clone();
            let ns_b = ns_b.clone();
            async move { exercise(&admin, &kubeconfig, &ns_a, &ns_b).await }
        })
        .await;
    if outcome.is_err() {
        eprintln!("{}", cluster.diagnostics(&ns_b).await);
    }
    other.cleanup().await?;
    outcome
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
        operator_env: Vec::new(),
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
