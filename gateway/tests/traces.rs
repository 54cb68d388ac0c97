//! Traces, as an operator's collector receives them: the real gateway (cluster mode, real Dex,
//! real API server) exports OTLP/HTTP to a real Jaeger, and the test reads what Jaeger stored.
//!
//! - a login is traced: the identity provider's code exchange and the API-server write of the
//!   new AccessSession are spans of the gateway;
//! - a proxied request continues the client's trace (`traceparent`): the request, its access
//!   check and the upstream call are spans of that trace, the check and the upstream call
//!   children of the request, and the upstream receives the trace with the gateway's upstream
//!   span as its parent, not the client's header as it came.

use anyhow::{Context as _, Result, ensure};
use kube::Client;
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    jaeger::{Jaeger, named},
};
use reqwest::Url;

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "traced.portcullis.test";
const SERVICE: &str = "portcullis-gateway";

/// The client's trace: W3C version 00, a trace id and a parent span id of its own, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn manifests(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
apiVersion: access.portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: apps, namespace: demo }}
spec:
  hosts: [{APP}]
  identityProviders: [dex]
  upstream: {{ url: "http://{upstream}" }}
  rules: [{{ action: Allow, include: [{{ emailDomains: [example.com] }}] }}]
"#
    )
}

#[tokio::test]
async fn logins_and_proxied_requests_are_traced_through_to_the_upstream() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("gw-traces", |_client: Client, ns: String| async move {
            let dir = portcullis_tests::fsutil::scratch_dir("traces", "otlp")?;
            let jaeger = Jaeger::start(&dir.join("jaeger")).await?;
            let upstream = portcullis_tests::upstream::echo().await?;
            let endpoint = jaeger.otlp_endpoint.clone();
            let (gateway, dex) = portcullis_tests::gateway::start_with_sessions(
                env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
                &dir,
                &kubeconfig,
                &ns,
                (AUTH, &[APP]),
                &manifests(upstream),
                |config| {
                    config
                        .env
                        .push(("PORTCULLIS_OTLP_ENDPOINT".into(), endpoint));
                    // Batches every 200 ms instead of 5 s, so the test waits less.
                    config
                        .env
                        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
                },
            )
            .await?;

            let browser = gateway.browser()?;
            let user = dex.info.user("alice")?.clone();
            let start = Url::parse(&format!("{}/", gateway.origin(APP)))?;
            dex::follow_login(&browser, start, &user, Connector::Password, |u| {
                u.host_str() == Some(APP) && u.path() == "/"
            })
            .await
            .with_context(|| gateway.log_tail())?;
            let login = jaeger
                .until("the login's spans", async |j: &Jaeger| {
                    let spans = j.spans_of(SERVICE).await?;
                    let both = named(&spans, "exchange code").is_some()
                        && named(&spans, "create AccessSession").is_some();
                    Ok(both.then_some(spans))
                })
                .await?;
            ensure!(named(&login, "check").is_some(), "no check span: {login:?}");

            let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
            let echoed: serde_json::Value = browser
                .get(format!("{}/hello", gateway.origin(APP)))
                .header("traceparent", &traceparent)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let forwarded = echoed["headers"]["traceparent"]
                .as_str()
                .with_context(|| format!("no traceparent upstream: {echoed}"))?
                .to_owned();

            let spans = jaeger
                .until("the request's trace", async |j: &Jaeger| {
                    let spans = j.trace(TRACE_ID).await?;
                    let all = ["GET", "check", "upstream"]
                        .iter()
                        .all(|n| named(&spans, n).is_some());
                    Ok(all.then_some(spans))
                })
                .await?;
            let request = named(&spans, "GET").context("request span")?;
            let check = named(&spans, "check").context("check span")?;
            let proxied = named(&spans, "upstream").context("upstream span")?;
            ensure!(
                request.parent() == Some(CLIENT_SPAN),
                "the request does not continue the client's trace: {request:?}"
            );
            ensure!(
                check.parent() == Some(request.span_id.as_str())
                    && proxied.parent() == Some(request.span_id.as_str()),
                "check and upstream are not children of the request: {spans:?}"
            );
            ensure!(
                forwarded == format!("00-{TRACE_ID}-{}-01", proxied.span_id),
                "the upstream got {forwarded}, not the gateway's upstream span {}",
                proxied.span_id
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
}
