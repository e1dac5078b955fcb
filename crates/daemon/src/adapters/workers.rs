//! The listeners served the way nginx serves: one single-threaded runtime per core, each
//! accepting on its own `SO_REUSEPORT` socket bound to the same address. A request is read,
//! answered (and, over TLS, decrypted and encrypted) on the thread that accepted its
//! connection, waking no other thread; on the daemon's shared multi-threaded runtime, work
//! stealing between its workers cost about 1.7 times the CPU per policy decision (25 µs
//! against 13–15 µs, with `perf stat` and `cargo xtask bench policy`). Both the admin HTTPS
//! listener and the plain HTTP policy listener run this way; work a request starts that must
//! outlive it goes to the daemon's runtime through `Tasks`.
//!
//! The kernel shares `SO_REUSEPORT` only between sockets of the same user, so another user's
//! process cannot take a share of the connections; and the port is first bound once without
//! it, so a port already in use (even by another batond) fails the start-up instead of being
//! shared.

use crate::adapters::fast_path::FastPath;
use crate::adapters::front::{Connection, Front};
use crate::adapters::listener::{Limited, Limits};
use axum_server::accept::Accept;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Listener threads at most, whatever the core count.
pub const LISTENER_WORKERS_MAX: usize = 8;

/// A listener's sockets, bound (so a taken port fails the start-up) but not yet served.
pub struct Bound {
    sockets: Vec<std::net::TcpListener>,
    address: SocketAddr,
}

impl Bound {
    pub fn workers(&self) -> usize {
        self.sockets.len()
    }

    /// The address served, its port chosen by the kernel if `bind` was given port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

/// One socket per core, at most [`LISTENER_WORKERS_MAX`], all bound to `listen`.
pub fn bind(listen: SocketAddr) -> std::io::Result<Bound> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    bind_n(listen, cores.min(LISTENER_WORKERS_MAX))
}

fn bind_n(listen: SocketAddr, workers: usize) -> std::io::Result<Bound> {
    // Fails with "address in use" while any socket, shared or not, holds the port; with port
    // 0 it picks the port every shared socket then binds.
    let address = socket(listen, false)?.local_addr()?;
    let sockets = (0..workers.max(1)).map(|_| socket(address, true)).collect::<Result<_, _>>()?;
    Ok(Bound { sockets, address })
}

/// Listen backlog of each socket: a VCS cluster's burst of new connections waits in it.
const BACKLOG: i32 = 1024;

fn socket(listen: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(shared)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// What each connection is served by (see `adapters::front`).
type Service = Connection;

/// What serves one listener: its threads' name (`name-0`, `name-1`…, also in its logs), the
/// router, the acceptor (TLS or none) and the limits shared by all its threads.
pub struct Listener<A> {
    pub name: &'static str,
    pub front: Front,
    pub acceptor: A,
    pub limits: Limits,
}

/// Serves the listener on every socket, each on its own thread, until `shutdown`; then lets
/// the requests in flight finish for up to `grace_ms`. The connection limit is shared by all.
/// Resolves once every thread has stopped.
pub fn serve<A>(
    bound: Bound,
    listener: Listener<A>,
    shutdown: CancellationToken,
    grace_ms: u64,
) -> std::io::Result<impl Future<Output = ()> + Send + use<A>>
where
    A: Accept<TcpStream, Service, Service = Service> + Clone + Send + Sync + 'static,
    A::Future: Send + 'static,
    A::Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Listener { name, front, acceptor, limits } = listener;
    let limited = Limited::new(acceptor, limits);
    let (route, header_read_timeout_ms) = (front.policy_route(), limits.header_read_timeout_ms);

    let mut stopped = Vec::with_capacity(bound.sockets.len());
    for (index, socket) in bound.sockets.into_iter().enumerate() {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let handle = axum_server::Handle::new();
        // A token of the thread's own: the fast path looks at it for every request, and a
        // token's state sits behind a lock that threads sharing it would contend for.
        let stopping = shutdown.child_token();
        let (limited, route) = (limited.clone(), route.clone());
        let acceptor = FastPath::new(limited, route, header_read_timeout_ms, stopping);
        let mut server = axum_server::from_tcp(socket).acceptor(acceptor).handle(handle.clone());
        limits.configure(&mut server);
        // Nothing runs before the thread polls it.
        let serving = server.serve(front.clone());
        let shutdown = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name(format!("{name}-{index}")).spawn(move || {
            runtime.block_on(serve_one(name, serving, handle, shutdown, grace_ms));
            drop(done);
        })?;
        stopped.push(finished);
    }
    Ok(async move {
        for finished in stopped {
            let _ = finished.await;
        }
    })
}

/// One thread's server, until `shutdown` and then its grace.
async fn serve_one(
    name: &'static str,
    serving: impl Future<Output = std::io::Result<()>>,
    handle: axum_server::Handle,
    shutdown: CancellationToken,
    grace_ms: u64,
) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.graceful_shutdown(Some(Duration::from_millis(grace_ms)));
    });
    if let Err(error) = serving.await {
        tracing::error!(%error, listener = name, "listener thread failed");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::Router;
    use std::io::{Read, Write};

    fn free_address() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    fn get(address: SocketAddr) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(b"GET /thread HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    // Goal: the port is served by every worker thread, each request answered on the thread
    // that accepted it; the shutdown stops them all.
    #[tokio::test]
    async fn every_worker_thread_serves_the_port_until_the_shutdown() {
        let address = free_address();
        let bound = bind_n(address, 3).unwrap();
        let router = Router::new().route(
            "/thread",
            axum::routing::get(|| async { std::thread::current().name().unwrap_or("").to_owned() }),
        );
        let shutdown = CancellationToken::new();
        let listener = Listener {
            name: "policy-http",
            front: Front::new(router),
            acceptor: axum_server::accept::DefaultAcceptor,
            limits: Limits::POLICY,
        };
        let stopped = serve(bound, listener, shutdown.clone(), 1_000).unwrap();
        let threads: std::collections::BTreeSet<String> = tokio::task::spawn_blocking(move || {
            (0..300).map(|_| get(address).lines().last().unwrap_or("").to_owned()).collect()
        })
        .await
        .unwrap();
        let expected = ["policy-http-0", "policy-http-1", "policy-http-2"].map(String::from);
        assert_eq!(threads, expected.into_iter().collect());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), stopped).await.expect("all threads stop");
        assert!(std::net::TcpStream::connect(address).is_err(), "nothing listens after the stop");
    }

    // Goal: a port another listener holds fails the start-up, even one that would share it
    // (another batond's), instead of splitting the VCS's calls between two daemons.
    #[test]
    fn a_port_in_use_even_by_a_sharing_listener_is_refused() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = bind_n(plain.local_addr().unwrap(), 2).err().expect("a plain listener");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        let address = free_address();
        let _other_batond = bind_n(address, 2).unwrap();
        let error = bind_n(address, 2).err().expect("another batond's listener");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }
}
