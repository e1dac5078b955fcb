//! The metrics endpoint as a monitoring system scrapes it: with a read-only account (never the
//! administrator's password), after calls through the VCS emulator onto a simulated bridge and
//! with a second peer linked then gone; the values a user would watch, and `promtool check
//! metrics` on the text.
//!
//! Needs `promtool` (Debian package `prometheus`; `.ci/run` installs it). On a workstation
//! without it the format check says so and is skipped; under CI it must be there.

use crate::cluster::{KEY, Peer, wait_until};
use crate::policy::{VCS_PASSWORD, VCS_USER, bridge, routed, vcs_for};
use baton_tests::{SIM_BRIDGE_PASSWORD, SimBridge, free_port};
use serde_json::json;

const MONITOR: &str = "monitor";
const MONITOR_PASSWORD: &str = "monitoring password";
const PROMTOOL: &str = "/usr/bin/promtool";

/// One bridge of 20 ports; conferences of 5 participants.
fn configure(peer: &Peer, sim: &SimBridge) {
    peer.save("/api/v1/policy-service", json!({"username": VCS_USER, "password": VCS_PASSWORD}))
        .unwrap();
    let mut mcu = bridge("mcu-1", sim, "mcu", SIM_BRIDGE_PASSWORD);
    mcu["capacity_ports"] = json!(20);
    for (collection, body) in [
        ("bridges", mcu),
        ("bridge-pools", json!({"name": "pool", "bridge_type": "mcu", "bridges": ["mcu-1"]})),
        ("service-preferences", json!({"name": "pref", "bridge_type": "mcu", "pools": ["pool"]})),
        (
            "conference-templates",
            json!({"name": "meeting", "conference_type": "meeting", "service_preference": "pref", "max_participants": 5}),
        ),
        (
            "conference-aliases",
            json!({"name": "meet", "pattern": r"meet\.(?P<room>[a-z]+)@example\.com",
                   "conference_name": "${room}", "template": "meeting", "priority": 1}),
        ),
        (
            "administrators",
            json!({"name": MONITOR, "password": MONITOR_PASSWORD, "role": "read_only"}),
        ),
    ] {
        let path = format!("/api/v1/{collection}");
        let (status, answer) = peer.call(reqwest::Method::POST, &path, Some(body)).unwrap();
        assert_eq!(status, 201, "{collection}: {answer}");
    }
}

/// The metrics text as the monitoring account gets it.
fn scrape(peer: &Peer) -> String {
    let response = peer
        .daemon
        .client()
        .unwrap()
        .get(format!("{}/api/v1/metrics", peer.daemon.url))
        .basic_auth(MONITOR, Some(MONITOR_PASSWORD))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().unwrap()
}

/// The value of the sample `series` (name and labels exactly as written), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

fn expect(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in\n{text}");
}

/// `promtool check metrics` on `text`: the format and the naming conventions.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    if !std::path::Path::new(PROMTOOL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool must be installed under CI (.ci/run installs the prometheus package)"
        );
        eprintln!("skipped the format check: {PROMTOOL} is not installed");
        return;
    }
    let mut child = std::process::Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
}

// Goal: after two calls for one conference, one call no alias matches and one with wrong
// credentials, a read-only account scrapes counts by decision and status, one conference
// created, the bridge up with 5 of its 20 ports used, every defined alarm, the log position
// and the second peer's link (active, no lag; then failed once it is gone); the text passes
// promtool, and nobody without credentials gets it.
#[test]
fn a_read_only_account_scrapes_metrics_that_show_calls_bridges_peers_and_alarms() {
    let sim = SimBridge::start("mcu", &[]).unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]).unwrap();
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]).unwrap();
    configure(&a, &sim);
    let vcs = vcs_for(&[&a]);
    assert_eq!(routed(&vcs.call("meet.alice@example.com")), "alice@127.0.0.1");
    assert_eq!(routed(&vcs.call("meet.alice@example.com")), "alice@127.0.0.1");
    let _ = vcs.call("nobody@example.com");
    let refused = a
        .daemon
        .client()
        .unwrap()
        .post(format!("{}/baton/policy", a.daemon.url))
        .basic_auth(VCS_USER, Some("not the password"))
        .body("CALLED_ALIAS=x")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);

    let text = scrape(&a);
    expect(&text, "baton_policy_requests_total{decision=\"route\",status=\"200\"}", 2.0);
    expect(
        &text,
        "baton_policy_requests_total{decision=\"no_matching_alias\",status=\"200\"}",
        1.0,
    );
    expect(&text, "baton_policy_requests_total{decision=\"none\",status=\"401\"}", 1.0);
    expect(&text, "baton_policy_decision_duration_seconds_count", 4.0);
    expect(&text, "baton_conferences_created_total", 1.0);
    expect(&text, "baton_conference_creation_failures_total", 0.0);
    expect(&text, "baton_bridge_up{bridge=\"mcu-1\"}", 1.0);
    expect(&text, "baton_bridge_ports_used{bridge=\"mcu-1\"}", 5.0);
    expect(&text, "baton_bridge_ports_free{bridge=\"mcu-1\"}", 15.0);
    expect(&text, "baton_upgrade_last_boot{outcome=\"normal\"}", 1.0);
    assert!(value(&text, "baton_event_log_position").unwrap() > 10.0, "{text}");
    let alarms: Vec<&str> =
        text.lines().filter(|line| line.starts_with("baton_alarm_active{")).collect();
    assert!(alarms.len() >= 13, "one line per defined alarm: {alarms:?}");
    expect(&text, "baton_alarm_active{id=\"factory_password\",severity=\"critical\"}", 0.0);
    promtool_check(&text);

    a.save_cluster(KEY, &[&a]).unwrap();
    a.save_cluster(KEY, &[&a, &b]).unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    let link = "baton_peer_link_up{peer=\"127.0.0.2\",state=\"active\"}";
    let lag = "baton_peer_replication_lag_events{peer=\"127.0.0.2\"}";
    wait_until("the second peer active and caught up in the metrics", || {
        let text = scrape(&a);
        match (value(&text, link), value(&text, lag)) {
            (Some(up), Some(behind)) if up == 1.0 && behind == 0.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    promtool_check(&scrape(&a));
    b.daemon.kill().unwrap();
    wait_until("the second peer's link down in the metrics", || {
        let text = scrape(&a);
        let down = "baton_peer_link_up{peer=\"127.0.0.2\",state=\"failed\"}";
        value(&text, down).filter(|up| *up == 0.0).map(|_| ()).ok_or(text)
    });

    let anonymous = a.daemon.client().unwrap().get(format!("{}/api/v1/metrics", a.daemon.url));
    assert_eq!(anonymous.send().unwrap().status(), 401);
}
