//! The spans a booking's trace is made of, named and attributed after
//! OpenTelemetry's semantic conventions (HTTP server, database client,
//! messaging), the way `metric` names every metric in one place:
//!
//! ```text
//! POST /api/bookings        gateway, server: the request; a client's traceparent is its parent
//!   place > place_hold      gateway: bookings::place and Store::place_hold
//!     EVALSHA place_hold    gateway, client: the script call
//!   publish hold.placed     gateway (relay), producer: parent is the request span,
//!                           whose context the script stored with the outbox entry
//!     apply hold.placed     writer, consumer: parent is the traceparent the relay put in
//!                           the event, inside its batch
//! ```
//!
//! Each is built only while [`super::exporting`]; callers check first, so a
//! process without a collector creates none of them. A request the sampler
//! drops creates none either (see `sampling`).

use http::{Request, StatusCode};
use tracing::{Span, field::Empty};

use super::{
    context,
    sampling::{self, Untraced},
};
use crate::hold_event::HoldEvent;

/// The spans that begin a process's part of a trace; the spans below them
/// are exported only inside one.
pub const HEADS: &[&str] = &["http.request", "relay.publish", "writer.apply"];

/// The server span of one request, `route` being its path pattern when it has
/// one; or, when the sampler drops the request, no span and the context to
/// pass on instead.
pub fn request<B>(req: &Request<B>, route: Option<&'static str>) -> Result<Span, Untraced> {
    let parent = context::from_headers(req.headers());
    let trace_id = sampling::head(parent.as_ref())?;
    let method = req.method();
    let span = match route {
        Some(route) => tracing::info_span!(
            "http.request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = route,
            http.response.status_code = Empty,
            otel.status_code = Empty,
            trace_id = Empty,
        ),
        None => tracing::info_span!(
            "http.request",
            otel.name = %method,
            otel.kind = "server",
            http.request.method = %method,
            http.response.status_code = Empty,
            otel.status_code = Empty,
            trace_id = Empty,
        ),
    };
    sampling::with_trace_id(trace_id, || context::continue_trace(&span, parent));
    Ok(span)
}

/// Records the answer; only a 5xx is an error of the server's.
pub fn answered(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// One Lua script call (EVALSHA, reloaded after NOSCRIPT).
pub fn script(name: &'static str) -> Span {
    tracing::info_span!(
        "redis.script",
        otel.name = %format_args!("EVALSHA {name}"),
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = "EVALSHA",
        db.stored_procedure.name = name,
    )
}

/// The relay publishing one outbox entry (in a batch), until the batch's
/// confirm; a child of the context the gateway stored with the entry.
pub fn publish(exchange: &str, event: &HoldEvent) -> Span {
    let span = tracing::info_span!(
        "relay.publish",
        otel.name = %format_args!("publish {}", event.kind),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = %event.kind,
        messaging.message.id = %format_args!("{}:{}", event.booking_id, event.version),
        booking_id = %event.booking_id,
        otel.status_code = Empty,
        trace_id = Empty,
    );
    let parent = event.traceparent.as_deref().map(context::from_traceparent);
    context::continue_trace(&span, parent);
    span
}

/// The writer applying one hold event, a child of the context it carries. The
/// batch is one transaction, so every event of a batch has a span covering the
/// same apply and commit; `batch` says how many events shared it.
pub fn apply(queue: &str, event: &HoldEvent, traceparent: Option<&str>, batch: usize) -> Span {
    let span = tracing::info_span!(
        "writer.apply",
        otel.name = %format_args!("apply {}", event.kind),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = queue,
        messaging.batch.message_count = batch,
        messaging.message.id = %format_args!("{}:{}", event.booking_id, event.version),
        db.system.name = "postgresql",
        booking_id = %event.booking_id,
        trace_id = Empty,
    );
    context::continue_trace(&span, traceparent.map(context::from_traceparent));
    span
}
