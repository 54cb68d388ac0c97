//! The Helm chart (`charts/portcullis`) against the real tools and the real API server:
//! `helm lint --strict` with every example values file; the rendered chart and every ingress
//! example validated by the API server itself (`kubectl apply --dry-run=server
//! --validate=strict`, third-party kinds from their projects' own CRDs); `helm install` with
//! the objects checked; the RBAC of each component proven with `kubectl auth can-i`; upgrades
//! that keep generated keys and certificates; a CRD changed by an upgrade and kept by uninstall.
//!
//! No kubelet runs in the test stack, so no pod starts: the tests check what the API server
//! stores, not running containers.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use portcullis_tests::{TestCluster, cluster::install_crds, tools::Tool};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Third-party CRDs the examples and optional chart objects need, from the Go modules of the
/// projects that define them (downloaded into the Go module cache at test time, never
/// committed): (module, version, files in the module, API group they serve).
const THIRD_PARTY_CRDS: &[(&str, &str, &[&str], &str)] = &[
    (
        "sigs.k8s.io/gateway-api",
        "v1.4.1",
        &[
            "config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml",
            "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
            "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
            "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml",
            "config/crd/standard/gateway.networking.k8s.io_backendtlspolicies.yaml",
        ],
        "gateway.networking.k8s.io",
    ),
    (
        "github.com/envoyproxy/gateway",
        "v1.6.0",
        &["charts/gateway-helm/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml"],
        "gateway.envoyproxy.io",
    ),
    (
        "github.com/traefik/traefik/v3",
        "v3.6.12",
        &[
            "docs/content/reference/dynamic-configuration/traefik.io_middlewares.yaml",
            "docs/content/reference/dynamic-configuration/traefik.io_ingressroutes.yaml",
            "docs/content/reference/dynamic-configuration/traefik.io_serverstransports.yaml",
        ],
        "traefik.io",
    ),
    (
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        &[
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ],
        "monitoring.coreos.com",
    ),
    (
        "github.com/cert-manager/cert-manager",
        "v1.18.2",
        &["deploy/crds/crd-certificates.yaml"],
        "cert-manager.io",
    ),
];

const EXAMPLES: [&str; 3] = ["gateway-api", "traefik", "ingress-nginx"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/portcullis")
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-chart-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs a tool with the shared cluster's kubeconfig (when given) and Helm's state kept in a
/// private directory, never the user's.
fn run(tool: Tool, args: &[&str], stdin: &str, kubeconfig: Option<&Path>) -> Result<Run> {
    let helm_home = std::env::temp_dir().join("portcullis-chart-helm-home");
    let mut cmd = Command::new(tool.path()?);
    cmd.args(args)
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match kubeconfig {
        Some(path) => cmd.env("KUBECONFIG", path),
        // Nothing may reach a cluster by accident.
        None => cmd.env("KUBECONFIG", "/nonexistent"),
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", tool.binary()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`run`], failing with the tool's output unless it succeeds.
fn run_ok(tool: Tool, args: &[&str], stdin: &str, kubeconfig: Option<&Path>) -> Result<String> {
    let out = run(tool, args, stdin, kubeconfig)?;
    ensure!(
        out.ok,
        "{} {} failed:\n{}\n{}",
        tool.binary(),
        args.join(" "),
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

fn example_values(name: &str) -> String {
    repo()
        .join(format!("examples/ingress/{name}/values.yaml"))
        .display()
        .to_string()
}

/// Values for tests that install the chart into a namespace of the shared cluster: the CRDs
/// are the shared stack's (other tests rely on them), never this release's.
const INSTALL_VALUES: &str = r#"
crds: {enabled: false}
gateway:
  authHost: auth.example.test
  trustedProxies: ["10.0.0.0/8"]
identityProviders:
  - name: dex
    issuer: https://dex.example.test/dex
    clientId: portcullis
    clientSecret: {existingSecret: dex-client, key: secret}
    scopes: [openid, email]
    forwardClaims: [hd]
"#;

struct Release<'a> {
    name: String,
    ns: &'a str,
    kubeconfig: &'a Path,
    values: PathBuf,
    _scratch: Scratch,
}

impl<'a> Release<'a> {
    fn new(ns: &'a str, kubeconfig: &'a Path, values: &str) -> Result<Self> {
        let scratch = Scratch::new(ns)?;
        let path = scratch.0.join("values.yaml");
        std::fs::write(&path, values)?;
        Ok(Self {
            // The namespace is unique, so are the cluster-scoped RBAC objects named after it.
            name: ns.to_owned(),
            ns,
            kubeconfig,
            values: path,
            _scratch: scratch,
        })
    }

    fn helm(&self, verb: &str, chart: &Path, extra: &[&str]) -> Result<String> {
        let chart = chart.display().to_string();
        let values = self.values.display().to_string();
        let mut args = vec![verb, &self.name, &chart, "-n", self.ns, "-f", &values];
        args.extend_from_slice(extra);
        run_ok(Tool::Helm, &args, "", Some(self.kubeconfig))
    }

    fn install(&self, extra: &[&str]) -> Result<String> {
        self.helm("install", &chart(), extra)
    }

    fn upgrade(&self, extra: &[&str]) -> Result<String> {
        self.helm("upgrade", &chart(), extra)
    }

    fn uninstall(&self) -> Result<String> {
        run_ok(
            Tool::Helm,
            &["uninstall", &self.name, "-n", self.ns, "--wait"],
            "",
            Some(self.kubeconfig),
        )
    }

    /// `<release>-portcullis-<suffix>`: the chart's object names.
    fn object(&self, suffix: &str) -> String {
        format!("{}-portcullis-{suffix}", self.name)
    }

    fn sa(&self, component: &str) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.ns,
            self.object(component)
        )
    }
}

async fn cluster() -> (&'static TestCluster, PathBuf) {
    let cluster = TestCluster::shared().await;
    (cluster, cluster.info().kubeconfig.clone())
}

#[test]
fn lint_passes_strictly_with_every_example_values_file() -> Result<()> {
    let chart = chart().display().to_string();
    for example in EXAMPLES {
        let values = example_values(example);
        let out = run_ok(
            Tool::Helm,
            &["lint", "--strict", &chart, "-f", &values],
            "",
            None,
        )?;
        ensure!(out.contains("0 chart(s) failed"), "{example}: {out}");
    }
    // Every optional object on at once.
    let out = run_ok(
        Tool::Helm,
        &[
            "lint",
            "--strict",
            &chart,
            "-f",
            &example_values("traefik"),
            "--set",
            "serviceMonitor.enabled=true,gateway.autoscaling.enabled=true,tls.certManager.enabled=true,tls.certManager.issuerRef.name=ca",
        ],
        "",
        None,
    )?;
    ensure!(out.contains("0 chart(s) failed"), "{out}");
    Ok(())
}

#[test]
fn values_are_checked_with_messages_that_say_what_to_fix() -> Result<()> {
    let chart = chart().display().to_string();
    let traefik = example_values("traefik");
    let cases: [(&[&str], &str); 5] = [
        // The schema is strict: a typo is an error, not a silently ignored value.
        (
            &["-f", &traefik, "--set", "gateway.replicaCout=3"],
            "additional properties 'replicaCout' not allowed",
        ),
        (&[], "gateway.authHost is required"),
        (
            &["--set", "gateway.authHost=auth.example.com"],
            "identityProviders needs at least one identity provider",
        ),
        // A client secret is never a value.
        (
            &[
                "-f",
                &traefik,
                "--set",
                "identityProviders[0].clientSecret.value=s3cret",
            ],
            "additional properties 'value' not allowed",
        ),
        (
            &["-f", &traefik, "--set", "tls.certManager.enabled=true"],
            "tls.certManager.issuerRef.name is required",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["template", "t", &chart];
        all.extend_from_slice(args);
        let out = run(Tool::Helm, &all, "", None)?;
        ensure!(!out.ok, "{args:?} rendered");
        ensure!(
            out.stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{}",
            out.stderr
        );
    }
    Ok(())
}

/// Installs the third-party CRDs the examples use into the shared API server (server-side
/// apply; idempotent; no Portcullis test depends on them). A CRD that cannot be obtained fails
/// the test, naming the module and how to provide it: objects of a kind the API server does not
/// serve would otherwise go unvalidated while the test passes.
async fn install_third_party_crds(client: &kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("portcullis-chart-tests").force();
    for (module, version, files, group) in THIRD_PARTY_CRDS {
        let dir = portcullis_tests::gomod::download(module, version).with_context(|| {
            format!(
                "the CRDs of {group} come from the Go module {module}@{version}, which could not \
                 be downloaded: this test needs the Go toolchain and the Go module proxy (or a \
                 module cache that already holds it, with GOFLAGS=-mod=mod GOPROXY=off)"
            )
        })?;
        for file in *files {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{module}@{version} lacks {file}"))?;
            for doc in split_documents(&text) {
                let mut crd: CustomResourceDefinition = serde_saphyr::from_str(&doc)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let name = crd.metadata.name.clone().context("CRD without a name")?;
                // Their labels may carry their own charts' template text (cert-manager's); keep
                // only the name and the annotations the API server requires
                // (`api-approved.kubernetes.io` for *.k8s.io groups).
                let annotations = crd.metadata.annotations.take().map(|a| {
                    a.into_iter()
                        .filter(|(k, v)| k == "api-approved.kubernetes.io" && !v.contains("{{"))
                        .collect()
                });
                crd.metadata = ObjectMeta {
                    name: Some(name.clone()),
                    annotations,
                    ..ObjectMeta::default()
                };
                api.patch(&name, &params, &Patch::Apply(&crd))
                    .await
                    .with_context(|| format!("applying CRD {name} from {module}@{version}"))?;
                tokio::time::timeout(
                    Duration::from_secs(30),
                    await_condition(api.clone(), &name, conditions::is_crd_established()),
                )
                .await
                .with_context(|| format!("CRD {name} not Established"))??;
            }
        }
    }
    Ok(())
}

/// The YAML documents of a multi-document stream that hold anything.
/// `helm template` of the chart with the traefik example's values and each of `sets` passed
/// with `flag` (`--set`, `--set-json`).
fn render_traefik(flag: &str, sets: &[&str]) -> Result<String> {
    let chart = chart().display().to_string();
    let values = example_values("traefik");
    let mut args = vec!["template", "t", &chart, "-n", "portcullis", "-f", &values];
    for set in sets {
        args.extend([flag, set]);
    }
    run_ok(Tool::Helm, &args, "", None)
}

fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.starts_with("---") {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn server_validate(manifests: &str, kubeconfig: &Path, what: &str) -> Result<()> {
    let out = run(
        Tool::Kubectl,
        &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
        manifests,
        Some(kubeconfig),
    )?;
    ensure!(
        out.ok,
        "{what} refused by the API server:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    // Strict validation reports unknown fields as errors, but warnings (deprecated APIs) are
    // worth failing on too.
    ensure!(
        !out.stderr.contains("Warning: unknown field"),
        "{what}: {}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn rendered_chart_and_ingress_examples_pass_strict_server_side_validation() {
    let (cluster, kubeconfig) = cluster().await;
    let client = cluster.client().await.expect("client");
    install_third_party_crds(&client)
        .await
        .expect("installing third-party CRDs");
    cluster
        .with_temp_ns("chart-validate-apps", |_, apps| {
            let kubeconfig = kubeconfig.clone();
            async move {
                cluster
                    .with_temp_ns("chart-validate", |_, ns| async move {
                        validate_everything(&ns, &apps, &kubeconfig)
                    })
                    .await
            }
        })
        .await
        .expect("validation");
}

fn validate_everything(ns: &str, apps: &str, kubeconfig: &Path) -> Result<()> {
    let chart = chart().display().to_string();
    let everything_on = "crds.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,\
        grafanaDashboard.enabled=true,gateway.autoscaling.enabled=true,\
        gateway.signingKey.nextKey=next.pem,gateway.signingKey.previousKeys[0]=old.pem,\
        gateway.sessionKey.existingSecret=own-keys,gateway.sessionKey.previousKeys[0]=old-session,\
        gateway.upstreamCA.existingConfigMap=corp-ca";
    let mut variants: Vec<(String, Vec<String>)> = EXAMPLES
        .iter()
        .map(|e| {
            (
                format!("chart with {e} values"),
                vec!["-f".to_owned(), example_values(e)],
            )
        })
        .collect();
    variants.push((
        "chart with every option on".to_owned(),
        vec![
            "-f".to_owned(),
            example_values("traefik"),
            "--set".to_owned(),
            everything_on.to_owned(),
        ],
    ));
    variants.push((
        "chart with cert-manager".to_owned(),
        vec![
            "-f".to_owned(),
            example_values("gateway-api"),
            "--set".to_owned(),
            "tls.certManager.enabled=true,tls.certManager.issuerRef.name=ca,tls.certManager.issuerRef.kind=ClusterIssuer".to_owned(),
        ],
    ));
    for (what, args) in &variants {
        let mut all: Vec<&str> = vec!["template", "portcullis", &chart, "-n", ns];
        all.extend(args.iter().map(String::as_str));
        let rendered = run_ok(Tool::Helm, &all, "", None)?;
        ensure!(
            rendered.contains("kind: Deployment"),
            "{what}: nothing rendered"
        );
        server_validate(&rendered, kubeconfig, what)?;
    }
    for example in EXAMPLES {
        let dir = repo().join("examples/ingress").join(example);
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "yaml")
                    && p.file_name().is_some_and(|n| n != "values.yaml")
            })
            .collect();
        files.sort();
        ensure!(!files.is_empty(), "no manifests in {}", dir.display());
        for file in files {
            let what = file.display().to_string();
            // The examples are written for namespaces `portcullis` and `apps`.
            let text = std::fs::read_to_string(&file)?
                .replace("namespace: portcullis", &format!("namespace: {ns}"))
                .replace("namespace: apps", &format!("namespace: {apps}"))
                .replace(".portcullis.svc", &format!(".{ns}.svc"));
            server_validate(&text, kubeconfig, &what)?;
        }
    }
    Ok(())
}

/// Reads a Secret's data as bytes per key.
async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading Secret {name}"))?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

fn args_of(deployment: &Deployment) -> Result<Vec<String>> {
    let container = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .context("no container")?;
    Ok(container.args.clone().unwrap_or_default())
}

#[tokio::test]
async fn install_creates_every_object_with_restricted_pods() {
    let (cluster, kubeconfig) = cluster().await;
    cluster
        .with_temp_ns("chart-install", |client, ns| async move {
            let release = Release::new(&ns, &kubeconfig, INSTALL_VALUES)?;
            release.install(&[])?;
            let result = check_installed(&client, &release).await;
            release.uninstall()?;
            result
        })
        .await
        .expect("install");
}

async fn check_installed(client: &kube::Client, release: &Release<'_>) -> Result<()> {
    let ns = release.ns;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let operator = deployments.get(&release.object("operator")).await?;
    let gateway = deployments.get(&release.object("gateway")).await?;
    for (d, replicas) in [(&operator, 2), (&gateway, 2)] {
        let spec = d.spec.as_ref().context("spec")?;
        ensure!(
            spec.replicas == Some(replicas),
            "replicas of {:?}",
            d.metadata.name
        );
        let pod = spec.template.spec.as_ref().context("pod spec")?;
        let psc = pod
            .security_context
            .as_ref()
            .context("pod securityContext")?;
        ensure!(psc.run_as_non_root == Some(true));
        ensure!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()) == Some("RuntimeDefault"));
        let c = pod.containers.first().context("container")?;
        let sc = c.security_context.as_ref().context("securityContext")?;
        ensure!(sc.read_only_root_filesystem == Some(true));
        ensure!(sc.allow_privilege_escalation == Some(false));
        ensure!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()) == Some(vec!["ALL".to_owned()])
        );
        for (probe, path) in [
            (&c.liveness_probe, "/livez"),
            (&c.readiness_probe, "/readyz"),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .context("probe")?;
            ensure!(get.path.as_deref() == Some(path));
            ensure!(
                get.port
                    == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        "ops".into()
                    )
            );
        }
        let sleep = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.sleep.as_ref())
            .context("preStop sleep")?;
        ensure!(sleep.seconds > 0);
        ensure!(pod.termination_grace_period_seconds.unwrap_or(0) > sleep.seconds);
        let labels = d.metadata.labels.clone().unwrap_or_default();
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/component",
            "helm.sh/chart",
        ] {
            ensure!(labels.contains_key(key), "label {key} missing");
        }
    }

    let op_args = args_of(&operator)?;
    let op_service = release.object("operator");
    for expected in [
        "--advertise-url=https://$(POD_IP):8444".to_owned(),
        "--identity=$(POD_NAME)".to_owned(),
        format!("--lease-namespace={ns}"),
        "--lease-name=portcullis-operator".to_owned(),
        format!("--session-namespace={ns}"),
        format!(
            "--gateway-service-accounts={ns}:{}",
            release.object("gateway")
        ),
        "--token-audience=portcullis-operator".to_owned(),
    ] {
        ensure!(
            op_args.contains(&expected),
            "operator lacks {expected}: {op_args:?}"
        );
    }
    let env: Vec<_> = operator
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    for (name, field) in [("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP")] {
        ensure!(
            env.iter().any(|e| e.name == name
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.as_str())
                    == Some(field)),
            "operator env {name} from {field}"
        );
    }

    let gw_args = args_of(&gateway)?;
    for expected in [
        format!("--operator-url=https://{op_service}.{ns}.svc:8444"),
        "--operator-token-file=/var/run/secrets/portcullis/token".to_owned(),
        "--operator-ca-file=/etc/portcullis/operator-ca/ca.crt".to_owned(),
        "--session-key-file=/etc/portcullis/session-key/key".to_owned(),
        format!("--session-namespace={ns}"),
        "--auth-host=auth.example.test".to_owned(),
        "--trusted-proxies=10.0.0.0/8".to_owned(),
        "--gateway-id=$(POD_NAME)".to_owned(),
    ] {
        ensure!(
            gw_args.contains(&expected),
            "gateway lacks {expected}: {gw_args:?}"
        );
    }
    let pod = gateway
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("gateway pod")?;
    let volumes = pod.volumes.clone().unwrap_or_default();
    let token = volumes
        .iter()
        .find(|v| v.name == "operator-token")
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s.first())
        .and_then(|s| s.service_account_token.as_ref())
        .context("projected token")?;
    ensure!(token.audience.as_deref() == Some("portcullis-operator"));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    ensure!(
        mounts
            .iter()
            .any(|m| m.name == "operator-token" && m.mount_path == "/var/run/secrets/portcullis")
    );
    ensure!(
        mounts
            .iter()
            .any(|m| m.name == "session-key" && m.mount_path == "/etc/portcullis/session-key")
    );
    // The gateway gets only ca.crt of the operator's serving Secret, never its key.
    let ca = volumes
        .iter()
        .find(|v| v.name == "operator-ca")
        .and_then(|v| v.secret.as_ref())
        .context("operator-ca volume")?;
    let items: Vec<_> = ca
        .items
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.key)
        .collect();
    ensure!(items == ["ca.crt"], "{items:?}");

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let headless = services.get(&op_service).await?;
    ensure!(headless.spec.and_then(|s| s.cluster_ip).as_deref() == Some("None"));
    services.get(&release.object("gateway")).await?;

    // The identity-provider file, in the gateway's format, with the secret as a file path.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(&release.object("identity-providers"))
        .await?;
    let file = cm
        .data
        .and_then(|d| d.get("identity-providers.yaml").cloned())
        .context("identity-providers.yaml")?;
    let parsed: serde_json::Value = serde_saphyr::from_str(&file)?;
    let idp = &parsed["identityProviders"][0];
    ensure!(
        idp["name"] == "dex" && idp["clientId"] == "portcullis",
        "{file}"
    );
    ensure!(
        idp["clientSecretFile"] == "/etc/portcullis/idp-secrets/dex/client-secret",
        "{file}"
    );
    ensure!(
        idp["forwardClaims"][0] == "hd" && idp.get("clientSecret").is_none(),
        "{file}"
    );

    // Generated keys: a P-256 key the gateway's own key loader accepts, a 32-byte session key,
    // and an operator certificate with its CA.
    let signing = secret_data(client, ns, &release.object("gateway-signing-key")).await?;
    let pem = signing.get("signing-key.pem").context("signing-key.pem")?;
    ensure!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
    portcullis_core::token::KeySet::from_pems(pem, None, &[])
        .map_err(|e| anyhow::anyhow!("the gateway refuses the generated signing key: {e}"))?;
    let session = secret_data(client, ns, &release.object("gateway-session-key")).await?;
    ensure!(session.get("key").map(Vec::len) == Some(32));
    let tls = secret_data(client, ns, &release.object("operator-tls")).await?;
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        ensure!(
            tls.get(key).is_some_and(|v| !v.is_empty()),
            "operator-tls lacks {key}"
        );
    }
    let gw_tls = secret_data(client, ns, &release.object("gateway-tls")).await?;
    ensure!(
        gw_tls.get("ca.crt") == tls.get("ca.crt"),
        "one CA signs both"
    );

    // Each remaining kind exists.
    for (kind, names) in [
        (
            "serviceaccount",
            vec![release.object("operator"), release.object("gateway")],
        ),
        (
            "role",
            vec![release.object("operator"), release.object("gateway")],
        ),
        (
            "rolebinding",
            vec![release.object("operator"), release.object("gateway")],
        ),
        (
            "networkpolicy",
            vec![release.object("operator"), release.object("gateway")],
        ),
        (
            "poddisruptionbudget",
            vec![release.object("operator"), release.object("gateway")],
        ),
        (
            "clusterrole",
            vec![
                release.object("operator"),
                format!("{}-policies", release.object("gateway")),
            ],
        ),
        (
            "clusterrolebinding",
            vec![
                release.object("operator"),
                format!("{}-policies", release.object("gateway")),
            ],
        ),
    ] {
        for name in names {
            run_ok(
                Tool::Kubectl,
                &["get", kind, &name, "-n", ns, "-o", "name"],
                "",
                Some(release.kubeconfig),
            )?;
        }
    }
    // The gateway's only ClusterRole is the policy reader of the API-server fallback.
    let gw_cluster_role = run(
        Tool::Kubectl,
        &["get", "clusterrole", &release.object("gateway")],
        "",
        Some(release.kubeconfig),
    )?;
    ensure!(
        !gw_cluster_role.ok,
        "the gateway must have no ClusterRole besides the policy reader"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_grants_each_component_exactly_the_contract() {
    let (cluster, kubeconfig) = cluster().await;
    cluster
        .with_temp_ns("chart-rbac", |_, ns| async move {
            let release = Release::new(&ns, &kubeconfig, INSTALL_VALUES)?;
            release.install(&[])?;
            let result = check_rbac(&release);
            release.uninstall()?;
            result
        })
        .await
        .expect("rbac");
}

fn check_rbac(release: &Release<'_>) -> Result<()> {
    let ns = release.ns;
    let gateway = release.sa("gateway");
    let operator = release.sa("operator");
    let sessions = "accesssessions.access.portcullis.dev";
    let policies = "accesspolicies.access.portcullis.dev";
    let hosts = "accesshosts.access.portcullis.dev";
    // (who, verb, resource, namespace or "" for --all-namespaces/cluster, allowed)
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        // The gateway: record sessions, update their status; read sessions and list/watch
        // policies for the API-server fallback; nothing else.
        (&gateway, "create", sessions, ns, true),
        (&gateway, "get", sessions, ns, true),
        (&gateway, "patch", sessions, ns, true),
        (&gateway, "get", &format!("{sessions}/status"), ns, true),
        (&gateway, "patch", &format!("{sessions}/status"), ns, true),
        (&gateway, "update", &format!("{sessions}/status"), ns, true),
        (&gateway, "list", sessions, ns, true),
        (&gateway, "watch", sessions, ns, true),
        (&gateway, "list", sessions, "default", false),
        (&gateway, "delete", sessions, ns, false),
        (&gateway, "update", sessions, ns, false),
        (&gateway, "create", sessions, "default", false),
        (&gateway, "get", "secrets", ns, false),
        (&gateway, "list", "secrets", ns, false),
        (&gateway, "get", policies, ns, false),
        (&gateway, "list", policies, "", true),
        (&gateway, "watch", policies, "", true),
        (&gateway, "patch", policies, ns, false),
        (&gateway, "patch", &format!("{policies}/status"), ns, false),
        (
            &gateway,
            "create",
            "tokenreviews.authentication.k8s.io",
            "",
            false,
        ),
        (&gateway, "get", "leases.coordination.k8s.io", ns, false),
        (&gateway, "list", hosts, "", false),
        // The operator.
        (&operator, "list", policies, "", true),
        (&operator, "watch", policies, "", true),
        (&operator, "get", policies, "default", true),
        (
            &operator,
            "patch",
            &format!("{policies}/status"),
            "default",
            true,
        ),
        (&operator, "update", policies, "default", false),
        (&operator, "patch", policies, "default", false),
        (&operator, "delete", policies, "default", false),
        // Who may claim which host: read AccessHosts and namespace labels, write neither.
        (&operator, "list", hosts, "", true),
        (&operator, "watch", hosts, "", true),
        (&operator, "create", hosts, "", false),
        (&operator, "update", hosts, "", false),
        (&operator, "list", "namespaces", "", true),
        (&operator, "watch", "namespaces", "", true),
        (&operator, "update", "namespaces", "", false),
        (&operator, "list", sessions, ns, true),
        (&operator, "watch", sessions, ns, true),
        (&operator, "delete", sessions, ns, true),
        (&operator, "patch", sessions, ns, true),
        (&operator, "patch", &format!("{sessions}/status"), ns, true),
        (&operator, "create", sessions, ns, false),
        (&operator, "list", sessions, "default", false),
        (&operator, "get", "secrets", "default", true),
        (&operator, "watch", "secrets", "", true),
        (&operator, "create", "secrets", ns, false),
        (&operator, "delete", "secrets", ns, false),
        (&operator, "create", "events", "default", true),
        (&operator, "patch", "events.events.k8s.io", "default", true),
        (&operator, "delete", "events", "default", false),
        (&operator, "create", "leases.coordination.k8s.io", ns, true),
        (&operator, "update", "leases.coordination.k8s.io", ns, true),
        (&operator, "get", "leases.coordination.k8s.io", ns, true),
        (&operator, "patch", "leases.coordination.k8s.io", ns, false),
        (&operator, "delete", "leases.coordination.k8s.io", ns, false),
        (
            &operator,
            "create",
            "leases.coordination.k8s.io",
            "default",
            false,
        ),
        (
            &operator,
            "create",
            "tokenreviews.authentication.k8s.io",
            "",
            true,
        ),
        (
            &operator,
            "create",
            "subjectaccessreviews.authorization.k8s.io",
            "",
            false,
        ),
        (&operator, "list", "configmaps", ns, false),
        (&operator, "create", "pods", ns, false),
    ];
    let mut wrong = Vec::new();
    for (who, verb, resource, namespace, allowed) in cases {
        let (resource, subresource) = match resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(format!("--subresource={sub}"))),
            None => (*resource, None),
        };
        let mut args = vec!["auth", "can-i", verb, resource, "--as", who];
        if let Some(sub) = &subresource {
            args.push(sub);
        }
        if namespace.is_empty() {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", namespace]);
        }
        let out = run(Tool::Kubectl, &args, "", Some(release.kubeconfig))?;
        let answer = out.stdout.trim();
        ensure!(
            answer == "yes" || answer == "no",
            "kubectl {}: {}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        if (answer == "yes") != *allowed {
            wrong.push(format!(
                "{who} {verb} {resource} in {namespace:?}: {answer}"
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "RBAC differs from the contract:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn upgrade_keeps_generated_keys_and_certificates() {
    let (cluster, kubeconfig) = cluster().await;
    cluster
        .with_temp_ns("chart-upgrade", |client, ns| async move {
            let release = Release::new(&ns, &kubeconfig, INSTALL_VALUES)?;
            release.install(&[])?;
            let result = check_upgrade_keeps_keys(&client, &release).await;
            release.uninstall()?;
            result
        })
        .await
        .expect("upgrade");
}

async fn check_upgrade_keeps_keys(client: &kube::Client, release: &Release<'_>) -> Result<()> {
    let ns = release.ns;
    let secrets = [
        release.object("gateway-signing-key"),
        release.object("gateway-session-key"),
        release.object("operator-tls"),
        release.object("gateway-tls"),
        format!("{}-portcullis-ca", release.name),
    ];
    let mut before = Vec::new();
    for name in &secrets {
        before.push(secret_data(client, ns, name).await?);
    }
    // Two upgrades that change the release, one of them touching the gateway's certificate names.
    release.upgrade(&["--set", "gateway.replicaCount=3"])?;
    release.upgrade(&[
        "--set",
        "gateway.replicaCount=4,gateway.tls.extraDnsNames[0]=gw.example.test",
    ])?;
    let gateway = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(&release.object("gateway"))
        .await?;
    ensure!(
        gateway.spec.and_then(|s| s.replicas) == Some(4),
        "the upgrade was not applied"
    );
    for (name, old) in secrets.iter().zip(&before) {
        let now = secret_data(client, ns, name).await?;
        ensure!(&now == old, "helm upgrade replaced Secret {name}");
    }
    // Rotating the generated session key: a new key under a new name, the old one kept as a
    // previous key (read back, not generated again), and the gateways given both.
    let session_secret = release.object("gateway-session-key");
    release.upgrade(&[
        "--set",
        "gateway.replicaCount=4,gateway.tls.extraDnsNames[0]=gw.example.test,\
         gateway.sessionKey.key=key-2,gateway.sessionKey.previousKeys[0]=key",
    ])?;
    let rotated = secret_data(client, ns, &session_secret).await?;
    ensure!(
        rotated.get("key") == before[1].get("key"),
        "the old session key was not kept"
    );
    ensure!(
        rotated.get("key-2").is_some_and(|k| k.len() == 32)
            && rotated.get("key-2") != rotated.get("key"),
        "no new 32-byte session key"
    );
    let gateway = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(&release.object("gateway"))
        .await?;
    let args = args_of(&gateway)?;
    ensure!(
        args.contains(
            &"--previous-session-key-files=/etc/portcullis/session-key/previous/key".to_owned()
        ),
        "{args:?}"
    );
    // A previous key the Secret does not hold is refused with a message, not rendered empty.
    let refused = release.upgrade(&[
        "--set",
        "gateway.sessionKey.key=key-2,gateway.sessionKey.previousKeys[0]=no-such-key",
    ]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("does not hold")),
        "{refused:?}"
    );
    // A Secret deleted on purpose (to renew a certificate) is made again, signed by the kept CA.
    Api::<Secret>::namespaced(client.clone(), ns)
        .delete(&release.object("gateway-tls"), &Default::default())
        .await?;
    release.upgrade(&[])?;
    let renewed = secret_data(client, ns, &release.object("gateway-tls")).await?;
    ensure!(
        renewed.get("tls.crt") != before[3].get("tls.crt"),
        "not renewed"
    );
    ensure!(
        renewed.get("ca.crt") == before[2].get("ca.crt"),
        "not the kept CA"
    );
    Ok(())
}

#[tokio::test]
async fn existing_secrets_are_used_and_nothing_is_generated_for_them() {
    let (cluster, kubeconfig) = cluster().await;
    cluster
        .with_temp_ns("chart-existing", |client, ns| async move {
            let own = "apiVersion: v1\nkind: Secret\nmetadata: {name: own-keys}\nstringData: {current.pem: \"x\", next.pem: \"y\", session: \"z\", session-old: \"w\"}\n";
            run_ok(Tool::Kubectl, &["apply", "-n", &ns, "-f", "-"], own, Some(&kubeconfig))?;
            let release = Release::new(&ns, &kubeconfig, INSTALL_VALUES)?;
            release.install(&[
                "--set",
                "gateway.signingKey.existingSecret=own-keys,gateway.signingKey.key=current.pem,\
                 gateway.signingKey.nextKey=next.pem,gateway.sessionKey.existingSecret=own-keys,\
                 gateway.sessionKey.key=session,gateway.sessionKey.previousKeys[0]=session-old",
            ])?;
            let result = async {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
                for generated in ["gateway-signing-key", "gateway-session-key"] {
                    ensure!(
                        secrets.get_opt(&release.object(generated)).await?.is_none(),
                        "{generated} generated although an existing Secret was named"
                    );
                }
                let gateway = Api::<Deployment>::namespaced(client.clone(), &ns)
                    .get(&release.object("gateway"))
                    .await?;
                let args = args_of(&gateway)?;
                ensure!(args.contains(&"--signing-key-file=/etc/portcullis/signing-key/current.pem".to_owned()));
                ensure!(args.contains(&"--next-signing-key-file=/etc/portcullis/signing-key/next.pem".to_owned()));
                ensure!(args.contains(&"--session-key-file=/etc/portcullis/session-key/key".to_owned()));
                ensure!(args.contains(
                    &"--previous-session-key-files=/etc/portcullis/session-key/previous/session-old".to_owned()
                ));
                let volumes = gateway
                    .spec
                    .and_then(|s| s.template.spec)
                    .and_then(|s| s.volumes)
                    .unwrap_or_default();
                for name in ["signing-key", "session-key"] {
                    let v = volumes.iter().find(|v| v.name == name).context(name)?;
                    ensure!(
                        v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("own-keys"),
                        "{name} volume not from own-keys"
                    );
                }
                // The user's Secret is untouched.
                let own = secret_data(&client, &ns, "own-keys").await?;
                ensure!(own.get("current.pem").map(Vec::as_slice) == Some(&b"x"[..]));
                Ok(())
            }
            .await;
            release.uninstall()?;
            result
        })
        .await
        .expect("existing secrets");
}

const CRD_MARK: &str = "MODIFIED-BY-CHART-TEST ";

#[tokio::test]
async fn crd_changes_reach_the_cluster_on_upgrade_and_survive_uninstall() {
    let (cluster, kubeconfig) = cluster().await;
    let result = cluster
        .with_temp_ns("chart-crds", |client, ns| async move {
            check_crd_lifecycle(&client, &ns, &kubeconfig).await
        })
        .await;
    // Whatever happened, the shared CRDs are back to what every other test expects.
    let client = cluster.client().await.expect("client");
    install_crds(&client)
        .await
        .expect("restoring the shared CRDs");
    result.expect("CRD lifecycle");
}

fn crd_description(crd: &CustomResourceDefinition) -> String {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.description.clone())
        .unwrap_or_default()
}

async fn check_crd_lifecycle(client: &kube::Client, ns: &str, kubeconfig: &Path) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = portcullis_crds::crds()
        .into_iter()
        .filter_map(|(_, crd)| crd.metadata.name)
        .collect();
    let policies = "accesspolicies.access.portcullis.dev";
    // The shared stack applied the CRDs without Helm; adopt them the way docs/install.md says.
    for name in &names {
        let crd = format!("crd/{name}");
        run_ok(
            Tool::Kubectl,
            &[
                "label",
                &crd,
                "app.kubernetes.io/managed-by=Helm",
                "--overwrite",
            ],
            "",
            Some(kubeconfig),
        )?;
        run_ok(
            Tool::Kubectl,
            &[
                "annotate",
                &crd,
                &format!("meta.helm.sh/release-name={ns}"),
                &format!("meta.helm.sh/release-namespace={ns}"),
                "--overwrite",
            ],
            "",
            Some(kubeconfig),
        )?;
    }
    let release = Release::new(
        ns,
        kubeconfig,
        &INSTALL_VALUES.replace(
            "crds: {enabled: false}",
            "crds: {enabled: true, keep: true}",
        ),
    )?;

    // Install an older chart whose AccessPolicy CRD differs.
    let old = Scratch::new("old-chart")?;
    copy_dir(&chart(), &old.0)?;
    let template = old.0.join("templates/crds/accesspolicies.yaml");
    let text = std::fs::read_to_string(&template)?;
    let original = "description: \"AccessPolicy protects";
    ensure!(text.contains(original), "unexpected CRD template");
    std::fs::write(
        &template,
        text.replacen(
            original,
            &format!("description: \"{CRD_MARK}AccessPolicy protects"),
            1,
        ),
    )?;
    release.helm("install", &old.0, &[])?;
    let installed = crds.get(policies).await?;
    ensure!(
        crd_description(&installed).starts_with(CRD_MARK),
        "install did not apply the chart's CRD"
    );
    ensure!(
        installed
            .annotations()
            .get("helm.sh/resource-policy")
            .map(String::as_str)
            == Some("keep"),
        "crds.keep did not annotate"
    );

    // Upgrading to this chart brings the CRD back to the generated one.
    release.upgrade(&[])?;
    let upgraded = crds.get(policies).await?;
    let generated = portcullis_crds::crds()
        .into_iter()
        .find(|(_, c)| c.metadata.name.as_deref() == Some(policies))
        .map(|(_, c)| crd_description(&c))
        .context("generated CRD")?;
    ensure!(
        crd_description(&upgraded) == generated,
        "upgrade did not update the CRD"
    );

    // Uninstall keeps them (and so every AccessPolicy and AccessSession).
    let out = release.uninstall()?;
    for name in &names {
        let crd = crds.get_opt(name).await?;
        ensure!(
            crd.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
            "uninstall deleted CRD {name}: {out}"
        );
    }
    // And the release's other objects are gone.
    let left = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    ensure!(left.items.is_empty(), "uninstall left Deployments");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[test]
fn keep_off_renders_no_keep_annotation_and_crds_off_renders_no_crds() -> Result<()> {
    let chart = chart().display().to_string();
    let values = example_values("traefik");
    let render = |set: &str| {
        run_ok(
            Tool::Helm,
            &["template", "t", &chart, "-f", &values, "--set", set],
            "",
            None,
        )
    };
    let crds = portcullis_crds::crds().len();
    let keep = render("crds.keep=true")?;
    ensure!(keep.matches("kind: CustomResourceDefinition").count() == crds);
    ensure!(keep.matches("helm.sh/resource-policy: keep").count() == crds);
    let no_keep = render("crds.keep=false")?;
    ensure!(no_keep.matches("kind: CustomResourceDefinition").count() == crds);
    ensure!(!no_keep.contains("helm.sh/resource-policy"));
    let off = render("crds.enabled=false")?;
    ensure!(!off.contains("CustomResourceDefinition"));
    // The rendered CRDs are the generated ones, field for field.
    for (_, crd) in portcullis_crds::crds() {
        let name = crd.metadata.name.clone().context("name")?;
        let doc = split_documents(&keep)
            .into_iter()
            .find(|d| {
                d.contains(&format!("  name: {name}\n"))
                    && d.contains("kind: CustomResourceDefinition")
            })
            .with_context(|| format!("{name} not rendered"))?;
        let rendered: CustomResourceDefinition = serde_saphyr::from_str(&doc)?;
        ensure!(
            rendered.spec == crd.spec,
            "{name}: rendered spec differs from the types"
        );
    }
    Ok(())
}

/// The connection and login-rate values reach each component as flags, and the real binaries
/// take those flags: a flag renamed on one side, or a value rendered in a form clap refuses
/// (`1e+06`), fails here rather than in a crash-looping pod.
#[test]
fn connection_rate_and_reload_values_become_flags_the_binaries_take() -> Result<()> {
    let chart = chart().display().to_string();
    let values = example_values("traefik");
    let mut args = vec!["template", "t", &chart, "-f", &values];
    for set in [
        "gateway.connections.idleTimeout=90s",
        "gateway.connections.maxConnectionsPerClient=0",
        "gateway.loginRateLimit.clients=2000000",
        "gateway.keyReloadInterval=2s",
        "operator.connections.headerReadTimeout=3s",
        "operator.connections.maxRequestHeadBytes=131072",
    ] {
        args.extend(["--set", set]);
    }
    // `--set` makes `0.5` a string; a values file or `--set-json` keeps it a number.
    args.extend(["--set-json", "gateway.loginRateLimit.perSecond=0.5"]);
    let rendered = run_ok(Tool::Helm, &args, "", None)?;
    let deployment = |component: &str| -> Result<Vec<String>> {
        let doc = split_documents(&rendered)
            .into_iter()
            .find(|d| {
                d.contains("kind: Deployment")
                    && d.contains(&format!("name: t-portcullis-{component}\n"))
            })
            .with_context(|| format!("no {component} Deployment"))?;
        args_of(&serde_saphyr::from_str(&doc)?)
    };
    let gateway = deployment("gateway")?;
    let operator = deployment("operator")?;
    for (component, args, expected) in [
        ("gateway", &gateway, "--idle-timeout=90s"),
        ("gateway", &gateway, "--max-connections-per-client=0"),
        ("gateway", &gateway, "--header-read-timeout=10s"),
        ("gateway", &gateway, "--login-rate-limit=0.5"),
        ("gateway", &gateway, "--login-rate-burst=50"),
        ("gateway", &gateway, "--login-rate-clients=2000000"),
        ("gateway", &gateway, "--key-reload-interval=2s"),
        ("operator", &operator, "--header-read-timeout=3s"),
        ("operator", &operator, "--max-request-head-bytes=131072"),
        ("operator", &operator, "--tls-handshake-timeout=10s"),
    ] {
        ensure!(
            args.iter().any(|a| a == expected),
            "{component} lacks {expected}: {args:?}"
        );
    }
    // Each binary parses its rendered flags: it gets past the command line (exit status 2
    // is clap's refusal) and fails later, on the files it cannot find outside a pod.
    for (binary, args) in [
        ("portcullis-gateway", &gateway),
        ("portcullis-operator", &operator),
    ] {
        let path = portcullis_tests::fsutil::sibling_binary(binary)?;
        let out = Command::new(&path)
            .args(args)
            .env_clear()
            .env("POD_NAME", "chart-test")
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() != Some(2) && !stderr.contains("Usage:"),
            "{binary} refused the chart's flags: {stderr}"
        );
        ensure!(
            !out.status.success(),
            "{binary} ran outside a pod: {stderr}"
        );
    }
    Ok(())
}

/// With `operator.secretNamespaces` the operator reads Secrets through a Role in each listed
/// namespace and nowhere else, and is told which; without it, through its ClusterRole.
#[test]
fn secret_namespaces_turn_the_operators_secret_access_into_roles() -> Result<()> {
    let render = |set: &[&str]| render_traefik("--set", set);
    let secret_rules = |docs: &[String], kind: &str| -> Vec<String> {
        docs.iter()
            .filter(|d| {
                d.contains(&format!("kind: {kind}\n")) && d.contains(r#"resources: ["secrets"]"#)
            })
            .filter(|d| d.contains("component: operator"))
            .cloned()
            .collect()
    };
    let everywhere = split_documents(&render(&[])?);
    ensure!(secret_rules(&everywhere, "ClusterRole").len() == 1);
    ensure!(secret_rules(&everywhere, "Role").is_empty());
    ensure!(!everywhere.iter().any(|d| d.contains("--secret-namespaces")));

    let listed = split_documents(&render(&["operator.secretNamespaces={team-a,team-b}"])?);
    ensure!(
        secret_rules(&listed, "ClusterRole").is_empty(),
        "the ClusterRole still grants Secrets"
    );
    let roles = secret_rules(&listed, "Role");
    ensure!(roles.len() == 2, "{roles:?}");
    for ns in ["team-a", "team-b"] {
        ensure!(
            roles
                .iter()
                .any(|r| r.contains(&format!("namespace: {ns}\n")))
        );
        ensure!(
            listed.iter().any(|d| d.contains("kind: RoleBinding")
                && d.contains(&format!("namespace: {ns}\n"))
                && d.contains("-secrets")),
            "no RoleBinding in {ns}"
        );
    }
    ensure!(
        listed
            .iter()
            .any(|d| d.contains("- --secret-namespaces=team-a,team-b")),
        "the operator is not told its namespaces"
    );
    // An installation scoped to its namespaces reads Secrets there only, unless told otherwise.
    let scoped = split_documents(&render(&["operator.watchNamespaces={team-c}"])?);
    ensure!(secret_rules(&scoped, "ClusterRole").is_empty());
    let roles = secret_rules(&scoped, "Role");
    ensure!(
        roles.len() == 1 && roles[0].contains("namespace: team-c\n"),
        "{roles:?}"
    );
    let told = scoped
        .iter()
        .filter(|d| d.contains("kind: Deployment") && d.contains("- --watch-namespaces=team-c"))
        .count();
    ensure!(
        told == 2,
        "the operator and the gateway are not both told which policies are theirs"
    );
    // The schema refuses what is not a namespace name.
    ensure!(render(&["operator.secretNamespaces={Team_A}"]).is_err());
    ensure!(render(&["operator.watchNamespaces={Team_A}"]).is_err());
    Ok(())
}

/// Traces are off unless an OTLP endpoint is given; the gateway and the operator, each on its
/// own values, are then told where and how much.
#[test]
fn traces_are_sent_only_where_the_values_say() -> Result<()> {
    // `--set-json`: `--set` would pass 0.25 as a string.
    let render = |set: &[&str]| render_traefik("--set-json", set);
    ensure!(!render(&[])?.contains("--otlp-endpoint"));
    for (component, other) in [("gateway", "operator"), ("operator", "gateway")] {
        let on = render(&[
            &format!(
                r#"{component}.traces.otlpEndpoint="http://collector.monitoring:4318/v1/traces""#
            ),
            &format!("{component}.traces.sampleRatio=0.25"),
        ])?;
        let deployment = |name: &str| {
            let label = format!("app.kubernetes.io/component: {name}");
            split_documents(&on)
                .into_iter()
                .find(|doc| doc.contains("kind: Deployment") && doc.contains(&label))
                .with_context(|| format!("no {name} Deployment"))
        };
        let traced = deployment(component)?;
        ensure!(traced.contains("- --otlp-endpoint=http://collector.monitoring:4318/v1/traces"));
        ensure!(traced.contains("- --trace-sample-ratio=0.25"));
        ensure!(
            !deployment(other)?.contains("--otlp-endpoint"),
            "{other} traced too"
        );
        ensure!(
            render(&[&format!(
                r#"{component}.traces.otlpEndpoint="collector:4318""#
            )])
            .is_err()
        );
        ensure!(render(&[&format!("{component}.traces.sampleRatio=2")]).is_err());
    }
    Ok(())
}

/// docs/ingress/*.md show the example files byte for byte, so the manifests users copy are the
/// ones the tests above validate.
#[test]
fn ingress_docs_show_the_tested_example_files() -> Result<()> {
    for example in EXAMPLES {
        let page = repo().join(format!("docs/ingress/{example}.md"));
        let doc = std::fs::read_to_string(&page)
            .with_context(|| format!("reading {}", page.display()))?;
        let dir = repo().join("examples/ingress").join(example);
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("file name")?;
            let text = std::fs::read_to_string(&path)?;
            let shown = format!("`examples/ingress/{example}/{file}`:\n\n```yaml\n{text}```\n");
            ensure!(
                doc.contains(&shown),
                "{} does not show examples/ingress/{example}/{file} as it is",
                page.display()
            );
        }
    }
    // Plain nginx's configuration is not a Kubernetes manifest: shown as nginx.
    let page = repo().join("docs/ingress/nginx.md");
    let doc = std::fs::read_to_string(&page)?;
    let conf = std::fs::read_to_string(repo().join("examples/ingress/nginx/nginx.conf"))?;
    ensure!(
        doc.contains(&format!(
            "`examples/ingress/nginx/nginx.conf`:\n\n```nginx\n{conf}```\n"
        )),
        "{} does not show examples/ingress/nginx/nginx.conf as it is",
        page.display()
    );
    Ok(())
}
