//! Traces across processes: a gateway and a writer, each exporting to the OTLP
//! receiver in `otlp`, place and store one booking; its spans form one trace
//! from the HTTP request through Redis and RabbitMQ to PostgreSQL.

use std::{collections::HashMap, time::Duration};

use herdgate::{auth::Auth, config::Config};

use crate::{
    helpers::{Isolation, eventually, scalar, user_ids},
    otlp::{OtlpReceiver, ReceivedSpan},
    processes::Herdgate,
};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// A client's own trace, sampled.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// A client's own trace, not sampled.
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_one_trace_from_the_request_through_redis_and_rabbitmq_to_postgres() {
    let receiver = OtlpReceiver::start("127.0.0.1:0", true).await.unwrap();
    let iso = Isolation::new().await;
    let mut env = iso.env();
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint());
    env.insert(
        "OTEL_TRACES_SAMPLER".into(),
        "parentbased_traceidratio".into(),
    );
    env.insert("OTEL_TRACES_SAMPLER_ARG".into(), "1.0".into());
    let gateway = Herdgate::start(&env, "gateway").ready().await;
    let writer = Herdgate::start(&env, "writer");
    let auth = Auth::new(&Config::from_env(&env).unwrap().auth).unwrap();
    let user = user_ids(&iso.pg().await).await[0];
    let token = auth.issue(user).unwrap().token;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let hold = |seat: i64, traceparent: Option<String>| {
        let mut request = http
            .post(format!("{}/api/bookings", gateway.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({"eventId": 1, "seatId": seat}));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201);
            let body: serde_json::Value = response.json().await.unwrap();
            body["bookingId"].as_str().unwrap().to_string()
        }
    };
    let plain = hold(1, None).await;
    let continued = hold(2, Some(format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).await;
    // A client's unsampled trace stays unsampled, in every process.
    let unsampled = hold(3, Some(format!("00-{UNSAMPLED_TRACE}-{CLIENT_SPAN}-00"))).await;

    let pg = iso.pg().await;
    eventually(Duration::from_secs(20), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 3
    })
    .await;
    // Each process flushes its spans on the way out.
    assert!(gateway.terminate().await.success());
    assert!(writer.terminate().await.success());
    eventually(Duration::from_secs(10), || async {
        let spans = receiver.spans();
        [&plain, &continued]
            .iter()
            .all(|id| spans.iter().any(|s| applies(s, id)))
    })
    .await;
    let spans = receiver.spans();

    let request = assert_one_trace(&spans, &plain);
    assert_eq!(
        request.parent_id, "",
        "without a client traceparent the request is the root"
    );
    println!("the trace of booking {plain}:\n{}", tree(&spans, request));

    let request = assert_one_trace(&spans, &continued);
    assert_eq!(request.trace_id, CLIENT_TRACE);
    assert_eq!(
        request.parent_id, CLIENT_SPAN,
        "the client's span is the parent"
    );

    assert!(!spans.iter().any(|s| applies(s, &unsampled)));
    let leaked: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == UNSAMPLED_TRACE)
        .map(|s| s.name.as_str())
        .collect();
    assert!(leaked.is_empty(), "spans of an unsampled trace: {leaked:?}");
}

fn applies(span: &ReceivedSpan, booking: &str) -> bool {
    span.name == "apply hold.placed"
        && span.attributes.get("booking_id").map(String::as_str) == Some(booking)
}

/// Follows the booking's links from the writer back to the request, checking
/// every hop, and returns the request span.
fn assert_one_trace<'a>(spans: &'a [ReceivedSpan], booking: &str) -> &'a ReceivedSpan {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |span: &ReceivedSpan| -> &'a ReceivedSpan {
        by_id
            .get(span.parent_id.as_str())
            .copied()
            .unwrap_or_else(|| panic!("the parent of {} was not exported", span.name))
    };
    let apply = spans
        .iter()
        .find(|s| applies(s, booking))
        .expect("apply span");
    assert_eq!(apply.service, "herdgate-writer");
    assert_eq!(apply.kind, CONSUMER);
    assert_eq!(apply.attributes["db.system.name"], "postgresql");

    let publish = parent(apply);
    assert_eq!(publish.name, "publish hold.placed");
    assert_eq!(publish.service, "herdgate-gateway");
    assert_eq!(publish.kind, PRODUCER);
    assert_eq!(publish.attributes["booking_id"], booking);

    let request = parent(publish);
    assert_eq!(request.name, "POST /api/bookings");
    assert_eq!(request.service, "herdgate-gateway");
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.attributes["http.route"], "/api/bookings");
    assert_eq!(request.attributes["http.response.status_code"], "201");

    // The script call, under bookings::place and Store::place_hold.
    let script = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id && s.name == "EVALSHA place_hold")
        .collect::<Vec<_>>();
    assert_eq!(script.len(), 1, "one script call for one booking");
    let script = script[0];
    assert_eq!(script.kind, CLIENT);
    assert_eq!(script.attributes["db.system.name"], "redis");
    let place_hold = parent(script);
    assert_eq!(place_hold.name, "place_hold");
    let place = parent(place_hold);
    assert_eq!(place.name, "place");
    assert_eq!(parent(place).span_id, request.span_id);

    for span in [apply, publish, script, place_hold, place] {
        assert_eq!(
            span.trace_id, request.trace_id,
            "{} is in another trace",
            span.name
        );
    }
    request
}

/// The trace below `root`, one span per line, indented by depth.
fn tree(spans: &[ReceivedSpan], root: &ReceivedSpan) -> String {
    fn walk(spans: &[ReceivedSpan], span: &ReceivedSpan, depth: usize, out: &mut String) {
        out.push_str(&format!(
            "{}{} [{}] trace {}.. span {}.. parent {}\n",
            "  ".repeat(depth),
            span.name,
            span.service,
            &span.trace_id[..8],
            &span.span_id[..8],
            if span.parent_id.is_empty() {
                "none".to_string()
            } else {
                format!("{}..", &span.parent_id[..8])
            },
        ));
        for child in spans.iter().filter(|s| s.parent_id == span.span_id) {
            walk(spans, child, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, root, 0, &mut out);
    out
}
