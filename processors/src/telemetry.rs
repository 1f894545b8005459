//! Logs and, when configured, exported traces of one process.
//!
//! Logs go to stderr, text or JSON (`log_format`), filtered by `RUST_LOG`. With
//! `otlp_endpoint` set, the engine's spans (one `record` span per processed record, with
//! the W3C trace context its Kafka headers carry) are also exported over OTLP/gRPC, batched
//! on a thread of their own; `RUST_LOG` does not filter them, so quiet logs do not
//! silence traces.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, TracerProviderBuilder};
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::Settings;
use crate::engine::trace::RecordIds;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Keeps exporting while alive; dropping it flushes the spans not yet sent (a process
/// that exits normally — SIGTERM included — loses none).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    // The gRPC channel's I/O runs here; dropped after the provider's last flush.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing the last spans to the OTLP collector failed: {e}");
        }
    }
}

/// Servers log at info; operator tools only warn (their output is what they print).
/// Spans are exported only by servers, as `service` (unless `OTEL_SERVICE_NAME` says
/// otherwise).
pub fn init(settings: &Settings, server: bool, service: &str) -> Result<Telemetry, TelemetryError> {
    let default = if server {
        "info,librdkafka=warn,rdkafka=warn"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs = if settings.log_format == "json" {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    let (provider, runtime) = match (&settings.otlp_endpoint, server) {
        (Some(endpoint), true) => {
            let (provider, runtime) = otlp(endpoint, service, &settings.instance_id)?;
            (Some(provider), Some(runtime))
        }
        _ => (None, None),
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("erp"))
            .with_filter(exported())
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    if let Some(endpoint) = &settings.otlp_endpoint
        && server
    {
        tracing::info!(%endpoint, service, "exporting spans over OTLP");
    }
    Ok(Telemetry {
        provider,
        _runtime: runtime,
    })
}

/// The project's own spans and events at info and above: not the exporter's (which would
/// feed itself), not the Kafka client's.
pub fn exported() -> Targets {
    Targets::new()
        .with_target("erp_processors", Level::INFO)
        .with_target("erp_connectors", Level::INFO)
        .with_target("erp_query_api", Level::INFO)
        .with_target("erp_state_stores", Level::INFO)
}

/// A tracer provider whose record spans carry the ids of their traceparent headers (see
/// `engine::trace::RecordIds`); tests add an in-memory exporter to it.
pub fn tracer_provider(resource: Resource) -> TracerProviderBuilder {
    SdkTracerProvider::builder()
        .with_id_generator(RecordIds::default())
        .with_resource(resource)
}

fn otlp(
    endpoint: &str,
    service: &str,
    instance_id: &str,
) -> Result<(SdkTracerProvider, tokio::runtime::Runtime), TelemetryError> {
    // tonic needs a Tokio runtime for its connection; the batch processor's own thread
    // only waits on the export futures.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp")
        .enable_all()
        .build()?;
    let exporter = runtime
        .block_on(async {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
        })
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let mut resource = Resource::builder().with_attribute(KeyValue::new(
        "service.instance.id",
        instance_id.to_string(),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    let provider = tracer_provider(resource.build())
        .with_batch_exporter(exporter)
        .build();
    Ok((provider, runtime))
}
