//! `GET` and `PATCH /waiting-room/:id/settings`: the operator reads and
//! changes a waiting room at run time (pause, resume, admission rate, maximum
//! active buyers), behind the operator's bearer secret (see
//! [`crate::operator`] and [`crate::waiting_room::settings`]).

use http::{Request, StatusCode};
use hyper::body::Body;
use serde_json::{Map, Value};

use crate::{
    app::App,
    http::{
        body::read_json,
        problem::Problem,
        request::authorize_operator,
        response::{Answer, json_response},
    },
    waiting_room::settings::{self, Change},
};

pub async fn show<B>(app: &App, req: &Request<B>, event_id: i64) -> Answer {
    authorize_operator(app, req)?;
    let view = settings::read(&app.pg, &app.store, event_id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Applies the change at once (PostgreSQL, then Redis) and answers the
/// settings as they now are.
pub async fn change<B>(app: &App, req: Request<B>, event_id: i64) -> Answer
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Before the body is read: a stranger's body is not worth reading.
    authorize_operator(app, &req)?;
    let http = &app.config.http;
    let body: Map<String, Value> = read_json(req, http.max_body, http.body_timeout).await?;
    let change = Change::parse(&body).map_err(Problem::invalid_body)?;
    let view = settings::change(&app.pg, &app.store, event_id, change).await?;
    Ok(json_response(StatusCode::OK, &view))
}
