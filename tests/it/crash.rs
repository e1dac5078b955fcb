//! A `batond` killed with SIGKILL while a client streams changes loses nothing it acknowledged,
//! keeps a verifiable hash chain, and never shows a half-applied change.

use baton_tests::{Batond, TEST_PASSWORD};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn bridge(index: usize) -> Value {
    json!({"name": format!("bridge-{index}"), "bridge_type": "mcu", "address": format!("127.0.0.{}", 1 + index % 200),
           "username": "api", "password": format!("secret-{index}"), "capacity_ports": 1 + index as u64})
}

#[test]
fn sigkill_during_a_write_storm_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Batond::start(dir.path()).unwrap();
    daemon.change_factory_password().unwrap();

    // A client creates bridges one after another and remembers which were acknowledged.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (client, url, acknowledged) =
            (daemon.client().unwrap(), daemon.url.clone(), acknowledged.clone());
        std::thread::spawn(move || {
            for index in 0.. {
                let sent = client
                    .post(format!("{url}/api/v1/bridges"))
                    .basic_auth("admin", Some(TEST_PASSWORD))
                    .json(&bridge(index))
                    .send();
                match sent {
                    Ok(response) if response.status() == 201 => {
                        acknowledged.lock().unwrap().push(index)
                    }
                    Ok(response) => panic!("unexpected answer {}", response.status()),
                    Err(_) => return index, // the daemon died under us
                }
            }
            unreachable!()
        })
    };
    // Let a few dozen changes through, then pull the plug mid-stream.
    while acknowledged.lock().unwrap().len() < 25 {
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.kill().unwrap();
    let attempted = writer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 25);

    let daemon = Batond::start(dir.path()).unwrap();
    let bridges: Vec<Value> = daemon
        .client()
        .unwrap()
        .get(format!("{}/api/v1/bridges", daemon.url))
        .basic_auth("admin", Some(TEST_PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut present: Vec<usize> = bridges
        .iter()
        .map(|b| b["name"].as_str().unwrap().trim_start_matches("bridge-").parse().unwrap())
        .collect();
    present.sort();
    for index in &acknowledged {
        assert!(present.contains(index), "acknowledged bridge-{index} was lost");
    }
    // Only the request in flight at the kill may have landed without its answer, and whatever
    // landed is whole.
    let unacknowledged: Vec<_> = present.iter().filter(|i| !acknowledged.contains(i)).collect();
    assert!(
        unacknowledged.iter().all(|&&i| i == attempted),
        "unexpected extra bridges {unacknowledged:?}"
    );
    for bridge in &bridges {
        let index: u64 =
            bridge["name"].as_str().unwrap().trim_start_matches("bridge-").parse().unwrap();
        assert_eq!(bridge["capacity_ports"], 1 + index, "bridge-{index} is not whole: {bridge}");
    }
    // The admin API walks the same chains (what the VM power-cut test relies on).
    let verified: Value = daemon
        .client()
        .unwrap()
        .get(format!("{}/api/v1/logs/verify", daemon.url))
        .basic_auth("admin", Some(TEST_PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(verified["intact"], true, "{verified}");
    assert!(verified["events"].as_u64().unwrap() >= acknowledged.len() as u64 + 2, "{verified}");
    assert_eq!(verified["problem"], Value::Null, "{verified}");
    let status = daemon.stop().unwrap();
    assert!(status.success(), "SIGTERM should stop batond cleanly, got {status}");

    let log = eventlog::EventLog::open(&dir.path().join("baton.db")).unwrap();
    let report = log.verify().unwrap();
    assert!(report.events >= acknowledged.len() as u64 + 2, "{report:?}");
}
