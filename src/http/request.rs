//! What handlers read off a request besides its body: the user of its bearer
//! token (or the operator, for the operator's calls), and the trace context
//! its hold events carry.

use http::{Request, header};

use super::problem::Problem;
use crate::{app::App, auth::AuthError, telemetry};

/// The user id of a valid `Authorization: Bearer` token, or 401.
pub fn authenticate<B>(app: &App, req: &Request<B>) -> Result<i64, Problem> {
    let token = bearer(req).ok_or(AuthError::BadToken)?;
    Ok(app.auth.verify(token)?)
}

/// Whether the request comes from the operator: 403 when the operator API is
/// off, 401 without the operator's bearer secret.
pub fn authorize_operator<B>(app: &App, req: &Request<B>) -> Result<(), Problem> {
    Ok(app.operator.check(bearer(req))?)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// The trace context stored with the outbox entry: while traces are exported,
/// this request's own span, or the unsampled context of a request the sampler
/// dropped (a client's sampled flag carried on either way); otherwise the
/// request's W3C `traceparent` (see [`telemetry::context::normalize`]), or ""
/// when it has no valid one.
pub fn traceparent<B>(req: &Request<B>) -> String {
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
        .and_then(telemetry::context::normalize)
        .unwrap_or_default()
}
