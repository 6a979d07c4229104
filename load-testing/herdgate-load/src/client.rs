//! The generator's side of HTTP: one keep-alive HTTP/1.1 connection per
//! worker on hyper's client connection API, so a run opens exactly the
//! connections it was asked for, and requests built from a journey's calls.

use std::{io, net::SocketAddr};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::plan::Call;

/// Seats asked for per page when a mixed user browses.
const PAGE: u32 = 50;

/// The one server a run talks to: `http://host[:port]`, nothing else.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    authority: HeaderValue,
}

impl Target {
    /// Resolves `base` once; only plain `http://host[:port]` with no path is accepted.
    pub async fn resolve(base: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = base
            .parse()
            .map_err(|e| anyhow::anyhow!("--base {base:?} is not a URL: {e}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--base must be an http:// URL (the generator speaks plain HTTP/1.1)"
        );
        anyhow::ensure!(
            matches!(uri.path(), "" | "/") && uri.query().is_none(),
            "--base is the server's root, e.g. http://127.0.0.1:8080"
        );
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("--base {base:?} names no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} resolves to no address", authority.host()))?;
        Ok(Target {
            addr,
            authority: HeaderValue::from_str(authority.as_str())?,
        })
    }

    /// The HTTP request for `call`; `bearer` is the user's `Authorization` value.
    pub fn request(
        &self,
        event: i64,
        call: &Call,
        bearer: Option<HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let (method, path, body) = match call {
            Call::Event => (Method::GET, format!("/api/events/{event}"), None),
            Call::Seats { after } => (
                Method::GET,
                format!("/api/seats/available?eventId={event}&limit={PAGE}&after={after}"),
                None,
            ),
            Call::Hold { seat, .. } => (
                Method::POST,
                "/api/bookings".to_string(),
                Some(format!(r#"{{"eventId":{event},"seatId":{seat}}}"#)),
            ),
            Call::Confirm { booking, .. } => (
                Method::POST,
                format!("/api/bookings/{booking}/confirm"),
                None,
            ),
            Call::Cancel { booking, .. } => {
                (Method::DELETE, format!("/api/bookings/{booking}"), None)
            }
            Call::Join { .. } => (Method::POST, format!("/waiting-room/{event}/join"), None),
            Call::Look { .. } => (Method::GET, format!("/waiting-room/{event}"), None),
            Call::RoomStats => (Method::GET, format!("/waiting-room/{event}/stats"), None),
            Call::ChangeRoom { settings } => (
                Method::PATCH,
                format!("/waiting-room/{event}/settings"),
                Some(settings.clone()),
            ),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.authority.clone());
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
            .expect("the parts of a call make a valid request")
    }
}

/// One open connection; requests on it go one after another.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(target: &Target) -> io::Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        // Ends when the server closes or the sender is dropped; a failure shows
        // up on the next send.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    /// True once the server closed it (the gateway closes idle connections,
    /// HERDGATE_IDLE_TIMEOUT): a new one is needed, as any HTTP client's pool would open.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer: its status and body.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<(u16, Bytes)> {
        let answer = self.exchange(request).await?;
        Ok((answer.status, answer.body))
    }

    /// Sends one request and reads the whole answer, `Retry-After` included.
    pub async fn exchange(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Answered> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answered {
            status,
            retry_after,
            body,
        })
    }
}

/// One answer, as the waiting-room buyers need it.
pub struct Answered {
    pub status: u16,
    /// Seconds, on a 429 or 503.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_plain_http_root_is_a_target() {
        let target = Target::resolve("http://127.0.0.1:8080").await.unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(Target::resolve("http://127.0.0.1:8080/").await.is_ok());
        for bad in [
            "https://127.0.0.1:8080",
            "http://127.0.0.1:8080/api",
            "http://127.0.0.1:8080/?x=1",
            "127.0.0.1:8080",
            "not a url",
        ] {
            assert!(Target::resolve(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn each_call_becomes_its_endpoint() {
        let target = Target::resolve("http://127.0.0.1:8080").await.unwrap();
        let bearer = Some(HeaderValue::from_static("Bearer t"));
        let hold = target.request(3, &Call::Hold { user: 0, seat: 9 }, bearer.clone());
        assert_eq!(
            (hold.method(), hold.uri().path()),
            (&Method::POST, "/api/bookings")
        );
        assert_eq!(hold.headers()[header::HOST], "127.0.0.1:8080");
        assert_eq!(hold.headers()[header::AUTHORIZATION], "Bearer t");
        let body = hold.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"eventId":3,"seatId":9}"#);

        let seats = target.request(3, &Call::Seats { after: 40 }, None);
        assert_eq!(
            seats.uri().to_string(),
            "/api/seats/available?eventId=3&limit=50&after=40"
        );
        let confirm = Call::Confirm {
            user: 0,
            booking: "b".into(),
        };
        let confirm = target.request(3, &confirm, bearer.clone());
        assert_eq!(confirm.uri().path(), "/api/bookings/b/confirm");
        let cancel = target.request(
            3,
            &Call::Cancel {
                user: 0,
                booking: "b".into(),
            },
            bearer,
        );
        assert_eq!(
            (cancel.method(), cancel.uri().path()),
            (&Method::DELETE, "/api/bookings/b")
        );
    }
}
