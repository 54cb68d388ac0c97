//! Traefik v3 in the install: its Deployment with the CRD provider watching only the test's
//! namespace, its CRDs from the same Go module `hack/build-tools.sh` builds it from, and the
//! routes a user writes: `examples/ingress/traefik/forwardauth.yaml` adapted, or a host sent
//! whole to the gateway in its reverse-proxy mode.

use std::path::Path;

use anyhow::{Result, ensure};
use serde_json::json;

use super::{EDGE_TLS, Release, app};
use crate::node::components::kubectl_apply;
use crate::node::images;
use crate::tools::repo;

/// Traefik's release, the same as the module `hack/build-tools.sh` builds it from.
pub const VERSION: &str = "v3.6.12";
const MODULE: &str = "github.com/traefik/traefik/v3";
/// The CRDs Traefik's CRD provider watches: all of them must be served or it never syncs.
const CRDS: [&str; 10] = [
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
/// The example's own app host, Service and policy (`apps/wiki`).
const EXAMPLE_HOST: &str = "wiki.example.com";
const EXAMPLE_POLICY: &str = "apps/wiki";

/// Traefik's CRDs, from its module's reference documentation.
pub fn install_crds(kubeconfig: &Path) -> Result<()> {
    let dir = crate::gomod::download(MODULE, VERSION)?
        .join("docs/content/reference/dynamic-configuration");
    for kind in CRDS {
        kubectl_apply(kubeconfig, &dir.join(format!("traefik.io_{kind}.yaml")))?;
    }
    Ok(())
}

/// The app cookie of the policy `namespace/name`, as `docs/ingress/traefik.md` computes it.
pub fn app_cookie(policy: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, policy.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("__Host-portcullis-app-{hex}")
}

/// One app route of [`forward_auth`]: a host, the Service behind it, and the path prefixes
/// its policy covers (none: the whole host). Only those go through the middleware: a path no
/// policy covers is Traefik's 404, not the gateway's (fail-closed) 403 for every favicon.
pub struct AppRoute<'a> {
    pub host: &'a str,
    pub service: &'a str,
    pub paths: &'a [&'a str],
}

/// `examples/ingress/traefik/forwardauth.yaml` as a user adapts it: namespaces and the
/// release's object names, the auth host, one copy of its app route per [`AppRoute`], and the
/// app cookies of `policies` (names in the release's namespace) passed back to the browser.
pub fn forward_auth(release: &Release, routes: &[AppRoute], policies: &[&str]) -> Result<String> {
    let text = std::fs::read_to_string(repo().join("examples/ingress/traefik/forwardauth.yaml"))?;
    let example_cookie = app_cookie(EXAMPLE_POLICY);
    // The example names the cookie of its own policy, as the docs compute it.
    ensure!(
        text.contains(&format!("- {example_cookie}\n")),
        "the Traefik example does not name the app cookie of {EXAMPLE_POLICY}"
    );
    let ns = &release.ns;
    let text = text
        .replace("namespace: portcullis", &format!("namespace: {ns}"))
        .replace("namespace: apps", &format!("namespace: {ns}"))
        .replace("portcullis-gateway", &release.chart_object("gateway"))
        .replace(".portcullis.svc", &format!(".{ns}.svc"))
        .replace("auth.example.com", &release.auth);
    let mut documents = Vec::new();
    for document in text.split("\n---\n") {
        if document.contains("kind: Middleware") {
            let item = format!("      - {example_cookie}");
            ensure!(
                document.contains(&item),
                "the Traefik example's middleware does not list {example_cookie}"
            );
            let cookies: Vec<String> = policies
                .iter()
                .map(|p| format!("      - {}", app_cookie(&format!("{ns}/{p}"))))
                .collect();
            documents.push(document.replace(&item, &cookies.join("\n")));
        } else if document.contains(EXAMPLE_HOST) {
            let app_rule = format!("- match: Host(`{EXAMPLE_HOST}`)\n");
            ensure!(
                document.contains(&app_rule),
                "the Traefik example's app route is not `{}`",
                app_rule.trim_end()
            );
            for route in routes {
                let mut rule = format!("Host(`{}`)", route.host);
                if !route.paths.is_empty() {
                    let prefixes: Vec<String> = route
                        .paths
                        .iter()
                        .map(|p| format!("PathPrefix(`{p}`)"))
                        .collect();
                    rule = format!("{rule} && ({})", prefixes.join(" || "));
                }
                documents.push(
                    document
                        .replace(&app_rule, &format!("- match: {rule}\n"))
                        .replace(EXAMPLE_HOST, route.host)
                        .replace("name: wiki\n", &format!("name: {}\n", route.service)),
                );
            }
        } else {
            documents.push(document.to_owned());
        }
    }
    Ok(documents.join("\n---\n"))
}

/// An IngressRoute sending every request for `hosts` to the gateway, which checks it and
/// proxies it (its reverse-proxy mode), or serves it (the auth host).
pub fn gateway_route(release: &Release, name: &str, hosts: &[&str]) -> serde_json::Value {
    let rule = hosts
        .iter()
        .map(|h| format!("Host(`{h}`)"))
        .collect::<Vec<_>>()
        .join(" || ");
    json!({
        "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
        "metadata": {"name": name},
        "spec": {
            "entryPoints": ["websecure"],
            "routes": [{
                "match": rule, "kind": "Rule",
                "services": [{
                    "name": release.chart_object("gateway"), "port": 8443, "scheme": "https",
                    "serversTransport": release.chart_object("gateway"),
                }],
            }],
            "tls": {"secretName": EDGE_TLS},
        },
    })
}

/// Traefik with its CRD provider on this namespace only, a `websecure` entry point on 8443
/// (Service port 443), and the RBAC that needs: a Role, since it reads nothing cluster-wide.
pub fn deployment(ns: &str) -> Vec<serde_json::Value> {
    let pod = json!({
        "serviceAccountName": "traefik",
        "containers": [{
            "name": "traefik", "image": format!("{}/traefik:{VERSION}", images::PREFIX),
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
                {"apiGroups": ["traefik.io"], "resources": CRDS,
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
