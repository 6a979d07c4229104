//! `GET /api/seats/available?eventId=&limit=&after=`: one page of an on-sale
//! event's available seats, from Redis only.

use http::StatusCode;

use crate::{
    app::App,
    http::{
        problem::Problem,
        query::SeatsQuery,
        response::{Answer, json_bytes},
    },
};

pub async fn available(app: &App, query: Option<&str>) -> Answer {
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
