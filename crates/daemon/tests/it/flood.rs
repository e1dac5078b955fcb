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

/// A client whose connections come from `source` (any address of 127.0.0.0/8 is loopback).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(Some(std::net::IpAddr::from(source)))
        .build()
        .unwrap()
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

    // From 20 addresses, so that the flood gets past the per-source throttle to the checks.
    let clients: Vec<_> = (0..20).map(|i| client_from([127, 0, 1, 10 + i])).collect();
    let flood = futures_util::future::join_all(
        (0..FLOOD_LOGINS).map(|i| wrong_login(clients[i % 20].clone(), daemon.url.clone(), i)),
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
            matches!(
                status,
                StatusCode::UNAUTHORIZED
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::TOO_MANY_REQUESTS
            ),
            "{status}"
        );
    }
    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    println!("health slowest {slowest_ms} ms, RSS {baseline_kib} KiB + {growth_kib} KiB");
    assert!(slowest_ms < HEALTH_LATENCY_MAX_MS, "health check took {slowest_ms} ms");
    assert!(growth_kib < FLOOD_RSS_GROWTH_MAX_KIB, "RSS grew by {growth_kib} KiB");
}

async fn basic_status(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
) -> StatusCode {
    let request = client.get(format!("{url}/api/v1/status")).basic_auth(user, Some(password));
    request.send().await.unwrap().status()
}

async fn policy_status(client: &reqwest::Client, url: &str, password: &str) -> StatusCode {
    let request = client.post(format!("{url}/baton/policy")).basic_auth("vcs", Some(password));
    let request = request.body("POLICY_TYPE=SEARCH&DESTINATION_ALIAS=x%40example.com");
    request.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_logins_are_throttled_per_source_without_locking_the_administrator_out() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let body = json!({"username": "vcs", "password": "policy service password"});
    let (status, _) = daemon.call(Method::PUT, "/api/v1/policy-service", Some(body)).await;
    assert!(status.is_success());
    let (attacker, operator) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let url = &daemon.url;

    // One account from one address: a few tries, then a back-off.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(basic_status(&attacker, url, "admin", "guess").await);
    }
    assert_eq!(statuses[..4], [StatusCode::UNAUTHORIZED; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    // Many accounts from one address: a budget per window, whatever the path.
    let mut refused = 0;
    for attempt in 0..40 {
        let status = basic_status(&attacker, url, &format!("guess{attempt}"), "guess").await;
        refused += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(refused >= 10, "{refused} of 40 refused");
    assert_eq!(policy_status(&attacker, url, "wrong").await, StatusCode::TOO_MANY_REQUESTS);

    // The real administrator and the VCS, from elsewhere, are not locked out.
    let operator_status = basic_status(&operator, url, "admin", crate::NEW_PASSWORD).await;
    assert_eq!(operator_status, StatusCode::OK);
    assert_eq!(policy_status(&operator, url, "policy service password").await, StatusCode::OK);
    let response = operator
        .post(format!("{url}/api/v1/sessions"))
        .json(&json!({"username": "admin", "password": crate::NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // The flood takes a few Event Log entries, not one per attempt.
    let (_, log) = daemon.call(Method::GET, "/api/v1/logs/events?kind=login.failed", None).await;
    let entries = log["entries"].as_array().unwrap();
    assert!((1..=3).contains(&entries.len()), "{log}");
    assert!(entries[0]["message"].as_str().unwrap().contains("127.0.0.2"), "{log}");
}
