//! `GET /waiting-room[?eventId=]`: the admission state of one event, or of
//! every event on sale; `POST /waiting-room/:id/join` and `GET
//! /waiting-room/:id`: a buyer's place in an event's queue (see
//! [`crate::waiting_room`]), or, for a browser asking for HTML, the room's page
//! ([`crate::waiting_room::page`]).

use http::{HeaderValue, Request, StatusCode, header};
use serde_json::json;

use crate::{
    app::App,
    auth::AuthError,
    holds::{Visit, VisitKind},
    http::{
        client_address,
        problem::Problem,
        query::Query,
        request::authenticate,
        response::{Answer, document, json_response},
    },
    metric, rate_limit,
    waiting_room::{self, page, proof},
};

/// Joins the event's queue (keeping the place of one who joined before), or
/// looks at one's place: queued, or admitted.
pub async fn visit<B>(app: &App, req: &Request<B>, event_id: i64, kind: VisitKind) -> Answer {
    // A browser's visit gets the page, which then visits as an API client:
    // the same document for everyone, without a backend call.
    if kind == VisitKind::Look && page::wants_html(req.headers()) {
        let (body, headers) = page::page();
        return Ok(document(body, headers));
    }
    // Before any work, as for logins: one address may not make Redis do everyone's.
    if let Some(client) = client_address(app, req) {
        app.room_clients
            .hit(client)
            .await
            .map_err(|wait| limited("client", wait))?;
    }
    let user_id = authenticate(app, req)?;
    app.room_users
        .hit(user_id)
        .await
        .map_err(|wait| limited("user", wait))?;
    if kind == VisitKind::Join {
        let bits = app.inventory.proof_bits(event_id);
        let nonce = match req.headers().get(proof::HEADER).map(|v| v.to_str()) {
            None => None,
            Some(Ok(nonce)) if proof::valid_nonce(nonce) => Some(nonce),
            Some(_) => {
                return Err(Problem::bad_request(
                    "Proof-Of-Work must be 1 to 64 characters of A-Z a-z 0-9",
                ));
            }
        };
        if bits > 0 && !nonce.is_some_and(|n| proof::verify(event_id, user_id, n, bits)) {
            return Err(Problem::proof_required(
                proof::challenge(event_id, user_id),
                bits,
            ));
        }
    }
    // A place is only worth its booking: the user must be one PostgreSQL knows.
    if kind == VisitKind::Join && !app.users.exists(user_id).await? {
        return Err(AuthError::UnknownUser.into());
    }
    let visit = app.store.visit_room(event_id, user_id, kind).await?;
    record(event_id, kind, &visit);
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Some(view) = waiting_room::queue_view(event_id, &visit, now_ms) {
        let mut response = json_response(StatusCode::OK, &view);
        // The page is served at the same address: a cache must tell them apart.
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        return Ok(response);
    }
    let unloaded = matches!(visit, Visit::NoRoom)
        && app.inventory.was_on_sale(event_id)
        && !app.store.is_loaded(event_id).await?;
    Err(match visit {
        // Redis lost the event (and its queue): it is being loaded again.
        Visit::NoRoom if unloaded && app.inventory.awaits_load(event_id) => {
            Problem::event_loading(event_id)
        }
        Visit::NoRoom => Problem::not_found(format!(
            "event {event_id} has no waiting room (unknown, not on sale, or open to every buyer)"
        )),
        Visit::NotQueued => Problem::not_found(format!(
            "you are not in the queue of event {event_id} (never joined, or away past the \
             grace period): POST /waiting-room/{event_id}/join"
        )),
        Visit::NotOpen { opens_ms } => Problem::queue_not_open(event_id, opens_ms),
        _ => Problem::internal(),
    })
}

/// `GET /waiting-room/:id/stats`: public and read-only, one Redis pipeline.
pub async fn stats(app: &App, event_id: i64) -> Answer {
    let now_ms = chrono::Utc::now().timestamp_millis();
    match app.store.room_stats(event_id, now_ms).await? {
        Some(stats) => Ok(json_response(
            StatusCode::OK,
            &waiting_room::stats_view(event_id, &stats, now_ms),
        )),
        None => Err(Problem::not_found(format!(
            "event {event_id} has no waiting room (unknown, not on sale, or open to every buyer)"
        ))),
    }
}

fn record(event_id: i64, kind: VisitKind, visit: &Visit) {
    let outcome = match visit {
        Visit::Admitted { .. } => "admitted",
        Visit::Queued { .. } => "queued",
        Visit::PreQueue { .. } => "pre_queue",
        Visit::NotQueued => "not_queued",
        Visit::NotOpen { .. } => "not_open",
        Visit::NoRoom => "no_room",
    };
    metrics::counter!(metric::ROOM_VISITS, "kind" => kind.as_str(), "outcome" => outcome)
        .increment(1);
    if let Visit::Queued { queued, .. } | Visit::PreQueue { queued, .. } = visit {
        metrics::gauge!(metric::ROOM_QUEUED, "event" => event_id.to_string()).set(*queued as f64);
    }
}

fn limited(scope: &'static str, wait: std::time::Duration) -> Problem {
    metrics::counter!(metric::ROOM_LIMITED, "scope" => scope).increment(1);
    Problem::room_limited(scope, rate_limit::retry_after_secs(wait))
}

pub async fn admissions(app: &App, query: Option<&str>) -> Answer {
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
