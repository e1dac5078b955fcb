//! Hostile connections: idle TCP connections beyond a listener's limit are closed at once, the
//! others once idle for too long, and a flood on one listener leaves the other answering.

use crate::TestDaemon;
use daemon::adapters::listener::Limits;
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const CONNECTIONS_MAX: usize = 16;
const IDLE_TIMEOUT_MS: u64 = 1_000;
const LIMITS: Limits = Limits {
    connections_max: CONNECTIONS_MAX,
    idle_timeout_ms: IDLE_TIMEOUT_MS,
    header_read_timeout_ms: IDLE_TIMEOUT_MS,
    tls_handshake_timeout_ms: IDLE_TIMEOUT_MS,
};

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn idle_connections(to: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut connections = Vec::new();
    for _ in 0..count {
        connections.push(TcpStream::connect(to).await.unwrap());
    }
    connections
}

/// How many of `connections` the server closed within `wait` (looked at together: which
/// ones get the listener's slots is up to the scheduler).
async fn closed_within(connections: &mut [TcpStream], wait: Duration) -> usize {
    let reads = connections.iter_mut().map(|connection| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(wait, connection.read(&mut byte)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    });
    futures_util::future::join_all(reads).await.into_iter().filter(|closed| *closed).count()
}

/// The health check on a connection of its own (none kept to take a slot).
async fn health(daemon: &TestDaemon) -> StatusCode {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let request = client.get(format!("{}/api/v1/health", daemon.url));
    let answer = request.timeout(Duration::from_secs(2)).send().await;
    answer.map_or(StatusCode::REQUEST_TIMEOUT, |answer| answer.status())
}

async fn policy_status(policy: SocketAddr) -> StatusCode {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let request = client.get(format!("http://{policy}/baton/policy/status"));
    let answer = request.timeout(Duration::from_secs(2)).send().await;
    answer.map_or(StatusCode::REQUEST_TIMEOUT, |answer| answer.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_on_one_listener_leaves_the_other_answering() {
    let policy = free_port();
    let daemon = TestDaemon::start_with(tempfile::tempdir().unwrap(), |config| {
        config.policy_http_listen = Some(policy);
        config.admin_limits = LIMITS;
        config.policy_limits = LIMITS;
    })
    .await;
    let admin: SocketAddr = daemon.url.trim_start_matches("https://").parse().unwrap();
    let unconfigured = StatusCode::SERVICE_UNAVAILABLE;

    // The policy listener flooded: the excess is closed at once, the admin API answers.
    let mut flood = idle_connections(policy, CONNECTIONS_MAX + 8).await;
    assert_eq!(health(&daemon).await, StatusCode::OK);
    let excess = closed_within(&mut flood, Duration::from_millis(300)).await;
    assert_eq!(excess, 8, "connections beyond the limit are closed at once");
    // The idle ones are closed after the idle timeout, and the listener answers again.
    let idle = Duration::from_millis(IDLE_TIMEOUT_MS + 1_000);
    assert_eq!(closed_within(&mut flood, idle).await, CONNECTIONS_MAX + 8);
    assert_eq!(policy_status(policy).await, unconfigured);

    // The admin listener flooded (no TLS handshake ever sent): the policy service answers.
    let mut flood = idle_connections(admin, CONNECTIONS_MAX + 8).await;
    assert_eq!(policy_status(policy).await, unconfigured);
    assert_eq!(closed_within(&mut flood, Duration::from_millis(300)).await, 8);
    assert_eq!(closed_within(&mut flood, idle).await, CONNECTIONS_MAX + 8);
    assert_eq!(health(&daemon).await, StatusCode::OK);
}
