//! Reading request bodies: the size limit is enforced while reading (a huge body
//! is cut off at the limit, never buffered whole), slow senders time out, and
//! JSON errors become 400s that say what is wrong.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// Reads a JSON object body of at most `limit` bytes into `T`.
pub async fn read_json<T, B>(req: Request<B>, limit: usize, timeout: Duration) -> Result<T, Problem>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return Err(Problem::unsupported_media_type());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Problem::body_too_large(limit));
    }
    let bytes = read_limited(req.into_body(), limit, timeout).await?;
    // Every body of this API is an object; serde would also take an array by position.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(Problem::invalid_body("the body must be a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| Problem::invalid_body(json_error(&e)))
}

async fn read_limited<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Problem::body_timeout()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Problem::body_too_large(limit)),
        Ok(Err(e)) => Err(Problem::bad_request(format!(
            "failed to read the body: {e}"
        ))),
    }
}

/// `application/json`, `application/<x>+json`, with or without parameters.
fn is_json(value: Option<&http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "the JSON body ended too early (is it empty?)".to_string(),
        Category::Syntax => format!("the body is not valid JSON: {e}"),
        Category::Data => format!("the JSON does not fit this call: {e}"),
        Category::Io => format!("failed to read the body: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;
    use crate::{auth::LoginRequest, bookings::HoldRequest};

    #[derive(Debug, Deserialize)]
    struct Login {
        #[allow(dead_code)]
        email: String,
    }

    fn request(content_type: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
        let mut builder = Request::post("/");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    async fn read(req: Request<Full<Bytes>>) -> Result<Login, Problem> {
        read_json(req, 32, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn json_bodies_are_read() {
        let json = request(
            Some("application/json; charset=utf-8"),
            r#"{"email":"a@b"}"#,
        );
        assert!(read(json).await.is_ok());
    }

    #[tokio::test]
    async fn each_bad_body_gets_its_status() {
        let cases = [
            (request(None, "{}"), 415),
            (request(Some("text/plain"), "{}"), 415),
            (request(Some("application/json"), ""), 400),
            (request(Some("application/json"), "{"), 400),
            (request(Some("application/json"), r#"{"email": 5}"#), 400),
            (request(Some("application/json"), r#"["email"]"#), 400),
            (
                request(
                    Some("application/json"),
                    r#"{"email":"0123456789012345678901234567890"}"#,
                ),
                413,
            ),
        ];
        for (req, status) in cases {
            let problem = read(req).await.unwrap_err();
            assert_eq!(problem.status.as_u16(), status, "{problem:?}");
        }
    }

    const LIMIT: usize = 16_384;

    /// `body` read as `T` the way the routes read it, on a runtime of its own.
    fn read_bytes<T: DeserializeOwned>(body: Vec<u8>) -> Result<T, Problem> {
        let req = Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(read_json(req, LIMIT, Duration::from_secs(1)))
    }

    /// A refused body is a 400 or 413 problem document that says so.
    fn assert_refused(problem: Problem) -> Result<(), TestCaseError> {
        let status = problem.status.as_u16();
        prop_assert!(status == 400 || status == 413, "{:?}", problem);
        let response = problem.into_response();
        prop_assert_eq!(
            &response.headers()[header::CONTENT_TYPE],
            super::super::problem::CONTENT_TYPE
        );
        let body = futures::executor::block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&doc["status"], &json!(status));
        prop_assert!(doc["type"].is_string() && doc["detail"].is_string());
        Ok(())
    }

    /// The members the routes read, as whatever JSON they hold: the oracle.
    /// Other members are skipped as the routes skip them (a number too large
    /// for a `Value`, say, is no error there).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Members {
        #[serde(default)]
        event_id: Value,
        #[serde(default)]
        seat_id: Value,
        #[serde(default)]
        email: Value,
        #[serde(default)]
        password: Value,
    }

    /// A JSON value of any type, the kind a client may put where a number goes.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| json!(f).to_string()),
            Just("1e400".to_string()),
            Just("-0".to_string()),
            Just("99999999999999999999".to_string()),
            any::<String>().prop_map(|s| json!(s).to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
        ]
    }

    /// Bodies a client may send: bytes, near-JSON, objects with odd members.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            (scalar(), scalar())
                .prop_map(|(e, s)| format!(r#"{{"eventId":{e},"seatId":{s}}}"#).into_bytes()),
            (scalar(), scalar(), "[a-zA-Z]{1,8}")
                .prop_map(
                    |(a, b, k)| format!(r#" {{"{k}":{a},"seatId":{b},"eventId":1}} "#).into_bytes()
                ),
            (scalar(), scalar())
                .prop_map(|(e, p)| format!(r#"{{"email":{e},"password":{p}}}"#).into_bytes()),
            "[{}\\[\\]\":,0-9a-zA-Z \\\\]{0,40}".prop_map(String::into_bytes),
            (0usize..40, proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(at, junk)| {
                let mut b = br#"{"eventId":1,"seatId":2}"#.to_vec();
                let at = at.min(b.len());
                b.splice(at..at, junk);
                b
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any body of `POST /api/bookings` is a hold request that says exactly
        /// what the JSON says, or a 400/413 problem; never a panic.
        #[test]
        fn any_hold_body_is_read_or_refused(body in body()) {
            match read_bytes::<HoldRequest>(body.clone()) {
                Ok(req) => {
                    let value: Members = serde_json::from_slice(&body).unwrap();
                    prop_assert_eq!(value.event_id.as_i64(), Some(req.event_id));
                    prop_assert_eq!(value.seat_id.as_i64(), Some(req.seat_id));
                }
                Err(problem) => assert_refused(problem)?,
            }
        }

        /// The same for the login body.
        #[test]
        fn any_login_body_is_read_or_refused(body in body()) {
            match read_bytes::<LoginRequest>(body.clone()) {
                Ok(req) => {
                    let value: Members = serde_json::from_slice(&body).unwrap();
                    prop_assert_eq!(value.email.as_str(), Some(req.email.as_str()));
                    prop_assert_eq!(value.password.as_str(), Some(req.password.as_str()));
                }
                Err(problem) => assert_refused(problem)?,
            }
        }

        /// Every pair of ids, with members we do not know around them, reads back.
        #[test]
        fn hold_bodies_round_trip(
            event_id in any::<i64>(),
            seat_id in any::<i64>(),
            extra in proptest::collection::btree_map("[a-z]{1,6}", scalar(), 0..3),
        ) {
            let mut body = serde_json::Map::new();
            for (k, v) in extra {
                body.insert(k, serde_json::from_str(&v).unwrap_or(Value::Null));
            }
            body.insert("eventId".into(), event_id.into());
            body.insert("seatId".into(), seat_id.into());
            let req: HoldRequest = read_bytes(serde_json::to_vec(&body).unwrap()).unwrap();
            prop_assert_eq!((req.event_id, req.seat_id), (event_id, seat_id));
        }

        /// A body past the limit is a 413 whatever it holds.
        #[test]
        fn a_body_past_the_limit_is_413(extra in 1usize..4096, fill in any::<u8>()) {
            let problem = read_bytes::<HoldRequest>(vec![fill; LIMIT + extra]).unwrap_err();
            prop_assert_eq!(problem.status.as_u16(), 413);
        }
    }
}
