//! Logging, set up once per process. RUST_LOG filters (default `info`); JSON lines
//! when standard error is not a terminal, human-readable when it is.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Our info lines, and only the warnings of chatty dependencies.
const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn";

/// Installs the global subscriber. Safe to call more than once (tests do).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if std::io::stderr().is_terminal() {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    };
    // Already installed: keep the first one.
    let _ = result;
}

/// The standard OpenTelemetry variables that configure trace export.
pub const OTEL_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
];
