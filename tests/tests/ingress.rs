//! The seed story, installed: the chart on the real node behind a real ingress controller.
//!
//! Traefik (built from its Go module, watching this API server with its Kubernetes CRD provider)
//! takes the manifests of `examples/ingress/traefik/` as a user copies them (names and hosts
//! swapped for the test namespace's), in front of the chart's gateway pods in forward-auth mode.
//! Dex and the app run as Deployments. A client that behaves like a browser logs in through the
//! ingress and reaches the app with the identity the gateway vouched for (and not the one it
//! forged); by single sign-on it also reaches the app on a second host, where Traefik sends
//! everything to the gateway in its reverse-proxy mode, and on a third, behind nginx's
//! `auth_request` (`examples/ingress/nginx/nginx.conf`, nginx from Debian's package). Under a steady load of its requests, a gateway pod is deleted, the gateway is rolled
//! by `helm upgrade`, and the operator is scaled to zero: not one request may fail. With the
//! operator still gone, its session is revoked with a patch: it is locked out at once, without
//! being handed a new app cookie by single sign-on.
//!
//! Needs root, the node's packages and binaries, the images (hack/test.sh builds them),
//! Traefik and nginx (`hack/build-tools.sh traefik nginx`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use portcullis_crds::AccessSession;
use portcullis_tests::dex::{self, Connector, DexInfo};
use portcullis_tests::node::components::kubectl_apply;
use portcullis_tests::node::shared::TestNode;
use portcullis_tests::node::{POD_CIDR, TAINT_KEY, images};
use portcullis_tests::pki::{CertFiles, Pki};
use portcullis_tests::tools::{Tool, helm, repo};
use reqwest::header::LOCATION;
use serde_json::json;
use url::Url;

/// Traefik's release, the same as the CRDs' module `hack/build-tools.sh` builds it from.
const TRAEFIK_MODULE: (&str, &str) = ("github.com/traefik/traefik/v3", "v3.6.12");
/// The CRDs Traefik's CRD provider watches: all of them must be served or it never syncs.
const TRAEFIK_CRDS: [&str; 10] = [
    "ingressroutes",
    "ingressroutetcps",
    "ingressrouteudps",
    "middlewares",
    "middlewaretcps",
    "serverstransports",
    "serverstransporttcps",
    "tlsoptions",
    "tlsstores",
    "traefikservices",
];
const CLIENT_SECRET: &str = "ingress-test-client-secret";
/// How long the whole install may take to become Ready.
const READY_WITHIN: Duration = Duration::from_secs(240);

/// The test's names: its namespace stands for both `portcullis` and `apps` of the examples, and
/// names the release (cluster-scoped objects of the chart are named after the release, so a
/// fixed name would meet those of an earlier run).
struct Names {
    ns: String,
    auth: String,
    wiki: String,
    /// The app again, behind the gateway in its reverse-proxy mode.
    proxy: String,
    /// The app again, behind nginx's `auth_request`.
    notes: String,
    dex: String,
}

impl Names {
    fn new(ns: &str) -> Self {
        Self {
            ns: ns.to_owned(),
            auth: format!("auth.{ns}.test"),
            wiki: format!("wiki.{ns}.test"),
            proxy: format!("proxy.{ns}.test"),
            notes: format!("notes.{ns}.test"),
            dex: format!("dex.{ns}.svc"),
        }
    }

    fn issuer(&self) -> String {
        format!("https://{}/dex", self.dex)
    }

    /// The chart's name for one of its objects: `portcullis-gateway` in the examples.
    fn chart_object(&self, component: &str) -> String {
        format!("{}-portcullis-{component}", self.ns)
    }
}

#[tokio::test]
async fn the_seed_story_runs_through_traefik_in_front_of_the_installed_chart() {
    let node = TestNode::shared().await;
    let cluster = node.cluster();
    let kubeconfig = cluster.info().kubeconfig.clone();
    let outcome = cluster
        .with_temp_ns("ingress", |client, ns| async move {
            let result = story(&client, &ns, &kubeconfig, node).await;
            if result.is_err() {
                eprintln!("{}", node.pod_logs(&ns, 60));
            }
            result
        })
        .await;
    outcome.expect("the seed story through Traefik");
}

async fn story(client: &kube::Client, ns: &str, kubeconfig: &Path, node: &TestNode) -> Result<()> {
    let names = Names::new(ns);
    let scratch = portcullis_tests::fsutil::scratch_dir("ingress", ns)?;
    let started = Instant::now();
    let dex_info = install(client, &names, kubeconfig, node, &scratch).await?;
    eprintln!("ingress: installed and Ready after {:?}", started.elapsed());

    let traefik = cluster_ip(client, ns, "traefik").await?;
    let nginx = cluster_ip(client, ns, "nginx").await?;
    let dex_ip = cluster_ip(client, ns, "dex").await?;
    let browser = dex::http_client_builder(&dex_info.ca_file)?
        .cookie_store(true)
        .resolve(&names.auth, SocketAddr::new(traefik, 443))
        .resolve(&names.wiki, SocketAddr::new(traefik, 443))
        .resolve(&names.proxy, SocketAddr::new(traefik, 443))
        .resolve(&names.notes, SocketAddr::new(nginx, 443))
        .resolve(&names.dex, SocketAddr::new(dex_ip, 443))
        .build()?;
    let wiki = Url::parse(&format!("https://{}/notes?page=1", names.wiki))?;

    // An API call without a session is refused, not redirected.
    let anonymous = browser
        .get(wiki.clone())
        .header("accept", "application/json")
        .send()
        .await?;
    ensure!(
        anonymous.status() == 401,
        "anonymous: {}",
        anonymous.status()
    );

    let alice = dex_info.user("alice")?.clone();
    let landed = dex::follow_login(&browser, wiki.clone(), &alice, Connector::Password, |u| {
        u.host_str() == Some(names.wiki.as_str()) && u.path() == "/notes"
    })
    .await?;
    ensure!(landed.query() == Some("page=1"), "landed on {landed}");

    // The app sees the identity the gateway vouched for, not the one the client sent, and
    // verifies the gateway's signed assertion of it (audience: the app's own origin).
    let seen: serde_json::Value = browser
        .get(wiki.join("/api/whoami")?)
        .header("accept", "application/json")
        .header("x-auth-request-email", "mallory@example.com")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        seen["email"] == alice.email.as_str()
            && seen["assertion"]["verified"] == true
            && seen["assertion"]["matches_headers"] == true,
        "the app saw {seen:#}"
    );

    // The gateway's own reverse-proxy mode behind the same ingress: single sign-on (no second
    // login form), and the app verifies the assertion minted for this origin.
    let proxied = Url::parse(&format!("https://{}/api/whoami", names.proxy))?;
    let asked_dex = std::cell::Cell::new(false);
    dex::follow_login(
        &browser,
        proxied.clone(),
        &alice,
        Connector::Password,
        |u| {
            asked_dex.set(asked_dex.get() || u.host_str() == Some(names.dex.as_str()));
            u.host_str() == Some(names.proxy.as_str()) && u.path() == "/api/whoami"
        },
    )
    .await?;
    ensure!(!asked_dex.get(), "single sign-on went back to Dex");
    let seen: serde_json::Value = browser
        .get(proxied)
        .header("accept", "application/json")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        seen["email"] == alice.email.as_str()
            && seen["assertion"]["verified"] == true
            && seen["assertion"]["claims"]["aud"] == format!("https://{}", names.proxy),
        "the app behind the proxy saw {seen:#}"
    );

    // nginx's auth_request in front of the same app on a third host: the same checks.
    let notes = Url::parse(&format!("https://{}/api/whoami", names.notes))?;
    let asked_dex = std::cell::Cell::new(false);
    dex::follow_login(&browser, notes.clone(), &alice, Connector::Password, |u| {
        asked_dex.set(asked_dex.get() || u.host_str() == Some(names.dex.as_str()));
        u.host_str() == Some(names.notes.as_str()) && u.path() == "/api/whoami"
    })
    .await?;
    ensure!(
        !asked_dex.get(),
        "single sign-on through nginx went back to Dex"
    );
    let seen: serde_json::Value = browser
        .get(notes.clone())
        .header("accept", "application/json")
        .header("x-auth-request-email", "mallory@example.com")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        seen["email"] == alice.email.as_str()
            && seen["assertion"]["verified"] == true
            && seen["assertion"]["claims"]["aud"] == format!("https://{}", names.notes),
        "the app behind nginx saw {seen:#}"
    );

    under_load(
        &browser,
        &wiki,
        "a gateway pod deleted",
        delete_a_gateway_pod(client, &names),
    )
    .await?;
    under_load(
        &browser,
        &wiki,
        "a rolling helm upgrade of the gateway",
        rolling_upgrade(client, &names, kubeconfig, &scratch),
    )
    .await?;

    // The control plane's own piece gone: the apps keep serving, and the revocation below,
    // made while it is still gone, reaches the gateways from the API server.
    under_load(
        &browser,
        &wiki,
        "the operator scaled to zero",
        operator_outage(client, &names),
    )
    .await?;
    revoke_and_check(client, &browser, &names, &wiki).await
}

/// Scales the operator to zero, waits until its pods are gone, and stays so for 20 s.
async fn operator_outage(client: &kube::Client, names: &Names) -> Result<()> {
    let name = names.chart_object("operator");
    Api::<Deployment>::namespaced(client.clone(), &names.ns)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &names.ns);
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let left = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
            .await?
            .items;
        if left.is_empty() {
            break;
        }
        ensure!(Instant::now() < deadline, "operator pods still there");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    Ok(())
}

/// Runs `fault` while the signed-in `browser` makes a steady stream of requests to `url`
/// through the ingress (two at a time): every one must succeed.
async fn under_load(
    browser: &reqwest::Client,
    url: &Url,
    what: &str,
    fault: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let begun = Instant::now();
    let worker = |stop: Arc<AtomicBool>| {
        let (browser, url) = (browser.clone(), url.clone());
        async move {
            let (mut served, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let at = begun.elapsed();
                let answer = browser
                    .get(url.clone())
                    .header("accept", "application/json")
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => served += 1,
                    Ok(r) => failed.push(format!("{at:?}: {}", r.status())),
                    Err(e) => failed.push(format!("{at:?}: {e:#}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (served, failed)
        }
    };
    let workers = [
        tokio::spawn(worker(stop.clone())),
        tokio::spawn(worker(stop.clone())),
    ];
    let outcome = fault.await;
    stop.store(true, Ordering::Relaxed);
    let (mut served, mut failed) = (0, Vec::new());
    for w in workers {
        let (s, f) = w.await?;
        served += s;
        failed.extend(f);
    }
    outcome.with_context(|| what.to_owned())?;
    eprintln!(
        "ingress: {what}: {served} requests served, {} failed, in {:?}",
        failed.len(),
        begun.elapsed()
    );
    ensure!(served > 50, "{what}: only {served} requests were made");
    ensure!(failed.is_empty(), "{what}: failed requests: {failed:?}");
    Ok(())
}

/// Deletes one gateway pod and waits until its replacement serves and the old pod is gone.
async fn delete_a_gateway_pod(client: &kube::Client, names: &Names) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &names.ns);
    let selector = "app.kubernetes.io/component=gateway";
    let before = pods.list(&ListParams::default().labels(selector)).await?;
    let victim = before
        .items
        .first()
        .and_then(|p| p.metadata.name.clone())
        .context("no gateway pod")?;
    pods.delete(&victim, &Default::default()).await?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let now = pods.list(&ListParams::default().labels(selector)).await?;
        let gone = now
            .items
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(victim.as_str()));
        if gone {
            break;
        }
        ensure!(Instant::now() < deadline, "{victim} still there");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_ready(client, &names.ns, &[&names.chart_object("gateway")]).await
}

/// `helm upgrade` that changes the gateway's pod template (a new annotation), and waits until
/// the rollout is complete: every replica new and Ready, no old pod left.
async fn rolling_upgrade(
    client: &kube::Client,
    names: &Names,
    kubeconfig: &Path,
    scratch: &Path,
) -> Result<()> {
    helm(
        &[
            "upgrade",
            &names.ns,
            &repo().join("charts/portcullis").display().to_string(),
            "-n",
            &names.ns,
            "--reuse-values",
            "--set",
            "gateway.podAnnotations.rolled=yes",
        ],
        kubeconfig,
        scratch,
    )?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &names.ns);
    let name = names.chart_object("gateway");
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let d = api.get(&name).await?;
        let generation = d.metadata.generation.unwrap_or(0);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        let rolled = status.observed_generation == Some(generation)
            && status.updated_replicas == Some(want)
            && status.ready_replicas == Some(want);
        // Old pods drain (preStop) while no longer counted: done once they are gone too.
        let pods = Api::<Pod>::namespaced(client.clone(), &names.ns)
            .list(&ListParams::default().labels("app.kubernetes.io/component=gateway"))
            .await?
            .items;
        let all_new = pods.iter().all(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("rolled"))
                .is_some_and(|v| v == "yes")
        });
        if rolled && all_new && pods.len() == usize::try_from(want)? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "rollout of {name}: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Revokes alice's one session with a patch: her next request is refused within seconds, and
/// a new navigation goes to the identity provider's login form instead of coming back with a
/// fresh app cookie from the auth host's session.
async fn revoke_and_check(
    client: &kube::Client,
    browser: &reqwest::Client,
    names: &Names,
    wiki: &Url,
) -> Result<()> {
    let sessions: Api<AccessSession> = Api::namespaced(client.clone(), &names.ns);
    let all = sessions.list(&ListParams::default()).await?.items;
    ensure!(all.len() == 1, "expected one session, found {}", all.len());
    let name = all[0].metadata.name.clone().context("session name")?;
    sessions
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"revoked": true}})),
        )
        .await?;
    let revoked = Instant::now();
    loop {
        let code = browser
            .get(wiki.clone())
            .header("accept", "application/json")
            .send()
            .await?
            .status();
        if code == 401 {
            break;
        }
        ensure!(
            revoked.elapsed() < Duration::from_secs(10),
            "still {code} 10 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ingress: refused {:?} after the patch", revoked.elapsed());
    // Behind nginx too: the revoked session gets the sign-in redirect, not the app.
    let notes = Url::parse(&format!("https://{}/api/whoami", names.notes))?;
    let answer = browser.get(notes).send().await?;
    let location = answer
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        answer.status() == 302
            && location.starts_with(&format!("https://{}/.portcullis/begin", names.notes)),
        "nginx answered a revoked session with {} {location:?}",
        answer.status()
    );

    let mut next = wiki.clone();
    for _ in 0..10 {
        let response = browser.get(next.clone()).send().await?;
        if !response.status().is_redirection() {
            ensure!(
                next.host_str() == Some(names.dex.as_str()),
                "a revoked browser ended at {next} ({}), not at the login form",
                response.status()
            );
            return Ok(());
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("redirect without Location")?;
        next = next.join(location)?;
        ensure!(
            !(next.host_str() == Some(names.wiki.as_str()) && next.path() == "/notes"),
            "single sign-on sent the revoked browser back to the app"
        );
    }
    bail!("no login form within 10 redirects")
}

/// Everything, installed and Ready: images, Dex, the app, the chart, Traefik, the examples'
/// manifests and the policy. Returns what a client needs to log in.
async fn install(
    client: &kube::Client,
    names: &Names,
    kubeconfig: &Path,
    node: &TestNode,
    scratch: &Path,
) -> Result<DexInfo> {
    import_images(node, scratch)?;
    let pki = Pki::generate(&scratch.join("pki"))?;
    let dex_cert = pki.issue_serving("dex", std::slice::from_ref(&names.dex))?;
    let edge_names = [
        names.auth.clone(),
        names.wiki.clone(),
        names.proxy.clone(),
        names.notes.clone(),
    ];
    let edge_cert = pki.issue_serving("edge", &edge_names)?;
    let info = DexInfo {
        issuer: names.issuer(),
        client_id: dex::CLIENT_ID.to_owned(),
        client_secret_file: scratch.join("unused"),
        ca_file: pki.ca_cert_path(),
        redirect_uris: vec![format!("https://{}/.portcullis/callback", names.auth)],
        users: dex::default_users(),
        trusted_header: false,
    };
    let dex_config = scratch.join("dex.json");
    let in_pod = CertFiles {
        cert: "/etc/dex/tls/tls.crt".into(),
        key: "/etc/dex/tls/tls.key".into(),
    };
    dex::write_config(&dex_config, &info.issuer, "0.0.0.0:5556", &in_pod, &info)?;

    let objects = scratch.join("objects.json");
    let mut items = objects_of(names, &pki, &dex_cert, &edge_cert, &dex_config)?;
    for item in &mut items {
        item["metadata"]["namespace"] = json!(names.ns);
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&objects, serde_json::to_vec(&list)?)?;
    kubectl_apply(kubeconfig, &objects)?;
    install_traefik_crds(kubeconfig)?;
    helm_install(names, kubeconfig, scratch)?;
    let gateway = cluster_ip(client, &names.ns, &names.chart_object("gateway")).await?;
    let app = scratch.join("wiki.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": wiki(names, gateway)?});
    std::fs::write(&app, serde_json::to_vec(&list)?)?;
    kubectl_apply(kubeconfig, &app)?;
    let examples = scratch.join("examples.yaml");
    std::fs::write(&examples, examples_for(names)?)?;
    kubectl_apply(kubeconfig, &examples)?;
    wait_ready(
        client,
        &names.ns,
        &[
            "dex",
            "wiki",
            "traefik",
            "nginx",
            &names.chart_object("operator"),
            &names.chart_object("gateway"),
        ],
    )
    .await?;
    Ok(info)
}

/// The images of Dex, Traefik and the sample app, imported into the node's containerd.
fn import_images(node: &TestNode, scratch: &Path) -> Result<()> {
    let dir = scratch.join("images");
    let (dex, _) = images::tool_image(&dir, "dex", "test", &Tool::Dex.path()?, "/dex", &[])?;
    let (traefik, _) = images::tool_image(
        &dir,
        "traefik",
        TRAEFIK_MODULE.1,
        &Tool::Traefik.path()?,
        "/traefik",
        &[],
    )?;
    let args = [
        "-e",
        "stderr",
        "-c",
        "/etc/nginx/nginx.conf",
        "-g",
        "daemon off;",
    ];
    let (nginx, _) = images::tool_image(
        &dir,
        "nginx",
        "test",
        &Tool::Nginx.path()?,
        "/usr/sbin/nginx",
        &args,
    )?;
    images::import(
        &node.info().containerd_socket,
        &[dex, traefik, nginx, images::archive("sample-app")?],
    )
}

fn install_traefik_crds(kubeconfig: &Path) -> Result<()> {
    let (module, version) = TRAEFIK_MODULE;
    let dir = portcullis_tests::gomod::download(module, version)?
        .join("docs/content/reference/dynamic-configuration");
    for kind in TRAEFIK_CRDS {
        kubectl_apply(kubeconfig, &dir.join(format!("traefik.io_{kind}.yaml")))?;
    }
    Ok(())
}

/// `examples/ingress/traefik/forwardauth.yaml` as a user adapts it: namespaces, hosts and the
/// app cookie's name of the test's policy.
fn examples_for(names: &Names) -> Result<String> {
    let text = std::fs::read_to_string(repo().join("examples/ingress/traefik/forwardauth.yaml"))?;
    let cookie = |policy: &str| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, policy.as_bytes());
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("__Host-portcullis-app-{hex}")
    };
    // The example names the cookie of its own policy, apps/wiki, as the docs compute it.
    ensure!(
        text.contains(&cookie("apps/wiki")),
        "the Traefik example does not name the app cookie of apps/wiki"
    );
    let ns = &names.ns;
    Ok(text
        .replace(&cookie("apps/wiki"), &cookie(&format!("{ns}/wiki")))
        .replace("namespace: portcullis", &format!("namespace: {ns}"))
        .replace("namespace: apps", &format!("namespace: {ns}"))
        .replace("portcullis-gateway", &names.chart_object("gateway"))
        .replace(".portcullis.svc", &format!(".{ns}.svc"))
        .replace("wiki.example.com", &names.wiki)
        .replace("auth.example.com", &names.auth))
}

fn helm_install(names: &Names, kubeconfig: &Path, scratch: &Path) -> Result<()> {
    let ns = &names.ns;
    let values = json!({
        "crds": {"enabled": false},
        "operator": {
            "replicaCount": 1,
            "watchNamespaces": [ns],
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        },
        "gateway": {
            "authHost": names.auth,
            "trustedProxies": [POD_CIDR],
            "upstreamCA": {"existingConfigMap": "test-ca"},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        },
        "identityProviders": [{
            "name": "dex",
            "issuer": names.issuer(),
            "clientId": dex::CLIENT_ID,
            "clientSecret": {"existingSecret": "dex-client"},
            "refreshRejectionErrors": ["invalid_grant", "invalid_request"],
        }],
    });
    let file = scratch.join("values.json");
    std::fs::write(&file, serde_json::to_vec(&values)?)?;
    let chart = repo().join("charts/portcullis").display().to_string();
    let file = file.display().to_string();
    helm(
        &["install", ns, &chart, "-n", ns, "-f", &file],
        kubeconfig,
        scratch,
    )?;
    Ok(())
}

/// The namespace's own objects: Secrets and ConfigMaps, Dex, the app, Traefik with a Role that
/// lets it read only this namespace, and the policy.
fn objects_of(
    names: &Names,
    pki: &Pki,
    dex_cert: &CertFiles,
    edge_cert: &CertFiles,
    dex_config: &Path,
) -> Result<Vec<serde_json::Value>> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("{}", p.display()));
    let tls = |name: &str, cert: &CertFiles| -> Result<serde_json::Value> {
        Ok(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": read(&cert.cert)?, "tls.key": read(&cert.key)?},
        }))
    };
    let ns = &names.ns;
    let mut objects = vec![
        tls("dex-tls", dex_cert)?,
        tls("wildcard-example-com", edge_cert)?,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dex-client"},
               "stringData": {"client-secret": CLIENT_SECRET}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-ca"},
               "data": {"ca.crt": pki.ca_pem()}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dex-config"},
               "data": {"config.yaml": read(dex_config)?}}),
        json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "wiki", "namespace": ns},
            "spec": {
                "hosts": [names.wiki],
                "identityProviders": ["dex"],
                "rules": [{"action": "Allow", "include": [{"emailDomains": ["example.com"]}]}],
            },
        }),
        json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "notes", "namespace": ns},
            "spec": {
                "hosts": [names.notes],
                "identityProviders": ["dex"],
                "rules": [{"action": "Allow", "include": [{"emailDomains": ["example.com"]}]}],
            },
        }),
        json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "proxied", "namespace": ns},
            "spec": {
                "hosts": [names.proxy],
                "identityProviders": ["dex"],
                "upstream": {"service": {"name": "wiki", "port": 80}},
                "rules": [{"action": "Allow", "include": [{"emailDomains": ["example.com"]}]}],
            },
        }),
    ];
    objects.extend(app("dex", dex_pod(), 5556));
    objects.extend(traefik(ns));
    Ok(objects)
}

/// The sample app as `wiki`: it verifies each request's signed assertion with the gateway's
/// JWKS, which it fetches from the gateway Service at `gateway` (the auth host's name has no
/// DNS entry in the cluster), trusting the chart's CA.
fn wiki(names: &Names, gateway: std::net::IpAddr) -> Result<Vec<serde_json::Value>> {
    let origin = format!(
        "https://{},https://{},https://{}",
        names.wiki, names.proxy, names.notes
    );
    let issuer = format!("https://{}", names.auth);
    let pod = json!({
        "containers": [{
            "name": "app",
            "image": format!("{}/sample-app:{}", images::PREFIX, env!("CARGO_PKG_VERSION")),
            "imagePullPolicy": "Never",
            "args": [
                "--listen", "0.0.0.0:8080", "--name", "Wiki", "--origin", origin,
                "--issuer", issuer, "--ca-file", "/etc/gateway-ca/ca.crt",
                "--gateway-addr", SocketAddr::new(gateway, 8443).to_string(),
            ],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "volumeMounts": [{"name": "gateway-ca", "mountPath": "/etc/gateway-ca"}],
        }],
        "volumes": [{
            "name": "gateway-ca",
            "secret": {
                "secretName": format!("{}-tls", names.chart_object("gateway")),
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            },
        }],
    });
    let mut objects = app("wiki", pod, 8080).to_vec();
    // The proxy host goes to the gateway as a whole: the gateway checks and proxies.
    objects.push(json!({
        "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
        "metadata": {"name": "proxied"},
        "spec": {
            "entryPoints": ["websecure"],
            "routes": [{
                "match": format!("Host(`{}`)", names.proxy), "kind": "Rule",
                "services": [{
                    "name": names.chart_object("gateway"), "port": 8443, "scheme": "https",
                    "serversTransport": names.chart_object("gateway"),
                }],
            }],
            "tls": {"secretName": "wildcard-example-com"},
        },
    }));
    objects.extend(nginx(names)?);
    for object in &mut objects {
        object["metadata"]["namespace"] = json!(names.ns);
    }
    Ok(objects)
}

/// nginx with `examples/ingress/nginx/nginx.conf` as a user adapts it (the app's host, the
/// release's gateway Service, the app's Service), the edge certificate and the gateway's CA.
fn nginx(names: &Names) -> Result<Vec<serde_json::Value>> {
    let example = std::fs::read_to_string(repo().join("examples/ingress/nginx/nginx.conf"))?;
    let conf = example
        .replace("wiki.example.com", &names.notes)
        .replace(
            "portcullis-gateway.portcullis.svc",
            &format!("{}.{}.svc", names.chart_object("gateway"), names.ns),
        )
        .replace("wiki.apps.svc", &format!("wiki.{}.svc", names.ns));
    let pod = json!({
        "containers": [{
            "name": "nginx",
            "image": format!("{}/nginx:test", images::PREFIX),
            "imagePullPolicy": "Never",
            "ports": [{"containerPort": 8443}],
            "readinessProbe": {"tcpSocket": {"port": 8443}},
            "volumeMounts": [
                {"name": "conf", "mountPath": "/etc/nginx"},
                {"name": "tls", "mountPath": "/etc/nginx/tls"},
                {"name": "gateway-ca", "mountPath": "/etc/nginx/gateway-ca"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }],
        "volumes": [
            {"name": "conf", "configMap": {"name": "nginx"}},
            // The test's own throw-away key, readable by nginx's user.
            {"name": "tls", "secret": {"secretName": "wildcard-example-com", "defaultMode": 0o444}},
            {"name": "gateway-ca", "secret": {
                "secretName": format!("{}-tls", names.chart_object("gateway")),
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            }},
            {"name": "tmp", "emptyDir": {}},
        ],
    });
    let [deployment, mut service] = app("nginx", pod, 8443);
    service["spec"]["ports"] = json!([{"port": 443, "targetPort": 8443}]);
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nginx"},
               "data": {"nginx.conf": conf}}),
        deployment,
        service,
    ])
}

/// Dex with the configuration and certificate from the ConfigMap and Secret.
fn dex_pod() -> serde_json::Value {
    json!({
        "containers": [{
            "name": "dex", "image": format!("{}/dex:test", images::PREFIX),
            "imagePullPolicy": "Never",
            "args": ["serve", "/etc/dex/config/config.yaml"],
            "env": [{"name": dex::CLIENT_SECRET_ENV,
                     "valueFrom": {"secretKeyRef": {"name": "dex-client", "key": "client-secret"}}}],
            "ports": [{"containerPort": 5556}],
            "readinessProbe": {"httpGet": {"path": "/dex/healthz", "port": 5556, "scheme": "HTTPS"}},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/dex/config"},
                {"name": "tls", "mountPath": "/etc/dex/tls"},
            ],
        }],
        "volumes": [
            {"name": "config", "configMap": {"name": "dex-config"}},
            // The test's own throw-away key, readable by Dex's user.
            {"name": "tls", "secret": {"secretName": "dex-tls", "defaultMode": 0o444}},
        ],
    })
}

/// A one-replica Deployment running `pod` on the test node and a Service on port 443 (Dex) or
/// 80 (the app) in front of it.
fn app(name: &str, mut pod: serde_json::Value, port: u16) -> [serde_json::Value; 2] {
    pod["tolerations"] = json!([{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]);
    pod["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 65532});
    let labels = json!({"app": name});
    let service_port = if port == 5556 { 443 } else { 80 };
    [
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {
                "replicas": 1, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"port": service_port, "targetPort": port}]},
        }),
    ]
}

/// Traefik v3 with its CRD provider on this namespace only, a `websecure` entry point on 8443
/// (Service port 443), and the RBAC that needs: a Role, since it reads nothing cluster-wide.
fn traefik(ns: &str) -> Vec<serde_json::Value> {
    let pod = json!({
        "serviceAccountName": "traefik",
        "containers": [{
            "name": "traefik", "image": format!("{}/traefik:{}", images::PREFIX, TRAEFIK_MODULE.1),
            "imagePullPolicy": "Never",
            "args": [
                "--entryPoints.websecure.address=:8443",
                "--entryPoints.traefik.address=:9000",
                "--ping=true",
                // Nothing leaves the machine: no version check, no usage report.
                "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false",
                "--providers.kubernetescrd=true",
                format!("--providers.kubernetescrd.namespaces={ns}"),
                "--providers.kubernetescrd.allowCrossNamespace=true",
                "--providers.kubernetescrd.disableClusterScopeResources=true",
                "--log.level=INFO",
            ],
            "ports": [{"containerPort": 8443}, {"containerPort": 9000}],
            "readinessProbe": {"httpGet": {"path": "/ping", "port": 9000}},
        }],
    });
    let [deployment, mut service] = app("traefik", pod, 8443);
    service["spec"]["ports"] = json!([{"port": 443, "targetPort": 8443}]);
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik"}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "traefik"},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["traefik.io"], "resources": TRAEFIK_CRDS,
                 "verbs": ["get", "list", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "traefik"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "traefik"},
            "subjects": [{"kind": "ServiceAccount", "name": "traefik", "namespace": ns}],
        }),
        deployment,
        service,
    ]
}

async fn cluster_ip(client: &kube::Client, ns: &str, name: &str) -> Result<std::net::IpAddr> {
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("Service without a ClusterIP")?
        .parse()
        .context("ClusterIP")
}

/// Every Deployment in `deployments` with all its replicas ready.
async fn wait_ready(client: &kube::Client, ns: &str, deployments: &[&str]) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let mut waiting = Vec::new();
        for name in deployments {
            let d = api.get(name).await?;
            let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready < want {
                waiting.push(format!("{name} {ready}/{want}"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not Ready within {READY_WITHIN:?}: {}",
            waiting.join(", ")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
