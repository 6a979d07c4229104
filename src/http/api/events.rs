//! `GET /api/events/:id`: one event, from Redis while it is loaded, from
//! PostgreSQL otherwise (see [`crate::catalog`]).

use http::StatusCode;

use crate::{
    app::App,
    http::{
        problem::Problem,
        response::{Answer, json_response},
    },
};

pub async fn event(app: &App, id: i64) -> Answer {
    match app.catalog.event(id).await? {
        Some(event) => Ok(json_response(StatusCode::OK, &event)),
        None => Err(Problem::not_found(format!("no event with id {id}"))),
    }
}
