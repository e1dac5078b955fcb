//! A data disk that fails: a change the disk could not make durable is refused plainly, and
//! the operator sees why and what to do (health probe, alarm) before trying anything else.

use crate::TestDaemon;
use crate::api::telepresence_server as bridge;
use daemon::services::alarms::EVALUATE_SPACING_MS;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

// Goal: after an fsync of the event log fails, the change is answered 503 `database_stopped`
// (not 500, not "saved"), so is every later one; the health probe (which blesses an upgrade's
// boot) says unhealthy and why, and the `database_stopped` alarm is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_changes_with_a_clear_answer_an_alarm_and_an_unhealthy_probe() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(bridge("ts1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Past the alarms' spacing, so the evaluation the failed change sets off can come before
    // the failure is known: the alarm must still be raised (the writer's end is evaluated too).
    tokio::time::sleep(Duration::from_millis(2 * EVALUATE_SPACING_MS)).await;
    // The disk loses the write-ahead file: the next fsync fails.
    let wal = daemon.data_dir().join(format!("{}-wal", daemon::store::DATABASE_FILE));
    std::fs::remove_file(&wal).unwrap();
    for name in ["ts2", "ts3"] {
        let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(bridge(name))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {body}");
        assert_eq!(body["error"]["code"], json!("database_stopped"), "{name}: {body}");
    }

    let (status, body) = daemon.call_as(None, Method::GET, "/api/v1/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["healthy"], json!(false), "{body}");
    let problems = body["problems"].to_string();
    assert!(problems.contains("takes no more changes") && problems.contains("fsync"), "{body}");

    // Within two rounds of the alarms' timer at the latest.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let (status, body) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let alarms: api::Alarms = serde_json::from_value(body).unwrap();
        if let Some(alarm) = alarms.alarms.iter().find(|alarm| alarm.id == "database_stopped") {
            assert!(alarm.detail.contains("fsync"), "{alarm:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no database_stopped alarm: {:?}", alarms.alarms);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
