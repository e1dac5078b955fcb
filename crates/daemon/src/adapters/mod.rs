//! Layer 3, the adapters: the JSON API (`api`), the web pages (`web`) and the VCS's policy
//! routes (`vcs`), each thin: extract, call a service, render the answer.

pub mod api;
pub mod fast_path;
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

/// Of a body refused as too large, at most this much is read and dropped before the answer,
/// for at most [`REFUSED_BODY_DRAIN_MS`]: a client still sending it then gets the 413 rather
/// than a connection reset (closing on unread bytes resets it).
const REFUSED_BODY_DRAIN_BYTES_MAX: usize = 1024 * 1024;
const REFUSED_BODY_DRAIN_MS: u64 = 2_000;

/// Reads and drops what is left of a refused body, within the bounds above.
pub(crate) async fn drain_refused<B>(body: &mut B)
where
    B: hyper::body::Body + Unpin,
{
    use http_body_util::BodyExt as _;
    use hyper::body::Buf as _;
    let drained = async {
        let mut drained_bytes = 0;
        while drained_bytes < REFUSED_BODY_DRAIN_BYTES_MAX {
            let Some(Ok(frame)) = body.frame().await else { return };
            drained_bytes += frame.data_ref().map_or(0, |data| data.remaining());
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(REFUSED_BODY_DRAIN_MS), drained)
        .await;
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
