//! Hostile load on the login paths: a flood of wrong passwords (API Basic and the policy
//! service's Basic) neither grows the daemon's memory without bound nor stalls the runtime.

use crate::TestDaemon;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// Concurrent wrong logins in the flood, half on each path.
const FLOOD_LOGINS: usize = 200;
/// What the flood may add to the test process's resident memory: two argon2 buffers of
/// 19 MiB and the connections, far below the ~20 MiB per check that stayed allocated.
const FLOOD_RSS_GROWTH_MAX_KIB: u64 = 96 * 1024;
/// The health check's slowest answer during the flood.
const HEALTH_LATENCY_MAX_MS: u128 = 750;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn wrong_login(client: reqwest::Client, url: String, index: usize) -> StatusCode {
    let request = if index.is_multiple_of(2) {
        client.get(format!("{url}/api/v1/status")).basic_auth("admin", Some("x"))
    } else {
        client
            .post(format!("{url}/baton/policy"))
            .basic_auth("vcs", Some(format!("wrong {index}")))
            .body("POLICY_TYPE=SEARCH")
    };
    request.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_keeps_memory_bounded_and_the_health_check_answering() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let body = json!({"username": "vcs", "password": "policy service password"});
    let (status, _) = daemon.call(Method::PUT, "/api/v1/policy-service", Some(body)).await;
    assert!(status.is_success());
    // Warm up: the buffers a check needs exist once, before the baseline.
    for index in 0..4 {
        wrong_login(daemon.client.clone(), daemon.url.clone(), index).await;
    }
    let baseline_kib = rss_kib();

    let flood = futures_util::future::join_all(
        (0..FLOOD_LOGINS).map(|i| wrong_login(daemon.client.clone(), daemon.url.clone(), i)),
    );
    let flood = tokio::spawn(flood);
    let (mut slowest_ms, mut peak_kib) = (0, baseline_kib);
    let health = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    while !flood.is_finished() {
        let started = Instant::now();
        let answer = health.get(format!("{}/api/v1/health", daemon.url)).send().await.unwrap();
        assert!(answer.status().is_success() || answer.status() == StatusCode::SERVICE_UNAVAILABLE);
        slowest_ms = slowest_ms.max(started.elapsed().as_millis());
        peak_kib = peak_kib.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses = flood.await.unwrap();
    for status in statuses {
        assert!(
            matches!(status, StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE),
            "{status}"
        );
    }
    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    println!("health slowest {slowest_ms} ms, RSS {baseline_kib} KiB + {growth_kib} KiB");
    assert!(slowest_ms < HEALTH_LATENCY_MAX_MS, "health check took {slowest_ms} ms");
    assert!(growth_kib < FLOOD_RSS_GROWTH_MAX_KIB, "RSS grew by {growth_kib} KiB");
}
