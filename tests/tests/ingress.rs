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
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use portcullis_crds::AccessSession;
use portcullis_tests::dex::{self, Connector};
use portcullis_tests::installed::traefik::{self, AppRoute};
use portcullis_tests::installed::{
    self, Installed, READY_WITHIN, Release, SampleApp, app, cluster_ip, wait_ready,
};
use portcullis_tests::node::components::kubectl_apply;
use portcullis_tests::node::images;
use portcullis_tests::node::shared::TestNode;
use portcullis_tests::tools::{helm, repo};
use reqwest::header::LOCATION;
use serde_json::json;
use url::Url;

/// The hosts of the test: the app behind Traefik's forward-auth, the app again behind the
/// gateway in its reverse-proxy mode, and again behind nginx's `auth_request`.
struct Names {
    release: Release,
    ns: String,
    auth: String,
    wiki: String,
    proxy: String,
    notes: String,
    dex: String,
}

impl Names {
    fn new(ns: &str) -> Self {
        let release = Release::new(ns);
        Self {
            ns: ns.to_owned(),
            auth: release.auth.clone(),
            wiki: release.host("wiki"),
            proxy: release.host("proxy"),
            notes: release.host("notes"),
            dex: release.dex.clone(),
            release,
        }
    }

    fn chart_object(&self, component: &str) -> String {
        self.release.chart_object(component)
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
    let started = Instant::now();
    let Installed {
        dex: dex_info,
        scratch,
        ..
    } = install(client, &names, kubeconfig, node).await?;
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

/// Scales the operator to zero, waits until its pods are gone, and stays so for
/// `PORTCULLIS_FAULT_SECS` (20 s by default; `docs/install.md` has a longer run's figures).
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
    let secs = std::env::var("PORTCULLIS_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    tokio::time::sleep(Duration::from_secs(secs)).await;
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

/// Everything, installed and Ready: Dex, the chart, Traefik, the app, the examples' manifests
/// and the policies. Returns what a client needs to log in.
async fn install(
    client: &kube::Client,
    names: &Names,
    kubeconfig: &Path,
    node: &TestNode,
) -> Result<Installed> {
    let policies = vec![
        installed::policy("wiki", &[&names.wiki], &[], None),
        installed::policy("notes", &[&names.notes], &[], None),
        installed::policy("proxied", &[&names.proxy], &[], Some("wiki")),
    ];
    let hosts = [names.wiki.clone(), names.proxy.clone(), names.notes.clone()];
    let release = &names.release;
    let cluster = (kubeconfig, node.info());
    let done = installed::install(client, release, cluster, &hosts, policies).await?;
    let wiki = SampleApp {
        name: "wiki",
        title: "Wiki",
        hosts: &[&names.wiki, &names.proxy, &names.notes],
        prefixes: &[],
        poll_page: false,
    };
    let mut apps = installed::sample_app(release, done.gateway, &wiki).to_vec();
    // The proxy host goes to the gateway as a whole: the gateway checks and proxies.
    apps.push(traefik::gateway_route(release, "proxied", &[&names.proxy]));
    apps.extend(nginx(names)?);
    installed::apply(kubeconfig, &done.scratch, "apps", apps, &names.ns)?;
    let examples = done.scratch.join("examples.yaml");
    let wiki_route = AppRoute {
        host: &names.wiki,
        service: "wiki",
        paths: &[],
    };
    std::fs::write(
        &examples,
        traefik::forward_auth(release, &[wiki_route], &["wiki"])?,
    )?;
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
    Ok(done)
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
