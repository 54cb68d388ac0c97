//! The demo's apps and policies (`examples/demo/policy.yaml`) on an install, published twice:
//! through Traefik to the gateway in its **reverse-proxy mode** (`apps.DOMAIN`,
//! `express.DOMAIN`; the policies name their apps by `spec.upstream.service`), and through
//! Traefik's **forward-auth** with `examples/ingress/traefik/forwardauth.yaml` as a user adapts
//! it (`fa-apps.DOMAIN`, `fa-express.DOMAIN`: Traefik asks the gateway about each request and
//! serves the app itself). The in-cluster demo (`hack/demo.sh --in-cluster`) runs it, and
//! `tests/tests/browser_installed.rs` runs the browser seed story against it, both ways.

use anyhow::Result;
use serde_json::json;

use super::traefik::{self, AppRoute};
use super::{Installed, Release, SampleApp, apply, cluster_ip, wait_ready};
use crate::node::NodeInfo;

/// The two apps of the apps host, as the demo's policy lists them.
const APPS_PATHS: [&str; 2] = ["/wordpress", "/express"];
/// The Deployments of the seed set-up besides the chart's.
const DEPLOYMENTS: [&str; 4] = ["dex", "apps", "express", "traefik"];

/// The demo's hosts and policies, published one way.
#[derive(Clone, Debug)]
pub struct Published {
    /// `reverse-proxy` or `forward-auth`.
    pub mode: &'static str,
    /// The policy of the apps host (`/wordpress`, `/express`); the other host's is
    /// `<policy>-express`.
    pub policy: String,
    pub apps: String,
    pub express: String,
}

impl Published {
    fn new(release: &Release, mode: &'static str, prefix: &str) -> Self {
        Self {
            mode,
            policy: format!("{prefix}apps"),
            apps: release.host(&format!("{prefix}apps")),
            express: release.host(&format!("{prefix}express")),
        }
    }

    /// The demo's two policies on these hosts, with the session lifetimes given.
    fn policies(
        &self,
        upstreams: Option<(&str, &str)>,
        session: &Session,
    ) -> Vec<serde_json::Value> {
        let mut apps = super::policy(
            &self.policy,
            &[&self.apps],
            &APPS_PATHS,
            upstreams.map(|u| u.0),
        );
        let mut express = super::policy(
            &format!("{}-express", self.policy),
            &[&self.express],
            &[],
            upstreams.map(|u| u.1),
        );
        for policy in [&mut apps, &mut express] {
            policy["spec"]["session"] = json!({
                "tokenLifetime": session.token_lifetime, "idleTimeout": session.idle_timeout,
                "absoluteLifetime": "12h",
            });
        }
        vec![apps, express]
    }
}

/// The policies' session lifetimes: the demo's, or short ones for a browser test.
#[derive(Clone, Debug)]
pub struct Session {
    pub token_lifetime: String,
    pub idle_timeout: String,
}

impl Session {
    /// The demo policies' own (`examples/demo/policy.yaml`).
    pub fn demo() -> Self {
        Self {
            token_lifetime: "5m".into(),
            idle_timeout: "1h".into(),
        }
    }
}

/// The seed set-up, installed and Ready.
pub struct Seed {
    pub installed: Installed,
    pub proxy: Published,
    pub forward: Published,
    /// Where the ingress (Traefik's Service) and Dex (its Service) answer in the cluster.
    pub traefik: std::net::IpAddr,
    pub dex: std::net::IpAddr,
}

impl Seed {
    /// Every app host, both ways.
    pub fn hosts(&self) -> Vec<String> {
        hosts(&self.proxy, &self.forward)
    }
}

fn hosts(proxy: &Published, forward: &Published) -> Vec<String> {
    [proxy, forward]
        .iter()
        .flat_map(|p| [p.apps.clone(), p.express.clone()])
        .collect()
}

/// Installs the chart with the seed set-up and waits until every Deployment is Ready.
pub async fn install(
    client: &kube::Client,
    release: &Release,
    cluster: (&std::path::Path, &NodeInfo),
    session: &Session,
) -> Result<Seed> {
    let proxy = Published::new(release, "reverse-proxy", "");
    let forward = Published::new(release, "forward-auth", "fa-");
    let mut policies = proxy.policies(Some(("apps", "express")), session);
    policies.extend(forward.policies(None, session));
    if release.port.is_some() {
        policies.push(dex_passthrough(release));
    }
    let hosts = hosts(&proxy, &forward);
    let installed = super::install(client, release, cluster, &hosts, policies).await?;

    let apps = SampleApp {
        name: "apps",
        title: "Sample app",
        hosts: &[&proxy.apps, &forward.apps],
        prefixes: &APPS_PATHS,
        poll_page: true,
    };
    let express = SampleApp {
        name: "express",
        title: "Express host sample app",
        hosts: &[&proxy.express, &forward.express],
        prefixes: &[],
        poll_page: false,
    };
    let mut objects = super::sample_app(release, installed.gateway, &apps).to_vec();
    objects.extend(super::sample_app(release, installed.gateway, &express));
    objects.push(traefik::gateway_route(
        release,
        "proxied",
        &[&proxy.apps, &proxy.express],
    ));
    let (kubeconfig, _) = cluster;
    apply(kubeconfig, &installed.scratch, "apps", objects, &release.ns)?;
    let routes = [
        AppRoute {
            host: &forward.apps,
            service: "apps",
            paths: &APPS_PATHS,
        },
        AppRoute {
            host: &forward.express,
            service: "express",
            paths: &[],
        },
    ];
    let cookies = [
        forward.policy.as_str(),
        &format!("{}-express", forward.policy),
    ];
    let examples = installed.scratch.join("examples.yaml");
    std::fs::write(
        &examples,
        traefik::forward_auth(release, &routes, &cookies)?,
    )?;
    crate::node::components::kubectl_apply(kubeconfig, &examples)?;
    let operator = release.chart_object("operator");
    let gateway = release.chart_object("gateway");
    let mut ready: Vec<&str> = DEPLOYMENTS.to_vec();
    ready.extend([operator.as_str(), gateway.as_str()]);
    wait_ready(client, &release.ns, &ready).await?;
    Ok(Seed {
        traefik: cluster_ip(client, &release.ns, "traefik").await?,
        dex: cluster_ip(client, &release.ns, "dex").await?,
        installed,
        proxy,
        forward,
    })
}

/// Dex's public host through Traefik, TLS passed through by name: the browser reaches Dex where
/// the gateways do, at the issuer's URL.
fn dex_passthrough(release: &Release) -> serde_json::Value {
    json!({
        "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRouteTCP",
        "metadata": {"name": "dex"},
        "spec": {
            "entryPoints": ["websecure"],
            "routes": [{
                "match": format!("HostSNI(`{}`)", release.dex),
                "services": [{"name": "dex", "port": 443}],
            }],
            "tls": {"passthrough": true},
        },
    })
}
