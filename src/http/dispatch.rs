//! One request from its request line to its answer: routed ([`Route`]),
//! admitted past the in-flight bound, handed to its resource's handler in
//! [`super::api`], then counted, timed and traced.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Body;
use tracing::Instrument;

use super::{api, problem::Problem, response::Answer, router::Route};
use crate::{
    app::App,
    bookings::Ending,
    holds::VisitKind,
    metric,
    telemetry::{self, spans},
};

/// Answers one request; never fails, every error is already a problem document.
pub async fn handle<B>(app: &App, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let route = Route::resolve(req.method(), req.uri().path());
    if !telemetry::exporting() {
        return answer(app, route, req, started).await;
    }
    match spans::request(&req, route.as_ref().ok().map(Route::name)) {
        Ok(span) => {
            let response = answer(app, route, req, started)
                .instrument(span.clone())
                .await;
            spans::answered(&span, response.status());
            response
        }
        Err(untraced) => {
            let mut req = req;
            req.extensions_mut().insert(untraced);
            answer(app, route, req, started).await
        }
    }
}

async fn answer<B>(
    app: &App,
    route: Result<Route, Problem>,
    req: Request<B>,
    started: std::time::Instant,
) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let route = match route {
        Ok(route) => route,
        Err(problem) => return record("unmatched", started, problem.into_response()),
    };
    let name = route.name();
    // Held until the answer is ready; health checks are never turned away.
    let _slot = match route.counts_as_load() {
        false => None,
        true => match app.in_flight.try_enter() {
            Some(slot) => Some(slot),
            None => {
                let full = Problem::unavailable("the gateway is at capacity", 1);
                return record(name, started, full.into_response());
            }
        },
    };
    let result = dispatch(app, route, req).await;
    record(name, started, result.unwrap_or_else(Problem::into_response))
}

/// Counts and times one answer.
fn record(
    route: &'static str,
    started: std::time::Instant,
    response: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    let status = response.status().as_str().to_string();
    metrics::counter!(metric::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(metric::HTTP_DURATION, "route" => route).record(started.elapsed());
    response
}

async fn dispatch<B>(app: &App, route: Route, req: Request<B>) -> Answer
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Each handler's future is boxed: unboxed, this future is as large as the
    // largest of them (a cached read, about 13 KiB), and every request, a hold
    // too, paid for copying that much several times over (memmove was 8% of a
    // herd's CPU). Boxed, a request copies its own handler's future once.
    match route {
        Route::Healthz => Ok(api::ops::healthz()),
        Route::Readyz => Box::pin(api::ops::readyz(app)).await,
        Route::Metrics => Ok(Box::pin(api::ops::metrics(app)).await),
        Route::OpenApi => Ok(api::ops::openapi()),
        Route::Event(id) => Box::pin(api::events::event(app, id)).await,
        Route::AvailableSeats => Box::pin(api::seats::available(app, req.uri().query())).await,
        Route::Login => Box::pin(api::users::login(app, req)).await,
        Route::PlaceHold => Box::pin(api::bookings::place(app, req)).await,
        Route::Booking(id) => Box::pin(api::bookings::show(app, &req, id)).await,
        Route::ConfirmBooking(id) => {
            Box::pin(api::bookings::end(app, &req, id, Ending::Confirm)).await
        }
        Route::CancelBooking(id) => {
            Box::pin(api::bookings::end(app, &req, id, Ending::Cancel)).await
        }
        Route::WaitingRoom => Box::pin(api::waiting_room::admissions(app, req.uri().query())).await,
        Route::QueuePlace(id) => {
            Box::pin(api::waiting_room::visit(app, &req, id, VisitKind::Look)).await
        }
        Route::JoinQueue(id) => {
            Box::pin(api::waiting_room::visit(app, &req, id, VisitKind::Join)).await
        }
        Route::RoomStats(id) => Box::pin(api::waiting_room::stats(app, id)).await,
        Route::RoomSettings(id) => Box::pin(api::room_settings::show(app, &req, id)).await,
        Route::ChangeRoomSettings(id) => Box::pin(api::room_settings::change(app, req, id)).await,
    }
}

#[cfg(test)]
mod tests {
    /// The future of one request, all handlers boxed (see `dispatch`): a
    /// handler's future that grows goes unnoticed, but this one must not.
    #[test]
    fn a_request_future_stays_small() {
        type B = http_body_util::Empty<bytes::Bytes>;
        fn size<Fut>(_: fn(&'static crate::app::App, http::Request<B>) -> Fut) -> usize {
            std::mem::size_of::<Fut>()
        }
        let handle = size(super::handle::<B>);
        assert!(handle <= 4096, "handle's future is {handle} bytes");
    }
}
