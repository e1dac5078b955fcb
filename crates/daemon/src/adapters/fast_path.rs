//! The VCS's policy POST answered before hyper sees the connection. A VCS sends one small form
//! per call, framed the same way each time; parsing it with `httparse` and writing the answer
//! ourselves, without hyper's dispatcher and encoder and axum-server's service plumbing, took
//! batond's user time per decision over plain HTTP from 4.3–5.3 µs to 3.1–4.2 µs, and put the
//! HTTPS decisions ahead of nginx (`cargo xtask bench policy`).
//!
//! Only a request this module fully understands is answered here: `POST /baton/policy` in
//! HTTP/1.1, one `Content-Length` within the policy service's bound, and no `Transfer-Encoding`,
//! `Expect`, `Upgrade` or `Connection` other than keep-alive. At the first request that is
//! anything else (a status poll, a chunked body, a malformed head, a head too long), the
//! connection is handed to hyper with the bytes already read, and hyper serves it from then on:
//! every refusal and every corner of HTTP stays hyper's. Both ways end in the same handler
//! (`vcs::answer_policy_post`), so they cannot decide differently; a call here may only skip
//! the decision with what its connection remembers (`services::policy::Caller`), which never
//! outlives what it was decided on.
//!
//! The limits stay the listener's: the connection's slot and idle deadline come from
//! [`Limited`](crate::adapters::listener::Limited) below, and a head must arrive within the
//! header read deadline, the wait for a kept connection's next request included, as hyper
//! counts it. (A head still incomplete past [`HEAD_BYTES_MAX`] goes to hyper, whose deadline
//! starts afresh: such a head may take up to twice the deadline, once per connection.)
//!
//! At the shutdown, an idle connection is closed, a request begun is answered as its
//! connection's last (`connection: close`), and nothing more is handed over: axum-server has
//! hyper close a connection it gets after the shutdown before reading it.

use crate::adapters::listener::Deadline;
use crate::adapters::vcs::{self, PolicyAnswer, Vcs};
use crate::services::policy::Caller;
use axum::http::response::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse as _;
use axum_server::accept::Accept;
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Headers a policy POST may carry to be answered here; one with more goes to hyper.
const HEADERS_MAX: usize = 32;
/// A head not complete within this many bytes goes to hyper (which bounds it further).
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Room made for each read.
const READ_BYTES: usize = 4 * 1024;
/// The largest answer written here (CPL and refusals are far smaller).
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// What the policy POST is answered by, on a listener that serves the VCS.
#[derive(Clone)]
pub struct PolicyRoute {
    vcs: Vcs,
    /// Headers every answer of the listener carries (see `Front::with_policy`).
    finish: fn(&mut HeaderMap),
    /// A CPL answer's status line and header lines, `finish`'s included: made once, as they
    /// are the same for every call (building a response per call, then taking it apart to
    /// write it, showed in every call's profile).
    cpl_head: Bytes,
}

/// An acceptor (around `inner`, e.g. [`Limited`](crate::adapters::listener::Limited)) that
/// answers policy POSTs itself and hands the connection to the server at its first other
/// request.
#[derive(Clone)]
pub struct FastPath<A> {
    inner: A,
    route: Option<PolicyRoute>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
}

impl<A> FastPath<A> {
    /// Without a `route`, every connection goes to the server untouched.
    pub fn new(
        inner: A,
        route: Option<PolicyRoute>,
        header_read_timeout_ms: u64,
        shutdown: CancellationToken,
    ) -> FastPath<A> {
        let header_read_timeout = Duration::from_millis(header_read_timeout_ms);
        FastPath { inner, route, header_read_timeout, shutdown }
    }
}

type Accepted<S, V> = Pin<Box<dyn Future<Output = io::Result<(Rewind<S>, V)>> + Send>>;

impl<A, V> Accept<TcpStream, V> for FastPath<A>
where
    A: Accept<TcpStream, V>,
    A::Future: Send + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Rewind<A::Stream>;
    type Service = A::Service;
    type Future = Accepted<A::Stream, A::Service>;

    fn accept(&self, stream: TcpStream, service: V) -> Self::Future {
        let source = stream.peer_addr().map_or(crate::services::logins::SOURCE_UNKNOWN, |a| a.ip());
        let accepting = self.inner.accept(stream, service);
        // A child of the server's token: asked after every answer, it locks a mutex of this
        // connection's own, where the server's would be one that every connection takes.
        let (route, timeout, shutdown) =
            (self.route.clone(), self.header_read_timeout, self.shutdown.child_token());
        Box::pin(async move {
            let (stream, service) = accepting.await?;
            let Some(route) = route else {
                return Ok((Rewind::new(stream, Bytes::new()), service));
            };
            let answer =
                |caller, authorization, body| route.answer(source, caller, authorization, body);
            match serve(stream, None, answer, &route.cpl_head, timeout, &shutdown).await {
                Served::HandedOver(stream) => Ok((stream, service)),
                Served::Closed => Err(io::ErrorKind::ConnectionAborted.into()),
            }
        })
    }
}

impl PolicyRoute {
    /// `finish` must add the same headers to every answer (they must not depend on the
    /// request or the time): a CPL's are added once, here.
    pub fn new(vcs: Vcs, finish: fn(&mut HeaderMap)) -> PolicyRoute {
        PolicyRoute { vcs, finish, cpl_head: cpl_head(finish) }
    }

    /// The answer to one policy POST, and what its connection remembers (made at its first).
    async fn answer(
        &self,
        source: IpAddr,
        caller: Option<Caller>,
        authorization: Option<HeaderValue>,
        body: Bytes,
    ) -> (PolicyAnswer, Option<Caller>) {
        let mut caller = caller.unwrap_or_else(|| self.vcs.service.caller());
        let mut answer =
            vcs::answer_policy_post(&self.vcs, source, authorization, &body, &mut caller).await;
        if let PolicyAnswer::Other(response) = &mut answer {
            (self.finish)(response.headers_mut());
        }
        (answer, Some(caller))
    }
}

/// How a connection left the fast path.
enum Served<S> {
    /// Closed: by the client, on an error, past a deadline, or at the shutdown.
    Closed,
    /// For the server, from the first byte of the request not answered here.
    HandedOver(Rewind<S>),
}

/// Answers the connection's policy POSTs with `answer` (given what the connection remembers,
/// starting from `memory`, the `Authorization` header and the body) until a request that is not
/// one, which is handed over. A CPL goes out behind `cpl_head` (see [`PolicyRoute`]).
async fn serve<S, M, F, Fut>(
    mut stream: S,
    mut memory: M,
    answer: F,
    cpl_head: &[u8],
    header_read_timeout: Duration,
    shutdown: &CancellationToken,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(M, Option<HeaderValue>, Bytes) -> Fut,
    Fut: Future<Output = (PolicyAnswer, M)>,
{
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    let mut written = Vec::with_capacity(READ_BYTES);
    let mut shutting_down = std::pin::pin!(shutdown.cancelled());
    let mut head_deadline = Deadline::new(header_read_timeout);
    loop {
        head_deadline.restart();
        let post = loop {
            match parse(&buffer) {
                Parsed::PolicyPost(post) => break post,
                Parsed::Partial if buffer.len() < HEAD_BYTES_MAX => {}
                // Once the server shuts down, axum-server has hyper close a new connection
                // before it reads anything: handed over, the request would go unanswered.
                Parsed::Partial | Parsed::Other if shutdown.is_cancelled() => {
                    return close(stream).await;
                }
                Parsed::Partial | Parsed::Other => {
                    return Served::HandedOver(Rewind::new(stream, buffer.freeze()));
                }
            }
            buffer.reserve(READ_BYTES);
            let read = tokio::select! {
                biased;
                read = stream.read_buf(&mut buffer) => read,
                () = &mut shutting_down, if buffer.is_empty() => return close(stream).await,
                () = head_deadline.expired() => return close(stream).await,
            };
            if !matches!(read, Ok(1..)) {
                return close(stream).await;
            }
        };
        let request_bytes = post.head_bytes + post.body_bytes;
        while buffer.len() < request_bytes {
            buffer.reserve((request_bytes - buffer.len()).min(READ_BYTES));
            if !matches!(stream.read_buf(&mut buffer).await, Ok(1..)) {
                return close(stream).await;
            }
        }
        let request = buffer.split_to(request_bytes).freeze();
        // Shared, not copied. httparse accepts exactly the bytes a `HeaderValue` may hold, so
        // none is dropped here (one would be answered as no credentials).
        let authorization = post
            .authorization
            .and_then(|value| HeaderValue::from_maybe_shared(request.slice(value)).ok());
        let body = request.slice(post.head_bytes..);
        let answered;
        (answered, memory) = answer(memory, authorization, body).await;
        // A request begun before the shutdown is answered, as the connection's last.
        let last = shutdown.is_cancelled();
        let reply = Reply { answer: answered, cpl_head, last };
        if write(&mut stream, reply, &mut written).await.is_err() || last {
            return close(stream).await;
        }
    }
}

/// How long closing a connection may take (over TLS, sending its close_notify).
const CLOSE_TIMEOUT_MS: u64 = 1_000;

/// Closes the connection: over TLS with a close_notify, as hyper closes it.
async fn close<S: AsyncWrite + Unpin>(mut stream: S) -> Served<S> {
    let closing = stream.shutdown();
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_TIMEOUT_MS), closing).await;
    Served::Closed
}

/// A policy POST's head, as far as the fast path needs it.
#[derive(Debug, PartialEq)]
struct PolicyPost {
    head_bytes: usize,
    body_bytes: usize,
    /// Where the `Authorization` header's value is in the head.
    authorization: Option<Range<usize>>,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    PolicyPost(PolicyPost),
    /// The head is not complete yet.
    Partial,
    /// Anything else: the server's to answer.
    Other,
}

fn parse(buffer: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(buffer) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let policy_post = request.method == Some("POST")
        && request.path == Some(crate::services::policy::POLICY_PATH)
        && request.version == Some(1);
    if !policy_post {
        return Parsed::Other;
    }
    let (mut body_bytes, mut authorization) = (None, None);
    for header in request.headers.iter() {
        let is = |name: &str| header.name.eq_ignore_ascii_case(name);
        if is("content-length") {
            if body_bytes.is_some() {
                return Parsed::Other;
            }
            body_bytes = Some(content_length(header.value));
        } else if is("authorization") {
            let Some(value) = place_in(&buffer[..head_bytes], header.value) else {
                return Parsed::Other;
            };
            authorization = authorization.or(Some(value));
        } else if is("connection") && !header.value.eq_ignore_ascii_case(b"keep-alive")
            || is("transfer-encoding")
            || is("expect")
            || is("upgrade")
        {
            return Parsed::Other;
        }
    }
    let Some(Some(body_bytes)) = body_bytes else { return Parsed::Other };
    if body_bytes > policy::request::REQUEST_BYTES_MAX {
        return Parsed::Other; // refused by the server, which drains it first
    }
    Parsed::PolicyPost(PolicyPost { head_bytes, body_bytes, authorization })
}

/// Where `value`, which httparse parsed out of `head`, is in it. httparse parses in place, so
/// it always is; were it not, the request would be hyper's.
fn place_in(head: &[u8], value: &[u8]) -> Option<Range<usize>> {
    let start = value.as_ptr().addr().checked_sub(head.as_ptr().addr())?;
    let end = start + value.len();
    (end <= head.len()).then_some(start..end)
}

/// A `Content-Length` value: digits only, as RFC 9110 has it (no sign, no spaces, no list).
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// An answer as [`write`] sends it.
struct Reply<'a> {
    answer: PolicyAnswer,
    /// What a CPL answer's head starts with (see [`PolicyRoute`]).
    cpl_head: &'a [u8],
    /// The last answer on its connection: it says `connection: close`.
    last: bool,
}

/// Writes `reply` in HTTP/1.1, through `written`: the head (a CPL's made once, any other
/// response's from its parts), then the length, the date and the body.
async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    reply: Reply<'_>,
    written: &mut Vec<u8>,
) -> io::Result<()> {
    written.clear();
    let body = match reply.answer {
        PolicyAnswer::Cpl(cpl) => {
            written.extend_from_slice(reply.cpl_head);
            cpl
        }
        PolicyAnswer::Other(response) => {
            let (parts, body) = response.into_parts();
            write_head(written, &parts);
            axum::body::to_bytes(body, ANSWER_BYTES_MAX).await.map_err(io::Error::other)?
        }
    };
    if reply.last {
        written.extend_from_slice(b"connection: close\r\n");
    }
    written.extend_from_slice(b"content-length: ");
    written.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    written.extend_from_slice(b"\r\ndate: ");
    with_date(|date| written.extend_from_slice(date));
    written.extend_from_slice(b"\r\n\r\n");
    written.extend_from_slice(&body);
    stream.write_all(written).await?;
    stream.flush().await
}

/// A CPL answer's head on a listener whose answers `finish` completes: what [`write`] writes of
/// such a response, made from one.
fn cpl_head(finish: fn(&mut HeaderMap)) -> Bytes {
    let (mut parts, _) = PolicyAnswer::Cpl(Bytes::new()).into_response().into_parts();
    finish(&mut parts.headers);
    let mut head = Vec::new();
    write_head(&mut head, &parts);
    head.into()
}

/// The status line and the header lines of `parts`, but for those [`write`] adds itself.
fn write_head(written: &mut Vec<u8>, parts: &Parts) {
    use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE};
    let status = parts.status;
    let reason = status.canonical_reason().unwrap_or("");
    for piece in [b"HTTP/1.1 ", status.as_str().as_bytes(), b" ", reason.as_bytes(), b"\r\n"] {
        written.extend_from_slice(piece);
    }
    for (name, value) in &parts.headers {
        if ![CONTENT_LENGTH, DATE, CONNECTION].contains(name) {
            for piece in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                written.extend_from_slice(piece);
            }
        }
    }
}

/// Calls `f` with the current `Date` header value, formatted once a second per thread.
fn with_date<T>(f: impl FnOnce(&[u8]) -> T) -> T {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let second = crate::base::clock::coarse_now_ms() / 1_000;
    DATE.with_borrow_mut(|(formatted_second, date)| {
        if *formatted_second != second {
            *date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            *formatted_second = second;
        }
        f(date.as_bytes())
    })
}

/// A stream that first gives back bytes already read from it.
pub struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(inner: S, read: Bytes) -> Rewind<S> {
        Rewind { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let count = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read.split_to(count));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
