//! The head decision for requests, made before any span exists: a request the
//! sampler drops gets no span at all (at 1% sampling that is 99 requests in
//! 100 on the hot path), only the context the next hops need to drop it too.
//!
//! The decision is the configured sampler's own, on the trace id the request
//! will have: for a new trace, that id is drawn here and handed to the SDK
//! through [`ChosenIds`], so the SDK, deciding again when the span is built,
//! decides the same.

use std::{cell::Cell, sync::OnceLock};

use opentelemetry::{
    Context,
    trace::{SpanId, SpanKind, TraceContextExt, TraceId},
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};

static SAMPLER: OnceLock<Sampler> = OnceLock::new();

thread_local! {
    /// The trace id the next root span built on this thread gets.
    static CHOSEN: Cell<Option<TraceId>> = const { Cell::new(None) };
}

pub(super) fn install(sampler: Sampler) {
    let _ = SAMPLER.set(sampler);
}

/// A request the sampler dropped: the context stored with its outbox entry,
/// so the relay and the writer drop it as well.
#[derive(Debug, Clone, Copy)]
pub struct Untraced {
    trace_id: TraceId,
    span_id: SpanId,
}

impl Untraced {
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-00", self.trace_id, self.span_id)
    }
}

/// Decides for a request with this `parent` (from its headers): `Ok` with the
/// trace id a new root span must get (`None` when it continues the parent), or
/// `Err` when the request is not traced.
pub(super) fn head(parent: Option<&Context>) -> Result<Option<TraceId>, Untraced> {
    decide(SAMPLER.get(), parent)
}

fn decide(
    sampler: Option<&Sampler>,
    parent: Option<&Context>,
) -> Result<Option<TraceId>, Untraced> {
    let ids = RandomIdGenerator::default();
    let parent = parent.filter(|cx| cx.span().span_context().is_valid());
    let remote = parent.map(|cx| cx.span().span_context().trace_id());
    let trace_id = remote.unwrap_or_else(|| ids.new_trace_id());
    let Some(sampler) = sampler else {
        return Ok(None);
    };
    let decision = sampler
        .should_sample(
            parent,
            trace_id,
            "http.request",
            &SpanKind::Server,
            &[],
            &[],
        )
        .decision;
    match decision {
        SamplingDecision::Drop => Err(Untraced {
            trace_id,
            span_id: ids.new_span_id(),
        }),
        _ => Ok(remote.is_none().then_some(trace_id)),
    }
}

/// Runs `build` (which builds a root span) with `trace_id` as its trace id.
pub(super) fn with_trace_id<T>(trace_id: Option<TraceId>, build: impl FnOnce() -> T) -> T {
    CHOSEN.set(trace_id);
    let built = build();
    // Not taken (the span was not built): not left for an unrelated span.
    CHOSEN.take();
    built
}

/// The SDK's id generator, except for a root span whose trace id [`head`] chose.
#[derive(Debug, Default)]
pub(super) struct ChosenIds(RandomIdGenerator);

impl IdGenerator for ChosenIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN.take().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::context::from_traceparent;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    fn parent_based(ratio: f64) -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
    }

    #[test]
    fn a_new_trace_is_kept_or_dropped_by_the_ratio_on_its_own_trace_id() {
        let kept = decide(Some(&parent_based(1.0)), None).unwrap();
        assert!(kept.is_some(), "a root gets the trace id it was decided on");
        let dropped = decide(Some(&parent_based(0.0)), None).unwrap_err();
        let traceparent = dropped.traceparent();
        assert!(traceparent.starts_with("00-") && traceparent.ends_with("-00"));
        assert!(
            from_traceparent(&traceparent)
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn a_clients_sampled_flag_decides_under_parent_based_sampling() {
        let sampled = from_traceparent(SAMPLED);
        assert_eq!(
            decide(Some(&parent_based(0.0)), Some(&sampled)).unwrap(),
            None
        );
        let unsampled = from_traceparent(UNSAMPLED);
        let dropped = decide(Some(&parent_based(1.0)), Some(&unsampled)).unwrap_err();
        assert!(
            dropped
                .traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
    }

    #[test]
    fn the_sdk_builds_a_chosen_root_with_the_chosen_trace_id() {
        let ids = ChosenIds::default();
        let chosen = TraceId::from(42u128);
        let built = with_trace_id(Some(chosen), || ids.new_trace_id());
        assert_eq!(built, chosen);
        with_trace_id(Some(chosen), || ());
        assert_ne!(ids.new_trace_id(), chosen, "used once, then left");
    }
}
