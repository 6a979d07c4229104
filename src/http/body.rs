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
    use serde::Deserialize;

    use super::*;

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
}
