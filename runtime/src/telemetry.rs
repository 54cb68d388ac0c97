//! Logs and traces. Logs are JSON lines or text on stdout. Traces are OpenTelemetry spans sent
//! over OTLP/HTTP (protobuf), off unless an endpoint is configured, with W3C Trace Context
//! (`traceparent`, `tracestate`) taken from requests and passed on to upstreams.
//!
//! Spans to export are ordinary `tracing` spans with the target [`TARGET`]. The log layer never
//! sees them (its filter turns that target off, so log lines are the same with traces on or
//! off) and the OTLP layer sees only them. With no endpoint there is no OTLP layer, those spans
//! are disabled at their call sites, and [`enabled`] is false, so nothing is injected either.

use opentelemetry::{propagation::TextMapCompositePropagator, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    runtime,
    trace::{Sampler, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    Layer as _, filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// The target of the spans that are exported, and only of those.
pub const TARGET: &str = "portcullis::trace";

/// Whether spans are exported: set once, when the OTLP layer is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are on (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Where and how much to trace.
#[derive(Clone, Debug, clap::Args)]
pub struct TraceArgs {
    /// OTLP/HTTP endpoint the spans are sent to, with its path, e.g.
    /// `http://otel-collector.monitoring:4318/v1/traces`; none (the default): no traces.
    #[arg(long, env = "PORTCULLIS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<url::Url>,
    /// Share of the traces that start here that are recorded, 0 to 1. A request whose
    /// `traceparent` says its trace is sampled is recorded whatever this says.
    #[arg(long, env = "PORTCULLIS_TRACE_SAMPLE_RATIO", default_value_t = 1.0, value_parser = parse_share)]
    pub trace_sample_ratio: f64,
}

/// A share between 0 and 1 (a flag's value).
pub fn parse_share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{value:?} is not a number from 0 to 1")),
    }
}

/// Why traces could not be set up (a start-up error: a configured endpoint must work).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP endpoint {0}: only http and https")]
    Scheme(url::Url),
    #[error("building the OTLP client: {0}")]
    Client(String),
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}

/// The trace pipeline, while it runs: [`Traces::shutdown`] sends what is still buffered.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports the spans still buffered (bounded by the exporter's timeout), then stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "traces: the last spans were not all sent");
        }
    }
}

/// Who is tracing: the `service.name` and `service.instance.id` of every span.
pub struct Service<'a> {
    pub name: &'static str,
    pub instance: &'a str,
}

/// Installs the log subscriber (JSON lines or text, the level from `RUST_LOG`, default
/// `info`), and with an endpoint in `args` the OTLP trace layer. Must run inside the Tokio
/// runtime (the exporter's batches are sent from a task).
pub fn init(
    log_format: &str,
    service: &Service<'_>,
    args: &TraceArgs,
) -> Result<Option<Traces>, TraceError> {
    let logs = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            format!("{TARGET}=off")
                .parse()
                .map_err(|e| TraceError::Exporter(format!("{e}")))?,
        );
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let fmt = if log_format == "json" {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(logs));
    let Some(endpoint) = &args.otlp_endpoint else {
        registry.init();
        return Ok(None);
    };
    let provider = provider(endpoint, service, args.trace_sample_ratio)?;
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.name))
        .with_filter(Targets::new().with_target(TARGET, LevelFilter::TRACE));
    registry.with(spans).init();
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(%endpoint, ratio = args.trace_sample_ratio, "traces: exporting spans over OTLP/HTTP");
    Ok(Some(Traces { provider }))
}

/// The tracer provider: batches sent by a Tokio task through reqwest, with the system roots
/// (aws-lc-rs) for an https endpoint.
fn provider(
    endpoint: &url::Url,
    service: &Service<'_>,
    ratio: f64,
) -> Result<SdkTracerProvider, TraceError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(TraceError::Scheme(endpoint.clone()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = crate::client_tls::config(roots).map_err(|e| TraceError::Client(e.to_string()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| TraceError::Client(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint.as_str())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name(service.name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            service.instance.to_owned(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The span of one call to the Kubernetes API server (kind client), named for what it does:
/// `patch AccessPolicy status`, `create Event`. The gateway and the operator name their calls
/// alike, so a trace reads the same whichever process made the call.
pub fn api_server_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "api_server",
        otel.name = name,
        otel.kind = "client",
    )
}

/// The trace context `headers` carry (`traceparent`, `tracestate`, `baggage`), made the parent
/// of `span`. Nothing when traces are off.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !enabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context into `headers` (replacing any the client sent), so
/// the upstream's spans join the trace. Nothing when traces are off: the client's headers pass
/// as they came.
pub fn inject(headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !enabled() {
        return;
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_a_share() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("NaN").is_err());
    }
}
