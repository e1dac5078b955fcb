//! What a listener answers each request hyper serves with: the policy POST goes straight to
//! its handler, everything else through the router. A VCS's usual POST is answered before hyper,
//! by `adapters::fast_path`; what it hands over comes here: a POST chunked, closing its
//! connection, or over the bound (refused with 413 once its body is drained). Those skip the
//! router's matching, boxing and extractors (2.9 µs of 17.0 µs of server CPU per decision over
//! HTTPS when every call came this way). Every way in ends in the same handler
//! (`vcs::measured`), so they cannot answer differently.

use crate::adapters::vcs::{self, Vcs};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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
    /// `finish` (which `router` must also apply to its own answers, and which must add the
    /// same headers to every answer: the fast path adds them to a CPL's head once).
    pub fn with_policy(router: Router, policy: Vcs, finish: fn(&mut HeaderMap)) -> Front {
        Front { router, policy: Some(policy), finish }
    }

    /// What `adapters::fast_path` answers the policy POST with, if this listener serves it.
    pub fn policy_route(&self) -> Option<crate::adapters::fast_path::PolicyRoute> {
        let finish = self.finish;
        self.policy.clone().map(|vcs| crate::adapters::fast_path::PolicyRoute::new(vcs, finish))
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
            return Box::pin(answer_policy(policy, source, finish, request));
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(tower::ServiceExt::oneshot(self.front.router.clone(), request))
    }
}

/// The most the future of a policy POST may take: glibc serves an allocation of up to 1,032
/// bytes from a per-thread cache, and a larger one through its bins (their consolidation
/// showed in the profile of every call). The creation and password paths are boxed apart to
/// keep it so (`PolicyService::decide_by`, `policy_credentials::check`).
pub const POLICY_FUTURE_BYTES_MAX: usize = 1_024;

/// The policy POST's answer, its headers finished: the future each call allocates.
fn answer_policy(
    policy: Vcs,
    source: IpAddr,
    finish: fn(&mut HeaderMap),
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send {
    use futures_util::FutureExt as _;
    vcs::answer_policy_request(policy, source, request).map(move |mut response| {
        finish(response.headers_mut());
        Ok(response)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a policy call's future stays small enough for the allocator's per-thread cache,
    // so a change that holds a large future across an await on the common path (a bridge
    // call, a password check) is caught here rather than in a profile.
    #[test]
    fn a_policy_call_allocates_a_future_the_thread_cache_serves() {
        fn future_bytes<A, B, C, D, Fut>(_: impl FnOnce(A, B, C, D) -> Fut) -> usize {
            size_of::<Fut>()
        }
        let bytes = future_bytes(answer_policy);
        assert!(bytes <= POLICY_FUTURE_BYTES_MAX, "{bytes} bytes");
    }
}
