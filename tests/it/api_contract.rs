//! The `api` crate's types against a live `batond`: every JSON answer of the admin API reads
//! as its type, including routes `batonctl` does not use, so a field renamed or dropped on one
//! side fails here with its name.

use baton_tests::{FACTORY_USER, Peer, TEST_PASSWORD, free_port};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An answer of `status`, read as `T`.
fn answer<T: DeserializeOwned>(what: &str, (status, body): (u16, Value), expected: u16) -> T {
    assert_eq!(status, expected, "{what}: {body}");
    serde_json::from_value(body.clone()).unwrap_or_else(|error| panic!("{what}: {error}: {body}"))
}

#[test]
fn every_answer_reads_as_its_api_type() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "127.0.0.1", free_port().unwrap(), &[]).unwrap();
    peer.create_bridge("mcu1").unwrap();
    peer.save("/api/v1/maintenance", json!({"enabled": true})).unwrap();

    let status: api::Status = peer.get_as("/api/v1/status").unwrap();
    assert_eq!(
        (status.product.as_str(), status.cluster.mode),
        ("Baton", api::ClusterMode::Standalone)
    );
    let health: api::Health = peer.get_as("/api/v1/health").unwrap();
    assert!(health.healthy && health.log_position.is_some(), "{health:?}");
    let _: api::ClusterStatus = peer.get_as("/api/v1/cluster/status").unwrap();
    let policy: api::PolicyStatus = peer.get_as("/api/v1/policy/status").unwrap();
    assert!(policy.maintenance_drain_ms_left.is_some(), "in maintenance: {policy:?}");
    let explained: api::Explanation =
        peer.get_as("/api/v1/policy/explain?alias=a%40example.com&source=b").unwrap();
    let refused = api::ExplainedDecision::Reject {
        status: 503,
        reason: "Conference service in maintenance".to_owned(),
    };
    assert_eq!(explained.decision, refused, "without a policy-service account: {explained:?}");
    assert!(explained.refused.is_some(), "{explained:?}");
    let live: api::LiveConferences = peer.get_as("/api/v1/policy/live-conferences").unwrap();
    assert_eq!(live.bridges.len(), 1, "{live:?}");
    let _: api::UpgradeStatus = peer.get_as("/api/v1/upgrade").unwrap();
    let _: api::BackupProgress = peer.get_as("/api/v1/backups/progress").unwrap();

    let bridges: Vec<model::Record> = peer.get_as("/api/v1/bridges").unwrap();
    assert_eq!(bridges.iter().map(model::Record::name).collect::<Vec<_>>(), ["mcu1"]);
    let config: api::ConfigAnswer = peer.get_as("/api/v1/config").unwrap();
    assert!(config.records.contains(&bridges[0]));
    let diff: api::ConfigDiff = peer.get_as("/api/v1/config/diff?from=0").unwrap();
    assert!(diff.changes.iter().any(|change| change.after.as_ref() == Some(&bridges[0])));
    let log: api::Page<api::ConfigLogEntry> = peer.get_as("/api/v1/logs/configuration").unwrap();
    assert!(!log.entries.is_empty());
    let history: api::Page<api::ConfigLogEntry> =
        peer.get_as("/api/v1/history/bridges/mcu1").unwrap();
    assert_eq!(history.entries[0].name, "mcu1");
    let events: api::Page<api::EventLogEntry> = peer.get_as("/api/v1/logs/events").unwrap();
    assert!(!events.entries.is_empty());

    let login = api::LoginRequest { username: FACTORY_USER.into(), password: TEST_PASSWORD.into() };
    let body = serde_json::to_value(&login).unwrap();
    let session: api::LoginAnswer =
        answer("login", peer.call(Method::POST, "/api/v1/sessions", Some(body)).unwrap(), 201);
    assert_eq!(session.user, FACTORY_USER);

    let wrong = api::PasswordChange { current_password: "wrong".into(), new_password: "x".into() };
    let body = serde_json::to_value(&wrong).unwrap();
    let refused: api::ErrorAnswer =
        answer("password", peer.call(Method::POST, "/api/v1/password", Some(body)).unwrap(), 422);
    assert_eq!(refused.error.fields[0].field, "current_password");
    let path = "/api/v1/cluster/member-certificate?url=https%3A%2F%2F127.0.0.1%3A1";
    let unreachable: api::ErrorAnswer =
        answer("member certificate", peer.call(Method::GET, path, None).unwrap(), 502);
    assert_eq!(unreachable.error.code, api::codes::MEMBER_UNREACHABLE);
    let missing: api::ErrorAnswer =
        answer("no route", peer.call(Method::GET, "/api/v1/nothing", None).unwrap(), 404);
    assert_eq!(missing.error.code, api::codes::NOT_FOUND);
}
