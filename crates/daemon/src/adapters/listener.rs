//! What a listener lets a client hold: at most so many connections (more are closed at once,
//! so the descriptors they would take stay free for the other listener, the database and the
//! backups), a TLS handshake deadline, a header read deadline (hyper's, and the policy fast
//! path's: `adapters::fast_path`), and an idle deadline:
//! a connection with no byte read or written for that long is closed. Each listener has its
//! own limit, so a flood of idle connections on the admin port leaves the policy service
//! answering, and the other way round.

use axum_server::accept::Accept;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections the admin HTTPS listener holds at once.
pub const ADMIN_CONNECTIONS_MAX: usize = 256;
/// Connections the plain HTTP policy listener holds at once (a VCS cluster's calls).
pub const POLICY_CONNECTIONS_MAX: usize = 512;
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// How long a request's headers may take to arrive. hyper counts a keep-alive connection's
/// wait for its next request in it, so a kept connection that brings no request for this long
/// is closed too (a client then reconnects, as with any server's keep-alive timeout).
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// How long a connection may carry no byte either way (a client stalled in a request's body,
/// or not reading its answer); between requests the header deadline applies first.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;

/// One listener's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections_max: usize,
    pub idle_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub tls_handshake_timeout_ms: u64,
}

impl Limits {
    pub const ADMIN: Limits = Limits {
        connections_max: ADMIN_CONNECTIONS_MAX,
        idle_timeout_ms: IDLE_TIMEOUT_MS,
        header_read_timeout_ms: HEADER_READ_TIMEOUT_MS,
        tls_handshake_timeout_ms: TLS_HANDSHAKE_TIMEOUT_MS,
    };
    pub const POLICY: Limits = Limits { connections_max: POLICY_CONNECTIONS_MAX, ..Limits::ADMIN };

    /// Sets hyper's header read deadline on a server's HTTP/1 builder.
    pub fn configure<A>(&self, server: &mut axum_server::Server<A>) {
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.header_read_timeout_ms));
    }
}

/// An acceptor (around `inner`, e.g. TLS) that enforces [`Limits`].
#[derive(Clone)]
pub struct Limited<A> {
    inner: A,
    limits: Limits,
    slots: Arc<Semaphore>,
}

impl<A> Limited<A> {
    pub fn new(inner: A, limits: Limits) -> Limited<A> {
        Limited { inner, limits, slots: Arc::new(Semaphore::new(limits.connections_max)) }
    }
}

type Accepted<S, V> = Pin<Box<dyn Future<Output = io::Result<(Guarded<S>, V)>> + Send>>;

impl<A, V> Accept<TcpStream, V> for Limited<A>
where
    A: Accept<TcpStream, V>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = A::Service;
    type Future = Accepted<A::Stream, A::Service>;

    fn accept(&self, stream: TcpStream, service: V) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // Closed at once: the client sees a reset instead of a hang.
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other("connection limit"))));
        };
        // Small answers go out at once rather than waiting for the client's delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let handshake_timeout = Duration::from_millis(self.limits.tls_handshake_timeout_ms);
        let idle_timeout = Duration::from_millis(self.limits.idle_timeout_ms);
        let accepting = tokio::time::timeout(handshake_timeout, self.inner.accept(stream, service));
        Box::pin(async move {
            let (stream, service) = accepting.await.map_err(|_| io::ErrorKind::TimedOut)??;
            Ok((Guarded { inner: stream, _slot: slot, idle: Deadline::new(idle_timeout) }, service))
        })
    }
}

/// A connection holding its slot, closed once idle for too long.
pub struct Guarded<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    /// Moved on at each byte read or written.
    idle: Deadline,
}

impl<S> Guarded<S> {
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.idle.restart();
                Poll::Ready(result)
            }
            Poll::Pending if self.idle.poll_expired(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A deadline moved on often (at each byte, at each request) without touching the timer: the
/// timer is armed for at most the deadline and re-armed only when it fires early, so a busy
/// connection costs a clock read per move instead of a timer-wheel update.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Deadline {
        let at = Instant::now() + timeout;
        Deadline { sleep: Box::pin(tokio::time::sleep_until(at)), at, timeout }
    }

    /// Moves the deadline to `timeout` from now.
    pub(crate) fn restart(&mut self) {
        self.at = Instant::now() + self.timeout;
    }

    /// Resolves once the deadline has passed.
    pub(crate) async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await;
    }

    /// Whether the deadline has passed; otherwise the timer is (re)armed for it, with `cx` to
    /// wake.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            if self.at <= Instant::now() {
                return Poll::Ready(());
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.after(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            // The socket's flush moves no byte (its writes did, and moved the deadline on), and
            // every answer ends with one: the deadline stays, and the clock is not read.
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.after(cx, Poll::Pending),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A client's end, and the server's end guarded with `idle_timeout`.
    fn connection(idle_timeout: Duration) -> (DuplexStream, Guarded<DuplexStream>) {
        let (client, server) = tokio::io::duplex(64);
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        (client, Guarded { inner: server, _slot: slot, idle: Deadline::new(idle_timeout) })
    }

    // Goal: a connection that carries a byte more often than the idle timeout stays open for
    // as long as it goes on; once silent, it is closed exactly one idle timeout after its last
    // byte (the timer is moved on lazily, so this checks it is moved on right).
    #[tokio::test(start_paused = true)]
    async fn only_a_connection_silent_for_the_idle_timeout_is_closed() {
        let idle_timeout = Duration::from_millis(1_000);
        let (mut client, mut guarded) = connection(idle_timeout);
        let mut buf = [0; 8];
        let started = Instant::now();
        for _ in 0..12 {
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                client.write_all(b"x").await.unwrap();
                client
            });
            assert_eq!(guarded.read(&mut buf).await.expect("an active connection stays open"), 1);
            client = writer.await.unwrap();
        }
        assert!(started.elapsed() > 4 * idle_timeout);
        let last_byte = Instant::now();
        let error = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(last_byte.elapsed(), idle_timeout);
    }

    // Goal: a flush, which moves no byte, does not keep a silent connection open: it is closed
    // one idle timeout after its last byte however often it was flushed since.
    #[tokio::test(start_paused = true)]
    async fn a_flush_does_not_keep_a_silent_connection_open() {
        let idle_timeout = Duration::from_millis(1_000);
        let (mut client, mut guarded) = connection(idle_timeout);
        let mut buf = [0; 8];
        client.write_all(b"x").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
        let last_byte = Instant::now();
        for _ in 0..2 {
            tokio::time::sleep(idle_timeout * 4 / 10).await;
            guarded.flush().await.unwrap();
        }
        let error = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(last_byte.elapsed(), idle_timeout);
    }
}
