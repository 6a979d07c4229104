//! Trace export settings, from the standard OTEL_* variables, and the SDK
//! pipeline built from them: OTLP/HTTP protobuf, a batch processor with a
//! bounded queue, a sampler, and the process's `service.name`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | unset: no export | collector base URL, `http://host:4318`; spans go to `/v1/traces` |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` | the only protocol built in |
//! | `OTEL_SERVICE_NAME` | per subcommand | `herdgate` (serve), `herdgate-gateway`, `herdgate-writer` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | none | `k=v,...` on every span; its `service.name` counts when `OTEL_SERVICE_NAME` is unset |
//! | `OTEL_TRACES_SAMPLER` | `parentbased_traceidratio` | also `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off` |
//! | `OTEL_TRACES_SAMPLER_ARG` | `1.0` | the ratio of the `*traceidratio` samplers, 0 to 1 |
//!
//! A bad value stops start-up naming the variable, as any other setting does.

use std::time::Duration;

use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider},
};

use crate::config::{ConfigError, Strings};

pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const ENV_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub const ENV_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
pub const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// One export attempt (retries included) gives up after this long, so a
/// collector that accepts connections and never answers holds nothing up.
pub(super) const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and what to export.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The full URL spans are posted to, `.../v1/traces`.
    pub endpoint: String,
    pub service_name: String,
    pub sampling: Sampling,
}

/// Which traces are kept. Parent-based samplers follow the sampled flag of an
/// incoming `traceparent`, so one booking is kept whole or not at all, across
/// the gateway, the relay and the writer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Follow the parent's decision when there is one.
    pub parent_based: bool,
    /// The share of new traces kept, 0 to 1.
    pub ratio: f64,
}

impl Sampling {
    pub(super) fn sampler(self) -> Sampler {
        let root = match self.ratio {
            r if r >= 1.0 => Sampler::AlwaysOn,
            r if r <= 0.0 => Sampler::AlwaysOff,
            r => Sampler::TraceIdRatioBased(r),
        };
        match self.parent_based {
            true => Sampler::ParentBased(Box::new(root)),
            false => root,
        }
    }
}

impl TraceConfig {
    /// `None` when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset: the other variables
    /// are then not even looked at.
    pub fn from_env(
        env: &impl Strings,
        default_service: &str,
    ) -> Result<Option<TraceConfig>, ConfigError> {
        let Some(base) = env.get(ENV_ENDPOINT) else {
            return Ok(None);
        };
        if let Some(protocol) = env.get(ENV_PROTOCOL) {
            if protocol != "http/protobuf" {
                return Err(invalid(
                    ENV_PROTOCOL,
                    &protocol,
                    "only http/protobuf is built in (an OTLP collector's port 4318)",
                ));
            }
        }
        Ok(Some(TraceConfig {
            endpoint: traces_url(&base)?,
            service_name: service_name(env, default_service),
            sampling: sampling(env)?,
        }))
    }
}

/// The signal URL for a base endpoint, as the OTLP exporter spec builds it.
fn traces_url(base: &str) -> Result<String, ConfigError> {
    if !base.starts_with("http://") {
        let reason = match base.starts_with("https://") {
            true => {
                "https needs TLS, which is not built in: use http:// (a local collector or sidecar)"
            }
            false => "must be an http:// URL, e.g. http://localhost:4318",
        };
        return Err(invalid(ENV_ENDPOINT, base, reason));
    }
    let url = format!("{}/v1/traces", base.trim_end_matches('/'));
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(url),
        _ => Err(invalid(ENV_ENDPOINT, base, "not a valid URL")),
    }
}

/// `OTEL_SERVICE_NAME`, else `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else ours.
fn service_name(env: &impl Strings, default_service: &str) -> String {
    if let Some(name) = env.get(ENV_SERVICE_NAME) {
        return name;
    }
    env.get(ENV_RESOURCE_ATTRIBUTES)
        .and_then(|attributes| {
            attributes.split(',').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key.trim() == "service.name" && !value.trim().is_empty())
                    .then(|| value.trim().to_string())
            })
        })
        .unwrap_or_else(|| default_service.to_string())
}

fn sampling(env: &impl Strings) -> Result<Sampling, ConfigError> {
    let name = env
        .get(ENV_SAMPLER)
        .unwrap_or_else(|| "parentbased_traceidratio".to_string());
    let ratio = || match env.get(ENV_SAMPLER_ARG) {
        None => Ok(1.0),
        Some(arg) => match arg.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(invalid(
                ENV_SAMPLER_ARG,
                &arg,
                "must be a number from 0 to 1",
            )),
        },
    };
    let (parent_based, ratio) = match name.as_str() {
        "always_on" => (false, 1.0),
        "always_off" => (false, 0.0),
        "traceidratio" => (false, ratio()?),
        "parentbased_always_on" => (true, 1.0),
        "parentbased_always_off" => (true, 0.0),
        "parentbased_traceidratio" => (true, ratio()?),
        _ => {
            return Err(invalid(
                ENV_SAMPLER,
                &name,
                "must be always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    };
    Ok(Sampling {
        parent_based,
        ratio,
    })
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The SDK pipeline. Its batch processor runs on a thread of its own and takes
/// spans with a non-blocking send into a bounded queue (2,048 spans unless
/// OTEL_BSP_MAX_QUEUE_SIZE says otherwise); when the queue is full, spans are
/// dropped. Nothing here touches the network yet.
pub(super) fn provider(
    config: &TraceConfig,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_sampler(config.sampling.sampler())
        .with_id_generator(super::sampling::ChosenIds::default())
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&'static str, &'static str)]) -> Result<Option<TraceConfig>, String> {
        let env: HashMap<&str, &str> = vars.iter().copied().collect();
        TraceConfig::from_env(&env, "herdgate-gateway").map_err(|e| e.to_string())
    }

    fn sampling_of(vars: &[(&'static str, &'static str)]) -> Result<Sampling, String> {
        let mut vars = vars.to_vec();
        vars.push((ENV_ENDPOINT, "http://collector:4318"));
        parse(&vars).map(|c| c.unwrap().sampling)
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported_and_nothing_else_is_read() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&[(ENV_SAMPLER, "nonsense")]), Ok(None));
    }

    #[test]
    fn the_default_keeps_every_trace_and_follows_the_parent() {
        let config = parse(&[(ENV_ENDPOINT, "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(config.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(config.service_name, "herdgate-gateway");
        assert_eq!(
            config.sampling,
            Sampling {
                parent_based: true,
                ratio: 1.0
            }
        );
    }

    #[test]
    fn samplers_and_ratios_parse() {
        let cases = [
            ("parentbased_traceidratio", Some("0.01"), true, 0.01),
            ("traceidratio", Some("0.5"), false, 0.5),
            ("traceidratio", None, false, 1.0),
            ("always_on", Some("0.2"), false, 1.0),
            ("always_off", None, false, 0.0),
            ("parentbased_always_on", None, true, 1.0),
            ("parentbased_always_off", None, true, 0.0),
        ];
        for (name, arg, parent_based, ratio) in cases {
            let mut vars = vec![(ENV_SAMPLER, name)];
            vars.extend(arg.map(|a| (ENV_SAMPLER_ARG, a)));
            assert_eq!(
                sampling_of(&vars),
                Ok(Sampling {
                    parent_based,
                    ratio
                }),
                "{name} {arg:?}"
            );
        }
        // The argument alone tunes the default sampler.
        assert_eq!(
            sampling_of(&[(ENV_SAMPLER_ARG, "0.25")]).unwrap().ratio,
            0.25
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, variable) in [
            (vec![(ENV_SAMPLER, "jaeger_remote")], ENV_SAMPLER),
            (vec![(ENV_SAMPLER_ARG, "1.5")], ENV_SAMPLER_ARG),
            (vec![(ENV_SAMPLER_ARG, "half")], ENV_SAMPLER_ARG),
            (vec![(ENV_PROTOCOL, "grpc")], ENV_PROTOCOL),
        ] {
            let error = sampling_of(&vars).unwrap_err();
            assert!(error.starts_with(variable), "{error}");
        }
        for endpoint in ["https://collector:4318", "collector:4318", "http://"] {
            let error = parse(&[(ENV_ENDPOINT, endpoint)]).unwrap_err();
            assert!(error.starts_with(ENV_ENDPOINT), "{error}");
        }
    }

    #[test]
    fn the_service_name_comes_from_the_environment_first() {
        let name = |vars: &[(&'static str, &'static str)]| {
            let mut vars = vars.to_vec();
            vars.push((ENV_ENDPOINT, "http://collector:4318"));
            parse(&vars).unwrap().unwrap().service_name
        };
        assert_eq!(name(&[]), "herdgate-gateway");
        assert_eq!(
            name(&[(ENV_RESOURCE_ATTRIBUTES, "env=prod, service.name=tickets")]),
            "tickets"
        );
        assert_eq!(
            name(&[
                (ENV_SERVICE_NAME, "gate-7"),
                (ENV_RESOURCE_ATTRIBUTES, "service.name=tickets")
            ]),
            "gate-7"
        );
    }

    #[test]
    fn ratios_become_the_sdks_samplers() {
        let s = |parent_based, ratio| {
            format!(
                "{:?}",
                Sampling {
                    parent_based,
                    ratio
                }
                .sampler()
            )
        };
        assert_eq!(s(false, 1.0), format!("{:?}", Sampler::AlwaysOn));
        assert_eq!(s(false, 0.0), format!("{:?}", Sampler::AlwaysOff));
        assert_eq!(
            s(true, 0.01),
            format!(
                "{:?}",
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.01)))
            )
        );
    }
}
