//! The chart's alerts (`charts/portcullis/files/prometheus-rules.yaml`) and Grafana dashboard
//! (`charts/portcullis/files/grafana-dashboard.json`) against the real components: rendered by
//! the real Helm, every expression parsed as PromQL, and every metric an expression names
//! exposed by a real operator's and a real gateway's `/metrics`. A renamed metric fails here,
//! not silently in someone's Prometheus.

use anyhow::{Context as _, Result, bail, ensure};
use kube::Client;
use portcullis_tests::{TestCluster, fleet::Fleet, tools::Tool};
use promql_parser::parser::{self, Expr};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn chart() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/portcullis")
}

/// `helm template` with the alerts and the dashboard on, as one document per object.
fn rendered() -> Result<Vec<serde_json::Value>> {
    let home =
        std::env::temp_dir().join(format!("portcullis-monitoring-helm-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let out = Command::new(Tool::Helm.path()?)
        .args(["template", "portcullis"])
        .arg(chart())
        .arg("-f")
        .arg(chart().join("../../examples/ingress/traefik/values.yaml"))
        .args([
            "--namespace",
            "portcullis",
            "--set",
            "prometheusRule.enabled=true,grafanaDashboard.enabled=true,serviceMonitor.enabled=true",
        ])
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm template")?;
    let _ = std::fs::remove_dir_all(&home);
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    text.split("\n---")
        .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
        .map(|doc| serde_saphyr::from_str(doc).with_context(|| format!("parsing {doc}")))
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> Result<&'a serde_json::Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} rendered"))
}

/// Every metric name an expression selects.
fn metric_names(expr: &Expr, names: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(e) => {
            metric_names(&e.expr, names);
            if let Some(param) = &e.param {
                metric_names(param, names);
            }
        }
        Expr::Unary(e) => metric_names(&e.expr, names),
        Expr::Binary(e) => {
            metric_names(&e.lhs, names);
            metric_names(&e.rhs, names);
        }
        Expr::Paren(e) => metric_names(&e.expr, names),
        Expr::Subquery(e) => metric_names(&e.expr, names),
        Expr::VectorSelector(vs) => names.extend(vs.name.clone()),
        Expr::MatrixSelector(ms) => names.extend(ms.vs.name.clone()),
        Expr::Call(call) => {
            for arg in &call.args.args {
                metric_names(arg, names);
            }
        }
        _ => {}
    }
}

/// Parses `expr` (Grafana's variables replaced by what they stand for) and adds its metrics.
fn parse_into(what: &str, expr: &str, names: &mut BTreeSet<String>) -> Result<()> {
    let expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$namespace", ".*");
    let parsed = parser::parse(&expr).map_err(|e| anyhow::anyhow!("{what}: {e}\n{expr}"))?;
    let mut own = BTreeSet::new();
    metric_names(&parsed, &mut own);
    ensure!(!own.is_empty(), "{what} names no metric: {expr}");
    names.extend(own);
    Ok(())
}

/// The alert rules: each with an expression, a severity and a summary.
fn alert_metrics(rule: &serde_json::Value) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let groups = rule["spec"]["groups"].as_array().context("no groups")?;
    let mut alerts = BTreeSet::new();
    for group in groups {
        for r in group["rules"].as_array().context("group without rules")? {
            let alert = r["alert"].as_str().context("a rule without a name")?;
            ensure!(alerts.insert(alert.to_owned()), "{alert} twice");
            ensure!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("warning" | "critical")
                ),
                "{alert}: severity"
            );
            ensure!(r["annotations"]["summary"].is_string(), "{alert}: summary");
            ensure!(
                r["annotations"]["description"].is_string(),
                "{alert}: description"
            );
            let expr = r["expr"].as_str().context("a rule without expr")?;
            parse_into(alert, expr, &mut names)?;
        }
    }
    ensure!(alerts.len() >= 8, "only {} alerts", alerts.len());
    Ok(names)
}

/// The dashboard: valid JSON, unique panel ids, every query parsed.
fn dashboard_metrics(config_map: &serde_json::Value) -> Result<BTreeSet<String>> {
    let text = config_map["data"]["portcullis.json"]
        .as_str()
        .context("no portcullis.json in the dashboard ConfigMap")?;
    let dashboard: serde_json::Value = serde_json::from_str(text)?;
    ensure!(dashboard["uid"] == "portcullis-overview", "uid");
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for panel in panels {
        let id = panel["id"].as_u64().context("a panel without an id")?;
        ensure!(ids.insert(id), "panel id {id} twice");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().context("a panel without a title")?;
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        ensure!(!targets.is_empty(), "{title}: no queries");
        for target in targets {
            let expr = target["expr"].as_str().context("a target without expr")?;
            parse_into(title, expr, &mut names)?;
        }
    }
    Ok(names)
}

/// The sample names a `/metrics` text exposes, including those of families with no sample yet
/// (from their `# TYPE` line, with the suffixes their type adds).
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    Ok(reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

#[tokio::test]
async fn alerts_and_dashboard_parse_and_name_only_real_metrics() {
    let docs = rendered().expect("rendering the chart");
    let rule = of_kind(&docs, "PrometheusRule").expect("the PrometheusRule");
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["portcullis.json"].is_string())
        .expect("the dashboard ConfigMap");
    ensure_labelled(dashboard).expect("dashboard labels");
    let mut wanted = alert_metrics(rule).expect("alerts");
    wanted.extend(dashboard_metrics(dashboard).expect("dashboard"));

    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("monitoring", |client: Client, ns: String| async move {
            let dir = portcullis_tests::fsutil::scratch_dir("monitoring", "metrics")?;
            let fleet = Fleet::start_plain(&dir, &client, &kubeconfig, &ns, 1).await?;
            let mut real = exposed(&scrape(fleet.operator.ops_addr).await?);
            real.extend(exposed(&scrape(fleet.gateways[0].ops_addr).await?));
            fleet.stop().await?;
            let unknown: Vec<&String> = wanted.iter().filter(|n| !real.contains(*n)).collect();
            if !unknown.is_empty() {
                bail!("alerts or dashboard name metrics no component exposes: {unknown:?}");
            }
            ensure!(wanted.len() >= 12, "only {} metrics used", wanted.len());
            Ok(())
        })
        .await
        .expect("metrics");
}

fn ensure_labelled(config_map: &serde_json::Value) -> Result<()> {
    ensure!(
        config_map["metadata"]["labels"]["grafana_dashboard"] == "1",
        "the dashboard ConfigMap lacks the sidecar label: {}",
        config_map["metadata"]
    );
    Ok(())
}

#[test]
fn a_misspelt_metric_or_broken_expression_is_caught() {
    let mut names = BTreeSet::new();
    assert!(parse_into("broken", "sum(rate(x[5m])", &mut names).is_err());
    parse_into(
        "ok",
        r#"sum by (le) (rate(portcullis_gateway_check_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])) / on() group_left max(portcullis_gateway_state_age_seconds)"#,
        &mut names,
    )
    .expect("parses");
    assert!(names.contains("portcullis_gateway_check_duration_seconds_bucket"));
    assert!(names.contains("portcullis_gateway_state_age_seconds"));
    let text = "# TYPE portcullis_gateway_checks counter\n# TYPE portcullis_gateway_check_duration_seconds histogram\nportcullis_gateway_state_age_seconds 3\n";
    let real = exposed(text);
    assert!(real.contains("portcullis_gateway_checks_total"));
    assert!(real.contains("portcullis_gateway_check_duration_seconds_bucket"));
    assert!(real.contains("portcullis_gateway_state_age_seconds"));
    assert!(!real.contains("portcullis_gateway_checks"));
}
