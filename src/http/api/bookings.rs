//! `POST /api/bookings` (the hot spot: a hold), `GET /api/bookings/:id`,
//! `POST /api/bookings/:id/confirm` and `DELETE /api/bookings/:id`, all for
//! the bearer token's user (see [`crate::bookings`]).

use http::{HeaderValue, Request, StatusCode, header};
use hyper::body::Body;
use uuid::Uuid;

use crate::{
    app::App,
    auth::AuthError,
    booking_id,
    bookings::{self, BookingError, BookingView, Ending, Held, HoldError, HoldRequest},
    http::{
        body::read_json,
        problem::Problem,
        request::{authenticate, traceparent},
        response::{Answer, json_response},
    },
    status::{BookingStatus, EventStatus},
};

/// `POST /api/bookings`: 201 and the PENDING hold, or 200 when the request
/// names a hold the user has already (a replay, their own seat).
pub async fn place<B>(app: &App, req: Request<B>) -> Answer
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let user_id = authenticate(app, &req)?;
    // A 201 must reach PostgreSQL, whose bookings reference users (see `users`).
    if !app.users.exists(user_id).await? {
        return Err(AuthError::UnknownUser.into());
    }
    let idempotency_key = idempotency_key(&req)?;
    let traceparent = traceparent(&req);
    let http = &app.config.http;
    let body: HoldRequest = read_json(req, http.max_body, http.body_timeout).await?;
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
        HoldError::NoEvent(id) if app.inventory.awaits_load(id) => Problem::event_loading(id),
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

/// The `Idempotency-Key` header, if the request has one of the right shape.
fn idempotency_key<B>(req: &Request<B>) -> Result<Option<String>, Problem> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if bookings::valid_idempotency_key(key) => Ok(Some(key.to_string())),
        _ => Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1 to {} characters of A-Z a-z 0-9 - _ . :",
            bookings::MAX_IDEMPOTENCY_KEY
        ))),
    }
}

/// An Idempotency-Key's booking as it stands now, not as it was when the key
/// was first used: 201 while it is still the PENDING hold that request made,
/// 200 with its present status (CONFIRMED, CANCELLED, EXPIRED) once it changed.
async fn replayed(
    app: &App,
    user_id: i64,
    then: BookingView,
) -> Result<(StatusCode, BookingView), Problem> {
    let id: Uuid = then.booking_id.parse().map_err(|_| Problem::internal())?;
    match bookings::status(&app.store, &app.pg, user_id, id).await {
        Ok(now) if now.status == BookingStatus::Pending => Ok((StatusCode::CREATED, now)),
        Ok(now) => Ok((StatusCode::OK, now)),
        // Redis let it go and PostgreSQL has not recorded it yet.
        Err(BookingError::NotFound(_)) => Err(Problem::unavailable(
            format!("booking {id} is being recorded; try again shortly"),
            1,
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/bookings/:id`: the booking, to its owner only.
pub async fn show<B>(app: &App, req: &Request<B>, id: Uuid) -> Answer {
    let user_id = authenticate(app, req)?;
    let view = bookings::status(&app.store, &app.pg, user_id, id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /api/bookings/:id/confirm` and `DELETE /api/bookings/:id`.
pub async fn end<B>(app: &App, req: &Request<B>, id: Uuid, ending: Ending) -> Answer {
    let user_id = authenticate(app, req)?;
    let traceparent = traceparent(req);
    match bookings::end(&app.store, &app.pg, user_id, id, &traceparent, ending).await {
        Ok(view) => Ok(json_response(StatusCode::OK, &view)),
        Err(e @ (BookingError::NotFound(_) | BookingError::Gone { .. })) => {
            Err(unless_loading(app, booking_id::event_of(&id), e.into()).await?)
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
