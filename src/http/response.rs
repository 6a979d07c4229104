//! Success answers: a JSON value or finished JSON bytes with their status, or
//! a document with its own headers (the waiting room's page). (Error answers
//! are [`super::problem::Problem`]s.)

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use super::problem::Problem;

/// What every handler returns: its answer, or the problem that is the answer.
pub type Answer = Result<Response<Full<Bytes>>, Problem>;

pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("response types serialize");
    json_bytes(status, Bytes::from(body))
}

/// A body that is JSON already (a cached page, the API description).
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 with the given body and headers (their content type included).
pub fn document(
    body: Bytes,
    headers: Vec<(header::HeaderName, HeaderValue)>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().extend(headers);
    response
}
