//! The storage contract of events and the convergence of the state they fold into.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::state::State;
use crate::{Hlc, PeerId, Stamp};

pub(crate) fn sample(kind: RecordKind) -> Record {
    let value = match kind {
        RecordKind::Administrator => {
            serde_json::json!({"name": "ops", "password_hash": "$argon2id$x"})
        }
        RecordKind::Bridge => {
            serde_json::json!({"name": "b", "bridge_type": "mcu", "address": "mcu", "username": "u",
                                                 "password": "p", "capacity_ports": 4, "protocol": "http"})
        }
        RecordKind::BridgePool => {
            serde_json::json!({"name": "p", "bridge_type": "mcu", "bridges": ["b"]})
        }
        RecordKind::ServicePreference => {
            serde_json::json!({"name": "s", "bridge_type": "mcu", "pools": ["p"]})
        }
        RecordKind::ConferenceTemplate => {
            serde_json::json!({"name": "t", "conference_type": "lecture",
                                                             "service_preference": "s", "chair_pin": "1234"})
        }
        RecordKind::ConferenceAlias => {
            serde_json::json!({"name": "a", "pattern": "(.*)", "conference_name": "$1",
                                                          "template": "t", "priority": 3, "role": "guest"})
        }
        RecordKind::Location => serde_json::json!({"name": "hq", "description": "head office"}),
        RecordKind::PolicyService => {
            serde_json::json!({"username": "vcs", "password_hash": "$argon2id$x"})
        }
        RecordKind::Licence => serde_json::json!({"release_key": "K", "edition": "select"}),
        RecordKind::Ethernet => serde_json::json!({"speed": "100_half"}),
        RecordKind::Ipv4 => {
            serde_json::json!({"address": "192.0.2.1", "prefix_length": 24, "gateway": "192.0.2.254",
                                               "additional_addresses": [{"address": "192.0.2.2", "prefix_length": 32}]})
        }
        RecordKind::SystemName => serde_json::json!({"host_name": "h", "domain": "d.example"}),
        RecordKind::Dns => serde_json::json!({"servers": ["192.0.2.53", "2001:db8::1"]}),
        RecordKind::Ntp => serde_json::json!({"servers": ["ntp"]}),
        RecordKind::TimeZone => serde_json::json!({"name": "UTC"}),
        RecordKind::Snmp => {
            serde_json::json!({"enabled": true, "community": "c", "contact": "me", "location": "rack 4"})
        }
        RecordKind::Syslog => {
            serde_json::json!({"servers": [{"host": "l", "port": 6514, "transport": "tls"}]})
        }
        RecordKind::Certificates => {
            serde_json::json!({"trusted_ca_pem": "x", "server_private_key_pem": "k"})
        }
        RecordKind::AdministrationAccess => {
            serde_json::json!({"ssh_enabled": true, "lcd_panel_enabled": false})
        }
        RecordKind::RootPassword => serde_json::json!({"password_hash": "$argon2id$y"}),
        RecordKind::LocationAddresses => {
            serde_json::json!({"location": "hq", "ad_hoc_address": "192.0.2.3",
                                                            "rendezvous_address": "192.0.2.4"})
        }
        RecordKind::Cluster => {
            serde_json::json!({"pre_shared_key": "secret key", "peers": ["192.0.2.1"]})
        }
        RecordKind::Conference => serde_json::json!({"name": "meet.alice", "bridge": "b",
            "bridge_conference_id": "7", "template": "t", "created_by": "00ff"}),
        RecordKind::Maintenance => serde_json::json!({"enabled": false}),
        RecordKind::BackupSchedule => {
            serde_json::json!({"enabled": true, "interval_hours": 24, "keep_count": 7,
                               "folder": "/var/backups/baton", "password": "p"})
        }
    };
    Record::from_json(kind, value).unwrap()
}

// Goal: every record kind survives encode → decode unchanged, and removals too.
#[test]
fn every_kind_round_trips() {
    for &kind in RecordKind::ALL {
        let saved = Event::Saved(sample(kind));
        let Encoded { kind: name, version, payload } = saved.encode();
        assert_eq!(name, format!("{}.saved", kind.as_str()));
        assert_eq!(Event::decode(&name, version, &payload).unwrap(), saved, "{kind:?}");
        let removed = Event::Removed(sample(kind).key());
        let encoded = removed.encode();
        assert_eq!(
            Event::decode(&encoded.kind, encoded.version, &encoded.payload).unwrap(),
            removed
        );
    }
}

// Goal: event names and versions are a storage contract; changing them breaks old logs.
#[test]
fn event_names_and_versions_are_stable() {
    let bridge = Event::Saved(sample(RecordKind::Bridge)).encode();
    assert_eq!((bridge.kind.as_str(), bridge.version), ("bridge.saved", 3));
    let alias = Event::Removed(sample(RecordKind::ConferenceAlias).key()).encode();
    assert_eq!((alias.kind.as_str(), alias.version), ("conference_alias.removed", 1));
    let local = Event::Saved(sample(RecordKind::LocationAddresses)).encode();
    assert_eq!((local.kind.as_str(), local.version), ("location_addresses.saved", 1));
    assert_eq!(Event::Saved(sample(RecordKind::Ntp)).scope(), Scope::Local);
    assert_eq!(Event::Saved(sample(RecordKind::Location)).scope(), Scope::Shared);
}

// Goal: a version-1 bridge (before per-bridge protocol) is read as HTTPS.
#[test]
fn old_bridge_events_upcast() {
    let v1 = BridgeV1 {
        name: "old".into(),
        bridge_type: BridgeType::Mcu,
        address: "mcu".into(),
        username: "u".into(),
        password: "p".into(),
        capacity_ports: 12,
        enabled: false,
    };
    let payload = postcard::to_stdvec(&v1).unwrap();
    let Event::Saved(Record::Bridge(bridge)) = Event::decode("bridge.saved", 1, &payload).unwrap()
    else {
        panic!("not a bridge")
    };
    assert_eq!(
        (bridge.name.as_str(), bridge.protocol, bridge.capacity_ports, bridge.enabled),
        ("old", Protocol::Https, 12, false)
    );
}

// Goal: a version-2 bridge (before certificate pinning) keeps its protocol and pins nothing,
// and a pin survives the current version's round trip.
#[test]
fn version_2_bridge_events_upcast_without_a_pin() {
    let v2 = BridgeV2 {
        name: "plain".into(),
        bridge_type: BridgeType::TelepresenceServer,
        address: "ts:8443".into(),
        protocol: Protocol::Http,
        username: "u".into(),
        password: "p".into(),
        capacity_ports: 30,
        enabled: true,
    };
    let payload = postcard::to_stdvec(&v2).unwrap();
    let Event::Saved(Record::Bridge(bridge)) = Event::decode("bridge.saved", 2, &payload).unwrap()
    else {
        panic!("not a bridge")
    };
    let expected = Bridge {
        name: "plain".into(),
        bridge_type: BridgeType::TelepresenceServer,
        address: "ts:8443".into(),
        protocol: Protocol::Http,
        username: "u".into(),
        password: "p".into(),
        capacity_ports: 30,
        enabled: true,
        pinned_sha256: None,
    };
    assert_eq!(bridge, expected);

    let pin = ["AB"; 32].join(":");
    let pinned =
        Event::Saved(Record::Bridge(Bridge { pinned_sha256: Some(pin.clone()), ..expected }));
    let encoded = pinned.encode();
    assert_eq!(Event::decode(&encoded.kind, encoded.version, &encoded.payload).unwrap(), pinned);
}

// Goal: a version-1 administrator (before roles) is read as a full administrator, so no
// account loses its rights in an upgrade.
#[test]
fn old_administrator_events_upcast_to_full_administrators() {
    let v1 = AdministratorV1 {
        name: "admin".into(),
        password_hash: "$argon2id$x".into(),
        must_change_password: true,
    };
    let payload = postcard::to_stdvec(&v1).unwrap();
    let decoded = Event::decode("administrator.saved", 1, &payload).unwrap();
    let Event::Saved(Record::Administrator(admin)) = decoded else { panic!("not an account") };
    assert_eq!(
        (admin.name.as_str(), admin.must_change_password, admin.role),
        ("admin", true, AdminRole::Full)
    );
    let current = Event::Saved(Record::Administrator(admin)).encode();
    assert_eq!((current.kind.as_str(), current.version), ("administrator.saved", 2));
}

// Goal: what this build cannot read is refused with a reason, never guessed at.
#[test]
fn unreadable_events_are_refused() {
    let payload = Event::Saved(sample(RecordKind::Location)).encode().payload;
    assert!(matches!(
        Event::decode("location.saved", 9, &payload),
        Err(DecodeError::VersionTooNew { version: 9, supported: 1, .. })
    ));
    assert!(matches!(
        Event::decode("spaceship.saved", 1, &payload),
        Err(DecodeError::UnknownKind { .. })
    ));
    assert!(matches!(
        Event::decode("location.renamed", 1, &payload),
        Err(DecodeError::UnknownKind { .. })
    ));
    assert!(matches!(
        Event::decode("location.removed", 2, &payload),
        Err(DecodeError::VersionUnknown { .. })
    ));
    assert!(matches!(
        Event::decode("location.saved", 1, &payload[..2]),
        Err(DecodeError::Malformed { .. })
    ));
}

// Goal: the same events applied in any order give the same state (the convergence rule
// clustering relies on), including removals, equal HLCs from different peers and duplicates.
#[test]
fn any_order_of_the_same_events_converges() {
    for seed in 1..=300u64 {
        let mut rng = crate::rng::SeededRng::new(seed);
        let mut events = Vec::new();
        for _ in 0..12 {
            let name = format!("b{}", rng.below(3));
            let stamp = Stamp {
                hlc: Hlc { wall_ms: rng.below(5), counter: rng.below(2) as u32 },
                origin: PeerId([rng.below(3) as u8; 16]),
            };
            let event = if rng.below(3) == 0 {
                Event::Removed(RecordKey { kind: RecordKind::Location, name })
            } else {
                let description = format!("v{}", rng.below(1000));
                Event::Saved(Record::Location(crate::record::Location { name, description }))
            };
            events.push((stamp, event));
        }
        // Stamps are unique per event in a real cluster (HLC + origin); keep the first of equals.
        events.sort_by_key(|(stamp, _)| *stamp);
        events.dedup_by_key(|(stamp, _)| *stamp);
        let fold = |order: &[(Stamp, Event)]| {
            let mut state = State::default();
            for (stamp, event) in order {
                state.apply(*stamp, event);
            }
            state
        };
        let reference = fold(&events);
        for _ in 0..5 {
            let mut shuffled = events.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            // Duplicated delivery must not matter either.
            let again = shuffled[0].clone();
            shuffled.push(again);
            let state = fold(&shuffled);
            assert!(reference.diff(&state).is_empty(), "seed {seed}: states differ");
            assert_eq!(reference, state, "seed {seed}: stamps differ");
        }
    }
}

// Goal: the later stamp wins; at equal HLC the higher peer id wins; tombstones hold.
#[test]
fn last_writer_wins_by_stamp() {
    let location = |description: &str| {
        Event::Saved(Record::Location(crate::record::Location {
            name: "hq".into(),
            description: description.into(),
        }))
    };
    let at = |wall_ms, peer| Stamp { hlc: Hlc { wall_ms, counter: 0 }, origin: PeerId([peer; 16]) };
    let key = RecordKey { kind: RecordKind::Location, name: "hq".into() };
    let mut state = State::default();
    assert!(state.apply(at(10, 1), &location("new")));
    assert!(!state.apply(at(9, 9), &location("older")), "an older write is ignored");
    assert!(state.apply(at(10, 2), &location("tie, higher peer")));
    assert!(state.apply(at(11, 1), &Event::Removed(key.clone())));
    assert!(!state.apply(at(10, 3), &location("before the removal")));
    assert_eq!(state.get(&key), None);
    assert_eq!(state.slot(&key).unwrap().stamp, at(11, 1));
}

// Goal: snapshots restore records, tombstones and stamps exactly; garbage is refused.
#[test]
fn snapshots_round_trip() {
    let mut state = State::default();
    for (index, &kind) in RecordKind::ALL.iter().enumerate() {
        let stamp =
            Stamp { hlc: Hlc { wall_ms: index as u64, counter: 1 }, origin: PeerId([7; 16]) };
        state.apply(stamp, &Event::Saved(sample(kind)));
    }
    let removed = Stamp { hlc: Hlc { wall_ms: 100, counter: 0 }, origin: PeerId([7; 16]) };
    state.apply(removed, &Event::Removed(sample(RecordKind::Location).key()));
    let restored = State::from_snapshot(&state.to_snapshot()).unwrap();
    assert_eq!(restored, state);
    assert_eq!(restored.slot(&sample(RecordKind::Location).key()).unwrap().stamp, removed);
    assert!(State::from_snapshot(b"not a snapshot").is_err());
}

// Goal: diff lists added, removed and changed records, and nothing for equal states.
#[test]
fn diff_names_every_change() {
    let stamp = |wall_ms| Stamp { hlc: Hlc { wall_ms, counter: 0 }, origin: PeerId::default() };
    let mut before = State::default();
    before.apply(stamp(1), &Event::Saved(sample(RecordKind::Location)));
    before.apply(stamp(1), &Event::Saved(sample(RecordKind::Ntp)));
    let mut after = before.clone();
    assert!(before.diff(&after).is_empty());
    after.apply(stamp(2), &Event::Removed(sample(RecordKind::Ntp).key()));
    after.apply(stamp(2), &Event::Saved(sample(RecordKind::Dns)));
    let mut changed = sample(RecordKind::Location);
    if let Record::Location(location) = &mut changed {
        location.description = "moved".into();
    }
    after.apply(stamp(2), &Event::Saved(changed));
    let changes: Vec<(RecordKind, bool, bool)> = before
        .diff(&after)
        .iter()
        .map(|c| (c.key.kind, c.before.is_some(), c.after.is_some()))
        .collect();
    assert_eq!(
        changes,
        [
            (RecordKind::Location, true, true),
            (RecordKind::Dns, false, true),
            (RecordKind::Ntp, true, false)
        ]
    );
}

// Goal: secrets never show, empty secrets stay visibly empty, and the placeholder sent back
// keeps the stored secret while a new value replaces it.
#[test]
fn secrets_are_redacted_and_kept() {
    let bridge = sample(RecordKind::Bridge);
    let Record::Bridge(shown) = bridge.redacted() else { panic!() };
    assert_eq!(shown.password, crate::record::REDACTED);
    let Record::Certificates(certificates) = sample(RecordKind::Certificates).redacted() else {
        panic!()
    };
    assert_eq!(
        (
            certificates.server_private_key_pem.as_str(),
            certificates.server_certificate_pem.as_str()
        ),
        (crate::record::REDACTED, "")
    );
    for kind in [
        RecordKind::Administrator,
        RecordKind::Snmp,
        RecordKind::RootPassword,
        RecordKind::PolicyService,
        RecordKind::Cluster,
    ] {
        assert!(
            serde_json::to_string(&sample(kind).redacted())
                .unwrap()
                .contains(crate::record::REDACTED),
            "{kind:?}"
        );
    }

    let mut edited = Record::Bridge(shown.clone());
    edited.keep_secrets_from(&bridge);
    assert_eq!(edited, bridge);
    let mut retyped = Record::Bridge(Bridge { password: "new".into(), ..shown });
    retyped.keep_secrets_from(&bridge);
    let Record::Bridge(retyped) = retyped else { panic!() };
    assert_eq!(retyped.password, "new");
}

// Goal: the API's JSON is strict about unknown fields and types, lenient with defaults.
#[test]
fn json_is_strict_but_has_defaults() {
    let minimal = serde_json::json!({"name": "b", "bridge_type": "mcu", "address": "a", "username": "u", "capacity_ports": 1});
    let Record::Bridge(bridge) = Record::from_json(RecordKind::Bridge, minimal.clone()).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (bridge.protocol, bridge.enabled, bridge.password.as_str()),
        (Protocol::Https, true, "")
    );
    let mut unknown = minimal.clone();
    unknown["colour"] = "blue".into();
    assert!(
        Record::from_json(RecordKind::Bridge, unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown field `colour`")
    );
    let mut wrong = minimal;
    wrong["capacity_ports"] = "four".into();
    assert!(Record::from_json(RecordKind::Bridge, wrong).is_err());
}

// Goal: the table's facts are the ones the records live by: a record's name is in its kind's
// name field, and redaction hides exactly the kind's secret fields (those that are set).
#[test]
fn name_and_secret_fields_match_the_records() {
    for &kind in RecordKind::ALL {
        let record = sample(kind);
        let json = record.to_json();
        match kind.name_field() {
            Some(field) => assert_eq!(json[field].as_str(), Some(record.name()), "{kind:?}"),
            None => assert_eq!(record.name(), kind.as_str(), "{kind:?}"),
        }
        let redacted = record.redacted().to_json();
        let (Some(fields), Some(shown)) = (json.as_object(), redacted.as_object()) else {
            panic!("{kind:?} is not a JSON object")
        };
        for (field, value) in fields {
            let secret = kind.secret_fields().contains(&field.as_str());
            let hidden = shown[field] != *value;
            let set = value.as_str().is_some_and(|text| !text.is_empty());
            assert_eq!(hidden, secret && set, "{kind:?}.{field}");
        }
        for secret in kind.secret_fields() {
            assert!(fields.contains_key(*secret), "{kind:?} has no field {secret}");
        }
    }
}
