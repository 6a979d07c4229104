//! Problem documents (RFC 9457, `application/problem+json`): every error answer
//! the gateway gives is built here, from one place.
//!
//! Known causes map to a status and a stable `type`; anything else is logged with
//! its cause chain and answered with an opaque 500.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use crate::{
    auth::AuthError,
    bookings::{BookingError, HoldError},
    catalog::CatalogError,
    holds::StoreError,
    operator::OperatorError,
    users::UsersError,
    waiting_room::settings::SettingsError,
};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error answer. `kind` is the slug of its `type` URI, `/problems/<kind>`.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Seconds for `Retry-After` (503, 429).
    pub retry_after: Option<u64>,
    /// Methods for `Allow` (405).
    pub allow: Option<&'static str>,
    /// Extension members, e.g. readiness checks.
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            retry_after: None,
            allow: None,
            extra: Map::new(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "The request body is not valid JSON for this call",
            detail,
        )
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut p = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("this resource accepts {allow}"),
        );
        p.allow = Some(allow);
        p
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the body must not exceed {limit} bytes"),
        )
    }

    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Request body too slow",
            "the body did not arrive in time",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        )
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(retry_after);
        p
    }

    /// An event PostgreSQL has on sale that Redis has not loaded (yet, or again,
    /// after Redis lost its data): the loader has been nudged.
    pub fn event_loading(event_id: i64) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "event-loading",
            "Event loading",
            format!(
                "event {event_id} is on sale and its seats are being loaded; try again shortly"
            ),
        );
        p.retry_after = Some(1);
        p
    }

    /// Answered before hyper reads anything, by the accept loop.
    /// 403 `proof-of-work-required`: the join carried no nonce proving `bits`
    /// zero bits for `challenge` (see `waiting_room::proof`).
    pub fn proof_required(challenge: String, bits: u8) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "proof-of-work-required",
            "Proof of work required",
            format!(
                "this waiting room asks every join for a proof of work: send a nonce (1 to 64 \
                 of A-Z a-z 0-9) in the Proof-Of-Work header such that SHA-256 of the \
                 challenge followed by the nonce starts with {bits} zero bits"
            ),
        )
        .with("challenge", Value::String(challenge))
        .with("difficulty", Value::from(bits))
    }

    /// 409 `waiting-room-not-open`: joining opens at `opens_ms`.
    pub fn queue_not_open(event_id: i64, opens_ms: i64) -> Self {
        let opens = crate::bookings::timestamp(opens_ms);
        Problem::new(
            StatusCode::CONFLICT,
            "waiting-room-not-open",
            "Waiting room not open",
            format!("the waiting room of event {event_id} opens at {opens}"),
        )
        .with("opensAt", Value::String(opens))
    }

    /// 503 `not-replicated`: the change is made on the Redis master, but too
    /// few replicas acknowledged it within `HERDGATE_REDIS_REPLICA_TIMEOUT`,
    /// so a failover might lose it; `detail` says what a retry does.
    pub fn not_replicated(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-replicated",
            "Not yet replicated",
            detail,
        );
        p.retry_after = Some(1);
        p
    }

    pub fn too_many_connections() -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-connections",
            "Too many connections",
            "the gateway has as many connections open as it allows; try again shortly",
        );
        p.retry_after = Some(1);
        p
    }

    /// Login attempts over a rate (`scope` is "account" or "client").
    pub fn login_limited(scope: &'static str, retry_after: u64) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "login-rate-limited",
            "Too many login attempts",
            format!("too many login attempts for this {scope}; try again later"),
        );
        p.retry_after = Some(retry_after.max(1));
        p.with("scope", Value::from(scope))
    }

    /// 429 `waiting-room-rate-limited`: this user or address visits more often
    /// than any buyer needs to (the answers say when to come back).
    pub fn room_limited(scope: &'static str, retry_after: u64) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "waiting-room-rate-limited",
            "Too many waiting-room visits",
            format!(
                "too many waiting-room visits for this {scope}; visit again after pollAfterSeconds"
            ),
        );
        p.retry_after = Some(retry_after.max(1));
        p.with("scope", Value::from(scope))
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to answer; the cause is in its log",
        )
    }

    /// Logs `error` with its whole cause chain and hides it from the client.
    pub fn unexpected(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = chain, "request failed");
        Self::internal()
    }

    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.extra.insert(name.to_string(), value);
        self
    }

    /// The JSON document alone.
    pub fn body(&self) -> String {
        let mut body = json!({
            "type": format!("/problems/{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        body.as_object_mut()
            .expect("object literal")
            .extend(self.extra.clone());
        body.to_string()
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herdgate\""),
            );
        }
        response
    }
}

/// The detail of a 503 while the gateway knows Redis is down: certain, as
/// nothing was sent.
pub const UNREACHABLE: &str = "the seat store is unreachable: nothing was done; try again shortly";

/// The detail of a 503 while an event's slot moves to another Redis node:
/// certain, as the command was refused.
pub const MOVING: &str =
    "the event's seats are moving to another store node: nothing was done; try again shortly";

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "redis unavailable");
                Problem::unavailable("the seat store did not answer in time", 1)
            }
            StoreError::Disconnected => Problem::unavailable(UNREACHABLE, 1),
            StoreError::Unreplicated { .. } => Problem::not_replicated(
                "the change is made on the seat store's primary, but no replica confirmed \
                 it in time, so it might not survive a failover; retry the same request: it \
                 answers the booking as it stands once a replica has it",
            ),
            StoreError::Moving(_) => Problem::unavailable(MOVING, 1),
            e @ StoreError::Reply { .. } => Problem::unexpected(&e),
        }
    }
}

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Store(e) => e.into(),
            CatalogError::Pool(e) => e.into(),
            CatalogError::Query(e) => e.into(),
            CatalogError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(e) => e.into(),
                // Waiters on the same failed fetch: the same answer, from a shared cause.
                Err(shared) => match &*shared {
                    CatalogError::Store(StoreError::Unavailable(_)) | CatalogError::Pool(_) => {
                        Problem::unavailable("the seat store did not answer in time", 1)
                    }
                    CatalogError::Store(StoreError::Disconnected) => {
                        Problem::unavailable(UNREACHABLE, 1)
                    }
                    CatalogError::Store(StoreError::Moving(_)) => Problem::unavailable(MOVING, 1),
                    CatalogError::Query(e) if postgres_away(e) => {
                        Problem::unavailable("the database did not answer", 1)
                    }
                    e => Problem::unexpected(e),
                },
            },
        }
    }
}

impl From<HoldError> for Problem {
    fn from(e: HoldError) -> Self {
        let detail = e.to_string();
        match e {
            HoldError::InvalidIds => Problem::invalid_body(detail),
            HoldError::Taken { .. } => {
                Problem::new(StatusCode::CONFLICT, "seat-taken", "Seat taken", detail)
            }
            HoldError::NoEvent(_) | HoldError::NoSeat { .. } => Problem::not_found(detail),
            HoldError::UserLimit { retry_after, .. } => {
                let mut p = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "hold-limit",
                    "Too many holds",
                    detail,
                );
                p.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
                p
            }
            HoldError::Busy => {
                let mut p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outbox-full",
                    "Too busy to take holds",
                    detail,
                );
                p.retry_after = Some(1);
                p
            }
            HoldError::NotAdmitted(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "admission-required",
                "Admission required",
                detail,
            ),
            HoldError::IdempotencyMismatch => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                detail,
            ),
            HoldError::Store(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "redis unavailable while placing a hold");
                Problem::unavailable(
                    "the seat store did not answer in time: the hold may or may not have \
                     been placed; retry the same request: it finds your hold",
                    1,
                )
            }
            HoldError::Store(StoreError::Unreplicated { .. }) => Problem::not_replicated(
                "your hold is placed on the seat store's primary, but no replica confirmed it \
                 in time, so it might not survive a failover; retry the same request (the \
                 same Idempotency-Key, or none): it answers your hold once a replica has it",
            ),
            HoldError::Store(e) => e.into(),
        }
    }
}

impl From<BookingError> for Problem {
    fn from(e: BookingError) -> Self {
        let detail = e.to_string();
        match e {
            BookingError::NotFound(_) => Problem::not_found(detail),
            BookingError::Gone { .. } => {
                Problem::new(StatusCode::CONFLICT, "hold-expired", "Hold ended", detail)
            }
            BookingError::Confirmed(_) => Problem::new(
                StatusCode::CONFLICT,
                "booking-confirmed",
                "Booking confirmed",
                detail,
            ),
            BookingError::Undecided(e) => {
                tracing::warn!(error = %e, "redis unavailable while ending a hold");
                Problem::unavailable(
                    "the seat store did not answer in time: the change may or may not have \
                     been made; retry the same request: it answers the booking as it stands",
                    1,
                )
            }
            BookingError::Store(e) => e.into(),
            BookingError::Pool(e) => e.into(),
            BookingError::Query(e) => e.into(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Problem {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "postgres unavailable");
        Problem::unavailable("the database did not answer in time", 1)
    }
}

impl From<tokio_postgres::Error> for Problem {
    fn from(e: tokio_postgres::Error) -> Self {
        if postgres_away(&e) {
            tracing::warn!(error = %e, "postgres unavailable");
            return Problem::unavailable("the database did not answer", 1);
        }
        Problem::unexpected(&e)
    }
}

/// PostgreSQL is away rather than the query wrong: the connection closed or
/// failed (a pooled connection the server dropped, say), or the server is
/// shutting down or starting (SQLSTATE class 08, 57P01 to 57P03).
pub fn postgres_away(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

impl From<OperatorError> for Problem {
    fn from(e: OperatorError) -> Self {
        let detail = e.to_string();
        match e {
            OperatorError::Off => Problem::new(
                StatusCode::FORBIDDEN,
                "operator-api-off",
                "Operator API off",
                detail,
            ),
            OperatorError::BadToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "bad-operator-token",
                "Operator authentication required",
                detail,
            ),
        }
    }
}

impl From<SettingsError> for Problem {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::NoRoom(_) => Problem::not_found(e.to_string()),
            SettingsError::Pool(e) => e.into(),
            SettingsError::Query(e) => e.into(),
            SettingsError::Store(e) => e.into(),
            SettingsError::Unapplied(StoreError::Reply { .. }) => Problem::unexpected(&e),
            SettingsError::Unapplied(cause) => {
                tracing::warn!(error = %cause, "redis did not take a waiting-room change");
                Problem::unavailable(
                    "the change is saved in PostgreSQL, and every gateway applies it at its \
                     next inventory sync; Redis did not take it now: the same request again \
                     applies it at once",
                    1,
                )
            }
        }
    }
}

impl From<UsersError> for Problem {
    fn from(e: UsersError) -> Self {
        match e {
            UsersError::Pool(e) => e.into(),
            UsersError::Query(e) => e.into(),
        }
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "bad-credentials",
                "Bad credentials",
                e.to_string(),
            ),
            AuthError::BadToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "bad-token",
                "Authentication required",
                e.to_string(),
            ),
            AuthError::UnknownUser => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unknown-user",
                "Unknown user",
                e.to_string(),
            ),
            AuthError::Busy => Problem::unavailable("too many logins at once, try again", 1),
            AuthError::Query(e) => e.into(),
            AuthError::Unavailable(cause) => {
                tracing::warn!(cause, "login: postgres unavailable");
                Problem::unavailable("the user store did not answer, try again", 1)
            }
            AuthError::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "login failed");
                Problem::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_problem_is_rfc9457_json_with_its_headers() {
        let response = Problem::unavailable("busy", 3).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], "/problems/unavailable");
        assert_eq!(body["status"], 503);
        assert_eq!(body["detail"], "busy");
        assert!(body["title"].is_string());
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let response = Problem::method_not_allowed("GET").into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }
}
