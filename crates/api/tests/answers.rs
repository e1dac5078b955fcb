//! The contract against answers a daemon gave (copied from a `batond` run): each reads as its
//! type and writes back to the very same JSON, and a renamed or missing field is an error.

#![allow(clippy::unwrap_used)]

use api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads `json` as `T` and checks that writing it back gives the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(json: &str) -> T {
    let parsed: T = serde_json::from_str(json).unwrap_or_else(|error| panic!("{error}: {json}"));
    let expected: Value = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), expected);
    parsed
}

fn refused<T: DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
    serde_json::from_str::<T>(json).unwrap_err().to_string()
}

const STATUS: &str = r#"{"cluster":{"cluster_id":null,"mode":"clustered","peer_id":"8f86368a933d3e10a00120f191594734","peers":[{"address":"127.0.0.1","state":"this_system","text":"This system","warnings":[]},{"address":"127.0.0.2","state":"connecting","text":"Connecting","warnings":[]}],"problems":["time is not synchronised (NTP): peers must agree on time before they cluster; check System > Time"]},"hardware_serial":"TEST123","hardware_serial_problem":null,"log_position":10,"peer_id":"8f86368a933d3e10a00120f191594734","platform":{"applies_settings":false,"concerns":{},"failed":[]},"product":"Baton","projections_current":true,"projections_position":10,"started":"2026-12-02T07:09:46.256Z","uptime_s":9,"version":"0.1.0"}"#;

#[test]
fn status_and_health() {
    let status: Status = round_trip(STATUS);
    assert_eq!(status.cluster.mode, ClusterMode::Clustered);
    assert_eq!(status.cluster.peers[0].state, PeerState::ThisSystem);
    round_trip::<Status>(
        &STATUS.replace(r#""concerns":{}"#, r#""concerns":{"ntp":{"result":"failed","at":"2026-12-02T07:09:46.256Z","detail":"timedatectl: exit 1"}}"#)
            .replace(r#""failed":[]"#, r#""failed":["ntp"]"#),
    );
    let health: Health = round_trip(
        r#"{"healthy":true,"log_opens":true,"log_position":2,"problems":[],"projections_current":true,"projections_position":2,"version":"0.1.0"}"#,
    );
    assert_eq!(health.projections_current, Some(true));
    // When the log does not open, the positions are left out, not null.
    let broken: Health = round_trip(
        r#"{"healthy":false,"version":"0.1.0","log_opens":false,"problems":["the event log does not open: locked"]}"#,
    );
    assert_eq!(broken.log_position, None);
}

#[test]
fn cluster_lines_of_every_state() {
    let status: ClusterStatus = round_trip(
        r#"{"mode":"clustered","cluster_id":"6a1f0c9e2b7d4e58a3c1f0e9d8b7a6c5","peer_id":"8f86368a933d3e10a00120f191594734","problems":[],"peers":[
            {"address":"127.0.0.1","state":"this_system","text":"This system","warnings":[]},
            {"address":"127.0.0.2","state":"active","host_name":"peer-2","peer_id":"0123456789abcdef0123456789abcdef","last_contact_ms":1796195396834,"latency_ms":3,"admin_port":8443,"admin_certificate_sha256":"AB:CD","text":"Active as peer-2","warnings":["round trip 31 ms, above 30 ms"]},
            {"address":"127.0.0.3","state":"active","host_name":"peer-3","peer_id":"0123456789abcdef0123456789abcdee","last_contact_ms":1,"latency_ms":null,"admin_port":null,"admin_certificate_sha256":null,"text":"Active as peer-3","warnings":[]},
            {"address":"127.0.0.4","state":"joining","host_name":"peer-4","text":"Joining as peer-4","warnings":[]},
            {"address":"127.0.0.5","state":"failed","reason":"unreachable: connection refused","code":"unreachable","text":"Failed: unreachable: connection refused","warnings":[]},
            {"address":"127.0.0.6","state":"connecting","text":"Connecting","warnings":[]}]}"#,
    );
    let states: Vec<&str> = status.peers.iter().map(|line| line.state.as_str()).collect();
    assert_eq!(states, ["this_system", "active", "active", "joining", "failed", "connecting"]);
    assert_eq!(status.peers[1].latency_ms(), Some(3));
    let up: Vec<bool> = status.peers.iter().map(|line| line.state.is_up()).collect();
    assert_eq!(up, [true, true, true, false, false, false]);
    // A failed peer says why as a typed code; the other lines have none.
    let codes: Vec<Option<PeerFailure>> = status.peers.iter().map(|line| line.code).collect();
    assert_eq!(codes, [None, None, None, None, Some(PeerFailure::Unreachable), None]);
    assert!(PeerFailure::Unreachable.is_transient() && !PeerFailure::Refused.is_transient());
    let joined: Joined = round_trip(&format!(
        r#"{{"founded":false,"other_members":["127.0.0.3"],"status":{}}}"#,
        serde_json::to_string(&status).unwrap()
    ));
    assert!(!joined.founded);
    round_trip::<MemberCertificate>(r#"{"member_url":"https://127.0.0.2:8443","sha256":"AB:CD"}"#);
}

#[test]
fn policy_status_in_and_out_of_maintenance() {
    let idle: PolicyStatus = round_trip(
        r#"{"unavailable":"the policy service account is not configured","maintenance_drain_ms_left":null,"bridges":[]}"#,
    );
    assert_eq!(idle.maintenance_drain_ms_left, None);
    let draining: PolicyStatus = round_trip(
        r#"{"unavailable":"in maintenance mode","maintenance_drain_ms_left":59905,"bridges":[{"name":"mcu1","up":true,"problem":null,"last_event_ms":null}]}"#,
    );
    assert_eq!(draining.maintenance_drain_ms_left, Some(59_905));
}

#[test]
fn a_renamed_or_missing_field_is_an_error_not_an_empty_value() {
    let renamed = refused::<PolicyStatus>(
        r#"{"unavailable":null,"maintenance_drain_left_ms":0,"bridges":[]}"#,
    );
    assert!(renamed.contains("missing field `maintenance_drain_ms_left`"), "{renamed}");
    // A field the daemon always sends, even as null, must be there.
    let missing = refused::<PolicyStatus>(r#"{"unavailable":null,"bridges":[]}"#);
    assert!(missing.contains("missing field `maintenance_drain_ms_left`"), "{missing}");
    let missing = refused::<Status>(&STATUS.replace(r#""uptime_s":9,"#, ""));
    assert!(missing.contains("missing field `uptime_s`"), "{missing}");
    let unknown_state = refused::<ClusterStatus>(
        r#"{"mode":"clustered","cluster_id":null,"peer_id":"x","problems":[],"peers":[{"address":"127.0.0.2","state":"sleeping","text":"?","warnings":[]}]}"#,
    );
    assert!(unknown_state.contains("sleeping"), "{unknown_state}");
}

#[test]
fn an_answer_of_a_newer_release_with_a_field_added_still_reads() {
    // The rolling upgrade drives peers of two releases with one batonctl.
    let newer: PolicyStatus = serde_json::from_str(
        r#"{"unavailable":null,"maintenance_drain_ms_left":null,"bridges":[],"added_later":1}"#,
    )
    .unwrap();
    assert_eq!(newer.unavailable, None);
    // A request, though, names only fields the daemon knows: a typo is an error.
    let typo = serde_json::from_str::<LoginRequest>(r#"{"username":"admin","pasword":"TANDBERG"}"#);
    assert!(typo.unwrap_err().to_string().contains("pasword"));
}

#[test]
fn sessions_passwords_and_errors() {
    let login: LoginAnswer = round_trip(
        r#"{"idle_timeout_s":1800,"must_change_password":false,"token":"540bf16a6d5ae9a3","user":"admin"}"#,
    );
    assert_eq!(login.idle_timeout_s, 1800);
    round_trip::<Message>(r#"{"message":"password changed"}"#);
    round_trip::<LoginRequest>(r#"{"username":"admin","password":"TANDBERG"}"#);
    round_trip::<PasswordChange>(r#"{"current_password":"a","new_password":"b"}"#);
    let error: ErrorAnswer = round_trip(
        r#"{"error":{"code":"invalid_body","fields":[{"field":"bridge_type","message":"missing field `bridge_type`"}],"message":"bridge_type: missing field `bridge_type`"}}"#,
    );
    assert_eq!(error.error.code, codes::INVALID_BODY);
    assert_eq!(error.error.fields[0].field, "bridge_type");
    let not_found: ErrorAnswer =
        round_trip(r#"{"error":{"code":"not_found","fields":[],"message":"no such resource"}}"#);
    assert_eq!(not_found.error.code, codes::NOT_FOUND);
}

const BRIDGE: &str = r#"{"address":"192.0.2.5","bridge_type":"mcu","capacity_ports":40,"enabled":true,"kind":"bridge","name":"mcu1","password":"********","pinned_sha256":null,"protocol":"https","username":"api"}"#;

#[test]
fn records_configuration_and_diffs() {
    let bridge: model::Record = round_trip(BRIDGE);
    assert_eq!((bridge.kind(), bridge.name()), (model::RecordKind::Bridge, "mcu1"));
    round_trip::<Vec<model::Record>>(&format!("[{BRIDGE}]"));
    let config: ConfigAnswer = round_trip(&format!(
        r#"{{"at":"2026-12-02T07:09:56.395Z","records":[{{"kind":"administrator","must_change_password":false,"name":"admin","password_hash":"********","role":"full"}},{BRIDGE},{{"additional_addresses":[],"address":"127.0.0.1","gateway":"127.0.0.254","kind":"ipv4","prefix_length":8}},{{"enabled":true,"kind":"maintenance"}},{{"kind":"cluster","peers":["127.0.0.1","127.0.0.2"],"pre_shared_key":"********"}}]}}"#
    ));
    assert_eq!(config.records.len(), 5);
    let diff: ConfigDiff = round_trip(&format!(
        r#"{{"changes":[{{"after":{BRIDGE},"before":null,"kind":"bridge","name":"mcu1"}},{{"after":null,"before":{{"enabled":true,"kind":"maintenance"}},"kind":"maintenance","name":"maintenance"}}],"from":"1970-01-01T00:00:00.000Z","to":"2026-12-02T07:09:56.484Z"}}"#
    ));
    assert!(diff.changes[0].before.is_none() && diff.changes[1].after.is_none());
}

#[test]
fn log_pages() {
    let page: Page<ConfigLogEntry> = round_trip(&format!(
        r#"{{"entries":[{{"action":"saved","actor":"admin","after":{{"enabled":true,"kind":"maintenance"}},"at":"2026-12-02T07:09:56.189Z","before":null,"kind":"maintenance","name":"maintenance","origin":"8f86368a933d3e10a00120f191594734","position":5}},{{"action":"saved","actor":"admin","after":{BRIDGE},"at":"2026-12-02T07:09:56.132Z","before":null,"kind":"bridge","name":"mcu1","origin":"8f86368a933d3e10a00120f191594734","position":4}}],"next_before":4}}"#
    ));
    assert_eq!(page.next_before, Some(4));
    let events: Page<EventLogEntry> = round_trip(
        r#"{"entries":[{"actor":"admin","at":"2026-12-02T07:09:55.665Z","id":3,"kind":"login.succeeded","level":"info","message":"administrator logged in"},{"actor":null,"at":"2026-12-02T07:09:46.393Z","id":1,"kind":"daemon.started","level":"warning","message":"Baton 0.1.0 started"}],"next_before":null}"#,
    );
    assert_eq!(events.entries[1].level, LogLevel::Warning);
    assert_eq!(events.entries[1].actor, None);
}

#[test]
fn backups_and_restores() {
    let none: BackupProgress = round_trip(r#"{"operation":null}"#);
    assert!(none.operation.is_none());
    let done: BackupProgress = round_trip(
        r#"{"operation":{"done_bytes":64024,"operation":"backup","outcome":"ok","running":false,"started_ms":1796195396834,"total_bytes":64024}}"#,
    );
    assert_eq!(done.operation.unwrap().operation, OperationKind::Backup);
    let restored: Restored = round_trip(
        r#"{"files":["tls/ca.pem","tls/server-key.pem","tls/server.pem"],"manifest":{"created_at_ms":1796195396834,"format":1,"hardware_serial":"TEST123","heads":[{"hash":"456642ed19009ca61a61957422e2df56e32bf389362078ca52b6d82ed465dbe3","origin":"8f86368a933d3e10a00120f191594734","seq":3,"stream":"shared"}],"members":[{"name":"baton.db","sha256":"6aa8dd0d902b90fec59c9eb296c990be0af160a4e79803590cdf5f09a452f319","size_bytes":61440}],"peer_id":"8f86368a933d3e10a00120f191594734","product":"baton","software_version":"0.1.0"},"message":"restored","safety_database":"/tmp/contract-d1/pre-restore-1796195397071.db","safety_files_dir":"/tmp/contract-d1/pre-restore-1796195397071.files"}"#,
    );
    assert_eq!(restored.manifest.hardware_serial, "TEST123");
    assert_eq!(serde_json::to_value(BackupRequest::default()).unwrap(), serde_json::json!({}));
}

#[test]
fn upgrades() {
    let status: UpgradeStatus = round_trip(
        r#"{"active_slot":"A","boot_control":"file","boot_entries":["slot-a.conf"],"fell_back":null,"installing":null,"last_boot":"booted slot A","last_boot_outcome":"normal","running_version":"0.1.0","tries_left":null}"#,
    );
    assert_eq!(status.boot_control, BootControl::File);
    let fell_back: UpgradeStatus = round_trip(
        r#"{"active_slot":"A","boot_control":"systemd-boot","boot_entries":["slot-a.conf","slot-b.conf"],"fell_back":{"from_slot":"B","failed_tries":3},"installing":{"done_bytes":10,"total_bytes":100},"last_boot":"fell back from B after 3 failed tries","last_boot_outcome":"fell_back","running_version":"0.1.0","tries_left":null}"#,
    );
    assert_eq!(fell_back.last_boot_outcome, BootOutcome::FellBack);
    round_trip::<Installed>(
        r#"{"version":"1.0.0","slot":"B","next_boot":"slot-b.conf","reboot_required":true}"#,
    );
}

#[test]
fn explanations_and_live_conferences() {
    let explained: Explanation = round_trip(
        r#"{"alias":"meet.alice@example.com","source_alias":"sip:bob@example.com","refused":null,
        "aliases":[{"name":"meet","pattern":"meet\\.(?P<room>[a-z]+)@example\\.com","priority":1,"outcome":"matched","conference":"alice"}],
        "conference":"alice","template":"meeting","role":"chair","existing":null,"ports_needed":10,"service_preference":"mcu",
        "pools":[{"name":"primary","found":true,"bridges":[{"name":"mcu-full","capacity_ports":100,"free_ports":100,"up":true,"verdict":"candidate"}]},
                 {"name":"gone","found":false,"bridges":[]}],
        "decision":{"action":"create","conference":"alice","candidates":["mcu-full"],"url":"alice@127.0.0.1"},
        "cpl":"<cpl/>"}"#,
    );
    assert_eq!(explained.pools[0].bridges[0].verdict, policy::BridgeVerdict::Candidate);
    let followed: ExistingConference =
        round_trip(r#"{"bridge":"mcu-full","verdict":"bridge_down"}"#);
    assert_eq!(followed.verdict, policy::ExistingVerdict::BridgeDown);
    let reject: ExplainedDecision =
        round_trip(r#"{"action":"reject","status":404,"reason":"No conference alias matches"}"#);
    assert!(matches!(reject, ExplainedDecision::Reject { status: 404, .. }));
    let live: LiveConferences = round_trip(
        r#"{"bridges":[{"bridge":"ts","problem":null,"conferences":[{"name":"lecture-maths","bridge_conference_id":"conf-000001","recorded":true,"participant_count":1,
        "participants":[{"name":"sip:prof@example.com","address":"sip:prof@example.com","role":"chair","state":"connected"}]}]},
        {"bridge":"locked","problem":"bridge refused: authorization failed","conferences":[]}]}"#,
    );
    assert_eq!(live.bridges[0].conferences[0].participants[0].role.as_deref(), Some("chair"));
    let missing = refused::<LiveBridge>(r#"{"bridge":"ts","conferences":[]}"#);
    assert!(missing.contains("missing field `problem`"), "{missing}");
}
