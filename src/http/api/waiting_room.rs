//! `GET /waiting-room[?eventId=]`: the admission state of one event, or of
//! every event on sale (see [`crate::waiting_room`]).

use http::StatusCode;
use serde_json::json;

use crate::{
    app::App,
    http::{
        problem::Problem,
        query::Query,
        response::{Answer, json_response},
    },
    waiting_room,
};

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
