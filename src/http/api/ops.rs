//! What operators and their tools call: liveness, readiness, metrics and the
//! API description. None of these count against the in-flight bound.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::{
    app::{App, Readiness},
    http::{
        problem::Problem,
        response::{Answer, json_bytes, json_response},
        router::OPENAPI,
    },
    metric,
};

/// `GET /healthz`: the process is up.
pub fn healthz() -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &json!({"status": "up"}))
}

/// `GET /readyz`: every backend answers, and the gateway is not about to stop
/// (after SIGTERM it answers 503 for `HERDGATE_DRAIN_DELAY`, still serving, so
/// a load balancer sends nothing new before the drain).
pub async fn readyz(app: &App) -> Answer {
    if app.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(
            Problem::unavailable("the gateway is stopping: send requests elsewhere", 1)
                .with("draining", json!(true)),
        );
    }
    ready_answer(app.readiness().await)
}

/// 200 with each check, or 503 naming the backends that failed.
fn ready_answer(readiness: Readiness) -> Answer {
    let ready = readiness.is_ready();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_string());
    let checks = json!({
        "redis": show(readiness.redis),
        "postgres": show(readiness.postgres),
        "rabbitmq": show(readiness.rabbitmq),
    });
    if ready {
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ready", "checks": checks}),
        ))
    } else {
        Err(Problem::unavailable("a backend is not reachable", 1).with("checks", checks))
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(app: &App) -> Response<Full<Bytes>> {
    metrics::gauge!(metric::READ_CACHE_BYTES).set(app.catalog.cache_bytes().await as f64);
    let mut response = Response::new(Full::new(Bytes::from(metric::render(app.metrics))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /openapi.json`: the API description as it is in the repository.
pub fn openapi() -> Response<Full<Bytes>> {
    json_bytes(StatusCode::OK, Bytes::from_static(OPENAPI.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_backend_answers() {
        let all = Readiness {
            redis: Ok(()),
            postgres: Ok(()),
            rabbitmq: Ok(()),
        };
        assert_eq!(ready_answer(all.clone()).unwrap().status(), StatusCode::OK);
        let down = Readiness {
            postgres: Err("no answer within 1s".into()),
            ..all
        };
        let problem = ready_answer(down).unwrap_err();
        assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem.retry_after, Some(1));
        assert_eq!(problem.extra["checks"]["postgres"], "no answer within 1s");
        assert_eq!(problem.extra["checks"]["redis"], "ok");
    }
}
