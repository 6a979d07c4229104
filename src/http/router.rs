//! Routing, by hand: a request line to a [`Route`], or the problem that
//! answers it (404 unknown path, then 405 wrong method, then 400 bad id).
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
//! | `POST /waiting-room/:id/join` + Bearer | your place in the event's queue (joined), or your admission |
//! | `GET /waiting-room/:id` + Bearer | your place in the event's queue, or your admission |
//! | `GET /waiting-room/:id/stats` | the room: queued, active, rates, waits, order commitment |
//! | `GET /waiting-room/:id/settings` + operator Bearer | the room's settings, and whether Redis runs them |
//! | `PATCH /waiting-room/:id/settings` + operator Bearer | pause, resume, admission rate, max active, at once |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /openapi.json` | the API description, `openapi.json` at the repository root |
//!
//! `GET /waiting-room/:id` with `Accept: text/html` is the room's page for a
//! browser. `HEAD` is answered on every `GET` path. [`ENDPOINTS`] lists every (method,
//! path) served; tests keep it, the router and `openapi.json` in step. A
//! router crate (matchit) would replace one `match` over eleven paths and
//! still need the 405 and id handling written here.

use http::Method;
use uuid::Uuid;

use super::{problem::Problem, query::parse_id};

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
    ("GET", "/waiting-room/{id}"),
    ("POST", "/waiting-room/{id}/join"),
    ("GET", "/waiting-room/{id}/stats"),
    ("GET", "/waiting-room/{id}/settings"),
    ("PATCH", "/waiting-room/{id}/settings"),
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
    ("HEAD", "/waiting-room/{id}"),
    ("HEAD", "/waiting-room/{id}/stats"),
    ("HEAD", "/waiting-room/{id}/settings"),
    ("HEAD", "/api/bookings/{id}"),
];

const GET: &str = "GET, HEAD";
const POST: &str = "POST";

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
    /// A buyer's place in this event's queue.
    QueuePlace(i64),
    JoinQueue(i64),
    RoomStats(i64),
    /// The operator's view of the room's settings ...
    RoomSettings(i64),
    /// ... and a change of them.
    ChangeRoomSettings(i64),
}

impl Route {
    /// Resolves a request line: 404 for unknown paths, 405 for wrong methods,
    /// 400 for ids that are not positive integers or UUIDs. A trailing slash
    /// is ignored. HEAD is answered as GET: hyper sends the same head
    /// without the body.
    pub fn resolve(method: &Method, path: &str) -> Result<Route, Problem> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        // The id is read here but only answered once the method is known to be
        // right: a wrong method on a bad id is 405, not 400.
        let (allow, route) = match segments.as_slice() {
            ["healthz"] => (GET, Ok(Route::Healthz)),
            ["readyz"] => (GET, Ok(Route::Readyz)),
            ["metrics"] => (GET, Ok(Route::Metrics)),
            ["openapi.json"] => (GET, Ok(Route::OpenApi)),
            ["waiting-room"] => (GET, Ok(Route::WaitingRoom)),
            ["waiting-room", id] => (GET, parse_id("event id", id).map(Route::QueuePlace)),
            ["waiting-room", id, "join"] => (POST, parse_id("event id", id).map(Route::JoinQueue)),
            ["waiting-room", id, "stats"] => (GET, parse_id("event id", id).map(Route::RoomStats)),
            ["waiting-room", id, "settings"] => (
                "GET, HEAD, PATCH",
                parse_id("event id", id).map(|id| match *method == Method::PATCH {
                    true => Route::ChangeRoomSettings(id),
                    false => Route::RoomSettings(id),
                }),
            ),
            ["api", "events", id] => (GET, parse_id("event id", id).map(Route::Event)),
            ["api", "seats", "available"] => (GET, Ok(Route::AvailableSeats)),
            ["api", "users", "login"] => (POST, Ok(Route::Login)),
            ["api", "bookings"] => (POST, Ok(Route::PlaceHold)),
            ["api", "bookings", id] => (
                "GET, HEAD, DELETE",
                parse_uuid(id).map(|id| match *method == Method::DELETE {
                    true => Route::CancelBooking(id),
                    false => Route::Booking(id),
                }),
            ),
            ["api", "bookings", id, "confirm"] => (POST, parse_uuid(id).map(Route::ConfirmBooking)),
            _ => return Err(Problem::not_found(format!("no resource at {path}"))),
        };
        if !allow.split(", ").any(|m| m == method.as_str()) {
            return Err(Problem::method_not_allowed(allow));
        }
        route
    }

    /// Health checks and metrics must answer even when the gateway is full,
    /// and so must the operator: pausing a room is what a full gateway may need.
    pub fn counts_as_load(&self) -> bool {
        !matches!(
            self,
            Route::Healthz
                | Route::Readyz
                | Route::Metrics
                | Route::OpenApi
                | Route::RoomSettings(_)
                | Route::ChangeRoomSettings(_)
        )
    }

    /// The route's label in metrics and traces: the path pattern, never the ids in it.
    pub fn name(&self) -> &'static str {
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
            Route::QueuePlace(_) => "/waiting-room/:id",
            Route::JoinQueue(_) => "/waiting-room/:id/join",
            Route::RoomStats(_) => "/waiting-room/:id/stats",
            Route::RoomSettings(_) | Route::ChangeRoomSettings(_) => "/waiting-room/:id/settings",
        }
    }
}

fn parse_uuid(value: &str) -> Result<Uuid, Problem> {
    value
        .parse()
        .map_err(|_| Problem::bad_request(format!("a booking id is a UUID, not {value:?}")))
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
        assert_eq!(resolve(Method::GET, "/api/bookings/42"), Err(400));
        assert_eq!(resolve(Method::POST, "/api/bookings/x/confirm"), Err(400));
        // The method is judged before the id.
        assert_eq!(resolve(Method::PUT, "/api/bookings/42"), Err(405));
        assert_eq!(resolve(Method::POST, "/api/events/abc"), Err(405));
    }

    #[test]
    fn a_booking_id_path_routes_by_method() {
        let id: Uuid = "0190a4b2-0000-7000-8000-000000000001".parse().unwrap();
        let path = format!("/api/bookings/{id}");
        assert_eq!(resolve(Method::GET, &path), Ok(Route::Booking(id)));
        assert_eq!(resolve(Method::HEAD, &path), Ok(Route::Booking(id)));
        assert_eq!(resolve(Method::DELETE, &path), Ok(Route::CancelBooking(id)));
        assert_eq!(
            resolve(Method::POST, &format!("{path}/confirm/")),
            Ok(Route::ConfirmBooking(id))
        );
        assert_eq!(resolve(Method::POST, "/api/bookings"), Ok(Route::PlaceHold));
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
            Method::PATCH,
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
            Route::QueuePlace(_) => "/waiting-room/{id}",
            Route::JoinQueue(_) => "/waiting-room/{id}/join",
            Route::RoomStats(_) => "/waiting-room/{id}/stats",
            Route::RoomSettings(_) | Route::ChangeRoomSettings(_) => "/waiting-room/{id}/settings",
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
