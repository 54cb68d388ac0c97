//! Portcullis as a user installs it, on the test node: the chart (`helm install` from
//! `charts/portcullis` with the built images), Dex and the sample apps as Deployments, and
//! Traefik (built from its Go module) as the ingress in front. The tests that run the story
//! through a real ingress (`tests/tests/ingress.rs`, `tests/tests/browser_installed.rs`) and the
//! in-cluster demo share it; each adds its own apps, policies and routes ([`seed`] has the
//! demo's).
//!
//! Everything lives in one namespace per test, which stands for both `portcullis` and `apps` of
//! the examples, and names the Helm release (cluster-scoped objects of the chart are named
//! after the release, so a fixed name would meet those of an earlier run).

pub mod demo;
pub mod seed;
pub mod traefik;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

use crate::dex::{self, DexInfo};
use crate::node::components::kubectl_apply;
use crate::node::{NodeInfo, POD_CIDR, TAINT_KEY, images};
use crate::pki::{CertFiles, Pki};
use crate::tools::{Tool, helm, repo};

const CLIENT_SECRET: &str = "installed-test-client-secret";
/// How long an install, a pod's replacement or a rollout may take to become Ready.
pub const READY_WITHIN: Duration = Duration::from_secs(240);
/// The edge certificate's Secret, as the examples name it.
pub const EDGE_TLS: &str = "wildcard-example-com";

/// The names of one install: its namespace (and release), the domain of its public hosts,
/// the port in their URLs, the auth host and Dex's host.
#[derive(Clone, Debug)]
pub struct Release {
    pub ns: String,
    pub domain: String,
    /// The ingress's port in every public URL, when it is not 443 (the demo's relay).
    pub port: Option<u16>,
    pub auth: String,
    pub dex: String,
}

impl Release {
    /// A test's install: hosts `name.NAMESPACE.test` on 443, Dex at its Service's name (the
    /// test's browser maps each name to its Service's address).
    pub fn new(ns: &str) -> Self {
        Self {
            ns: ns.to_owned(),
            domain: format!("{ns}.test"),
            port: None,
            auth: format!("auth.{ns}.test"),
            dex: format!("dex.{ns}.svc"),
        }
    }

    /// The demo's install: every host, Dex's too, under `domain` (`*.localhost` resolves to the
    /// machine itself) on `port`, where a relay forwards to the ingress.
    pub fn public(ns: &str, domain: &str, port: u16) -> Self {
        Self {
            ns: ns.to_owned(),
            domain: domain.to_owned(),
            port: Some(port),
            auth: format!("auth.{domain}"),
            dex: format!("dex.{domain}"),
        }
    }

    /// `name.DOMAIN`: a host of this install.
    pub fn host(&self, name: &str) -> String {
        format!("{name}.{}", self.domain)
    }

    /// `https://HOST[:PORT]`.
    pub fn origin(&self, host: &str) -> String {
        match self.port {
            Some(port) => format!("https://{host}:{port}"),
            None => format!("https://{host}"),
        }
    }

    pub fn issuer(&self) -> String {
        format!("{}/dex", self.origin(&self.dex))
    }

    /// The chart's name for one of its objects: `portcullis-gateway` in the examples. The
    /// release is named after the namespace; the chart's `portcullis.fullname` is the release
    /// name when that contains `portcullis`, else `RELEASE-portcullis`, cut to 40 characters.
    pub fn chart_object(&self, component: &str) -> String {
        let full = if self.ns.contains("portcullis") {
            self.ns.clone()
        } else {
            format!("{}-portcullis", self.ns)
        };
        let full: String = full.chars().take(40).collect();
        format!("{}-{component}", full.trim_end_matches('-'))
    }
}

/// What an install gives its test: Dex's users and CA (every certificate of the install
/// chains to it), the gateway Service's address, and the scratch directory.
pub struct Installed {
    pub dex: DexInfo,
    pub gateway: IpAddr,
    pub scratch: PathBuf,
}

/// Dex, Traefik, the chart, and `objects` (the test's policies and whatever else needs no
/// gateway address), applied in the namespace; `hosts` are the app hosts the edge certificate
/// must name besides the auth host. Nothing is waited for: the test adds its apps and routes
/// (the auth host's route and the gateway's ServersTransport come with
/// [`traefik::forward_auth`]), then calls [`wait_ready`].
pub async fn install(
    client: &kube::Client,
    release: &Release,
    cluster: (&Path, &NodeInfo),
    hosts: &[String],
    objects: Vec<serde_json::Value>,
) -> Result<Installed> {
    let (kubeconfig, node) = cluster;
    let scratch = crate::fsutil::scratch_dir("installed", &release.ns)?;
    import_images(node, &scratch)?;
    let pki = Pki::generate(&scratch.join("pki"))?;
    let dex_cert = pki.issue_serving("dex", std::slice::from_ref(&release.dex))?;
    let mut edge_names = vec![release.auth.clone()];
    edge_names.extend(hosts.iter().cloned());
    let edge_cert = pki.issue_serving("edge", &edge_names)?;
    let info = DexInfo {
        issuer: release.issuer(),
        client_id: dex::CLIENT_ID.to_owned(),
        client_secret_file: scratch.join("unused"),
        ca_file: pki.ca_cert_path(),
        redirect_uris: vec![format!(
            "{}/.portcullis/callback",
            release.origin(&release.auth)
        )],
        users: dex::default_users(),
        trusted_header: false,
    };
    let dex_config = scratch.join("dex.json");
    let in_pod = CertFiles {
        cert: "/etc/dex/tls/tls.crt".into(),
        key: "/etc/dex/tls/tls.key".into(),
    };
    dex::write_config(&dex_config, &info.issuer, "0.0.0.0:5556", &in_pod, &info)?;

    let mut items = base_objects(&pki, &dex_cert, &edge_cert, &dex_config, release.port)?;
    items.extend(traefik::deployment(&release.ns));
    items.extend(objects);
    traefik::install_crds(kubeconfig)?;
    apply(kubeconfig, &scratch, "objects", items, &release.ns)?;
    helm_install(release, kubeconfig, &scratch)?;
    let gateway = cluster_ip(client, &release.ns, &release.chart_object("gateway")).await?;
    Ok(Installed {
        dex: info,
        gateway,
        scratch,
    })
}

/// Applies `items` in `ns` as one List (written to `scratch/NAME.json`).
pub fn apply(
    kubeconfig: &Path,
    scratch: &Path,
    name: &str,
    mut items: Vec<serde_json::Value>,
    ns: &str,
) -> Result<()> {
    for item in &mut items {
        item["metadata"]["namespace"] = json!(ns);
    }
    let file = scratch.join(format!("{name}.json"));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&file, serde_json::to_vec(&list)?)?;
    kubectl_apply(kubeconfig, &file)
}

/// The images of Dex, Traefik, nginx and the sample app, imported into the node's containerd.
fn import_images(node: &NodeInfo, scratch: &Path) -> Result<()> {
    let dir = scratch.join("images");
    let (dex, _) = images::tool_image(&dir, "dex", "test", &Tool::Dex.path()?, "/dex", &[])?;
    let (traefik, _) = images::tool_image(
        &dir,
        "traefik",
        traefik::VERSION,
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
        &node.containerd_socket,
        &[dex, traefik, nginx, images::archive("sample-app")?],
    )
}

/// The chart with the built images: one operator (the tests scale it), two gateways (the
/// chart's default), Dex as the identity provider, and the test CA for the upstreams.
fn helm_install(release: &Release, kubeconfig: &Path, scratch: &Path) -> Result<()> {
    let ns = &release.ns;
    let mut values = json!({
        "crds": {"enabled": false},
        "operator": {
            "replicaCount": 1,
            "watchNamespaces": [ns],
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        },
        "gateway": {
            "authHost": release.auth,
            "trustedProxies": [POD_CIDR],
            "upstreamCA": {"existingConfigMap": "test-ca"},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        },
        "identityProviders": [{
            "name": "dex",
            "issuer": release.issuer(),
            "clientId": dex::CLIENT_ID,
            "clientSecret": {"existingSecret": "dex-client"},
            "refreshRejectionErrors": ["invalid_grant", "invalid_request"],
            // Dex's ID tokens carry no `auth_time`: with the default, every forced
            // re-authentication (after a revocation, an epoch raise, an idle session) fails.
            "requireAuthTime": false,
        }],
    });
    if let Some(port) = release.port {
        values["gateway"]["publicPort"] = json!(port);
    }
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

/// Secrets and ConfigMaps (Dex's and the edge's certificates, the client secret, the CA,
/// Dex's configuration) and Dex itself.
fn base_objects(
    pki: &Pki,
    dex_cert: &CertFiles,
    edge_cert: &CertFiles,
    dex_config: &Path,
    public_port: Option<u16>,
) -> Result<Vec<serde_json::Value>> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("{}", p.display()));
    let tls = |name: &str, cert: &CertFiles| -> Result<serde_json::Value> {
        Ok(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": read(&cert.cert)?, "tls.key": read(&cert.key)?},
        }))
    };
    let mut objects = vec![
        tls("dex-tls", dex_cert)?,
        tls(EDGE_TLS, edge_cert)?,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dex-client"},
               "stringData": {"client-secret": CLIENT_SECRET}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-ca"},
               "data": {"ca.crt": pki.ca_pem()}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dex-config"},
               "data": {"config.yaml": read(dex_config)?}}),
    ];
    let [deployment, mut service] = app("dex", dex_pod(), 5556);
    if let Some(port) = public_port {
        // Pods reach Dex at its public URL too (the node's DNS names it; `node::config`).
        service["spec"]["ports"] = json!([
            {"name": "https", "port": 443, "targetPort": 5556},
            {"name": "public", "port": port, "targetPort": 5556},
        ]);
    }
    objects.extend([deployment, service]);
    Ok(objects)
}

/// An AccessPolicy admitting example.com on `hosts` (and `paths`, if any), through the
/// gateway's reverse proxy to the Service `upstream` (port 80) if given, else for forward-auth.
pub fn policy(
    name: &str,
    hosts: &[&str],
    paths: &[&str],
    upstream: Option<&str>,
) -> serde_json::Value {
    let mut spec = json!({
        "hosts": hosts,
        "identityProviders": ["dex"],
        "rules": [{"action": "Allow", "include": [{"emailDomains": ["example.com"]}]}],
    });
    if !paths.is_empty() {
        spec["paths"] = json!(paths);
    }
    if let Some(service) = upstream {
        spec["upstream"] = json!({"service": {"name": service, "port": 80}});
    }
    json!({
        "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name}, "spec": spec,
    })
}

/// How one sample app is run.
pub struct SampleApp<'a> {
    /// Its Deployment and Service (port 80).
    pub name: &'a str,
    /// The title on its pages.
    pub title: &'a str,
    /// The origins it answers for: the audiences of the assertions it accepts.
    pub hosts: &'a [&'a str],
    /// Path prefixes it serves its pages under (none: the root).
    pub prefixes: &'a [&'a str],
    /// Whether it serves the fetch-polling page.
    pub poll_page: bool,
}

/// The sample app (`images/src/bin/sample-app/`): it verifies each request's signed assertion
/// with the gateway's JWKS, which it fetches from the gateway Service at `gateway` (the auth
/// host's name has no DNS entry in the cluster; the demo's resolves to the pod itself),
/// trusting the chart's CA.
pub fn sample_app(release: &Release, gateway: IpAddr, spec: &SampleApp) -> [serde_json::Value; 2] {
    let origins: Vec<String> = spec.hosts.iter().map(|h| release.origin(h)).collect();
    let mut args = vec![
        "--listen".to_owned(),
        "0.0.0.0:8080".to_owned(),
        "--name".to_owned(),
        spec.title.to_owned(),
        "--origin".to_owned(),
        origins.join(","),
        "--issuer".to_owned(),
        release.origin(&release.auth),
        // From the gateway Service's port 443, whatever the public port (the demo's relay is
        // outside the cluster): the connection goes to `--gateway-addr`, the port is the URL's.
        "--jwks-url".to_owned(),
        format!("https://{}/.well-known/jwks.json", release.auth),
        "--ca-file".to_owned(),
        "/etc/gateway-ca/ca.crt".to_owned(),
        "--gateway-addr".to_owned(),
        SocketAddr::new(gateway, 8443).to_string(),
    ];
    if !spec.prefixes.is_empty() {
        args.extend(["--prefix".to_owned(), spec.prefixes.join(",")]);
    }
    if spec.poll_page {
        args.push("--poll-page".to_owned());
    }
    let pod = json!({
        "containers": [{
            "name": "app",
            "image": format!("{}/sample-app:{}", images::PREFIX, env!("CARGO_PKG_VERSION")),
            "imagePullPolicy": "Never",
            "args": args,
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "volumeMounts": [{"name": "gateway-ca", "mountPath": "/etc/gateway-ca"}],
        }],
        "volumes": [{
            "name": "gateway-ca",
            "secret": {
                "secretName": format!("{}-tls", release.chart_object("gateway")),
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            },
        }],
    });
    app(spec.name, pod, 8080)
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
/// 80 (the others) in front of it.
pub fn app(name: &str, mut pod: serde_json::Value, port: u16) -> [serde_json::Value; 2] {
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

pub async fn cluster_ip(client: &kube::Client, ns: &str, name: &str) -> Result<IpAddr> {
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
pub async fn wait_ready(client: &kube::Client, ns: &str, deployments: &[&str]) -> Result<()> {
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
