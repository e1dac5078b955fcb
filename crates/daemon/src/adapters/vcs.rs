//! The VCS's routes to the policy service (`POST /baton/policy`, `GET /baton/policy/status`)
//! and the bridges' event notifications, on the admin HTTPS listener and optionally on plain
//! HTTP: the request in, [`PolicyService`] decides, CPL (or a status line) out.

use crate::adapters::Source;
use crate::services::logins::{self, Logins};
use crate::services::metrics;
use crate::services::policy::{Answer, Caller, PolicyService};
use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::State as Extract;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use std::net::IpAddr;
use std::sync::Arc;

use crate::services::policy::{BRIDGE_EVENTS_PATH, POLICY_PATH, STATUS_PATH};

/// What the VCS's routes share: the policy service and the login throttle.
#[derive(Clone)]
pub struct Vcs {
    pub service: Arc<PolicyService>,
    pub logins: Arc<Logins>,
}

pub fn router(service: Arc<PolicyService>, logins: Arc<Logins>) -> Router {
    Router::new()
        .route(BRIDGE_EVENTS_PATH, post(bridge_event))
        .route(POLICY_PATH, post(decide))
        .route(STATUS_PATH, get(status))
        .layer(axum::extract::DefaultBodyLimit::max(policy::request::REQUEST_BYTES_MAX))
        .with_state(Vcs { service, logins })
}

#[derive(serde::Deserialize)]
struct EventQuery {
    bridge: String,
    token: String,
}

async fn bridge_event(
    Extract(Vcs { service, .. }): Extract<Vcs>,
    axum::extract::Query(query): axum::extract::Query<EventQuery>,
    body: Bytes,
) -> Response {
    match service.bridge_event(&query.bridge, &query.token, &body) {
        Ok(()) => {
            let answer = bridges::xmlrpc::encode_response(&bridges::xmlrpc::Value::Struct(
                Default::default(),
            ));
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], answer).into_response()
        }
        Err(reason) => (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response(),
    }
}

/// The VCS's status poll: the same credentials as the policy path (401 otherwise: the VCS
/// shows the service as failed rather than taking it for up), then 200 or 503 with the reason.
/// Without an account there is nothing to check: 503, not configured.
async fn status(
    Extract(vcs): Extract<Vcs>,
    Source(source): Source,
    authorization: Authorization,
) -> Response {
    if vcs.service.account_configured()
        && let Err(refused) = authorise(&vcs, source, &authorization).await
    {
        return refused;
    }
    match vcs.service.unavailable().await {
        None => (StatusCode::OK, "OK\n").into_response(),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {reason}\n")).into_response()
        }
    }
}

/// The request's `Authorization` header, if any: taken alone, as the policy path needs no
/// other header and copying the whole map cost every call.
struct Authorization(Option<HeaderValue>);

impl Authorization {
    fn of(headers: &HeaderMap) -> Authorization {
        Authorization(headers.get(header::AUTHORIZATION).cloned())
    }

    /// The base64 of HTTP Basic credentials, if that is what the header holds.
    fn basic_credentials(&self) -> Option<&str> {
        self.0.as_ref()?.to_str().ok()?.strip_prefix("Basic ")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Authorization::of(&parts.headers))
    }
}

/// Whether the request carries the policy-service account's Basic credentials, throttled per
/// source like every login; the refusal to send otherwise.
async fn authorise(
    vcs: &Vcs,
    source: IpAddr,
    authorization: &Authorization,
) -> Result<(), Response> {
    let credentials = authorization.basic_credentials();
    let unauthorised = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"baton policy\"")],
            "policy service credentials required\n",
        )
            .into_response()
    };
    let Some(credentials) = credentials else { return Err(unauthorised()) };
    let account = basic_user(credentials);
    if let Err(refused) = vcs.logins.admit(source, &account) {
        return Err((StatusCode::TOO_MANY_REQUESTS, format!("{refused}\n")).into_response());
    }
    match vcs.service.authorised(credentials).await {
        Ok(true) => {
            vcs.logins.succeeded(source, &account);
            Ok(())
        }
        Ok(false) => {
            vcs.logins.failed(source, &account, logins::Path::PolicyService);
            Err(unauthorised())
        }
        Err(busy) => Err((StatusCode::SERVICE_UNAVAILABLE, format!("{busy}\n")).into_response()),
    }
}

/// The user name of Basic credentials (empty when they do not decode), for throttling.
fn basic_user(credentials: &str) -> String {
    let Ok(mut decoded) = base64::engine::general_purpose::STANDARD.decode(credentials.trim())
    else {
        return String::new();
    };
    let Some(colon) = decoded.iter().position(|&byte| byte == b':') else { return String::new() };
    decoded.truncate(colon);
    String::from_utf8(decoded).unwrap_or_default()
}

/// A policy request through the router (see `adapters::front` for the usual way in).
async fn decide(
    Extract(vcs): Extract<Vcs>,
    Source(source): Source,
    authorization: Authorization,
    body: Bytes,
) -> Response {
    measured(&vcs, source, &authorization, &body, None).await.into_response()
}

/// A policy request as `adapters::front` passes it on: the body read up to
/// [`policy::request::REQUEST_BYTES_MAX`] (413 past it, as the router's limit answers), then
/// answered as through the router.
pub async fn answer_policy_request(
    vcs: Vcs,
    source: IpAddr,
    request: axum::http::Request<hyper::body::Incoming>,
) -> Response {
    // The rest of the head is dropped before the body is awaited: it would take its room in
    // the future, which is allocated for every call.
    let (authorization, body) = {
        let (parts, body) = request.into_parts();
        (Authorization::of(&parts.headers), body)
    };
    let body = match read_body(body, policy::request::REQUEST_BYTES_MAX).await {
        Ok(body) => body,
        Err(BodyRefusal::TooLarge) => {
            let refusal = "request body larger than the policy service accepts\n";
            return (StatusCode::PAYLOAD_TOO_LARGE, refusal).into_response();
        }
        Err(BodyRefusal::Unreadable(error)) => {
            return (StatusCode::BAD_REQUEST, format!("request body unreadable: {error}\n"))
                .into_response();
        }
    };
    measured(&vcs, source, &authorization, &body, None).await.into_response()
}

/// A policy request as `adapters::fast_path` passes it on: its `Authorization` header and its
/// whole body, within the bound, with what its connection remembers. Answered as through the
/// router.
pub async fn answer_policy_post(
    vcs: &Vcs,
    source: IpAddr,
    authorization: Option<HeaderValue>,
    body: &Bytes,
    caller: &mut Caller,
) -> PolicyAnswer {
    measured(vcs, source, &Authorization(authorization), body, Some(caller)).await
}

/// A policy request's answer: a decision's CPL, or any other response (a refusal). The CPL is
/// kept apart so that the fast path can write it behind a head it made once (see
/// `adapters::fast_path::PolicyRoute`) rather than build a response for every call.
pub enum PolicyAnswer {
    Cpl(Bytes),
    Other(Response),
}

impl PolicyAnswer {
    fn status(&self) -> StatusCode {
        match self {
            PolicyAnswer::Cpl(_) => StatusCode::OK,
            PolicyAnswer::Other(response) => response.status(),
        }
    }
}

impl IntoResponse for PolicyAnswer {
    fn into_response(self) -> Response {
        match self {
            PolicyAnswer::Cpl(cpl) => {
                // A static header value: built from a `&str`, it would be copied for every call.
                let content_type = HeaderValue::from_static(policy::cpl::CONTENT_TYPE);
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], cpl).into_response()
            }
            PolicyAnswer::Other(response) => response,
        }
    }
}

/// Why a request's body was not read.
#[derive(Debug)]
enum BodyRefusal<E> {
    /// Longer than the limit.
    TooLarge,
    Unreadable(E),
}

/// A request's body, at most `limit_bytes` of it. A body sent in one piece (a VCS's form is)
/// is taken as it is: no buffer list to gather pieces, no copy. A longer one is read up to the
/// limit, whatever length it declares, and what is left is drained (within bounds) before it
/// is refused: closing on unread bytes, its client still sending saw a reset, not the 413.
async fn read_body<B>(mut body: B, limit_bytes: usize) -> Result<Bytes, BodyRefusal<B::Error>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt as _;
    // The body while it came in one piece; once a second piece comes, all of them in `joined`.
    let (mut whole, mut joined) = (Bytes::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyRefusal::Unreadable)?.into_data() else {
            continue; // trailers: nothing the policy service reads
        };
        if whole.len() + joined.len() + data.len() > limit_bytes {
            // Boxed: a refusal is rare, and its future would take room in every call's.
            Box::pin(super::drain_refused(&mut body)).await;
            return Err(BodyRefusal::TooLarge);
        }
        if whole.is_empty() && joined.is_empty() {
            whole = data;
        } else {
            joined.extend_from_slice(&std::mem::take(&mut whole));
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() { whole } else { Bytes::from(joined) })
}

/// A policy request, counted in the metrics by its decision, status and latency.
async fn measured(
    vcs: &Vcs,
    source: IpAddr,
    authorization: &Authorization,
    body: &Bytes,
    caller: Option<&mut Caller>,
) -> PolicyAnswer {
    let started = std::time::Instant::now();
    let (answer, decision) = answer(vcs, source, authorization, body, caller).await;
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    vcs.service.metrics.observe(decision, answer.status().as_u16(), elapsed_us);
    answer
}

/// The answer to a policy request and its decision's metrics index; with its connection's
/// memory (`caller`) when it has one.
async fn answer(
    vcs: &Vcs,
    source: IpAddr,
    authorization: &Authorization,
    body: &Bytes,
    mut caller: Option<&mut Caller>,
) -> (PolicyAnswer, usize) {
    let undecided = metrics::decision_index(None);
    let service = &vcs.service;
    if let Some(caller) = caller.as_deref_mut() {
        service.refresh(caller);
    }
    if let Err(refused) = authorise_remembering(vcs, source, authorization, &mut caller).await {
        return (PolicyAnswer::Other(refused), undecided);
    }
    let request = match policy::request::parse(body) {
        Ok(request) => request,
        Err(error) => {
            let refused = (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
            return (PolicyAnswer::Other(refused), undecided);
        }
    };
    let Some(Answer { decision, cpl }) = service.answer_for(caller, &request).await else {
        return (PolicyAnswer::Other(StatusCode::SERVICE_UNAVAILABLE.into_response()), undecided);
    };
    // `PolicyService::answer_for` never leaves a creation undone.
    tracing::debug!(
        destination = request.destination_alias.as_deref().unwrap_or(""),
        serial = request.call_serial.as_deref().unwrap_or(""),
        ?decision,
        "policy decision"
    );
    (PolicyAnswer::Cpl(cpl), metrics::decision_index(Some(&decision)))
}

/// [`authorise`], unless the credentials were proven on the same connection (see
/// `services::policy::Caller`): a VCS sends the same ones with every call. A connection that
/// proved them is not throttled for a failure elsewhere from its address (the throttle slows
/// guessing, and it is not guessing). They are proven only while the service remembers their
/// check: without it (no randomness at start) every call checks its password, as before.
async fn authorise_remembering(
    vcs: &Vcs,
    source: IpAddr,
    authorization: &Authorization,
    caller: &mut Option<&mut Caller>,
) -> Result<(), Response> {
    let now_ms = crate::base::clock::coarse_now_ms();
    let credentials = authorization.basic_credentials();
    if let (Some(caller), Some(credentials)) = (caller.as_deref(), credentials)
        && caller.proved(credentials, now_ms)
    {
        return Ok(());
    }
    authorise(vcs, source, authorization).await?;
    if let (Some(caller), Some(credentials)) = (caller.as_deref_mut(), credentials)
        && let Some(verified_at_ms) = vcs.service.verified_at_ms(credentials)
    {
        caller.prove(credentials, verified_at_ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    type Piece = Result<Frame<Bytes>, &'static str>;

    fn body(
        pieces: Vec<Piece>,
    ) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Piece>>> {
        StreamBody::new(futures_util::stream::iter(pieces))
    }

    fn data(text: &'static str) -> Piece {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    // Goal: a body in one piece is taken as it is (no copy), pieces are joined in order, the
    // limit counts every piece (a chunked body cannot pass it piece by piece) and a whole
    // one, and a failed read is told apart from a long body.
    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limit() {
        let one = Bytes::from_static(b"POLICY_TYPE=SEARCH");
        let read = read_body(body(vec![Ok(Frame::data(one.clone()))]), 64).await.unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr(), "one piece is not copied");
        let pieces = vec![
            data("POLICY"),
            data("_TYPE="),
            Ok(Frame::trailers(Default::default())),
            data("SEARCH"),
        ];
        assert_eq!(read_body(body(pieces), 64).await.unwrap(), "POLICY_TYPE=SEARCH");
        assert_eq!(read_body(body(vec![]), 64).await.unwrap(), "");

        let pieces = vec![data("12345"), data("67890"), data("1")];
        assert!(matches!(read_body(body(pieces), 10).await, Err(BodyRefusal::TooLarge)));
        let pieces = vec![data("12345"), data("67890")];
        assert_eq!(read_body(body(pieces), 10).await.unwrap(), "1234567890");
        let whole = http_body_util::Full::new(Bytes::from_static(&[b'a'; 11]));
        assert!(matches!(read_body(whole, 10).await, Err(BodyRefusal::TooLarge)));

        let broken = vec![data("POLICY"), Err("connection reset")];
        assert!(matches!(
            read_body(body(broken), 64).await,
            Err(BodyRefusal::Unreadable("connection reset"))
        ));
    }
}
