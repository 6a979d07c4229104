//! `POST /api/users/login`: a bearer token for an email and password, behind
//! rate limits per client address and per account.

use std::time::Duration;

use chrono::SecondsFormat;
use http::{Request, StatusCode};
use hyper::body::Body;
use serde::Serialize;

use crate::{
    app::App,
    auth::{AuthError, LoginRequest},
    http::{
        body::read_json,
        client_address,
        problem::Problem,
        response::{Answer, json_response},
    },
    metric, rate_limit,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    token: String,
    user_id: i64,
    expires_at: String,
}

pub async fn login<B>(app: &App, req: Request<B>) -> Answer
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Before any work: one client address may not make the gateway check passwords for everyone.
    if let Some(client) = client_address(app, &req) {
        app.login_clients
            .hit(client)
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
        Err(AuthError::BadCredentials) => {
            app.login_accounts.count(account).await;
            return Err(AuthError::BadCredentials.into());
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
    metrics::counter!(metric::LOGIN_LIMITED, "scope" => scope).increment(1);
    Problem::login_limited(scope, rate_limit::retry_after_secs(wait))
}
