//! Layer 3, the adapters: the JSON API (`api`), the web pages (`web`) and the VCS's policy
//! routes (`vcs`), each thin: extract, call a service, render the answer.

pub mod api;
pub mod front;
pub mod listener;
pub mod vcs;
pub mod web;
pub mod workers;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The admin listener's security headers, on every page and API answer: scripts, styles and
/// frames only from this server and never framed elsewhere, no content sniffing, HTTPS only
/// from now on, and nothing cached (answers carry secrets: sessions, CSRF tokens, records).
pub async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    add_security_headers(response.headers_mut());
    response
}

/// [`security_headers`]' headers, added to `headers`.
pub fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    use axum::http::{HeaderValue, header};
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

/// The peer address of the connection a request came on (what login throttling is keyed by);
/// `services::logins::SOURCE_UNKNOWN` when the server did not record it.
pub struct Source(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Source, Infallible> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(Source(peer.unwrap_or(crate::services::logins::SOURCE_UNKNOWN)))
    }
}
