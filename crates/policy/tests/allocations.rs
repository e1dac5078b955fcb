//! How many allocations a policy call costs once it reaches the decision: the body parsed, the
//! call decided on an existing conference, its CPL written. Counted by dhat's allocator, in a
//! test binary of its own (the count is the whole process's, so this file holds one test).

use model::{Event, Hlc, PeerId, Record, RecordKind, Stamp, State};
use policy::{Decision, Engine};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// What parsing, deciding and answering a call to an existing conference may allocate: the
/// decoded alias, the regex's captures and the conference name they expand to, the route URL,
/// the bridge's name in the decision, the CPL: one each. There were 18 before the policy path
/// was cut down (2026-12, issue #18), and 7 while the route URL was a `format!`.
const ALLOCATIONS_PER_CALL_MAX: u64 = 6;

fn state() -> State {
    let records = [
        (
            RecordKind::Bridge,
            serde_json::json!({"name": "mcu", "bridge_type": "mcu",
            "address": "mcu.example.com:8080", "username": "api", "password": "pw", "capacity_ports": 100}),
        ),
        (
            RecordKind::BridgePool,
            serde_json::json!({"name": "pool", "bridge_type": "mcu", "bridges": ["mcu"]}),
        ),
        (
            RecordKind::ServicePreference,
            serde_json::json!({"name": "pref", "bridge_type": "mcu", "pools": ["pool"]}),
        ),
        (
            RecordKind::ConferenceTemplate,
            serde_json::json!({"name": "meeting",
            "conference_type": "meeting", "service_preference": "pref", "max_participants": 2}),
        ),
        (
            RecordKind::ConferenceAlias,
            serde_json::json!({"name": "meet",
            "pattern": r"meet\.(?P<room>[a-z0-9]+)@example\.com", "conference_name": "${room}",
            "template": "meeting", "priority": 1}),
        ),
        (
            RecordKind::Conference,
            serde_json::json!({"name": "alice", "bridge": "mcu",
            "bridge_conference_id": "alice", "template": "meeting"}),
        ),
    ];
    let mut state = State::default();
    for (index, (kind, value)) in records.into_iter().enumerate() {
        let record = Record::from_json(kind, value).expect("a valid record");
        let stamp =
            Stamp { hlc: Hlc { wall_ms: index as u64 + 1, counter: 0 }, origin: PeerId([1; 16]) };
        state.apply(stamp, &Event::Saved(record));
    }
    state
}

/// One call as the VCS sends it, through to its CPL.
fn answer(engine: &Engine, body: &[u8]) -> String {
    let request = policy::request::parse(body).expect("a valid request");
    let decision = engine.decide(&request, &|_: &str| true);
    assert!(matches!(decision, Decision::Route { .. }), "{decision:?}");
    policy::cpl::answer(&decision)
}

// Goal: the per-call allocations the policy path was cut down to stay cut down; a change that
// copies a value per call again (a key built for a lookup, a `format!` of the answer) fails here.
#[test]
fn a_call_to_an_existing_conference_allocates_a_handful_of_times() {
    let body = b"POLICY_TYPE=SEARCH&METHOD=INVITE&PROTOCOL=SIP\
        &DESTINATION_ALIAS=meet.alice%40example.com&GLOBAL_CALL-SERIAL_NUMBER=1";
    let engine = Engine::new(Arc::new(state()), None);
    // The regex engine's per-thread cache is made on the first search.
    let expected = answer(&engine, body);
    let _profiler = dhat::Profiler::builder().testing().build();
    let cpl = answer(&engine, body);
    let allocations = dhat::HeapStats::get().total_blocks;
    assert_eq!(cpl, expected);
    assert!(
        allocations <= ALLOCATIONS_PER_CALL_MAX,
        "{allocations} allocations per call, at most {ALLOCATIONS_PER_CALL_MAX} expected"
    );
}
