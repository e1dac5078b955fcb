//! The VCS's form-encoded policy request, then the decision over a small configuration (alias
//! normalising, pattern matching, the conference name): anything a caller sends must give a
//! request error or a decision, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::{Event, Hlc, PeerId, Record, RecordKind, Stamp, State};
use policy::Engine;
use serde_json::json;
use std::sync::{Arc, OnceLock};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let records = [
            (RecordKind::Bridge, json!({"name": "mcu1", "bridge_type": "mcu", "address": "mcu1.example.com:8080", "username": "api", "password": "pw", "capacity_ports": 40})),
            (RecordKind::BridgePool, json!({"name": "pool", "bridge_type": "mcu", "bridges": ["mcu1"]})),
            (RecordKind::ServicePreference, json!({"name": "prefer", "bridge_type": "mcu", "pools": ["pool"]})),
            (RecordKind::ConferenceTemplate, json!({"name": "lecture", "conference_type": "lecture", "service_preference": "prefer", "max_participants": 10})),
            (RecordKind::ConferenceAlias, json!({"name": "guests", "pattern": r"meet\.(?P<room>[^@]+)\.guest@example\.com", "conference_name": "${room}", "template": "lecture", "role": "guest", "priority": 1})),
            (RecordKind::ConferenceAlias, json!({"name": "all", "pattern": r"(.+)@(.*)", "conference_name": "$1-$2", "template": "lecture", "priority": 2})),
        ];
        let mut state = State::default();
        for (index, (kind, value)) in records.into_iter().enumerate() {
            let record = Record::from_json(kind, value).expect("a valid fuzz configuration");
            let stamp = Stamp { hlc: Hlc { wall_ms: index as u64 + 1, counter: 0 }, origin: PeerId([1; 16]) };
            state.apply(stamp, &Event::Saved(record));
        }
        Engine::new(Arc::new(state), None)
    })
}

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = policy::request::parse(body) {
        let decision = engine().decide(&request, &|_: &str| true);
        if let policy::Decision::Reject(reason) = decision {
            let _ = policy::cpl::reject(reason.status(), reason.text());
        }
    }
});
