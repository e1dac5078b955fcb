//! Decisions over a small configuration: two pools in preference order, a lecture template
//! with chair and guest aliases, bridges with room for a few conferences.

use super::*;
use crate::request::PolicyRequest;
use model::{Event, Hlc, PeerId, Stamp};
use serde_json::json;

fn record(kind: RecordKind, value: serde_json::Value) -> Record {
    Record::from_json(kind, value).expect("valid test record")
}

fn state(extra: &[Record]) -> State {
    use RecordKind::*;
    let bridge = |name: &str, capacity: u32| {
        record(
            Bridge,
            json!({"name": name, "bridge_type": "mcu", "address": format!("{name}.example.com:8080"),
                              "username": "api", "password": "pw", "capacity_ports": capacity}),
        )
    };
    let mut records = vec![
        bridge("first-a", 20),
        bridge("first-b", 30),
        bridge("spare", 100),
        record(
            BridgePool,
            json!({"name": "primary", "bridge_type": "mcu", "bridges": ["first-a", "first-b"]}),
        ),
        record(BridgePool, json!({"name": "overflow", "bridge_type": "mcu", "bridges": ["spare"]})),
        record(
            ServicePreference,
            json!({"name": "prefer-primary", "bridge_type": "mcu", "pools": ["primary", "overflow"]}),
        ),
        record(
            ConferenceTemplate,
            json!({"name": "lecture", "conference_type": "lecture", "service_preference": "prefer-primary", "max_participants": 10}),
        ),
        record(
            ConferenceAlias,
            json!({"name": "guests", "pattern": r"meet\.(?P<room>[a-z]+)\.guest@example\.com", "conference_name": "${room}", "template": "lecture", "role": "guest", "priority": 1}),
        ),
        record(
            ConferenceAlias,
            json!({"name": "chairs", "pattern": r"meet\.(?P<room>[a-z]+)@example\.com", "conference_name": "${room}", "template": "lecture", "priority": 2}),
        ),
        record(
            ConferenceAlias,
            json!({"name": "catch-all", "pattern": r"(.+)@example\.com", "conference_name": "other-$1", "template": "lecture", "priority": 9}),
        ),
    ];
    records.extend_from_slice(extra);
    let mut state = State::default();
    for (index, record) in records.into_iter().enumerate() {
        let stamp =
            Stamp { hlc: Hlc { wall_ms: index as u64 + 1, counter: 0 }, origin: PeerId([1; 16]) };
        state.apply(stamp, &Event::Saved(record));
    }
    state
}

fn conference(name: &str, bridge: &str) -> Record {
    record(
        RecordKind::Conference,
        json!({"name": name, "bridge": bridge, "bridge_conference_id": name, "template": "lecture"}),
    )
}

fn call(alias: &str) -> PolicyRequest<'_> {
    PolicyRequest::invite(alias, None)
}

fn all_up(_: &str) -> bool {
    true
}

#[test]
fn a_new_conference_goes_to_the_emptiest_bridge_of_the_first_pool() {
    let engine = Engine::new(Arc::new(state(&[])), None);
    assert_eq!(
        engine.decide(&call("sip:Meet.Alice@Example.com;transport=tls"), &all_up),
        Decision::Create {
            conference: "alice".to_owned(),
            template: "lecture".to_owned(),
            role: Role::Chair,
            candidates: vec!["first-b".to_owned(), "first-a".to_owned(), "spare".to_owned()],
        }
    );
}

#[test]
fn participants_of_an_existing_conference_follow_it_with_their_role() {
    let engine = Engine::new(Arc::new(state(&[conference("alice", "first-a")])), None);
    let route = |alias| match engine.decide(&call(alias), &all_up) {
        Decision::Route { url, bridge, .. } => (url, bridge),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        route("meet.alice@example.com"),
        ("alice@first-a.example.com".to_owned(), "first-a".to_owned())
    );
    assert_eq!(
        route("meet.alice.guest@example.com"),
        ("alice.guest@first-a.example.com".to_owned(), "first-a".to_owned())
    );
}

#[test]
fn full_bridges_and_dead_bridges_are_passed_over() {
    // first-a has 20 ports: two 10-port conferences fill it; first-b has 30: three fill it.
    let busy = [
        conference("x1", "first-a"),
        conference("x2", "first-a"),
        conference("y1", "first-b"),
        conference("y2", "first-b"),
    ];
    let engine = Engine::new(Arc::new(state(&busy)), None);
    let candidates =
        |health: &dyn BridgeHealth| match engine.decide(&call("meet.bob@example.com"), health) {
            Decision::Create { candidates, .. } => candidates,
            other => panic!("{other:?}"),
        };
    assert_eq!(candidates(&all_up), ["first-b", "spare"]);
    assert_eq!(candidates(&|name: &str| name != "first-b"), ["spare"]);
    // The hosting bridge is down: the conference is placed again.
    let moved = Engine::new(Arc::new(state(&[conference("carol", "first-a")])), None);
    assert!(matches!(
        moved.decide(&call("meet.carol@example.com"), &|name: &str| name != "first-a"),
        Decision::Create { .. }
    ));
    assert_eq!(
        engine.decide(&call("meet.bob@example.com"), &|_: &str| false),
        Decision::Reject(RejectReason::BridgeFailure)
    );
}

#[test]
fn no_capacity_anywhere_and_no_alias_are_distinct_rejections() {
    let full: Vec<Record> = (0..10)
        .map(|i| conference(&format!("s{i}"), "spare"))
        .chain([
            conference("x1", "first-a"),
            conference("x2", "first-a"),
            conference("y1", "first-b"),
            conference("y2", "first-b"),
            conference("y3", "first-b"),
        ])
        .collect();
    let engine = Engine::new(Arc::new(state(&full)), None);
    assert_eq!(
        engine.decide(&call("meet.bob@example.com"), &all_up),
        Decision::Reject(RejectReason::NoCapacity)
    );
    assert_eq!(
        engine.decide(&call("bob@elsewhere.org"), &all_up),
        Decision::Reject(RejectReason::NoMatchingAlias)
    );
    let registration =
        PolicyRequest { policy_type: PolicyType::Registration, ..call("meet.bob@example.com") };
    assert_eq!(engine.decide(&registration, &all_up), Decision::Reject(RejectReason::NotHandled));
    let no_destination = PolicyRequest { destination_alias: None, ..call("x") };
    assert_eq!(engine.decide(&no_destination, &all_up), Decision::Reject(RejectReason::NotHandled));
}

#[test]
fn aliases_match_by_priority_then_name_and_expand_their_replace_string() {
    let engine = Engine::new(Arc::new(state(&[])), None);
    match engine.decide(&call("dave@example.com"), &all_up) {
        Decision::Create { conference, .. } => assert_eq!(conference, "other-dave"),
        other => panic!("{other:?}"),
    }
    // Rebuilding reuses compiled patterns and decides the same.
    let again = Engine::new(Arc::new(state(&[])), Some(&engine));
    assert_eq!(
        again.decide(&call("meet.eve@example.com"), &all_up),
        engine.decide(&call("meet.eve@example.com"), &all_up)
    );
}

// Goal (issue 19, defect 9): a dialled alias whose replace string makes a conference name
// the bridges and the conference table cannot take (over 64 characters, or with `/`) is
// rejected with its own reason before any bridge is asked; 64 characters still create.
#[test]
fn conference_names_a_record_cannot_hold_are_rejected_before_any_bridge_call() {
    let engine = Engine::new(Arc::new(state(&[])), None);
    // The catch-all makes `other-<local part>`: 6 + 58 = 64 characters.
    let longest = format!("{}@example.com", "a".repeat(58));
    match engine.decide(&call(&longest), &all_up) {
        Decision::Create { conference, .. } => assert_eq!(conference.chars().count(), 64),
        other => panic!("{other:?}"),
    }
    let too_long = format!("{}@example.com", "a".repeat(59));
    let decision = engine.decide(&call(&too_long), &all_up);
    assert_eq!(decision, Decision::Reject(RejectReason::ConferenceNameTooLong));
    let answer = crate::cpl::reject(
        RejectReason::ConferenceNameTooLong.status(),
        RejectReason::ConferenceNameTooLong.text(),
    );
    assert!(answer.contains(r#"status="414""#) && answer.contains("longer than 64"), "{answer}");
    // Characters count, not bytes: 64 two-byte letters are a valid name.
    let accented = format!("{}@example.com", "é".repeat(58));
    assert!(matches!(engine.decide(&call(&accented), &all_up), Decision::Create { .. }));
    assert_eq!(
        engine.decide(&call("a/b@example.com"), &all_up),
        Decision::Reject(RejectReason::InvalidConferenceName)
    );
}

/// Every alias call of the tests' state, explained and decided: the two must agree.
fn explained(engine: &Engine, alias: &str, health: &dyn BridgeHealth) -> (Decision, Trace) {
    let (decision, trace) = engine.explain(&call(alias), health);
    assert_eq!(decision, engine.decide(&call(alias), health), "explain decides as decide does");
    (decision, trace)
}

#[test]
fn an_explanation_shows_the_aliases_tried_and_every_bridge_weighed() {
    // first-a holds two 10-port conferences (full); first-b is down; spare has room.
    let busy = [conference("x1", "first-a"), conference("x2", "first-a")];
    let engine = Engine::new(Arc::new(state(&busy)), None);
    let (decision, trace) =
        explained(&engine, "sip:Meet.Bob@example.com", &|name: &str| name != "first-b");
    assert_eq!(
        decision,
        Decision::Create {
            conference: "bob".to_owned(),
            template: "lecture".to_owned(),
            role: Role::Chair,
            candidates: vec!["spare".to_owned()],
        }
    );
    assert_eq!(trace.alias.as_deref(), Some("meet.bob@example.com"));
    let tried: Vec<(&str, &AliasOutcome)> =
        trace.aliases.iter().map(|check| (check.name.as_str(), &check.outcome)).collect();
    assert_eq!(
        tried,
        [
            ("guests", &AliasOutcome::NoMatch),
            ("chairs", &AliasOutcome::Matched { conference: "bob".to_owned() }),
        ],
        "aliases after the first match are not tried"
    );
    assert_eq!(trace.aliases[1].pattern, r"meet\.(?P<room>[a-z]+)@example\.com");
    assert_eq!(trace.aliases[1].priority, 2);
    assert_eq!(trace.template.as_deref(), Some("lecture"));
    assert_eq!(trace.ports_needed, Some(10));
    assert_eq!(trace.existing, None);
    type Weighed<'a> = (&'a str, Option<u32>, Option<bool>, BridgeVerdict);
    let weighed: Vec<(&str, Vec<Weighed<'_>>)> = trace
        .pools
        .iter()
        .map(|pool| {
            let bridges = pool
                .bridges
                .iter()
                .map(|b| (b.name.as_str(), b.free_ports, b.up, b.verdict))
                .collect();
            (pool.name.as_str(), bridges)
        })
        .collect();
    assert_eq!(
        weighed,
        [
            (
                "primary",
                vec![
                    ("first-a", Some(0), Some(true), BridgeVerdict::TooFewPorts),
                    ("first-b", Some(30), Some(false), BridgeVerdict::Down),
                ]
            ),
            ("overflow", vec![("spare", Some(100), Some(true), BridgeVerdict::Candidate)]),
        ]
    );
}

#[test]
fn an_explanation_says_why_an_existing_conference_is_followed_or_placed_again() {
    let engine = Engine::new(Arc::new(state(&[conference("carol", "first-a")])), None);
    let (decision, trace) = explained(&engine, "meet.carol.guest@example.com", &all_up);
    assert!(matches!(decision, Decision::Route { ref bridge, .. } if bridge == "first-a"));
    assert_eq!(trace.role, Some(Role::Guest));
    assert_eq!(
        trace.existing,
        Some(ExistingCheck { bridge: "first-a".to_owned(), verdict: ExistingVerdict::Followed })
    );
    assert!(trace.pools.is_empty(), "no bridge is weighed for a conference followed");

    let (decision, trace) =
        explained(&engine, "meet.carol@example.com", &|name: &str| name != "first-a");
    assert!(matches!(decision, Decision::Create { .. }), "{decision:?}");
    assert_eq!(trace.existing.map(|existing| existing.verdict), Some(ExistingVerdict::BridgeDown));
    assert_eq!(trace.pools[0].bridges[0].verdict, BridgeVerdict::Down);
}

#[test]
fn an_explanation_of_a_refusal_stops_where_the_decision_did() {
    let engine = Engine::new(Arc::new(state(&[])), None);
    let (decision, trace) = explained(&engine, "bob@elsewhere.org", &all_up);
    assert_eq!(decision, Decision::Reject(RejectReason::NoMatchingAlias));
    assert_eq!(trace.aliases.len(), 3, "every alias tried: {trace:?}");
    assert!(trace.aliases.iter().all(|check| check.outcome == AliasOutcome::NoMatch));
    assert_eq!((trace.conference, trace.template), (None, None));

    let (decision, trace) = explained(&engine, "meet.bob@example.com", &|_: &str| false);
    assert_eq!(decision, Decision::Reject(RejectReason::BridgeFailure));
    let verdicts: Vec<BridgeVerdict> =
        trace.pools.iter().flat_map(|pool| pool.bridges.iter().map(|b| b.verdict)).collect();
    assert_eq!(verdicts, [BridgeVerdict::Down; 3]);

    // A caller's alias is shown, never decided on.
    let request = PolicyRequest::invite("meet.bob@example.com", Some("sip:alice@example.com"));
    let (with_source, trace) = engine.explain(&request, &all_up);
    assert_eq!(with_source, engine.decide(&call("meet.bob@example.com"), &all_up));
    assert_eq!(trace.source_alias.as_deref(), Some("sip:alice@example.com"));
}
