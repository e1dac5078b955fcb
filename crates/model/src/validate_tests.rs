//! Every validation rule, as data: a record built from JSON, and exactly the fields that must
//! be reported. Each case names the rule it pins down.
#![allow(clippy::unwrap_used)]

use crate::record::{Record, RecordKind};
use crate::state::{Command, Rejection, State};
use crate::validate::validate;
use crate::{Hlc, PeerId, Stamp};
use serde_json::{Value, json};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
/// A SHA-512-crypt hash, as the root password is kept (the OS reads it).
const CRYPT_HASH: &str = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";

fn record(kind: RecordKind, value: Value) -> Record {
    Record::from_json(kind, value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// Base records that pass; each case changes one thing.
fn base(kind: RecordKind) -> Value {
    match kind {
        RecordKind::Administrator => json!({"name": "ops", "password_hash": HASH}),
        RecordKind::Bridge => {
            json!({"name": "b", "bridge_type": "mcu", "address": "mcu.example.com", "username": "api", "capacity_ports": 40})
        }
        RecordKind::BridgePool => json!({"name": "p", "bridge_type": "mcu", "bridges": []}),
        RecordKind::ServicePreference => json!({"name": "s", "bridge_type": "mcu", "pools": ["p"]}),
        RecordKind::ConferenceTemplate => {
            json!({"name": "t", "conference_type": "lecture", "service_preference": "s", "chair_pin": "1234", "guest_pin": "5678", "max_participants": 20})
        }
        RecordKind::ConferenceAlias => {
            json!({"name": "a", "pattern": "meet\\.(?P<room>.+)@example\\.com", "conference_name": "${room}-$1", "template": "t", "priority": 1})
        }
        RecordKind::Location => json!({"name": "hq"}),
        RecordKind::PolicyService => json!({"username": "vcs", "password_hash": HASH}),
        RecordKind::Licence => {
            json!({"release_key": "ABCD-1234-EFGH", "edition": "full", "option_keys": ["OPT-1"]})
        }
        RecordKind::Ethernet => json!({"speed": "1000_full"}),
        RecordKind::Ipv4 => {
            json!({"address": "192.0.2.10", "prefix_length": 24, "gateway": "192.0.2.1",
                                   "additional_addresses": [{"address": "192.0.2.11", "prefix_length": 24}]})
        }
        RecordKind::SystemName => json!({"host_name": "baton1", "domain": "example.com"}),
        RecordKind::Dns => json!({"servers": ["192.0.2.53", "2001:db8::53"]}),
        RecordKind::Ntp => json!({"servers": ["ntp.example.com", "192.0.2.123"]}),
        RecordKind::TimeZone => json!({"name": "Europe/Oslo"}),
        RecordKind::Snmp => json!({"enabled": true, "community": "public"}),
        RecordKind::Syslog => {
            json!({"servers": [{"host": "logs.example.com", "port": 514, "transport": "tcp"}]})
        }
        RecordKind::Certificates => {
            json!({"trusted_ca_pem": "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n"})
        }
        RecordKind::AdministrationAccess => {
            json!({"ssh_enabled": false, "lcd_panel_enabled": true})
        }
        RecordKind::RootPassword => json!({"password_hash": CRYPT_HASH}),
        RecordKind::LocationAddresses => {
            json!({"location": "hq", "ad_hoc_address": "192.0.2.20", "rendezvous_address": "192.0.2.21"})
        }
        RecordKind::Cluster => {
            json!({"pre_shared_key": "a long shared secret", "peers": ["192.0.2.10", "192.0.2.11"]})
        }
        RecordKind::Conference => {
            json!({"name": "meet.alice", "bridge": "b", "bridge_conference_id": "42", "template": "t"})
        }
        RecordKind::Maintenance => json!({"enabled": true}),
        RecordKind::BackupSchedule => {
            json!({"enabled": true, "interval_hours": 24, "keep_count": 7, "folder": "/var/backups/baton"})
        }
    }
}

fn with(kind: RecordKind, changes: Value) -> Record {
    let mut value = base(kind);
    for (key, change) in changes.as_object().unwrap() {
        value[key] = change.clone();
    }
    record(kind, value)
}

fn fields(record: &Record) -> Vec<String> {
    let mut fields: Vec<String> = validate(record).into_iter().map(|e| e.field).collect();
    fields.sort();
    fields
}

// Goal: every base record is valid, so each failing case below fails for its own reason.
#[test]
fn base_records_are_valid() {
    for &kind in RecordKind::ALL {
        let record = record(kind, base(kind));
        assert_eq!(validate(&record), [], "{kind:?}");
    }
}

// Goal: each rule reports exactly the field it concerns.
#[test]
fn each_rule_reports_its_field() {
    use RecordKind::*;
    let long_name = "n".repeat(65);
    let cases: Vec<(&str, Record, &[&str])> = vec![
        ("empty name", with(Bridge, json!({"name": ""})), &["name"]),
        ("name too long", with(Bridge, json!({"name": long_name})), &["name"]),
        ("name with leading space", with(Location, json!({"name": " hq"})), &["name"]),
        ("name with slash", with(BridgePool, json!({"name": "a/b"})), &["name"]),
        ("name with control character", with(Administrator, json!({"name": "a\u{7}"})), &["name"]),
        (
            "password not an argon2id hash",
            with(Administrator, json!({"password_hash": "plain"})),
            &["password_hash"],
        ),
        ("bridge host:port", with(Bridge, json!({"address": "mcu.example.com:8443"})), &[]),
        ("bridge IPv4", with(Bridge, json!({"address": "192.0.2.5"})), &[]),
        (
            "bridge bracketed IPv6 with port",
            with(Bridge, json!({"address": "[2001:db8::5]:443"})),
            &[],
        ),
        ("bridge bare IPv6", with(Bridge, json!({"address": "2001:db8::5"})), &[]),
        ("bridge port 0", with(Bridge, json!({"address": "mcu:0"})), &["address"]),
        ("bridge port too big", with(Bridge, json!({"address": "mcu:70000"})), &["address"]),
        ("bridge garbage address", with(Bridge, json!({"address": "not a host!"})), &["address"]),
        ("bridge capacity 0", with(Bridge, json!({"capacity_ports": 0})), &["capacity_ports"]),
        (
            "bridge pin too short",
            with(Bridge, json!({"pinned_sha256": "AB:CD"})),
            &["pinned_sha256"],
        ),
        (
            "bridge pin not hex",
            with(Bridge, json!({"pinned_sha256": (["ZZ"; 32].join(":"))})),
            &["pinned_sha256"],
        ),
        (
            "bridge capacity too big",
            with(Bridge, json!({"capacity_ports": 10_001})),
            &["capacity_ports"],
        ),
        ("bridge username empty", with(Bridge, json!({"username": ""})), &["username"]),
        (
            "bridge password too long",
            with(Bridge, json!({"password": "p".repeat(129)})),
            &["password"],
        ),
        (
            "pool lists a bridge twice",
            with(BridgePool, json!({"bridges": ["x", "y", "x"]})),
            &["bridges[2]"],
        ),
        ("preference without pools", with(ServicePreference, json!({"pools": []})), &["pools"]),
        (
            "preference lists a pool twice",
            with(ServicePreference, json!({"pools": ["p", "p"]})),
            &["pools[1]"],
        ),
        (
            "template max 1",
            with(ConferenceTemplate, json!({"max_participants": 1})),
            &["max_participants"],
        ),
        (
            "chair pin with letters",
            with(ConferenceTemplate, json!({"chair_pin": "12a4"})),
            &["chair_pin"],
        ),
        (
            "chair pin too short",
            with(ConferenceTemplate, json!({"chair_pin": "123"})),
            &["chair_pin"],
        ),
        (
            "guest pin too long",
            with(ConferenceTemplate, json!({"guest_pin": "1".repeat(21)})),
            &["guest_pin"],
        ),
        ("equal pins", with(ConferenceTemplate, json!({"guest_pin": "1234"})), &["guest_pin"]),
        (
            "guest pin on a meeting",
            with(ConferenceTemplate, json!({"conference_type": "meeting", "guest_pin": "9999"})),
            &["guest_pin"],
        ),
        ("invalid regex", with(ConferenceAlias, json!({"pattern": "meet(.+"})), &["pattern"]),
        ("empty pattern", with(ConferenceAlias, json!({"pattern": ""})), &["pattern"]),
        (
            "reference past the groups",
            with(ConferenceAlias, json!({"pattern": "(.+)@x", "conference_name": "$2"})),
            &["conference_name"],
        ),
        (
            "unknown named group",
            with(ConferenceAlias, json!({"conference_name": "${nope}"})),
            &["conference_name"],
        ),
        (
            "literal dollar",
            with(ConferenceAlias, json!({"pattern": "(.+)@x", "conference_name": "$$1-$1"})),
            &[],
        ),
        (
            "empty replace",
            with(ConferenceAlias, json!({"conference_name": ""})),
            &["conference_name"],
        ),
        (
            "long description",
            with(Location, json!({"description": "d".repeat(257)})),
            &["description"],
        ),
        ("policy user empty", with(PolicyService, json!({"username": ""})), &["username"]),
        ("licence for essentials", with(Licence, json!({"edition": "essentials"})), &["edition"]),
        (
            "release key characters",
            with(Licence, json!({"release_key": "ABC 123"})),
            &["release_key"],
        ),
        (
            "option key characters",
            with(Licence, json!({"option_keys": ["OK", "NOT OK"]})),
            &["option_keys[1]"],
        ),
        ("prefix 0", with(Ipv4, json!({"prefix_length": 0})), &["prefix_length"]),
        ("prefix 33", with(Ipv4, json!({"prefix_length": 33})), &["prefix_length"]),
        ("gateway outside subnet", with(Ipv4, json!({"gateway": "198.51.100.1"})), &["gateway"]),
        ("gateway is the address", with(Ipv4, json!({"gateway": "192.0.2.10"})), &["gateway"]),
        (
            "broadcast address",
            with(Ipv4, json!({"address": "255.255.255.255", "gateway": "255.255.255.1"})),
            &["address"],
        ),
        (
            "multicast address",
            with(Ipv4, json!({"address": "224.0.0.5", "gateway": "224.0.0.1"})),
            &["address"],
        ),
        (
            "additional address repeats the primary",
            with(
                Ipv4,
                json!({"additional_addresses": [{"address": "192.0.2.10", "prefix_length": 24}]}),
            ),
            &["additional_addresses[0].address"],
        ),
        (
            "additional prefix 40",
            with(
                Ipv4,
                json!({"additional_addresses": [{"address": "192.0.2.12", "prefix_length": 40}]}),
            ),
            &["additional_addresses[0].prefix_length"],
        ),
        ("host name with dot", with(SystemName, json!({"host_name": "a.b"})), &["host_name"]),
        (
            "host name with leading hyphen",
            with(SystemName, json!({"host_name": "-a"})),
            &["host_name"],
        ),
        (
            "domain with empty label",
            with(SystemName, json!({"domain": "example..com"})),
            &["domain"],
        ),
        ("empty domain is allowed", with(SystemName, json!({"domain": ""})), &[]),
        (
            "duplicate DNS server",
            with(Dns, json!({"servers": ["192.0.2.53", "192.0.2.53"]})),
            &["servers[1]"],
        ),
        (
            "six DNS servers",
            with(
                Dns,
                json!({"servers": ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"]}),
            ),
            &["servers"],
        ),
        (
            "NTP bad host",
            with(Ntp, json!({"servers": ["ntp.example.com", "bad host"]})),
            &["servers[1]"],
        ),
        (
            "six NTP servers",
            with(Ntp, json!({"servers": ["a", "b", "c", "d", "e", "f"]})),
            &["servers"],
        ),
        ("time zone UTC", with(TimeZone, json!({"name": "UTC"})), &[]),
        (
            "time zone three parts",
            with(TimeZone, json!({"name": "America/Argentina/Buenos_Aires"})),
            &[],
        ),
        ("time zone unknown shape", with(TimeZone, json!({"name": "Mars"})), &["name"]),
        ("time zone empty part", with(TimeZone, json!({"name": "Europe/"})), &["name"]),
        ("time zone with space", with(TimeZone, json!({"name": "a/b c"})), &["name"]),
        ("SNMP enabled without community", with(Snmp, json!({"community": ""})), &["community"]),
        (
            "SNMP disabled without community",
            with(Snmp, json!({"enabled": false, "community": ""})),
            &[],
        ),
        (
            "syslog port 0",
            with(Syslog, json!({"servers": [{"host": "logs", "port": 0}]})),
            &["servers[0].port"],
        ),
        (
            "syslog bad host",
            with(Syslog, json!({"servers": [{"host": "no such host!"}]})),
            &["servers[0].host"],
        ),
        (
            "backup every 0 hours",
            with(BackupSchedule, json!({"interval_hours": 0})),
            &["interval_hours"],
        ),
        ("backup keeping none", with(BackupSchedule, json!({"keep_count": 0})), &["keep_count"]),
        (
            "backup keeping too many",
            with(BackupSchedule, json!({"keep_count": 1001})),
            &["keep_count"],
        ),
        ("backup folder relative", with(BackupSchedule, json!({"folder": "backups"})), &["folder"]),
        (
            "backup folder with ..",
            with(BackupSchedule, json!({"folder": "/var/../etc"})),
            &["folder"],
        ),
        ("backup folder empty", with(BackupSchedule, json!({"folder": ""})), &["folder"]),
        (
            "backup password with newline",
            with(BackupSchedule, json!({"password": "a\nb"})),
            &["password"],
        ),
        ("backup encrypted", with(BackupSchedule, json!({"password": "a passphrase"})), &[]),
        ("CA not PEM", with(Certificates, json!({"trusted_ca_pem": "hello"})), &["trusted_ca_pem"]),
        (
            "certificate without key",
            with(
                Certificates,
                json!({"server_certificate_pem": "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n"}),
            ),
            &["server_private_key_pem"],
        ),
        (
            "root password not hashed",
            with(RootPassword, json!({"password_hash": "root"})),
            &["password_hash"],
        ),
        (
            // Argon2id is Baton's own scheme; the OS's crypt(3) cannot read it.
            "root password in argon2id",
            with(RootPassword, json!({"password_hash": HASH})),
            &["password_hash"],
        ),
        (
            "root password hash that would break /etc/shadow",
            with(RootPassword, json!({"password_hash": "$6$salt$ha:sh"})),
            &["password_hash"],
        ),
        (
            "ad hoc equals rendezvous",
            with(LocationAddresses, json!({"rendezvous_address": "192.0.2.20"})),
            &["rendezvous_address"],
        ),
        (
            "four cluster peers",
            with(Cluster, json!({"peers": ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]})),
            &["peers"],
        ),
        (
            "cluster peer listed twice",
            with(Cluster, json!({"peers": ["192.0.2.1", "192.0.2.1"]})),
            &["peers[1]"],
        ),
        (
            "cluster peers without key",
            with(Cluster, json!({"pre_shared_key": ""})),
            &["pre_shared_key"],
        ),
        (
            "short cluster key",
            with(Cluster, json!({"pre_shared_key": "short"})),
            &["pre_shared_key"],
        ),
        ("standalone mode", with(Cluster, json!({"pre_shared_key": "", "peers": []})), &[]),
    ];
    let mut failures = Vec::new();
    for (rule, record, expected) in &cases {
        let actual = fields(record);
        if actual != *expected {
            failures.push(format!(
                "{rule}: expected {expected:?}, got {actual:?} ({:?})",
                validate(record)
            ));
        }
    }
    assert!(failures.is_empty(), "{} rule(s) wrong:\n{}", failures.len(), failures.join("\n"));
}

// Goal: one form with several mistakes reports all of them at once.
// Goal: a fingerprint is read as browsers show it (pairs and colons) or as bare hex, in
// either case, and names the same digest either way.
#[test]
fn fingerprints_are_read_with_or_without_colons() {
    let shown = (0u8..32).map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":");
    let digest = crate::validate::sha256_fingerprint(&shown).unwrap();
    assert_eq!(digest.to_vec(), (0u8..32).collect::<Vec<_>>());
    let bare = shown.replace(':', "").to_lowercase();
    assert_eq!(crate::validate::sha256_fingerprint(&bare), Some(digest));
    assert_eq!(crate::validate::sha256_fingerprint(&shown[3..]), None);
    assert_eq!(crate::validate::sha256_fingerprint(&format!("{shown}:00")), None);
    assert!(fields(&with(RecordKind::Bridge, json!({"pinned_sha256": shown}))).is_empty());
}

#[test]
fn all_problems_are_reported_together() {
    let bridge = with(
        RecordKind::Bridge,
        json!({"name": "", "address": "x y", "username": "", "capacity_ports": 0}),
    );
    assert_eq!(fields(&bridge), ["address", "capacity_ports", "name", "username"]);
    let rejection = State::default().decide(&Command::Create(bridge)).unwrap_err();
    let Rejection::Invalid { errors } = rejection else { panic!("expected Invalid") };
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|e| !e.message.is_empty()));
}

fn stamp(wall_ms: u64) -> Stamp {
    Stamp { hlc: Hlc { wall_ms, counter: 0 }, origin: PeerId([1; 16]) }
}

/// A state holding the records given, in order, each as if saved at a later time.
fn state_with(records: &[Record]) -> State {
    let mut state = State::default();
    for (index, record) in records.iter().enumerate() {
        let events = state
            .decide(&Command::Save(record.clone()))
            .unwrap_or_else(|r| panic!("{record:?}: {r}"));
        for event in events {
            state.apply(stamp(index as u64 + 1), &event);
        }
    }
    state
}

fn invalid_fields(state: &State, command: Command) -> Vec<String> {
    match state.decide(&command) {
        Err(Rejection::Invalid { errors }) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// Goal: references must name existing records of the right bridge type and role.
#[test]
fn references_must_exist_and_match() {
    use RecordKind::*;
    let mcu = with(Bridge, json!({}));
    let ts = with(Bridge, json!({"name": "ts", "bridge_type": "telepresence_server"}));
    let state = state_with(&[mcu, ts]);
    assert_eq!(
        invalid_fields(&state, Command::Save(with(BridgePool, json!({"bridges": ["b", "ghost"]})))),
        ["bridges[1]"]
    );
    assert_eq!(
        invalid_fields(&state, Command::Save(with(BridgePool, json!({"bridges": ["ts"]})))),
        ["bridges[0]"]
    );

    let state = state_with(&[
        with(Bridge, json!({})),
        with(BridgePool, json!({"bridges": ["b"]})),
        with(BridgePool, json!({"name": "tsp", "bridge_type": "telepresence_server"})),
    ]);
    assert_eq!(
        invalid_fields(
            &state,
            Command::Save(with(ServicePreference, json!({"pools": ["p", "nope"]})))
        ),
        ["pools[1]"]
    );
    assert_eq!(
        invalid_fields(&state, Command::Save(with(ServicePreference, json!({"pools": ["tsp"]})))),
        ["pools[0]"]
    );
    assert_eq!(
        invalid_fields(&state, Command::Save(with(ConferenceTemplate, json!({})))),
        ["service_preference"]
    );
    assert_eq!(
        invalid_fields(&state, Command::Save(with(ConferenceAlias, json!({})))),
        ["template"]
    );
    assert_eq!(
        invalid_fields(&state, Command::Save(with(LocationAddresses, json!({})))),
        ["location"]
    );

    let state = state_with(&[
        with(BridgePool, json!({})),
        with(ServicePreference, json!({})),
        with(ConferenceTemplate, json!({"conference_type": "meeting", "guest_pin": null})),
    ]);
    assert_eq!(
        invalid_fields(&state, Command::Save(with(ConferenceAlias, json!({"role": "guest"})))),
        ["role"]
    );
    assert!(state.decide(&Command::Save(with(ConferenceAlias, json!({"role": "chair"})))).is_ok());
}

// Goal: create, update and remove check existence, use and the last administrator.
#[test]
fn commands_check_existence_and_use() {
    use RecordKind::*;
    let state = state_with(&[
        with(Administrator, json!({})),
        with(BridgePool, json!({})),
        with(ServicePreference, json!({})),
    ]);
    let pool = with(BridgePool, json!({}));
    assert!(matches!(
        state.decide(&Command::Create(pool.clone())),
        Err(Rejection::AlreadyExists { .. })
    ));
    assert_eq!(
        state.decide(&Command::Update(pool.clone())).unwrap(),
        [],
        "saving an unchanged record is a no-op"
    );
    assert!(matches!(
        state.decide(&Command::Update(with(Bridge, json!({})))),
        Err(Rejection::NotFound { .. })
    ));
    match state.decide(&Command::Remove(pool.key())) {
        Err(Rejection::InUse { by, .. }) => {
            assert_eq!(by, [with(ServicePreference, json!({})).key()])
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    let admin = with(Administrator, json!({})).key();
    assert!(matches!(state.decide(&Command::Remove(admin)), Err(Rejection::Forbidden { .. })));
    assert!(matches!(
        state.decide(&Command::Remove(with(Bridge, json!({})).key())),
        Err(Rejection::NotFound { .. })
    ));
}

// Goal: a read-only account never leaves the appliance without a full administrator: the last
// full one can be neither removed nor made read-only, while read-only ones come and go.
#[test]
fn the_last_full_administrator_stays() {
    use RecordKind::Administrator;
    let admin = |name: &str, role: &str| with(Administrator, json!({"name": name, "role": role}));
    let state = state_with(&[admin("admin", "full"), admin("auditor", "read_only")]);
    match state.decide(&Command::Remove(admin("admin", "full").key())) {
        Err(Rejection::Forbidden { reason }) => assert!(reason.contains("last full"), "{reason}"),
        other => panic!("expected Forbidden, got {other:?}"),
    }
    match state.decide(&Command::Update(admin("admin", "read_only"))) {
        Err(Rejection::Invalid { errors }) => assert_eq!(errors[0].field, "role"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(state.decide(&Command::Remove(admin("auditor", "read_only").key())).is_ok());
    let two = state_with(&[admin("admin", "full"), admin("second", "full")]);
    assert!(two.decide(&Command::Update(admin("admin", "read_only"))).is_ok());
    assert!(two.decide(&Command::Remove(admin("admin", "full").key())).is_ok());
}

// Goal: the clustering prerequisites the configuration can decide are enforced with clear,
// field-level messages: edition limits, this peer's own address in the list, and a frozen
// primary address (and licence) while clustered.
#[test]
fn cluster_rules_follow_the_edition_and_the_peers_own_address() {
    use RecordKind::*;
    let three = json!({"peers": ["192.0.2.10", "192.0.2.11", "192.0.2.12"]});
    let message = |state: &State, record: Record| match state.decide(&Command::Save(record)) {
        Err(Rejection::Invalid { errors }) => format!("{}: {}", errors[0].field, errors[0].message),
        other => format!("{other:?}"),
    };

    let essentials = state_with(&[with(Ipv4, json!({}))]);
    assert!(
        message(&essentials, with(Cluster, json!({})))
            .contains("peers: clustering needs a release key")
    );
    assert!(
        essentials
            .decide(&Command::Save(with(Cluster, json!({"pre_shared_key": "", "peers": []}))))
            .is_ok()
    );

    // The seed's checklist: host name and domain, DNS, NTP.
    let unprepared = state_with(&[with(Ipv4, json!({})), with(Licence, json!({}))]);
    assert_eq!(
        message(&unprepared, with(Cluster, json!({}))),
        "peers: before clustering, set this peer's host name and domain (System > DNS); \
         configure at least one DNS server (System > DNS); configure at least one NTP server \
         (System > Time)"
    );
    let ready = |extra: &[Record]| {
        let mut records = vec![
            with(Ipv4, json!({})),
            with(SystemName, json!({})),
            with(Dns, json!({})),
            with(Ntp, json!({})),
        ];
        records.extend_from_slice(extra);
        state_with(&records)
    };
    let no_domain = ready(&[with(Licence, json!({})), with(SystemName, json!({"domain": ""}))]);
    assert!(message(&no_domain, with(Cluster, json!({}))).contains("host name and domain"));

    let select = ready(&[with(Licence, json!({"edition": "select"}))]);
    assert!(select.decide(&Command::Save(with(Cluster, json!({})))).is_ok());
    assert!(message(&select, with(Cluster, three.clone())).contains("at most 2 peers"));

    let full = ready(&[with(Licence, json!({}))]);
    assert!(full.decide(&Command::Save(with(Cluster, three.clone()))).is_ok());
    let elsewhere = with(Cluster, json!({"peers": ["192.0.2.20", "192.0.2.21"]}));
    assert!(message(&full, elsewhere).contains("must include this peer's own address 192.0.2.10"));
    let no_address = state_with(&[
        with(Licence, json!({})),
        with(SystemName, json!({})),
        with(Dns, json!({})),
        with(Ntp, json!({})),
    ]);
    assert!(
        message(&no_address, with(Cluster, json!({}))).contains("set this peer's IPv4 address")
    );

    let clustered = ready(&[with(Licence, json!({})), with(Cluster, three)]);
    assert!(
        message(&clustered, with(Ipv4, json!({"address": "192.0.2.99"})))
            .starts_with("address: cannot change")
    );
    // The seed: only the additional IPv4 addresses change while clustered.
    for change in [json!({"gateway": "192.0.2.254"}), json!({"prefix_length": 25})] {
        let field = change.as_object().unwrap().keys().next().unwrap().clone();
        assert!(
            message(&clustered, with(Ipv4, change)).starts_with(&format!("{field}: cannot change")),
            "{field}"
        );
    }
    let additional =
        json!({"additional_addresses": [{"address": "192.0.2.50", "prefix_length": 24}]});
    assert!(clustered.decide(&Command::Save(with(Ipv4, additional))).is_ok());
    assert!(
        message(&clustered, with(Licence, json!({"edition": "select"}))).starts_with("edition: ")
    );
    for kind in [Licence, Ipv4] {
        let key = record(kind, base(kind)).key();
        assert!(
            matches!(clustered.decide(&Command::Remove(key)), Err(Rejection::Forbidden { .. })),
            "{kind:?}"
        );
    }
    // The seed's way to standalone, in two saves: blank the peers (the key stays), then the key.
    let peers_blanked = with(Cluster, json!({"peers": []}));
    assert!(clustered.decide(&Command::Save(peers_blanked.clone())).is_ok());
    let key_left = ready(&[with(Licence, json!({})), peers_blanked]);
    let key_deleted = with(Cluster, json!({"pre_shared_key": "", "peers": []}));
    assert!(key_left.decide(&Command::Save(key_deleted)).is_ok());
    assert!(
        key_left.decide(&Command::Save(with(Ipv4, json!({"address": "192.0.2.99"})))).is_ok(),
        "a key without peers is standalone"
    );
    // Peers without a key cannot cluster.
    let no_key = with(Cluster, json!({"pre_shared_key": ""}));
    assert!(message(&full, no_key).starts_with("pre_shared_key: set the cluster pre-shared key"));
    // Standalone mode again: the address may change.
    let standalone = state_with(&[
        with(Ipv4, json!({})),
        with(Licence, json!({})),
        with(Cluster, json!({"pre_shared_key": "", "peers": []})),
    ]);
    assert!(
        standalone.decide(&Command::Save(with(Ipv4, json!({"address": "192.0.2.99"})))).is_ok()
    );
}
