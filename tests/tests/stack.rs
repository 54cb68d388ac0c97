//! Smoke tests of the harness against the real control plane and the real Dex.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use portcullis_tests::dex::{self, Connector};
use portcullis_tests::{Stack, StackConfig, TestCluster, with_temp_ns};

fn kubectl(cluster: &TestCluster, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.info().kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn can_i_create_secrets(cluster: &TestCluster, ns: &str) -> String {
    let sa = format!("system:serviceaccount:{ns}:default");
    let out = kubectl(
        cluster,
        &["auth", "can-i", "create", "secrets", "--as", &sa, "-n", ns],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn apiserver_is_ready_and_kubectl_uses_the_kubeconfig() {
    let cluster = TestCluster::shared().await;
    let info = cluster.info();
    let mut pem = std::fs::read(&info.admin.cert).expect("admin cert");
    pem.extend(std::fs::read(&info.admin.key).expect("admin key"));
    let client = dex::http_client_builder(&info.ca_file)
        .expect("client builder")
        .identity(reqwest::Identity::from_pem(&pem).expect("identity"))
        .build()
        .expect("client");
    let readyz = client
        .get(format!("{}/readyz", info.apiserver_url()))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(readyz.status(), 200);

    let out = kubectl(cluster, &["get", "ns", "-o", "name"]);
    assert!(out.status.success(), "kubectl failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("namespace/default"), "{stdout}");
    assert!(stdout.contains("namespace/kube-system"), "{stdout}");
}

#[tokio::test]
async fn rbac_denies_service_accounts_until_a_role_binding_allows() {
    let cluster = TestCluster::shared().await;
    with_temp_ns("rbac", |client, ns| async move {
        assert_eq!(can_i_create_secrets(cluster, &ns), "no");

        let role = Role {
            metadata: ObjectMeta {
                name: Some("secret-writer".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                verbs: vec!["create".into()],
                ..PolicyRule::default()
            }]),
        };
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some("secret-writer".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "secret-writer".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: "default".into(),
                namespace: Some(ns.clone()),
                ..Subject::default()
            }]),
        };
        let pp = PostParams::default();
        Api::<Role>::namespaced(client.clone(), &ns)
            .create(&pp, &role)
            .await
            .expect("create Role");
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .create(&pp, &binding)
            .await
            .expect("create RoleBinding");

        // The RBAC authorizer reads from informers: the binding takes effect shortly after.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = can_i_create_secrets(cluster, &ns);
            if answer == "yes" {
                break;
            }
            assert!(Instant::now() < deadline, "still {answer:?} after 20s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn token_request_issues_a_token_the_apiserver_accepts() {
    with_temp_ns("token-request", |client, ns| async move {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["portcullis-test".into()],
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &ns);
        let issued: TokenRequest = sas
            .create_subresource("token", "default", &PostParams::default(), &request)
            .await
            .expect("TokenRequest");
        let token = issued.status.expect("status").token;

        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token),
                audiences: Some(vec!["portcullis-test".into()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .expect("TokenReview");
        let status = reviewed.status.expect("review status");
        assert_eq!(status.authenticated, Some(true), "{status:?}");
        let user = status.user.expect("user");
        assert_eq!(
            user.username.as_deref(),
            Some(format!("system:serviceaccount:{ns}:default").as_str())
        );
    })
    .await;
}

#[tokio::test]
async fn namespaces_finish_deleting_and_garbage_is_collected() {
    let cluster = TestCluster::shared().await;
    let ns = cluster.namespace("deletion").await.expect("namespace");
    let client = ns.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .expect("owner");
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.expect("uid"),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let dependent_uid = cms
        .create(&PostParams::default(), &dependent)
        .await
        .expect("dependent")
        .metadata
        .uid
        .expect("uid");
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(
            cms.clone(),
            "dependent",
            conditions::is_deleted(&dependent_uid),
        ),
    )
    .await
    .expect("garbage collector removed the dependent within 60s")
    .expect("watch");

    let name = ns.name().to_owned();
    ns.delete_and_wait(Duration::from_secs(90))
        .await
        .expect("namespace deleted");
    let gone = Api::<Namespace>::all(client)
        .get_opt(&name)
        .await
        .expect("get namespace");
    assert!(gone.is_none());
}

#[tokio::test]
async fn dex_serves_discovery_and_keys() {
    let cluster = TestCluster::shared().await;
    let info = &cluster.info().dex;
    let http = info.http_client().expect("client");
    let discovery: serde_json::Value = http
        .get(format!("{}/.well-known/openid-configuration", info.issuer))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery json");
    assert_eq!(discovery["issuer"], info.issuer.as_str());
    assert!(info.issuer.starts_with("https://127.0.0.1:"));
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    let jwks: serde_json::Value = http
        .get(jwks_uri)
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "{jwks}");
}

#[tokio::test]
async fn dex_password_login_returns_tokens_and_refreshes() {
    let cluster = TestCluster::shared().await;
    let info = &cluster.info().dex;
    let alice = info.user("alice").expect("alice");
    let tokens = dex::login(info, alice, Connector::Password)
        .await
        .expect("alice logs in");
    let claims = dex::unverified_claims(&tokens.id_token).expect("claims");
    assert_eq!(claims["iss"], info.issuer.as_str());
    assert_eq!(claims["aud"], info.client_id.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    // A static user's groups, through the password form.
    let groups = serde_json::json!(["engineering", "admins"]);
    assert_eq!(claims["groups"], groups, "{claims}");

    let refresh = tokens
        .refresh_token
        .expect("offline_access gives a refresh token");
    let refreshed = dex::refresh(info, &refresh).await.expect("refresh");
    let claims = dex::unverified_claims(&refreshed.id_token).expect("claims");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(
        claims["groups"], groups,
        "a refresh keeps the groups: {claims}"
    );

    let bob = info.user("bob").expect("bob");
    let granted = dex::password_grant(info, bob)
        .await
        .expect("password grant");
    let claims = dex::unverified_claims(&granted.id_token).expect("claims");
    assert_eq!(claims["email"], "bob@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["sales"]), "{claims}");

    let mut wrong = bob.clone();
    wrong.password = "not-the-password".into();
    let err = dex::login(info, &wrong, Connector::Password)
        .await
        .expect_err("wrong password is rejected");
    assert!(format!("{err:#}").contains("rejected"), "{err:#}");
}

#[tokio::test]
async fn dex_header_login_carries_groups() {
    let cluster = TestCluster::shared().await;
    let info = &cluster.info().dex;
    for (name, groups) in [
        ("alice", vec!["engineering", "admins"]),
        ("bob", vec!["sales"]),
    ] {
        let user = info.user(name).expect("user");
        let tokens = dex::login(info, user, Connector::Header)
            .await
            .expect("header login");
        let claims = dex::unverified_claims(&tokens.id_token).expect("claims");
        assert_eq!(claims["email"], user.email.as_str());
        assert_eq!(claims["groups"], serde_json::json!(groups), "{claims}");
    }
}

/// A private stack (not the shared one): the API server restarts without losing objects and
/// Dex can be taken down and brought back.
#[tokio::test]
async fn own_stack_survives_apiserver_and_dex_restarts() {
    let dir = portcullis_tests::cluster::default_state_dir()
        .with_file_name(format!("portcullis-stack-restart-{}", std::process::id()));
    let mut stack = Stack::start(StackConfig::new(&dir))
        .await
        .expect("stack starts");
    let client = stack.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("survivor".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    stack.restart_apiserver().await.expect("apiserver restarts");
    let client = stack.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(cms.get_opt("survivor").await.expect("get").is_some());

    stack.stop_dex().await.expect("stop dex");
    let dex = stack.info().dex.clone();
    let down = dex
        .http_client()
        .expect("client")
        .get(format!("{}/.well-known/openid-configuration", dex.issuer))
        .send()
        .await;
    assert!(down.is_err(), "Dex still answers after stop_dex");
    stack.start_dex().await.expect("dex starts");
    dex::login(&dex, dex.user("bob").expect("bob"), Connector::Password)
        .await
        .expect("login after Dex restart");

    stack.stop().await.expect("stack stops");
    std::fs::remove_dir_all(&dir).expect("remove state dir");
}

#[tokio::test]
async fn failed_tests_get_diagnostics_and_their_namespace_deleted() {
    let cluster = TestCluster::shared().await;
    let mut seen_ns = String::new();
    let result: Result<(), String> = cluster
        .with_temp_ns("diagnostics", |client, ns| {
            seen_ns = ns.clone();
            async move {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some("evidence".into()),
                        ..ObjectMeta::default()
                    },
                    ..ConfigMap::default()
                };
                Api::<ConfigMap>::namespaced(client, &ns)
                    .create(&PostParams::default(), &cm)
                    .await
                    .expect("create");
                let report = cluster.diagnostics(&ns).await;
                assert!(report.contains("v1/ConfigMap evidence"), "{report}");
                assert!(report.contains("kube-apiserver.log"), "{report}");
                Err("deliberate failure".to_owned())
            }
        })
        .await;
    assert_eq!(result, Err("deliberate failure".to_owned()));
    let ns = Api::<Namespace>::all(cluster.client().await.expect("client"))
        .get_opt(&seen_ns)
        .await
        .expect("get namespace");
    let terminating = ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some());
    assert!(terminating, "namespace {seen_ns} was not deleted");
}
