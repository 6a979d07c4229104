//! docker-compose.yml and the Dockerfile, checked against the code without Docker:
//! the variables set are the ones herdgate reads, the URLs name the services that run
//! those stores on their ports, every long-running service has a healthcheck, every
//! dependency waits on a condition, and the image runs as a non-root user. No service
//! is needed.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use herdgate::{
    config::{Config, ENV_ADDR, ENV_VARS},
    telemetry::OTEL_VARS,
};
use serde::Deserialize;
use serde_norway::Value;

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Service {
    image: Option<String>,
    build: Option<Value>,
    entrypoint: Option<Value>,
    command: Option<Value>,
    environment: Option<Value>,
    ports: Vec<String>,
    volumes: Vec<String>,
    depends_on: Option<Value>,
    healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Healthcheck {
    test: Option<Value>,
    disable: bool,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn compose_value() -> Value {
    serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses")
}

fn compose() -> Compose {
    serde_norway::from_value(compose_value()).expect("docker-compose.yml has the expected shape")
}

/// A scalar as compose would pass it on: strings as they are, numbers and bools printed.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// Flattens a string or a list of strings (command, entrypoint, healthcheck test).
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => vec![scalar(other)],
    }
}

/// Compose's interpolation, enough for this file: `$$` is a literal `$`, and
/// `${NAME:-default}` / `${NAME-default}` take the default (no variable is set in a test).
fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let body = &tail[..end];
            let default = body
                .split_once(":-")
                .or_else(|| body.split_once('-'))
                .map(|(_, default)| default)
                .ok_or_else(|| format!("${{{body}}} has no default, so it depends on the shell"))?;
            out.push_str(default);
            rest = &tail[end + 1..];
        } else {
            return Err(format!(
                "bare $ in {s:?}: compose would substitute it (write $$ for a literal $)"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Service {
    /// Built from this repository's Dockerfile: runs herdgate.
    fn is_herdgate(&self) -> bool {
        self.build.is_some()
    }

    fn env(&self) -> BTreeMap<String, String> {
        match &self.environment {
            None => BTreeMap::new(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(k, v)| (scalar(k), interpolate(&scalar(v)).unwrap()))
                .collect(),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| {
                    let item = scalar(item);
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    (k.to_string(), interpolate(v).unwrap())
                })
                .collect(),
            Some(other) => panic!("environment must be a map or a list, found {other:?}"),
        }
    }

    /// The services this one waits for, each with its condition.
    fn depends_on(&self) -> BTreeMap<String, Option<String>> {
        match &self.depends_on {
            None => BTreeMap::new(),
            Some(Value::Sequence(names)) => names.iter().map(|n| (scalar(n), None)).collect(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(name, spec)| {
                    let condition = spec.get("condition").map(scalar);
                    (scalar(name), condition)
                })
                .collect(),
            Some(other) => panic!("depends_on must be a map or a list, found {other:?}"),
        }
    }

    /// (host port, container port) of each published port.
    fn published(&self) -> Vec<(String, u16, u16)> {
        self.ports
            .iter()
            .map(|spec| {
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                let [container, host, ip] = parts[..] else {
                    panic!("{spec:?}: publish as ip:host:container, e.g. 127.0.0.1:8080:8080");
                };
                (
                    ip.to_string(),
                    host.parse().unwrap(),
                    container.parse().unwrap(),
                )
            })
            .collect()
    }
}

/// The services some other service waits on to finish: migrate.
fn one_shots(compose: &Compose) -> Vec<String> {
    let mut names: Vec<String> = compose
        .services
        .values()
        .flat_map(|s| s.depends_on())
        .filter(|(_, c)| c.as_deref() == Some("service_completed_successfully"))
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Each store's URL variable, the image its service runs, and the port its clients use.
const STORES: &[(&str, &str, u16)] = &[
    ("DATABASE_URL", "postgres:", 5432),
    ("REDIS_URL", "redis:", 6379),
    ("AMQP_URL", "rabbitmq:", 5672),
];

/// The one service whose image starts with `image_prefix` (e.g. `postgres:`).
fn service_running<'a>(compose: &'a Compose, image_prefix: &str) -> &'a str {
    let found: Vec<&String> = compose
        .services
        .iter()
        .filter(|(_, s)| {
            s.image
                .as_deref()
                .is_some_and(|i| i.starts_with(image_prefix))
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one service runs {image_prefix}*: {found:?}"
    );
    found[0]
}

#[test]
fn herdgate_services_set_only_variables_herdgate_reads() {
    let compose = compose();
    for (name, service) in compose.services.iter().filter(|(_, s)| s.is_herdgate()) {
        for var in service.env().keys() {
            assert!(
                ENV_VARS.contains(&var.as_str()) || OTEL_VARS.contains(&var.as_str()),
                "{name} sets {var}, which herdgate never reads (config::ENV_VARS, telemetry::OTEL_VARS)"
            );
        }
    }
}

#[test]
fn herdgate_services_environment_is_a_valid_config() {
    let compose = compose();
    for (name, service) in compose.services.iter().filter(|(_, s)| s.is_herdgate()) {
        let env: HashMap<String, String> = service.env().into_iter().collect();
        if let Err(e) = Config::from_env(&env) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn every_string_survives_compose_interpolation() {
    fn walk(value: &Value, errors: &mut Vec<String>) {
        match value {
            Value::String(s) => errors.extend(interpolate(s).err()),
            Value::Sequence(items) => items.iter().for_each(|v| walk(v, errors)),
            Value::Mapping(map) => map.values().for_each(|v| walk(v, errors)),
            _ => {}
        }
    }
    let mut errors = Vec::new();
    walk(&compose_value(), &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn store_urls_name_the_service_and_port_of_that_store() {
    let compose = compose();
    for (name, service) in compose.services.iter().filter(|(_, s)| s.is_herdgate()) {
        let env = service.env();
        let waits_for = service.depends_on();
        for &(var, image, port) in STORES {
            let Some(url) = env.get(var) else { continue };
            let uri: http::Uri = url.parse().unwrap_or_else(|e| panic!("{name} {var}: {e}"));
            let store = service_running(&compose, image);
            assert_eq!(
                uri.host(),
                Some(store),
                "{name} {var} names the {image} service"
            );
            assert_eq!(uri.port_u16(), Some(port), "{name} {var} uses port {port}");
            assert_eq!(
                waits_for.get(store).cloned().flatten().as_deref(),
                Some("service_healthy"),
                "{name} reads {var}, so it waits for {store} to be healthy"
            );
        }
    }
}

#[test]
fn traces_go_to_jaeger_on_the_port_of_their_protocol() {
    let compose = compose();
    let jaeger = service_running(&compose, "jaegertracing/");
    for (name, service) in compose.services.iter().filter(|(_, s)| s.is_herdgate()) {
        let env: HashMap<String, String> = service.env().into_iter().collect();
        let Some(endpoint) = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") else {
            continue;
        };
        // herdgate's own reading of the variables: a protocol it cannot speak fails here.
        let traces = herdgate::telemetry::TraceConfig::from_env(&env, "herdgate")
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .expect("an endpoint is set");
        assert!(traces.endpoint.ends_with("/v1/traces"), "{traces:?}");
        let (protocol, port) = ("http/protobuf", 4318);
        let uri: http::Uri = endpoint.parse().unwrap();
        assert_eq!(uri.host(), Some(jaeger), "{name} sends traces to Jaeger");
        assert_eq!(
            uri.port_u16(),
            Some(port),
            "{name}: OTLP {protocol} is on {port}"
        );
    }
}

#[test]
fn the_gateway_listens_publishes_and_probes_8080() {
    let compose = compose();
    let gateway = &compose.services["gateway"];
    let env: HashMap<String, String> = gateway.env().into_iter().collect();
    let config = Config::from_env(&env).unwrap();
    assert_eq!(config.http.addr.port(), 8080, "{ENV_ADDR} (or its default)");
    assert!(
        gateway
            .published()
            .iter()
            .any(|&(_, host, container)| host == 8080 && container == 8080),
        "the gateway publishes 8080:8080: {:?}",
        gateway.ports
    );
    let probe = words(gateway.healthcheck.as_ref().unwrap().test.as_ref().unwrap()).join(" ");
    assert!(probe.contains("/dev/tcp/127.0.0.1/8080"), "{probe}");
    assert!(
        read("Dockerfile")
            .lines()
            .any(|l| l.trim() == "EXPOSE 8080")
    );
}

#[test]
fn ports_are_published_on_loopback_only() {
    for (name, service) in compose().services {
        for (ip, host, _) in service.published() {
            assert_eq!(
                ip, "127.0.0.1",
                "{name} publishes {host} beyond this machine"
            );
        }
    }
}

#[test]
fn every_long_running_service_has_a_healthcheck() {
    let compose = compose();
    let one_shots = one_shots(&compose);
    assert_eq!(one_shots, ["migrate"]);
    for (name, service) in &compose.services {
        if one_shots.contains(name) {
            assert!(
                service.healthcheck.is_none(),
                "{name} exits: no healthcheck"
            );
            continue;
        }
        let check = service.healthcheck.as_ref();
        let test = check.and_then(|c| c.test.as_ref()).map(words);
        assert!(
            !check.is_some_and(|c| c.disable)
                && test.as_ref().is_some_and(|t| {
                    matches!(t.first().map(String::as_str), Some("CMD" | "CMD-SHELL"))
                }),
            "{name} needs a healthcheck (test: [CMD, ...]), has {test:?}"
        );
    }
}

#[test]
fn every_dependency_exists_and_has_a_condition() {
    let compose = compose();
    let one_shots = one_shots(&compose);
    for (name, service) in &compose.services {
        for (dependency, condition) in service.depends_on() {
            let Some(target) = compose.services.get(&dependency) else {
                panic!("{name} depends on {dependency}, which is not a service");
            };
            match condition.as_deref() {
                Some("service_healthy") => assert!(
                    target.healthcheck.is_some(),
                    "{name} waits for {dependency} to be healthy, which has no healthcheck"
                ),
                Some("service_completed_successfully") => {
                    assert!(one_shots.contains(&dependency))
                }
                Some("service_started") => {}
                other => panic!("{name} depends on {dependency} with condition {other:?}"),
            }
        }
    }
}

#[test]
fn gateway_and_writer_start_after_migrate_and_seed() {
    let compose = compose();
    let migrate = &compose.services["migrate"];
    let script = [&migrate.entrypoint, &migrate.command]
        .into_iter()
        .flatten()
        .flat_map(words)
        .collect::<Vec<_>>()
        .join(" ");
    let migrate_at = script.find("herdgate migrate").expect(&script);
    let seed_at = script.find("herdgate seed").expect(&script);
    assert!(migrate_at < seed_at, "migrate runs before seed: {script}");
    assert!(
        script.contains("&&"),
        "seed runs only when migrate succeeded: {script}"
    );
    for (name, command) in [("gateway", "gateway"), ("writer", "writer")] {
        let service = &compose.services[name];
        assert_eq!(words(service.command.as_ref().unwrap()), [command]);
        assert_eq!(
            service
                .depends_on()
                .get("migrate")
                .cloned()
                .flatten()
                .as_deref(),
            Some("service_completed_successfully"),
            "{name}"
        );
    }
}

#[test]
fn herdgate_images_build_from_the_dockerfile() {
    let compose = compose();
    for name in ["gateway", "writer", "migrate"] {
        let service = &compose.services[name];
        let (context, dockerfile) = match service.build.as_ref() {
            Some(Value::String(context)) => (context.clone(), "Dockerfile".to_string()),
            Some(Value::Mapping(map)) => (
                map.get("context").map(scalar).unwrap_or_default(),
                map.get("dockerfile")
                    .map(scalar)
                    .unwrap_or_else(|| "Dockerfile".into()),
            ),
            other => panic!("{name} must build from the Dockerfile, has build: {other:?}"),
        };
        assert!(
            matches!(context.as_str(), "." | "./"),
            "{name}: context {context}"
        );
        assert_eq!(dockerfile, "Dockerfile", "{name}");
    }
    assert!(root().join("Dockerfile").is_file());
}

#[test]
fn redis_keeps_an_append_only_file_synced_every_second() {
    let compose = compose();
    let redis = &compose.services[service_running(&compose, "redis:")];
    let command = words(redis.command.as_ref().expect("redis has a command")).join(" ");
    assert!(command.contains("--appendonly yes"), "{command}");
    assert!(command.contains("--appendfsync everysec"), "{command}");
}

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    instructions
}

#[test]
fn the_runtime_stage_runs_herdgate_as_a_non_root_user() {
    let instructions = dockerfile();
    let last_from = instructions.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let runtime = &instructions[last_from..];
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, user)| user.clone())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(!matches!(uid, "root" | "0" | ""), "USER {user}");
    let entrypoint = runtime.iter().find(|(k, _)| k == "ENTRYPOINT").unwrap();
    assert_eq!(entrypoint.1, r#"["herdgate"]"#);
}

#[test]
fn the_build_stage_copies_what_the_binary_embeds() {
    let copied: Vec<String> = dockerfile()
        .into_iter()
        .filter(|(k, args)| k == "COPY" && !args.starts_with("--from"))
        .flat_map(|(_, args)| {
            let mut paths: Vec<String> = args.split_whitespace().map(String::from).collect();
            paths.pop(); // the destination
            paths
        })
        .collect();
    let ignored = read(".dockerignore");
    let rules: Vec<&str> = ignored
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    // src: the code; lua, migrations, seed: include_str! and embed_migrations!;
    // load-testing/herdgate-load: a workspace member, whose manifest cargo reads.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "lua",
        "migrations",
        "seed",
        "load-testing/herdgate-load",
    ] {
        assert!(copied.iter().any(|c| c == needed), "COPY {needed}");
        // Left out by its own rule or a parent's, unless a later `!` takes it back.
        let left_out = needed
            .match_indices('/')
            .map(|(at, _)| &needed[..at])
            .chain([needed])
            .any(|path| rules.contains(&path));
        assert!(
            !left_out || rules.contains(&format!("!{needed}").as_str()),
            ".dockerignore leaves out {needed}"
        );
    }
}

#[test]
fn the_rust_image_is_at_least_the_crates_rust_version() {
    let instructions = dockerfile();
    let args: HashMap<&str, &str> = instructions
        .iter()
        .filter(|(k, _)| k == "ARG")
        .filter_map(|(_, a)| a.split_once('='))
        .collect();
    let from = instructions
        .iter()
        .find(|(k, a)| k == "FROM" && a.starts_with("rust:"))
        .map(|(_, a)| a.as_str())
        .expect("a build stage FROM rust:...");
    let tag = from
        .strip_prefix("rust:")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let tag = tag.replace("${RUST_VERSION}", args.get("RUST_VERSION").unwrap_or(&""));
    assert!(tag.ends_with("-bookworm"), "a Debian bookworm image: {tag}");
    let version = |v: &str| -> (u32, u32) {
        let mut parts = v.split(['.', '-']).map(|p| p.parse().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let image = version(&tag);
    let required = version(env!("CARGO_PKG_RUST_VERSION"));
    assert!(
        image >= required,
        "rust:{tag} is older than rust-version {required:?}"
    );
}

#[test]
fn prometheus_scrapes_every_gateway_and_writer_where_they_serve_metrics() {
    let compose = compose();
    let scrape: Value = serde_norway::from_str(&read("deploy/prometheus/prometheus.yml"))
        .expect("prometheus.yml parses");
    let mut jobs = BTreeMap::new();
    for job in scrape["scrape_configs"].as_sequence().unwrap() {
        for sd in job["dns_sd_configs"].as_sequence().unwrap() {
            for name in sd["names"].as_sequence().unwrap() {
                jobs.insert(scalar(name), sd["port"].as_u64().unwrap() as u16);
            }
        }
    }
    for name in ["gateway", "writer"] {
        let env: HashMap<String, String> = compose.services[name].env().into_iter().collect();
        let config = Config::from_env(&env).unwrap();
        let port = match name {
            "gateway" => config.http.addr.port(),
            _ => config.writer.metrics_addr.port(),
        };
        assert_eq!(jobs.get(name), Some(&port), "{name} is scraped on {port}");
    }
    assert_eq!(jobs.len(), 2, "{jobs:?}");
}

#[test]
fn every_file_mounted_into_a_service_is_in_the_repository() {
    let mut mounts = 0;
    for (name, service) in compose().services {
        for volume in &service.volumes {
            let source = volume.split(':').next().unwrap();
            if source.starts_with("./") {
                mounts += 1;
                assert!(root().join(source).exists(), "{name} mounts {source}");
            }
        }
    }
    // Prometheus's config, Grafana's provisioning and its dashboards.
    assert!(mounts >= 3);
}
