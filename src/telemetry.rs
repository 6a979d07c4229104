//! Telemetry, set up once per process: logs always, traces when asked for.
//!
//! Logs: RUST_LOG filters (default `info`); JSON lines when standard error is not
//! a terminal, human-readable when it is. A line logged inside a traced span lists
//! that span's `trace_id` among its spans' fields.
//!
//! Traces: exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! ([`export`] reads the variables). Without it there is no exporter, no span is
//! created for tracing's sake ([`exporting`] is false), and nothing is printed.
//! Spans go through a bounded batch queue on a thread of the SDK's own: a slow or
//! absent collector costs dropped spans, never a slower request.

pub mod context;
mod export;
mod sampling;
pub mod spans;

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, dynamic_filter_fn, filter_fn},
    fmt,
    layer::Filter,
    prelude::*,
};

pub use export::{Sampling, TraceConfig};
pub use sampling::Untraced;

/// Every OTEL_* variable herdgate reads (the SDK itself also honours OTEL_BSP_*
/// and OTEL_EXPORTER_OTLP_HEADERS / _COMPRESSION; see docs/operations.md, Traces).
pub const OTEL_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// Our info lines, and only the warnings of chatty dependencies.
const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn";

/// Spans exported: herdgate's own, whatever RUST_LOG says about logs.
const TRACED: &str = "herdgate";

/// How long shutdown waits for the last spans to reach the collector. The SDK
/// gives up an export after [`export::EXPORT_TIMEOUT`]; this bounds the wait
/// even when an export is stuck.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True when traces are exported. The request, script, publish and apply spans
/// exist only then, so a process without a collector pays nothing for them.
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber, logs only. Safe to call more than once (tests do).
pub fn init() {
    let _ = init_with(None);
}

/// Installs the global subscriber, exporting traces when `traces` is given.
/// Keep the returned [`Telemetry`] and shut it down on the way out.
pub fn init_with(traces: Option<&TraceConfig>) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let provider = match traces.map(export::provider) {
        None => {
            logs_only(filter);
            return Telemetry { provider: None };
        }
        Some(Err(e)) => {
            // The URL was checked already: the HTTP client itself failed to start.
            logs_only(filter);
            tracing::error!(error = %e, "trace export unavailable, running without it");
            return Telemetry { provider: None };
        }
        Some(Ok(provider)) => provider,
    };
    let tracer = provider.tracer("herdgate");
    // Each layer filters for itself: RUST_LOG=warn quiets the logs, not the traces.
    let logs = if std::io::stderr().is_terminal() {
        fmt::layer().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(trace_filter());
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(log_filter(filter)))
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        // Someone else's subscriber is in place: our spans would go nowhere.
        let _ = provider.shutdown_with_timeout(Duration::ZERO);
        return Telemetry { provider: None };
    }
    if let Some(traces) = traces {
        sampling::install(traces.sampling.sampler());
    }
    EXPORTING.store(true, Ordering::Relaxed);
    Telemetry {
        provider: Some(provider),
    }
}

/// The logs' filter while exporting: RUST_LOG, and the head spans (which
/// carry `trace_id`) whatever RUST_LOG says, so that a line logged inside one
/// (a warning under RUST_LOG=warn) still names its trace.
fn log_filter<S>(env: EnvFilter) -> impl Filter<S> {
    env.or(filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with(TRACED) && spans::HEADS.contains(&meta.name())
    }))
}

/// The spans exported: herdgate's head spans, and herdgate's spans inside
/// them; a dropped request's inner spans stay out.
fn trace_filter<S>() -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    dynamic_filter_fn(|meta, cx| {
        meta.target().starts_with(TRACED)
            && *meta.level() <= Level::INFO
            && (spans::HEADS.contains(&meta.name()) || cx.lookup_current().is_some())
    })
}

/// Exactly the logging of a process that never heard of traces.
fn logs_only(filter: EnvFilter) {
    let registry = tracing_subscriber::registry().with(filter);
    // Already installed: keep the first one.
    let _ = if std::io::stderr().is_terminal() {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    };
}

/// The trace pipeline of this process, flushed by [`Telemetry::shutdown`].
#[must_use = "shut it down on the way out, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still queued, waiting [`FLUSH_WAIT`] at most.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        // The SDK blocks its caller while it flushes: not on a runtime worker.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_WAIT)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "the last spans may not have reached the collector");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the JSON log layer writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_inside_a_request_span_names_its_trace() {
        let lines = Lines::default();
        let writer = lines.clone();
        // No exporter: spans are sampled and dropped, which is all this needs.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .json()
                    .with_writer(move || writer.clone())
                    .with_filter(log_filter(EnvFilter::new("warn"))),
            )
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(trace_filter()),
            );
        let request = http::Request::post("/api/bookings")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = spans::request(&request, Some("/api/bookings")).unwrap();
            let _entered = span.enter();
            tracing::warn!("something went wrong");
            let own = context::traceparent(&span).unwrap();
            assert!(own.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert!(
                own.ends_with("-01"),
                "the client's sampled flag carries on: {own}"
            );
        });
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
        assert_eq!(
            line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{logged}"
        );
    }
}
