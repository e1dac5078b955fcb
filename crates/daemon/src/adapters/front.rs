//! What a listener answers each request with: the VCS's policy POST goes straight to its
//! handler, everything else through the router. The router's matching, boxing and
//! extractors cost 2.9 µs of the 17.0 µs of server CPU per decision over HTTPS (0.6 µs over
//! plain HTTP; `cargo xtask bench policy`), and the policy path is the one the VCS calls for
//! every call. Both ways end in the same handler (`vcs::measured`), so they cannot answer
//! differently.

use crate::adapters::vcs::{self, Vcs};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A listener's router, and the policy service when the listener serves the VCS.
#[derive(Clone)]
pub struct Front {
    router: Router,
    policy: Option<Vcs>,
    /// Headers every answer of this listener carries (the admin listener's security headers),
    /// added to the policy path's answers as the router's layer adds them to the rest.
    finish: fn(&mut HeaderMap),
}

impl Front {
    /// Every request through `router`.
    pub fn new(router: Router) -> Front {
        Front { router, policy: None, finish: |_| {} }
    }

    /// The policy POST answered by `policy`'s handler directly, its headers finished by
    /// `finish` (which `router` must also apply to its own answers).
    pub fn with_policy(router: Router, policy: Vcs, finish: fn(&mut HeaderMap)) -> Front {
        Front { router, policy: Some(policy), finish }
    }
}

/// A connection's service: the front and the peer's address (the router reads it as
/// `ConnectInfo`, the policy path throttles logins by it).
#[derive(Clone)]
pub struct Connection {
    front: Front,
    peer: SocketAddr,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl tower::Service<Request<Incoming>> for Connection {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Answer {
        if let Some(policy) = &self.front.policy
            && request.method() == Method::POST
            && request.uri().path() == crate::services::policy::POLICY_PATH
        {
            let (policy, source, finish) = (policy.clone(), self.peer.ip(), self.front.finish);
            return Box::pin(async move {
                let mut response = vcs::answer_policy_request(&policy, source, request).await;
                finish(response.headers_mut());
                Ok(response)
            });
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(tower::ServiceExt::oneshot(self.front.router.clone(), request))
    }
}

/// Makes each connection's service (what the server calls a make-service).
impl tower::Service<SocketAddr> for Front {
    type Response = Connection;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Connection, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, peer: SocketAddr) -> Self::Future {
        std::future::ready(Ok(Connection { front: self.clone(), peer }))
    }
}
