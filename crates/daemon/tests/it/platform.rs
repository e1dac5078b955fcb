//! Peer-local settings reach the OS applier live, with the recording double in place of the OS.

use crate::TestDaemon;
use platform::{Concern, RecordingPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Applies happen on their own task after the write is acknowledged: wait for them.
const APPLY_TIMEOUT_MS: u64 = 10_000;

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(APPLY_TIMEOUT_MS);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(recording: &RecordingPlatform) -> TestDaemon {
    let daemon = TestDaemon::start_with(tempfile::tempdir().unwrap(), |config| {
        config.platform = Some(Arc::new(recording.clone()))
    })
    .await;
    daemon.change_factory_password().await;
    daemon
}

async fn put(daemon: &TestDaemon, path: &str, body: Value) {
    let (status, answer) = daemon.call(Method::PUT, path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
}

async fn platform_status(daemon: &TestDaemon) -> Value {
    let (status, body) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["platform"].clone()
}

#[tokio::test]
async fn changed_settings_reach_the_applier_with_their_values_and_only_their_concerns() {
    let recording = RecordingPlatform::new();
    let daemon = start(&recording).await;
    // Once at start, every concern, so the OS matches what the log says after a reboot.
    eventually("the first pass", || Concern::ALL.iter().all(|c| recording.last(*c).is_some()))
        .await;

    put(
        &daemon,
        "/api/v1/system-name",
        json!({"host_name": "conductor1", "domain": "example.com"}),
    )
    .await;
    eventually("the host name", || {
        recording
            .last(Concern::HostName)
            .and_then(|s| s.system_name)
            .is_some_and(|name| name.host_name == "conductor1" && name.domain == "example.com")
    })
    .await;
    // The panel shows the host name and the domain goes to resolv.conf's search line.
    eventually("the panel", || {
        recording.last(Concern::Panel).is_some_and(|s| s.system_name.is_some())
    })
    .await;
    assert!(recording.last(Concern::Dns).is_some_and(|s| s.system_name.is_some()));

    put(&daemon, "/api/v1/ntp", json!({"servers": ["ntp1.example.com", "192.0.2.123"]})).await;
    eventually("the NTP servers", || {
        recording
            .last(Concern::Ntp)
            .and_then(|s| s.ntp)
            .is_some_and(|ntp| ntp.servers == ["ntp1.example.com", "192.0.2.123"])
    })
    .await;

    put(
        &daemon,
        "/api/v1/administration-access",
        json!({"ssh_enabled": true, "lcd_panel_enabled": false}),
    )
    .await;
    eventually("SSH on", || {
        recording.last(Concern::Ssh).and_then(|s| s.access).is_some_and(|a| a.ssh_enabled)
    })
    .await;
    eventually("the panel off", || {
        recording.last(Concern::Panel).is_some_and(|s| !s.panel_enabled())
    })
    .await;

    put(&daemon, "/api/v1/root-password", json!({"password": "correct horse battery"})).await;
    eventually("the root password", || {
        recording.last(Concern::RootPassword).is_some_and(|s| s.root_password.is_some())
    })
    .await;
    let hash = recording.last(Concern::RootPassword).unwrap().root_password.unwrap().password_hash;
    assert!(hash.starts_with("$6$rounds="), "a crypt(3) hash the OS reads: {hash}");

    // A change elsewhere re-applies nothing.
    let applies = recording.applied().len();
    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/bridges",
            Some(
                json!({"name": "ts1", "bridge_type": "telepresence_server", "address": "192.0.2.50",
                        "username": "api", "password": "x", "capacity_ports": 48}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    put(&daemon, "/api/v1/time-zone", json!({"name": "Europe/Oslo"})).await;
    eventually("the time zone", || {
        recording.last(Concern::TimeZone).is_some_and(|s| s.time_zone.is_some())
    })
    .await;
    let since: Vec<Concern> = recording.applied()[applies..].iter().map(|(c, _)| *c).collect();
    assert_eq!(since, [Concern::TimeZone], "only the changed concern is applied");

    let status = platform_status(&daemon).await;
    assert_eq!(status["applies_settings"], true, "{status}");
    assert_eq!(status["concerns"]["host_name"]["result"], "applied", "{status}");
    assert_eq!(status["failed"], json!([]), "{status}");
    let (_, log) =
        daemon.call(Method::GET, "/api/v1/logs/events?kind=platform.applied", None).await;
    let messages = log["entries"].to_string();
    assert!(messages.contains("ntp applied to the system"), "{log}");
    assert!(!messages.contains(&hash), "the root password hash never reaches the Event Log");
    daemon.stop().await;
}

#[tokio::test]
async fn a_failing_applier_is_reported_and_the_setting_stays_saved() {
    let recording = RecordingPlatform::new();
    recording.fail(Concern::Ntp, "systemd-timesyncd would not restart");
    let daemon = start(&recording).await;

    put(&daemon, "/api/v1/ntp", json!({"servers": ["ntp1.example.com"]})).await;
    eventually("the NTP apply", || recording.last(Concern::Ntp).is_some_and(|s| s.ntp.is_some()))
        .await;
    let (status, ntp) = daemon.call(Method::GET, "/api/v1/ntp", None).await;
    assert_eq!((status, &ntp["servers"]), (StatusCode::OK, &json!(["ntp1.example.com"])));

    let mut status = Value::Null;
    for _ in 0..100 {
        status = platform_status(&daemon).await;
        if status["concerns"]["ntp"]["result"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["failed"], json!(["ntp"]), "{status}");
    assert_eq!(status["concerns"]["ntp"]["detail"], "systemd-timesyncd would not restart");
    let (_, log) = daemon.call(Method::GET, "/api/v1/logs/events?kind=platform.failed", None).await;
    assert_eq!(
        log["entries"][0]["message"],
        "ntp not applied to the system (the setting is saved): systemd-timesyncd would not restart",
        "{log}"
    );
    assert_eq!(log["entries"][0]["level"], "error");

    // Fixed and changed again: applied, and the status clears.
    recording.succeed(Concern::Ntp);
    put(&daemon, "/api/v1/ntp", json!({"servers": ["ntp2.example.com"]})).await;
    for _ in 0..100 {
        status = platform_status(&daemon).await;
        if status["concerns"]["ntp"]["result"] == "applied" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["failed"], json!([]), "{status}");
    daemon.stop().await;
}

#[tokio::test]
async fn without_a_platform_the_host_is_left_alone_and_the_status_says_so() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let status = platform_status(&daemon).await;
    assert_eq!(status["applies_settings"], false, "{status}");
    assert_eq!(status["concerns"], json!({}), "{status}");
    daemon.stop().await;
}

/// The active alarm `id` about `subject`, when it is active.
async fn alarm(daemon: &TestDaemon, id: &str, subject: &str) -> Option<api::Alarm> {
    let (status, body) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alarms: api::Alarms = serde_json::from_value(body).unwrap();
    alarms.alarms.into_iter().find(|alarm| alarm.id == id && alarm.subject == subject)
}

/// Alarms are evaluated every 10 s (and on configuration changes): wait up to two rounds.
async fn alarm_eventually(daemon: &TestDaemon, id: &str, subject: &str, active: bool) {
    let deadline = Instant::now() + Duration::from_secs(25);
    while alarm(daemon, id, subject).await.is_some() != active {
        assert!(Instant::now() < deadline, "{id} ({subject}) never became active={active}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Goal: an OS setting that fails raises an alarm naming the concern and why; acknowledging
// silences it without clearing it; the setting applied again clears it; all three are in the
// Event Log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_os_setting_raises_an_alarm_that_clears_when_it_applies() {
    let recording = RecordingPlatform::new();
    recording.fail(Concern::Ntp, "chronyc refused the servers");
    let daemon = start(&recording).await;
    alarm_eventually(&daemon, "os_setting_failed", "ntp", true).await;
    let raised = alarm(&daemon, "os_setting_failed", "ntp").await.unwrap();
    assert!(raised.detail.contains("chronyc refused the servers"), "{raised:?}");
    assert_eq!(raised.acknowledged_by, None);

    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/alarms/acknowledge",
            Some(json!({"id": "os_setting_failed", "subject": "ntp"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let acknowledged = alarm(&daemon, "os_setting_failed", "ntp").await.unwrap();
    assert_eq!(acknowledged.acknowledged_by.as_deref(), Some("admin"), "silenced, still listed");

    recording.succeed(Concern::Ntp);
    put(&daemon, "/api/v1/ntp", json!({"servers": ["192.0.2.123"]})).await;
    alarm_eventually(&daemon, "os_setting_failed", "ntp", false).await;
    // The Event Log is written behind the answer: wait for the clearing's entry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, log) = daemon.call(Method::GET, "/api/v1/logs/events?kind=alarm.", None).await;
        assert_eq!(status, StatusCode::OK, "{log}");
        let kinds: Vec<&str> = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["message"].as_str().unwrap().starts_with("os_setting_failed"))
            .map(|entry| entry["kind"].as_str().unwrap())
            .collect();
        if ["alarm.raised", "alarm.acknowledged", "alarm.cleared"].iter().all(|k| kinds.contains(k))
        {
            break;
        }
        assert!(Instant::now() < deadline, "raised, acknowledged and cleared expected: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.stop().await;
}
