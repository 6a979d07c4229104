//! The waiting room's page: what a browser gets at `GET /waiting-room/:id`
//! (it asks for `text/html`; API clients get JSON at the same address). One
//! self-contained document, the same for every event and every buyer, so
//! serving it costs no Redis or PostgreSQL call however many browsers load it
//! at the on-sale: its script reads the event id from the address, the buyer's
//! token from the address's fragment (`#token=...`, which never reaches a
//! server, then kept in `localStorage` and removed from the address) or from an
//! earlier visit, and then joins, polls at the server's `pollAfterSeconds`,
//! solves a proof of work when the room asks for one, and moves on to booking
//! (a seat, a hold, its confirmation) once admitted.
//!
//! No external asset: the style and script are inline, allowed by their hashes
//! in a strict Content-Security-Policy (no other script, no frames, no forms,
//! requests to this origin only).

use std::sync::LazyLock;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

/// The page, as served.
pub const HTML: &str = include_str!("page.html");

/// Its Content-Security-Policy: the inline style and script by hash.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_of(between(HTML, "<script>", "</script>")),
        hash_of(between(HTML, "<style>", "</style>")),
    )
});

fn between<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html.find(open).expect("the page has the element") + open.len();
    let end = start + html[start..].find(close).expect("the element is closed");
    &html[start..end]
}

fn hash_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's body and its headers.
pub fn page() -> (Bytes, Vec<(header::HeaderName, HeaderValue)>) {
    let policy = HeaderValue::from_str(&POLICY).expect("the policy is ASCII");
    let headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // The same for everyone, but a new release must reach browsers at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::VARY, HeaderValue::from_static("Accept")),
    ];
    (Bytes::from_static(HTML.as_bytes()), headers)
}

/// Whether the request asks for HTML before JSON: a browser's navigation
/// (`text/html,...,*/*;q=0.8`) does; `*/*`, no `Accept` (curl, fetch) or
/// `application/json` does not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let mut html = 0.0_f32;
    let mut json = 0.0_f32;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=")?.parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            match media.as_str() {
                "text/html" => html = html.max(q),
                "application/json" | "application/*" | "*/*" => json = json.max(q),
                _ => {}
            }
        }
    }
    html > 0.0 && html > json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn browsers_get_the_page_and_api_clients_json() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                      image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&accept(&[chrome])));
        assert!(wants_html(&accept(&[firefox])));
        assert!(wants_html(&accept(&["TEXT/HTML"])));
        assert!(!wants_html(&accept(&[])));
        assert!(!wants_html(&accept(&["*/*"])));
        assert!(!wants_html(&accept(&["application/json"])));
        assert!(!wants_html(&accept(&["application/json, text/html;q=0.5"])));
        assert!(!wants_html(&accept(&["text/html;q=0"])));
        assert!(!wants_html(&accept(&["text/html, application/json"])));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let policy = &*POLICY;
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"));
        assert_eq!(policy.matches("sha256-").count(), 2);
        assert_eq!(HTML.matches("<script").count(), 1, "one script, hashed");
        assert_eq!(HTML.matches("<style").count(), 1, "one style, hashed");
        assert!(
            !HTML.contains(" style=\""),
            "style attributes are not allowed"
        );
        assert!(!HTML.contains("src=\"http"), "no external asset");
        // sha256 of "" in base64.
        assert_eq!(
            hash_of(""),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
