//! Routing, by hand: `(method, path)` to a handler.
//!
//! | call | answer |
//! |---|---|
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | Redis, PostgreSQL and RabbitMQ answer |
//! | `GET /api/events/:id` | `{id, name, venue, startsAt, totalSeats, availableSeats, status}` |
//! | `GET /api/seats/available?eventId=&limit=&after=` | one page of available seats, from Redis |
//! | `POST /api/users/login` | `{token, userId, expiresAt}` |
//! | `POST /api/bookings` + Bearer | 201 PENDING hold; 409 taken; 429 limit; 503 overload |
//! | `GET /api/bookings/:id` + Bearer | the booking, owner only |
//! | `POST /api/bookings/:id/confirm` + Bearer | 200 CONFIRMED; 409 hold-expired |
//! | `DELETE /api/bookings/:id` + Bearer | 200 CANCELLED; 409 booking-confirmed |
//! | `GET /waiting-room[?eventId=]` | admission state per on-sale event |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /openapi.json` | the API description, `openapi.json` at the repository root |
//!
//! `HEAD` is answered on every `GET` path. [`ENDPOINTS`] lists every (method,
//! path) served; tests keep it, the router and `openapi.json` in step.
//! Every failure is a [`Problem`]; handlers return `Result<Response, Problem>`.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::SecondsFormat;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Body;
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    body::read_json,
    problem::Problem,
    query::{Query, SeatsQuery, parse_id},
};
use crate::{
    app::App,
    auth::LoginRequest,
    bookings::{self, Ending, Held},
    catalog::CatalogError,
    holds::StoreError,
    prometheus,
    status::{BookingStatus, EventStatus},
    telemetry::{self, spans},
    waiting_room,
};

const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The API description, served as it is in the repository.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every method and path pattern served (`{id}` for a path id), as `openapi.json` names them.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/events/{id}"),
    ("GET", "/api/seats/available"),
    ("GET", "/waiting-room"),
    ("POST", "/api/users/login"),
    ("POST", "/api/bookings"),
    ("GET", "/api/bookings/{id}"),
    ("DELETE", "/api/bookings/{id}"),
    ("POST", "/api/bookings/{id}/confirm"),
    ("HEAD", "/healthz"),
    ("HEAD", "/readyz"),
    ("HEAD", "/metrics"),
    ("HEAD", "/openapi.json"),
    ("HEAD", "/api/events/{id}"),
    ("HEAD", "/api/seats/available"),
    ("HEAD", "/waiting-room"),
    ("HEAD", "/api/bookings/{id}"),
];

/// What a request asks for, once its method and path are known to be right.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Event(i64),
    AvailableSeats,
    Login,
    PlaceHold,
    Booking(Uuid),
    ConfirmBooking(Uuid),
    CancelBooking(Uuid),
    WaitingRoom,
}

impl Route {
    /// Resolves a request line: 404 for unknown paths, 405 for wrong methods,
    /// 400 for ids that are not positive integers.
    /// HEAD is answered as GET: hyper sends the same head without the body.
    pub fn resolve(method: &Method, path: &str) -> Result<Route, Problem> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let allow = match segments.as_slice() {
            ["healthz"] | ["readyz"] | ["api", "events", _] | ["api", "seats", "available"] => {
                "GET, HEAD"
            }
            ["waiting-room"] | ["metrics"] | ["openapi.json"] => "GET, HEAD",
            ["api", "users", "login"] | ["api", "bookings"] | ["api", "bookings", _, "confirm"] => {
                "POST"
            }
            ["api", "bookings", _] => "GET, HEAD, DELETE",
            _ => return Err(Problem::not_found(format!("no resource at {path}"))),
        };
        if !allow.split(", ").any(|m| m == method.as_str()) {
            return Err(Problem::method_not_allowed(allow));
        }
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        Ok(match segments.as_slice() {
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["openapi.json"] => Route::OpenApi,
            ["api", "events", id] => Route::Event(parse_id("event id", id)?),
            ["api", "seats", "available"] => Route::AvailableSeats,
            ["api", "users", "login"] => Route::Login,
            ["api", "bookings"] => Route::PlaceHold,
            ["api", "bookings", id] if method == Method::GET => Route::Booking(parse_uuid(id)?),
            ["api", "bookings", id] => Route::CancelBooking(parse_uuid(id)?),
            ["api", "bookings", id, "confirm"] => Route::ConfirmBooking(parse_uuid(id)?),
            _ => Route::WaitingRoom,
        })
    }

    /// Health checks and metrics must answer even when the gateway is full.
    fn counts_as_load(&self) -> bool {
        !matches!(
            self,
            Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi
        )
    }

    /// The route's label in metrics: the path pattern, never the ids in it.
    fn name(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Event(_) => "/api/events/:id",
            Route::AvailableSeats => "/api/seats/available",
            Route::Login => "/api/users/login",
            Route::PlaceHold => "/api/bookings",
            Route::Booking(_) | Route::CancelBooking(_) => "/api/bookings/:id",
            Route::ConfirmBooking(_) => "/api/bookings/:id/confirm",
            Route::WaitingRoom => "/waiting-room",
        }
    }
}

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
    let _admitted = match route.counts_as_load() {
        false => None,
        true => match app.in_flight.try_enter() {
            Some(admitted) => Some(admitted),
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
    metrics::counter!(prometheus::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(prometheus::HTTP_DURATION, "route" => route).record(started.elapsed());
    response
}

async fn dispatch<B>(
    app: &App,
    route: Route,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match route {
        Route::Healthz => Ok(json_response(StatusCode::OK, &json!({"status": "up"}))),
        Route::Readyz => readyz(app).await,
        Route::Metrics => {
            metrics::gauge!(prometheus::READ_CACHE_BYTES)
                .set(app.catalog.cache_bytes().await as f64);
            let mut response = Response::new(Full::new(Bytes::from(app.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(response)
        }
        Route::OpenApi => Ok(json_bytes(
            StatusCode::OK,
            Bytes::from_static(OPENAPI.as_bytes()),
        )),
        Route::Event(id) => event(app, id).await,
        Route::AvailableSeats => available_seats(app, req.uri().query()).await,
        Route::Login => login(app, req).await,
        Route::PlaceHold => place_hold(app, req).await,
        Route::Booking(id) => {
            let user_id = authenticate(app, &req)?;
            let view = bookings::status(&app.store, &app.pg, user_id, id).await?;
            Ok(json_response(StatusCode::OK, &view))
        }
        Route::ConfirmBooking(id) => end_booking(app, &req, id, Ending::Confirm).await,
        Route::CancelBooking(id) => end_booking(app, &req, id, Ending::Cancel).await,
        Route::WaitingRoom => waiting_room(app, req.uri().query()).await,
    }
}

async fn readyz(app: &App) -> Result<Response<Full<Bytes>>, Problem> {
    let redis = async {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, app.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 1s".to_string()),
        }
    };
    let postgres = async {
        let check = async {
            let client = app.pg.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        tokio::time::timeout(READY_CHECK_TIMEOUT, check)
            .await
            .unwrap_or_else(|_| Err("no answer within 1s".to_string()))
    };
    let rabbitmq = app.broker.check(READY_CHECK_TIMEOUT);
    let (redis, postgres, rabbitmq) = tokio::join!(redis, postgres, rabbitmq);
    let ready = redis.is_ok() && postgres.is_ok() && rabbitmq.is_ok();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_string());
    let checks =
        json!({"redis": show(redis), "postgres": show(postgres), "rabbitmq": show(rabbitmq)});
    if ready {
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ready", "checks": checks}),
        ))
    } else {
        Err(Problem::unavailable("a backend is not reachable", 1).with("checks", checks))
    }
}

async fn event(app: &App, id: i64) -> Result<Response<Full<Bytes>>, Problem> {
    match app.catalog.event(id).await? {
        Some(event) => Ok(json_response(StatusCode::OK, &event)),
        None => Err(Problem::not_found(format!("no event with id {id}"))),
    }
}

async fn available_seats(app: &App, query: Option<&str>) -> Result<Response<Full<Bytes>>, Problem> {
    let SeatsQuery {
        event_id,
        after,
        limit,
    } = SeatsQuery::parse(query)?;
    match app.catalog.available_seats(event_id, after, limit).await? {
        Some(body) => Ok(json_bytes(StatusCode::OK, body)),
        None if app.inventory.awaits_load(event_id) => Err(Problem::event_loading(event_id)),
        None => Err(Problem::not_found(format!(
            "event {event_id} is unknown or not on sale"
        ))),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    token: String,
    user_id: i64,
    expires_at: String,
}

async fn login<B>(app: &App, req: Request<B>) -> Result<Response<Full<Bytes>>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Before any work: one client address may not make the gateway check passwords for everyone.
    if let Some(peer) = req.extensions().get::<crate::http::Peer>() {
        app.login_clients
            .hit(peer.0.ip())
            .await
            .map_err(|wait| limited("client", wait))?;
    }
    let http = &app.config.http;
    let body: LoginRequest = read_json(req, http.max_body, http.body_timeout).await?;
    if let Some(why) = body.invalid() {
        return Err(Problem::invalid_body(why));
    }
    // Failures count against the account, so guessing one's password stops while its owner still logs in.
    let account = body.account();
    app.login_accounts
        .check(account.clone())
        .await
        .map_err(|wait| limited("account", wait))?;
    let token = match app.auth.login(&app.pg, &body.email, &body.password).await {
        Err(crate::auth::AuthError::BadCredentials) => {
            app.login_accounts.count(account).await;
            return Err(crate::auth::AuthError::BadCredentials.into());
        }
        result => result?,
    };
    Ok(json_response(
        StatusCode::OK,
        &LoginResponse {
            token: token.token,
            user_id: token.user_id,
            expires_at: token.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        },
    ))
}

fn limited(scope: &'static str, wait: Duration) -> Problem {
    metrics::counter!(prometheus::LOGIN_LIMITED, "scope" => scope).increment(1);
    Problem::login_limited(scope, crate::rate_limit::retry_after_secs(wait))
}

async fn place_hold<B>(app: &App, req: Request<B>) -> Result<Response<Full<Bytes>>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let user_id = authenticate(app, &req)?;
    // A 201 must reach PostgreSQL, whose bookings reference users (see `users`).
    if !app.users.exists(user_id).await? {
        return Err(crate::auth::AuthError::UnknownUser.into());
    }
    let headers = req.headers();
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(key) if bookings::valid_idempotency_key(key) => Some(key.to_string()),
            _ => {
                return Err(Problem::bad_request(format!(
                    "Idempotency-Key must be 1 to {} characters of A-Z a-z 0-9 - _ . :",
                    bookings::MAX_IDEMPOTENCY_KEY
                )));
            }
        },
    };
    let traceparent = traceparent(&req);
    let http = &app.config.http;
    let body: bookings::HoldRequest = read_json(req, http.max_body, http.body_timeout).await?;
    let holds = &app.config.holds;
    let (view, held) = bookings::place(
        &app.store,
        holds.coalesce.then_some(&app.coalescer),
        holds,
        user_id,
        &body,
        idempotency_key.as_deref(),
        &traceparent,
    )
    .await
    .map_err(|e| match e {
        bookings::HoldError::NoEvent(id) if app.inventory.awaits_load(id) => {
            Problem::event_loading(id)
        }
        e => e.into(),
    })?;
    let (status, view) = match held {
        Held::New => (StatusCode::CREATED, view),
        Held::Replayed => replayed(app, user_id, view).await?,
        // Found in the same atomic step as a live PENDING hold of this user.
        Held::Own => (StatusCode::OK, view),
    };
    let mut response = json_response(status, &view);
    let location = format!("/api/bookings/{}", view.booking_id);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("uuid is a valid header"),
    );
    Ok(response)
}

/// An Idempotency-Key's booking as it stands now, not as it was when the key
/// was first used: 201 while it is still the PENDING hold that request made,
/// 200 with its present status (CONFIRMED, CANCELLED, EXPIRED) once it changed.
async fn replayed(
    app: &App,
    user_id: i64,
    then: bookings::BookingView,
) -> Result<(StatusCode, bookings::BookingView), Problem> {
    let id: Uuid = then.booking_id.parse().map_err(|_| Problem::internal())?;
    match bookings::status(&app.store, &app.pg, user_id, id).await {
        Ok(now) if now.status == BookingStatus::Pending => Ok((StatusCode::CREATED, now)),
        Ok(now) => Ok((StatusCode::OK, now)),
        // Redis let it go and PostgreSQL has not recorded it yet.
        Err(bookings::BookingError::NotFound(_)) => Err(Problem::unavailable(
            format!("booking {id} is being recorded; try again shortly"),
            1,
        )),
        Err(e) => Err(e.into()),
    }
}

async fn end_booking<B>(
    app: &App,
    req: &Request<B>,
    id: Uuid,
    ending: Ending,
) -> Result<Response<Full<Bytes>>, Problem> {
    let user_id = authenticate(app, req)?;
    let traceparent = traceparent(req);
    match bookings::end(&app.store, &app.pg, user_id, id, &traceparent, ending).await {
        Ok(view) => Ok(json_response(StatusCode::OK, &view)),
        Err(e @ (bookings::BookingError::NotFound(_) | bookings::BookingError::Gone { .. })) => {
            Err(unless_loading(app, crate::booking_id::event_of(&id), e.into()).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// `problem`, unless the booking's event is on sale in PostgreSQL and Redis
/// has not loaded it (it lost its data): then its holds are not known yet,
/// and the answer is 503 `event-loading` (the loader is nudged). Costs one
/// Redis read, on this error path only.
async fn unless_loading(app: &App, event_id: i64, problem: Problem) -> Result<Problem, Problem> {
    if !app.inventory.was_on_sale(event_id) {
        return Ok(problem);
    }
    let status = app.store.event_statuses(&[event_id]).await?;
    match status.first() {
        Some(Some(EventStatus::OnSale)) => Ok(problem),
        _ if app.inventory.awaits_load(event_id) => Ok(Problem::event_loading(event_id)),
        _ => Ok(problem),
    }
}

/// The trace context stored with the outbox entry: while traces are exported,
/// this request's own span, or the unsampled context of a request the sampler
/// dropped (a client's sampled flag carried on either way); otherwise the
/// request's W3C `traceparent` passed through, or "" when it has none of the
/// right shape.
fn traceparent<B>(req: &Request<B>) -> String {
    if telemetry::exporting() {
        if let Some(untraced) = req.extensions().get::<telemetry::Untraced>() {
            return untraced.traceparent();
        }
        if let Some(own) = telemetry::context::traceparent(&tracing::Span::current()) {
            return own;
        }
    }
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| bookings::valid_traceparent(v))
        .unwrap_or("")
        .to_string()
}

/// The user id of a valid `Authorization: Bearer` token, or 401.
fn authenticate<B>(app: &App, req: &Request<B>) -> Result<i64, Problem> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(crate::auth::AuthError::BadToken)?;
    Ok(app.auth.verify(token)?)
}

async fn waiting_room(app: &App, query: Option<&str>) -> Result<Response<Full<Bytes>>, Problem> {
    let load = app.in_flight.snapshot();
    if let Some(id) = Query::parse(query).positive("eventId")? {
        let event = app
            .catalog
            .event(id)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no event with id {id}")))?;
        return Ok(json_response(
            StatusCode::OK,
            &waiting_room::admission(&event, load),
        ));
    }
    let mut events = Vec::new();
    for on_sale in app.inventory.on_sale().iter() {
        if let Some(event) = app.catalog.event(on_sale.id).await? {
            events.push(waiting_room::admission(&event, load));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"events": events, "load": load}),
    ))
}

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Store(e) => e.into(),
            CatalogError::Pool(e) => e.into(),
            CatalogError::Query(e) => e.into(),
            CatalogError::Shared(shared) => match Arc::try_unwrap(shared) {
                Ok(e) => e.into(),
                // Waiters on the same failed fetch: the same answer, from a shared cause.
                Err(shared) => match &*shared {
                    CatalogError::Store(StoreError::Unavailable(_)) | CatalogError::Pool(_) => {
                        Problem::unavailable("the seat store did not answer in time", 1)
                    }
                    CatalogError::Store(StoreError::Disconnected) => {
                        Problem::unavailable(super::problem::UNREACHABLE, 1)
                    }
                    CatalogError::Query(e) if super::problem::postgres_away(e) => {
                        Problem::unavailable("the database did not answer", 1)
                    }
                    e => Problem::unexpected(e),
                },
            },
        }
    }
}

fn parse_uuid(value: &str) -> Result<Uuid, Problem> {
    value
        .parse()
        .map_err(|_| Problem::bad_request(format!("a booking id is a UUID, not {value:?}")))
}

pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("response types serialize");
    json_bytes(status, Bytes::from(body))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(method: Method, path: &str) -> Result<Route, u16> {
        Route::resolve(&method, path).map_err(|p| p.status.as_u16())
    }

    #[test]
    fn known_paths_resolve() {
        assert_eq!(resolve(Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(resolve(Method::GET, "/api/events/42"), Ok(Route::Event(42)));
        assert_eq!(
            resolve(Method::GET, "/api/events/42/"),
            Ok(Route::Event(42))
        );
        assert_eq!(resolve(Method::POST, "/api/users/login"), Ok(Route::Login));
        assert_eq!(
            resolve(Method::GET, "/waiting-room"),
            Ok(Route::WaitingRoom)
        );
    }

    #[test]
    fn bad_request_lines_get_their_status() {
        assert_eq!(resolve(Method::GET, "/nope"), Err(404));
        assert_eq!(resolve(Method::GET, "/api/events"), Err(404));
        assert_eq!(resolve(Method::GET, "/api/events/1/2"), Err(404));
        assert_eq!(resolve(Method::DELETE, "/api/events/1"), Err(405));
        assert_eq!(resolve(Method::GET, "/api/users/login"), Err(405));
        assert_eq!(resolve(Method::GET, "/api/events/abc"), Err(400));
        assert_eq!(resolve(Method::GET, "/api/events/0"), Err(400));
        assert_eq!(resolve(Method::GET, "/api/events/-3"), Err(400));
        assert_eq!(
            resolve(Method::GET, "/api/events/99999999999999999999"),
            Err(400)
        );
    }

    /// A concrete path for a pattern of [`ENDPOINTS`].
    fn example(pattern: &str) -> String {
        let id = if pattern.starts_with("/api/bookings/") {
            "0190a4b2-0000-7000-8000-000000000001"
        } else {
            "7"
        };
        pattern.replace("{id}", id)
    }

    #[test]
    fn every_endpoint_resolves_and_other_methods_are_405() {
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::DELETE,
            Method::PUT,
        ];
        for (_, pattern) in ENDPOINTS {
            for method in &methods {
                let listed = ENDPOINTS.contains(&(method.as_str(), pattern));
                let got = resolve(method.clone(), &example(pattern));
                match listed {
                    true => assert!(got.is_ok(), "{method} {pattern}: {got:?}"),
                    false => assert_eq!(got, Err(405), "{method} {pattern}"),
                }
            }
        }
    }

    #[test]
    fn every_route_is_an_endpoint() {
        // Exhaustive: a new route does not compile until it is given its endpoint here.
        let pattern = |route: &Route| match route {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Event(_) => "/api/events/{id}",
            Route::AvailableSeats => "/api/seats/available",
            Route::Login => "/api/users/login",
            Route::PlaceHold => "/api/bookings",
            Route::Booking(_) | Route::CancelBooking(_) => "/api/bookings/{id}",
            Route::ConfirmBooking(_) => "/api/bookings/{id}/confirm",
            Route::WaitingRoom => "/waiting-room",
        };
        for (method, path) in ENDPOINTS {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let route = Route::resolve(&method, &example(path)).unwrap();
            assert_eq!(pattern(&route), *path, "{method} {path}");
            assert_eq!(route.name().replace(":id", "{id}"), *path);
        }
    }

    #[test]
    fn openapi_json_documents_exactly_the_endpoints() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let mut served: Vec<(String, String)> = ENDPOINTS
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
