//! The operator's traces, as a collector receives them: the real operator exports OTLP/HTTP to a
//! real Jaeger while it reconciles against the real API server, and the test reads what Jaeger
//! stored.
//!
//! - a new policy is one `reconcile` span whose children are the API-server writes it caused:
//!   the status patch and the `Ready` Event;
//! - a revocation is another: the session's status patch and its `Revoked` Event.

use anyhow::{Context as _, Result, ensure};
use kube::Client;
use portcullis_tests::{
    cluster::TestCluster,
    fleet::{Fleet, FleetOptions},
    fsutil::sibling_binary,
    jaeger::{Jaeger, Span},
};

const SERVICE: &str = "portcullis-operator";

/// The spans named `child` whose parent is a `reconcile` span of the same trace, once there is
/// one for each of `children`.
fn under_reconcile<'a>(spans: &'a [Span], children: &[&str]) -> Option<Vec<&'a Span>> {
    let reconciles: Vec<&Span> = spans
        .iter()
        .filter(|s| s.operation_name == "reconcile")
        .collect();
    let mut found = Vec::new();
    for child in children {
        let span = spans.iter().find(|s| {
            s.operation_name == *child
                && reconciles
                    .iter()
                    .any(|r| r.trace_id == s.trace_id && s.parent() == Some(r.span_id.as_str()))
        })?;
        found.push(span);
    }
    Some(found)
}

#[tokio::test]
async fn reconciles_and_their_api_server_writes_are_traced() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("op-traces", |client: Client, ns: String| async move {
            let dir = portcullis_tests::fsutil::scratch_dir("operator-traces", "otlp")?;
            let jaeger = Jaeger::start(&dir.join("jaeger")).await?;
            let fleet = Fleet::start(FleetOptions {
                dir: &dir,
                client: &client,
                kubeconfig: &kubeconfig,
                namespace: &ns,
                gateway_bin: &sibling_binary("portcullis-gateway")?,
                operator_bin: &sibling_binary("portcullis-operator")?,
                gateways: 0,
                gateway_env: Vec::new(),
                operator_env: vec![
                    (
                        "PORTCULLIS_OTLP_ENDPOINT".into(),
                        jaeger.otlp_endpoint.clone(),
                    ),
                    // Batches every 200 ms instead of 5 s, so the test waits less.
                    ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
                ],
            })
            .await?;

            // The fleet's policy: accepted, its status written and its Ready Event published.
            jaeger
                .until("the policy's reconcile", async |j: &Jaeger| {
                    let spans = j.spans_of(SERVICE).await?;
                    let wanted = ["patch AccessPolicy status", "publish Event"];
                    Ok(under_reconcile(&spans, &wanted).is_some().then_some(spans))
                })
                .await
                .with_context(|| fleet.operator.log_tail())?;

            fleet.create_session("traced").await?;
            fleet.revoke("traced").await?;
            let spans = jaeger
                .until("the revocation's reconcile", async |j: &Jaeger| {
                    let spans = j.spans_of(SERVICE).await?;
                    let wanted = ["patch AccessSession status"];
                    Ok(under_reconcile(&spans, &wanted).is_some().then_some(spans))
                })
                .await
                .with_context(|| fleet.operator.log_tail())?;
            let patch = under_reconcile(&spans, &["patch AccessSession status"])
                .and_then(|found| found.first().copied())
                .context("the session's status patch")?;
            // Its Revoked Event belongs to the same reconcile.
            ensure!(
                spans.iter().any(|s| s.operation_name == "publish Event"
                    && s.trace_id == patch.trace_id
                    && s.parent() == patch.parent()),
                "no Event beside the session's status patch: {spans:?}"
            );
            fleet.stop().await
        })
        .await
}
