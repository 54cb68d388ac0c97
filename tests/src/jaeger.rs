//! Jaeger v2, a real OTLP receiver, for the trace tests: OTLP/HTTP in, spans kept in memory,
//! Jaeger's query API out. Every port on loopback, chosen free; nothing else listens.

use crate::process::{ManagedProcess, free_port};
use crate::tools::Tool;
use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A running Jaeger.
pub struct Jaeger {
    /// Where the OTLP/HTTP exporter sends spans (`…/v1/traces`).
    pub otlp_endpoint: String,
    query: String,
    process: ManagedProcess,
}

/// One span as the query API shows it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub operation_name: String,
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// A parent (`CHILD_OF`) of a span.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(serde::Deserialize)]
struct Traces {
    #[serde(default)]
    data: Option<Vec<Trace>>,
}

#[derive(serde::Deserialize)]
struct Trace {
    spans: Vec<Span>,
}

impl Jaeger {
    /// Starts Jaeger in `dir` and waits until its query API answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (otlp, query, grpc) = (free_port()?, free_port()?, free_port()?);
        let config = format!(
            r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}}}
extensions:
  jaeger_storage: {{backends: {{mem: {{memory: {{max_traces: 10000}}}}}}}}
  jaeger_query:
    storage: {{traces: mem}}
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{grpc}"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{otlp}"}}}}}}
exporters:
  jaeger_storage_exporter: {{trace_storage: mem}}
"#
        );
        let file = dir.join("jaeger.yaml");
        crate::fsutil::write_public(&file, config.as_bytes())?;
        let mut cmd = Command::new(Tool::Jaeger.path()?);
        cmd.arg("--config").arg(&file);
        let process = ManagedProcess::spawn("jaeger", cmd, &dir.join("jaeger.log"))?;
        let mut jaeger = Self {
            otlp_endpoint: format!("http://127.0.0.1:{otlp}/v1/traces"),
            query: format!("http://127.0.0.1:{query}"),
            process,
        };
        jaeger.wait_ready().await?;
        Ok(jaeger)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.process.ensure_running()?;
            let services = reqwest::get(format!("{}/api/services", self.query)).await;
            if services.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Jaeger not ready:\n{}", self.process.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The spans of trace `trace_id` (32 hex digits) Jaeger holds; none while it has none.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<Span>> {
        self.spans(&format!("{}/api/traces/{trace_id}", self.query))
            .await
    }

    /// Every span of `service` Jaeger holds (its most recent traces, up to 100).
    pub async fn spans_of(&self, service: &str) -> Result<Vec<Span>> {
        self.spans(&format!(
            "{}/api/traces?service={service}&limit=100",
            self.query
        ))
        .await
    }

    /// The spans of the traces a query answers; none for a 404 (nothing stored yet).
    async fn spans(&self, url: &str) -> Result<Vec<Span>> {
        let response = reqwest::get(url).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let traces: Traces = response.error_for_status()?.json().await?;
        Ok(traces
            .data
            .unwrap_or_default()
            .into_iter()
            .flat_map(|t| t.spans)
            .collect())
    }

    /// Polls until `found` accepts what Jaeger holds (spans arrive in batches), for up to 30 s;
    /// what it accepted.
    pub async fn until<F>(&self, what: &str, mut found: F) -> Result<Vec<Span>>
    where
        F: AsyncFnMut(&Jaeger) -> Result<Option<Vec<Span>>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(spans) = found(self).await? {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not in Jaeger after 30 s\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// The first of `spans` named `name`.
pub fn named<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.operation_name == name)
}

impl Span {
    /// The span id of its parent, if it has one.
    pub fn parent(&self) -> Option<&str> {
        self.references.first().map(|r| r.span_id.as_str())
    }
}
