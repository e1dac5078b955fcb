//! Layer 3, the adapters: the JSON API (`api`), the web pages (`web`) and the VCS's policy
//! routes (`vcs`), each thin: extract, call a service, render the answer.

pub mod api;
pub mod listener;
pub mod vcs;
pub mod web;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

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
