//! The settling rule over small states: a pool of two bridges with room for one conference
//! each (`capacity_ports` 10, template `max_participants` 10), conferences placed by two
//! peers whose records carry the stamps given.

use super::*;
use model::{Event, Hlc, PeerId, State};
use serde_json::json;
use std::sync::Arc;

const PEER_A: PeerId = PeerId([0xa; 16]);
const PEER_B: PeerId = PeerId([0xb; 16]);

fn record(kind: RecordKind, value: serde_json::Value) -> Record {
    Record::from_json(kind, value).expect("valid test record")
}

fn stamp(wall_ms: u64, origin: PeerId) -> Stamp {
    Stamp { hlc: Hlc { wall_ms, counter: 0 }, origin }
}

/// Bridges `one` and `two` (10 ports each) in one pool, or only `one` when `spare` is false.
fn configuration(spare: bool) -> Vec<Record> {
    use RecordKind::*;
    let bridge = |name: &str| {
        record(
            Bridge,
            json!({"name": name, "bridge_type": "mcu", "address": format!("{name}.example.com:8080"),
                   "username": "api", "password": "pw", "capacity_ports": 10}),
        )
    };
    let pool_bridges = if spare { json!(["one", "two"]) } else { json!(["one"]) };
    vec![
        bridge("one"),
        bridge("two"),
        record(BridgePool, json!({"name": "pool", "bridge_type": "mcu", "bridges": pool_bridges})),
        record(ServicePreference, json!({"name": "pref", "bridge_type": "mcu", "pools": ["pool"]})),
        record(
            ConferenceTemplate,
            json!({"name": "meeting", "conference_type": "meeting", "service_preference": "pref", "max_participants": 10}),
        ),
    ]
}

fn conference(name: &str, bridge: &str, created_by: PeerId) -> Record {
    record(
        RecordKind::Conference,
        json!({"name": name, "bridge": bridge, "bridge_conference_id": name, "template": "meeting",
               "created_by": created_by.to_hex()}),
    )
}

/// The configuration, then `conferences` applied in the order given, each with its stamp.
fn state(spare: bool, conferences: &[(Record, Stamp)]) -> Engine {
    let mut state = State::default();
    for (index, record) in configuration(spare).into_iter().enumerate() {
        state.apply(stamp(index as u64 + 1, PEER_A), &Event::Saved(record));
    }
    for (record, stamp) in conferences {
        state.apply(*stamp, &Event::Saved(record.clone()));
    }
    Engine::new(Arc::new(state), None)
}

fn all_up(_: &str) -> bool {
    true
}

#[test]
fn the_later_conference_moves_to_a_bridge_with_room_whatever_the_order_seen() {
    let earlier = (conference("alpha", "one", PEER_A), stamp(1_000, PEER_A));
    let later = (conference("beta", "one", PEER_B), stamp(1_001, PEER_B));
    let expected = vec![Overbooked {
        conference: "beta".to_owned(),
        bridge: "one".to_owned(),
        created_by: PEER_B.to_hex(),
        capacity_ports: 10,
        reserved_ports: 20,
        settlement: Settlement::Move { bridge: "two".to_owned() },
    }];
    let one_order = state(true, &[earlier.clone(), later.clone()]);
    let other_order = state(true, &[later, earlier]);
    assert_eq!(overbooked(&one_order, &all_up), expected);
    assert_eq!(overbooked(&other_order, &all_up), expected);
}

#[test]
fn the_same_instant_is_settled_by_origin_peer() {
    let from_b = (conference("alpha", "one", PEER_B), stamp(1_000, PEER_B));
    let from_a = (conference("beta", "one", PEER_A), stamp(1_000, PEER_A));
    let settled = overbooked(&state(true, &[from_b, from_a]), &all_up);
    let losers: Vec<&str> = settled.iter().map(|o| o.conference.as_str()).collect();
    assert_eq!(losers, ["alpha"], "the higher origin peer's stamp is the later one");
}

#[test]
fn without_a_bridge_with_room_the_later_conference_is_refused() {
    let earlier = (conference("alpha", "one", PEER_A), stamp(1_000, PEER_A));
    let later = (conference("beta", "one", PEER_B), stamp(1_001, PEER_B));
    let settled = overbooked(&state(false, &[earlier, later]), &all_up);
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].conference, "beta");
    assert_eq!(settled[0].settlement, Settlement::Refuse);
}

#[test]
fn a_destination_that_is_down_is_not_chosen() {
    let earlier = (conference("alpha", "one", PEER_A), stamp(1_000, PEER_A));
    let later = (conference("beta", "one", PEER_B), stamp(1_001, PEER_B));
    let settled = overbooked(&state(true, &[earlier, later]), &|name: &str| name != "two");
    assert_eq!(settled[0].settlement, Settlement::Refuse);
}

#[test]
fn losers_placed_elsewhere_count_against_the_room_there() {
    let placed = [
        (conference("alpha", "one", PEER_A), stamp(1_000, PEER_A)),
        (conference("beta", "one", PEER_B), stamp(1_001, PEER_B)),
        (conference("gamma", "one", PEER_B), stamp(1_002, PEER_B)),
    ];
    let settled = overbooked(&state(true, &placed), &all_up);
    let settlements: Vec<(&str, &Settlement)> =
        settled.iter().map(|o| (o.conference.as_str(), &o.settlement)).collect();
    let to_two = Settlement::Move { bridge: "two".to_owned() };
    assert_eq!(settlements, [("beta", &to_two), ("gamma", &Settlement::Refuse)]);
}

#[test]
fn a_bridge_within_capacity_is_left_alone() {
    let placed = [
        (conference("alpha", "one", PEER_A), stamp(1_000, PEER_A)),
        (conference("beta", "two", PEER_B), stamp(1_000, PEER_B)),
    ];
    assert_eq!(overbooked(&state(true, &placed), &all_up), []);
}
