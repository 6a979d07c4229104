//! W3C trace context across process boundaries: read from HTTP headers, the
//! outbox entry and the AMQP `traceparent` header; written as a `traceparent`
//! string for the next hop. Only meaningful while [`super::exporting`].

use http::HeaderMap;
use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `span`'s own context as a version-00 `traceparent`, sampled flag included,
/// so the next process samples parent-based exactly as this one did.
pub fn traceparent(span: &Span) -> Option<String> {
    write(span.context().span().span_context())
}

/// A client's `traceparent` as the W3C propagator reads it, written back in
/// the version-00 form (lowercase, full length, unknown flags cleared), or
/// `None` when it names no valid parent. What a hold stores is then always
/// 55 bytes, whatever a client sent: the propagator itself accepts later
/// versions with any number of trailing fields.
pub fn normalize(traceparent: &str) -> Option<String> {
    write(from_traceparent(traceparent).span().span_context())
}

fn write(span_context: &SpanContext) -> Option<String> {
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// True when a `traceparent` string says its trace is sampled (flag bit 0).
pub fn is_sampled(traceparent: &str) -> bool {
    traceparent
        .rsplit('-')
        .next()
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// True inside a span that is being exported: below a request, a publish or
/// an apply the sampler kept.
pub fn in_sampled_span() -> bool {
    Span::current().context().span().span_context().is_sampled()
}

/// Makes a new `span` the child of a remote parent, when there is a valid one,
/// and records its trace id for the log lines inside it. Call it before the
/// span is first entered: a started span keeps the parent it has.
pub fn continue_trace(span: &Span, parent: Option<Context>) {
    if let Some(parent) = parent.filter(|cx| cx.span().span_context().is_valid()) {
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let span_ref = cx.span();
    let span_context = span_ref.span_context();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// The remote parent in a request's `traceparent` (and `tracestate`) headers.
pub fn from_headers(headers: &HeaderMap) -> Option<Context> {
    headers
        .contains_key("traceparent")
        .then(|| TraceContextPropagator::new().extract(&Headers(headers)))
}

/// The remote parent in a stored or received `traceparent` string.
pub fn from_traceparent(traceparent: &str) -> Context {
    TraceContextPropagator::new().extract(&Traceparent(traceparent))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_string_is_a_remote_parent_with_its_sampled_flag() {
        let cx = from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let parent = cx.span().span_context().clone();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let unsampled = from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.span().span_context().is_sampled());
        assert!(!from_traceparent("garbage").span().span_context().is_valid());
    }

    #[test]
    fn a_client_traceparent_is_kept_only_when_valid_and_then_in_the_version_00_form() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(normalize(valid).as_deref(), Some(valid));
        // A later version may carry more fields; unknown flags are cleared.
        assert_eq!(
            normalize(&format!(
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-{}",
                "x".repeat(10_000)
            ))
            .as_deref(),
            Some(valid)
        );
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(normalize(invalid), None, "{invalid}");
        }
    }

    proptest::proptest! {
        /// Whatever a client sends, what is stored is the W3C shape or nothing,
        /// and reads back as itself.
        #[test]
        fn normalized_traceparents_have_the_w3c_shape(
            value in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[0-9a-f-]{50,60}",
                "[0-9a-f]{2}-[0-9a-f]{1,32}-[0-9a-f]{1,16}-[0-9a-fg]{2}(-.*)?",
            ]
        ) {
            if let Some(stored) = normalize(&value) {
                proptest::prop_assert_eq!(stored.len(), 55);
                proptest::prop_assert!(stored.bytes().all(|b| b == b'-' || matches!(b, b'0'..=b'9' | b'a'..=b'f')));
                proptest::prop_assert_eq!(normalize(&stored), Some(stored.clone()));
            }
        }
    }

    #[test]
    fn headers_without_a_traceparent_give_no_parent() {
        let mut headers = HeaderMap::new();
        assert!(from_headers(&headers).is_none());
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = from_headers(&headers).unwrap();
        assert_eq!(
            cx.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
    }
}
