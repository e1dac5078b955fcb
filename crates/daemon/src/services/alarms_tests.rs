//! The pure evaluation, one alarm at a time, and the board's raise/clear/acknowledge rules.

use super::*;

fn ids(facts: &Facts) -> Vec<(AlarmId, String)> {
    evaluate(facts).into_keys().collect()
}

fn one(id: AlarmId, subject: &str) -> Vec<(AlarmId, String)> {
    vec![(id, subject.to_owned())]
}

// Goal: a healthy appliance has no alarm; unknown facts raise nothing.
#[test]
fn healthy_facts_raise_nothing() {
    assert!(evaluate(&Facts::default()).is_empty());
    let facts = Facts {
        time_synchronised: Some(Ok(true)),
        peers: vec![PeerFacts {
            address: "10.0.0.2".into(),
            latency_ms: Some(30),
            ..Default::default()
        }],
        bridges: vec![BridgeFacts {
            name: "mcu1".into(),
            problem: None,
            ports_used_percent: Some(80),
        }],
        certificate_expires_in_days: Some(31),
        data_partition_used_percent: Some(90),
        ..Facts::default()
    };
    assert!(evaluate(&facts).is_empty(), "limits are exclusive: {:?}", evaluate(&facts));
}

// Goal: each condition raises its own alarm, about its subject.
#[test]
fn each_condition_raises_its_alarm() {
    let f = Facts { factory_password_unchanged: true, ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::FactoryPassword, ""));
    let f = Facts { time_synchronised: Some(Ok(false)), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::NtpUnsynchronised, ""));
    let f = Facts { time_synchronised: Some(Err("no timedatectl".into())), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::NtpUnsynchronised, ""));
    let peer = |p: PeerFacts| Facts { peers: vec![p], ..Facts::default() };
    let failed = peer(PeerFacts {
        address: "10.0.0.2".into(),
        failure: Some("unreachable: refused".into()),
        ..Default::default()
    });
    assert_eq!(ids(&failed), one(AlarmId::PeerFailed, "10.0.0.2"));
    assert_eq!(
        evaluate(&failed)[&(AlarmId::PeerFailed, "10.0.0.2".into())],
        "unreachable: refused"
    );
    let slow =
        peer(PeerFacts { address: "10.0.0.3".into(), latency_ms: Some(31), ..Default::default() });
    assert_eq!(ids(&slow), one(AlarmId::PeerLatency, "10.0.0.3"));
    let other = peer(PeerFacts {
        address: "10.0.0.3".into(),
        other_version: Some("2.0.0".into()),
        ..Default::default()
    });
    assert_eq!(ids(&other), one(AlarmId::PeerVersionMismatch, "10.0.0.3"));
    let bridge = |b: BridgeFacts| Facts { bridges: vec![b], ..Facts::default() };
    let down = bridge(BridgeFacts {
        name: "mcu1".into(),
        problem: Some("TLS: unknown issuer".into()),
        ports_used_percent: None,
    });
    assert_eq!(ids(&down), one(AlarmId::BridgeDown, "mcu1"));
    let busy =
        bridge(BridgeFacts { name: "mcu2".into(), problem: None, ports_used_percent: Some(81) });
    assert_eq!(ids(&busy), one(AlarmId::BridgePortsHigh, "mcu2"));
    let f = Facts { certificate_expires_in_days: Some(30), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::CertificateExpiring, ""));
    let f = Facts { data_partition_used_percent: Some(91), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::DataPartitionFull, ""));
    let f = Facts { backup_failure: Some("folder missing".into()), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::BackupsFailing, ""));
    let f = Facts { upgrade_fell_back: Some("fell back from B".into()), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::UpgradeFellBack, ""));
    let f = Facts {
        os_settings_failed: [("ntp".to_owned(), "chronyc failed".to_owned())].into(),
        ..Facts::default()
    };
    assert_eq!(ids(&f), one(AlarmId::OsSettingFailed, "ntp"));
    let f = Facts {
        repeated_warnings: vec![("mcu1".into(), "refuses the feedback receiver".into())],
        ..Facts::default()
    };
    assert_eq!(ids(&f), one(AlarmId::RepeatedWarning, "mcu1"));
    let f = Facts { database_stopped: Some("an fsync failed".into()), ..Facts::default() };
    assert_eq!(ids(&f), one(AlarmId::DatabaseStopped, ""));
}

// Goal: every alarm has a distinct stable id, a title and an action, and is found by its id.
#[test]
fn every_alarm_is_defined_once() {
    let mut seen = std::collections::BTreeSet::new();
    assert_eq!(TABLE.len(), AlarmId::ALL.len());
    for (index, &alarm) in AlarmId::ALL.iter().enumerate() {
        assert_eq!(TABLE[index].0, alarm, "the table follows the enum's order");
        let definition = alarm.definition();
        assert!(seen.insert(definition.id), "{} twice", definition.id);
        assert!(!definition.title.is_empty() && !definition.action.is_empty());
        assert_eq!(AlarmId::from_id(definition.id), Some(alarm));
    }
}

// Goal: conditions raise and clear; an acknowledgement silences (leaves the count) without
// clearing, and a re-raised alarm is unacknowledged again.
#[test]
fn board_raises_clears_and_acknowledges() {
    let board = Board::default();
    let facts = Facts { factory_password_unchanged: true, ..Facts::default() };
    let changes = board.update(evaluate(&facts), 1);
    assert_eq!(changes.raised.len(), 1);
    assert_eq!(board.unacknowledged(), 1);
    assert!(board.acknowledge(AlarmId::FactoryPassword, "", "admin"));
    assert_eq!(board.unacknowledged(), 0);
    assert_eq!(board.list().len(), 1, "acknowledged alarms stay listed");
    assert_eq!(board.update(evaluate(&facts), 2), Changes::default(), "nothing new");
    let cleared = board.update(evaluate(&Facts::default()), 3);
    assert_eq!(cleared.cleared.len(), 1);
    assert!(board.list().is_empty());
    assert!(!board.acknowledge(AlarmId::FactoryPassword, "", "admin"), "not active");
    board.update(evaluate(&facts), 4);
    assert_eq!(board.unacknowledged(), 1);
}

// Goal: the first warnings are logged; the repeats become one repeated-warning fact (one
// alarm) that holds while they go on and is forgotten once they stop.
#[test]
fn repeated_warnings_become_one_fact() {
    let warnings = Warnings::default();
    let text = "feedback receiver not registered: refused";
    let repeats: Vec<bool> = (0..5).map(|n| warnings.note("mcu1", text, n * 5_000)).collect();
    assert_eq!(repeats, [false, false, false, true, true], "the first three are logged");
    let facts = Facts { repeated_warnings: warnings.repeated(20_000), ..Facts::default() };
    assert_eq!(ids(&facts), one(AlarmId::RepeatedWarning, "mcu1"));
    // Still repeating long after the first one: the alarm holds.
    for n in 5..40 {
        assert!(warnings.note("mcu1", text, n * 5_000));
    }
    assert_eq!(warnings.repeated(39 * 5_000).len(), 1);
    assert!(warnings.repeated(39 * 5_000 + REPEATED_WARNING_WINDOW_MS).is_empty(), "stopped");
    assert!(!warnings.note("mcu1", text, 39 * 5_000 + REPEATED_WARNING_WINDOW_MS), "logged again");
}

// Goal: `df`'s arithmetic on the real data partition gives a percentage.
#[test]
fn data_partition_usage_is_a_percentage() {
    let used = crate::services::alarm_facts::used_percent(std::path::Path::new("/"))
        .expect("statvfs of /");
    assert!(used <= 100);
}
