//! Logging and tracing: an `EnvFilter` from `--log-level` (or `RUST_LOG`), text or JSON output,
//! and OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. `init` returns a guard that
//! flushes and shuts the trace provider down when dropped. Does I/O (stderr, OTLP).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::args::{LogFormat, TelemetryArgs};

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Otlp {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already set: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

impl TelemetryError {
    /// Bounded name for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Filter { .. } => "InvalidLogFilter",
            Self::Otlp { .. } => "OtlpExporter",
            Self::Init(_) => "SubscriberInit",
        }
    }
}

/// Keeps telemetry alive; flushes and shuts down trace export when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.force_flush() {
                eprintln!("telemetry: flushing traces failed: {err}");
            }
            if let Err(err) = provider.shutdown() {
                eprintln!("telemetry: shutting down trace export failed: {err}");
            }
        }
    }
}

/// The filter: `RUST_LOG` when set, else `--log-level`.
pub fn env_filter(log_level: &str) -> Result<EnvFilter, TelemetryError> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| log_level.to_owned());
    EnvFilter::builder()
        .parse(&filter)
        .map_err(|source| TelemetryError::Filter { filter, source })
}

/// Sets up the global subscriber for `service` (the OTLP `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise). Must be called inside a Tokio runtime when OTLP is on.
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<TelemetryGuard, TelemetryError> {
    let filter = env_filter(&args.log_level)?;
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    {
        Some(endpoint) => Some(otlp_provider(service, endpoint)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

fn otlp_provider(service: &'static str, endpoint: String) -> Result<SdkTracerProvider, TelemetryError> {
    // The exporter reads the endpoint and headers from the standard OTEL_* variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|source| TelemetryError::Otlp { endpoint, source })?;
    let resource = Resource::builder().with_service_name(service).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_reported() {
        // RUST_LOG is not set by the test runner; a broken directive must be named.
        if std::env::var("RUST_LOG").is_ok() {
            return;
        }
        let err = env_filter("serin=notalevel").expect_err("rejects");
        assert_eq!(err.category(), "InvalidLogFilter");
        assert!(err.to_string().contains("serin=notalevel"), "{err}");
        assert!(env_filter("info,serin=debug").is_ok());
    }

    #[test]
    fn guard_without_otlp_exports_nothing() {
        let guard = TelemetryGuard { provider: None };
        assert!(!guard.exports_traces());
    }
}
