//! What a listener lets a client hold: at most so many connections (more are closed at once,
//! so the descriptors they would take stay free for the other listener, the database and the
//! backups), a TLS handshake deadline, a header read deadline (hyper's), and an idle deadline:
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
/// How long a request's headers may take to arrive.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// How long a connection may carry no byte either way (an idle keep-alive, a stalled client).
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
            let idle = Box::pin(tokio::time::sleep(idle_timeout));
            Ok((Guarded { inner: stream, _slot: slot, idle, idle_timeout }, service))
        })
    }
}

/// A connection holding its slot, closed once idle for too long.
pub struct Guarded<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
}

impl<S> Guarded<S> {
    fn touched(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// `Pending` unless the idle deadline passed.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }

    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.touched();
                Poll::Ready(result)
            }
            Poll::Pending if self.idle_expired(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection")))
            }
            Poll::Pending => Poll::Pending,
        }
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
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.after(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
