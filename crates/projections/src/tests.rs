//! Projections as data: `test_data/*.events` (one event per line) go in, the read models come
//! out and are compared with `test_data/*.expected`. `UPDATE_EXPECT=1 cargo test` rewrites the
//! expected files after a deliberate change; review the diff.
//!
//! Event lines: `<wall ms> <actor> save <kind> <record JSON>` or
//! `<wall ms> <actor> remove <kind> <name>`; `#` starts a comment.
#![allow(clippy::unwrap_used)]

use super::*;
use eventlog::{EventLog, NewEvent, Stream};
use model::{Event, Hlc, Record, RecordKey, RecordKind};
use std::path::Path;

fn parse_line(line: &str) -> (u64, String, Event) {
    let mut parts = line.splitn(5, ' ');
    let at_ms: u64 = parts.next().unwrap().parse().unwrap();
    let actor = parts.next().unwrap().to_owned();
    let action = parts.next().unwrap();
    let kind = RecordKind::from_name(parts.next().unwrap()).unwrap();
    let rest = parts.next().unwrap();
    let event = match action {
        "save" => {
            Event::Saved(Record::from_json(kind, serde_json::from_str(rest).unwrap()).unwrap())
        }
        "remove" => Event::Removed(RecordKey { kind, name: rest.to_owned() }),
        other => panic!("unknown action {other}"),
    };
    (at_ms, actor, event)
}

fn new_event(at_ms: u64, counter: u32, actor: &str, event: &Event) -> NewEvent {
    let encoded = event.encode();
    NewEvent {
        stream: match event.scope() {
            model::Scope::Shared => Stream::Shared,
            model::Scope::Local => Stream::Local,
        },
        hlc: Hlc { wall_ms: at_ms, counter },
        actor: actor.to_owned(),
        kind: encoded.kind,
        version: encoded.version,
        payload: encoded.payload,
    }
}

/// Appends the events of a `.events` text to a fresh log, one transaction per line.
fn log_from(dir: &Path, text: &str) -> EventLog {
    let mut log = EventLog::open(&dir.join("baton.db")).unwrap();
    for (counter, line) in
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).enumerate()
    {
        let (at_ms, actor, event) = parse_line(line);
        log.append(&[new_event(at_ms, counter as u32, &actor, &event)]).unwrap();
    }
    log
}

/// The read models rendered as text: current records, then the Configuration Log.
fn render(conn: &Connection) -> String {
    let mut out = String::from("# records\n");
    for &kind in RecordKind::ALL {
        for record in list(conn, kind).unwrap() {
            out += &format!(
                "{} {}\n",
                kind.as_str(),
                serde_json::to_string(&record.to_json()).unwrap()
            );
        }
    }
    out += "# configuration log, newest first\n";
    for entry in
        config_log(conn, &ConfigLogQuery { limit: LOG_PAGE_MAX, ..Default::default() }).unwrap()
    {
        out += &format!(
            "{} {} {} {} {:?} before={} after={}\n",
            entry.position,
            entry.actor,
            entry.action,
            entry.kind,
            entry.name,
            entry.before.map_or("-".to_owned(), |v| v.to_string()),
            entry.after.map_or("-".to_owned(), |v| v.to_string()),
        );
    }
    out
}

fn check_case(name: &str) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data");
    let events = std::fs::read_to_string(data.join(format!("{name}.events"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_from(dir.path(), &events);
    catch_up(log.connection_mut()).unwrap();
    let actual = render(log.connection());
    let expected_path = data.join(format!("{name}.expected"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(actual, expected, "{name}: projection differs from {}", expected_path.display());
}

#[test]
fn conference_chain_is_projected_with_history_and_redacted_secrets() {
    check_case("conference_chain");
}

#[test]
fn removals_leave_no_record_but_keep_their_history() {
    check_case("removals");
}

#[test]
fn peer_local_settings_are_projected_beside_shared_records() {
    check_case("local_settings");
}

/// The bridge `b` saved with `capacity` ports.
fn bridge(capacity: u32) -> Event {
    let fields = serde_json::json!({"name": "b", "bridge_type": "mcu", "address": "127.0.0.1",
                                    "username": "u", "capacity_ports": capacity});
    Event::Saved(Record::from_json(RecordKind::Bridge, fields).unwrap())
}

// Goal: an event from another peer that arrives late but carries an older stamp must not
// overwrite a newer value, exactly as model::State decides.
#[test]
fn late_older_event_from_another_peer_does_not_win() {
    let dir = tempfile::tempdir().unwrap();
    let mut remote = EventLog::open(&dir.path().join("remote.db")).unwrap();
    let remote_events = remote.append(&[new_event(1_000, 0, "bob", &bridge(10))]).unwrap();
    let mut local = EventLog::open(&dir.path().join("local.db")).unwrap();
    local.append(&[new_event(2_000, 0, "alice", &bridge(20))]).unwrap();
    catch_up(local.connection_mut()).unwrap();
    local.append_remote(remote_events.clone()).unwrap();
    catch_up(local.connection_mut()).unwrap();

    let key = RecordKey { kind: RecordKind::Bridge, name: "b".to_owned() };
    let Some(Record::Bridge(bridge)) = get(local.connection(), &key).unwrap() else {
        panic!("bridge missing")
    };
    assert_eq!(bridge.capacity_ports, 20, "the newer write stays");
    // The late event still appears in the Configuration Log: it happened.
    let log = config_log(local.connection(), &ConfigLogQuery { limit: 10, ..Default::default() })
        .unwrap();
    assert_eq!(log.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(), ["bob", "alice"]);
    // Filtered by actor (checked on the scan, no index by actor).
    let by_alice =
        ConfigLogQuery { actor: Some("alice".to_owned()), limit: 10, ..Default::default() };
    let log = config_log(local.connection(), &by_alice).unwrap();
    assert_eq!(
        log.iter().map(|e| (e.actor.as_str(), e.position)).collect::<Vec<_>>(),
        [("alice", 1)]
    );
}

// Goal: a rebuild that meets one record several times in one batch (the previous row is
// remembered, not looked up) gives what catching up after each event gives.
#[test]
fn one_batch_with_rewrites_and_a_late_older_event_matches_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut remote = EventLog::open(&dir.path().join("remote.db")).unwrap();
    let remote_events = remote.append(&[new_event(1_000, 0, "bob", &bridge(10))]).unwrap();
    let mut logs = Vec::new();
    for (name, each_event) in [("batched.db", false), ("stepwise.db", true)] {
        let mut log = EventLog::open(&dir.path().join(name)).unwrap();
        for (at_ms, capacity) in [(2_000, 20), (3_000, 30)] {
            log.append(&[new_event(at_ms, 0, "alice", &bridge(capacity))]).unwrap();
            if each_event {
                catch_up(log.connection_mut()).unwrap();
            }
        }
        log.append_remote(remote_events.clone()).unwrap();
        catch_up(log.connection_mut()).unwrap();
        logs.push(log);
    }

    let key = RecordKey { kind: RecordKind::Bridge, name: "b".to_owned() };
    let query = ConfigLogQuery { limit: 10, ..Default::default() };
    let [batched, stepwise] = &logs[..] else { panic!("two logs") };
    let Some(Record::Bridge(bridge)) = get(batched.connection(), &key).unwrap() else {
        panic!("bridge missing")
    };
    assert_eq!(bridge.capacity_ports, 30, "the newest write stays");
    let batched_log = config_log(batched.connection(), &query).unwrap();
    let stepwise_log = config_log(stepwise.connection(), &query).unwrap();
    assert_eq!(batched_log.len(), 3);
    for (ours, theirs) in batched_log.iter().zip(&stepwise_log) {
        assert_eq!((&ours.before, &ours.after), (&theirs.before, &theirs.after));
    }
}

// Goal: bumping a projection's version (simulated by changing the stored one) rebuilds it
// from the first event with the same result, and checkpoints track the log's end.
#[test]
fn a_changed_version_rebuilds_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/conference_chain.events");
    let mut log = log_from(dir.path(), &std::fs::read_to_string(data).unwrap());
    let applied = catch_up(log.connection_mut()).unwrap();
    let last = log.last_position();
    assert_eq!(applied, 2 * last, "both projections applied every event");
    assert_eq!(position(log.connection()).unwrap(), last);
    let before = render(log.connection());

    assert_eq!(catch_up(log.connection_mut()).unwrap(), 0, "catching up twice does nothing");
    log.connection()
        .execute("UPDATE proj_checkpoints SET version = 0 WHERE name = 'records'", [])
        .unwrap();
    log.connection().execute("DELETE FROM proj_records", []).unwrap();
    assert_eq!(
        catch_up(log.connection_mut()).unwrap(),
        last,
        "only the records projection was rebuilt"
    );
    assert_eq!(render(log.connection()), before);
}

// Goal: a rebuild from empty spans several batches without looking up any row (its memo is
// complete) and ends as catching up as the log grows does: the newest write per record wins
// across batch boundaries, a late older event loses, and each change's "before" is the
// previous change's "after" even when that change was in an earlier batch or catch-up.
#[test]
fn a_rebuild_across_batches_matches_catching_up_as_the_log_grows() {
    const APPEND_EVENTS: usize = 1_000;
    const CAPACITIES: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let mut remote = EventLog::open(&dir.path().join("remote.db")).unwrap();
    let late = remote.append(&[new_event(1_000, 0, "bob", &bridge(7))]).unwrap();
    // Past one rebuild batch by fewer than a page of the log, so `render` shows the boundary.
    let writes = REBUILD_BATCH_EVENTS + 10;
    let write = |index: usize| {
        new_event(2_000 + index as u64, 0, "alice", &bridge(10 + (index % CAPACITIES) as u32))
    };
    let mut logs = Vec::new();
    for (name, each_append) in [("rebuilt.db", false), ("stepwise.db", true)] {
        let mut log = EventLog::open(&dir.path().join(name)).unwrap();
        for first in (0..writes).step_by(APPEND_EVENTS) {
            let events: Vec<_> = (first..(first + APPEND_EVENTS).min(writes)).map(write).collect();
            log.append(&events).unwrap();
            if each_append {
                catch_up(log.connection_mut()).unwrap();
            }
        }
        log.append_remote(late.clone()).unwrap();
        catch_up(log.connection_mut()).unwrap();
        // A later catch-up starts with an empty memo: it finds the key's previous row in
        // the table the rebuild left, which must name the newest of all its batches.
        log.append(&[write(writes)]).unwrap();
        catch_up(log.connection_mut()).unwrap();
        logs.push(log);
    }
    let [rebuilt, stepwise] = &logs[..] else { panic!("two logs") };
    let key = RecordKey { kind: RecordKind::Bridge, name: "b".to_owned() };
    let Some(Record::Bridge(bridge)) = get(rebuilt.connection(), &key).unwrap() else {
        panic!("bridge missing")
    };
    let newest = 10 + (writes % CAPACITIES) as u32;
    assert_eq!(bridge.capacity_ports, newest, "the newest write stays");
    assert_eq!(render(rebuilt.connection()), render(stepwise.connection()));
}

/// The bridge `b<n>` saved with `capacity` ports.
fn bridge_named(n: usize, capacity: u32) -> Event {
    let fields = serde_json::json!({"name": format!("b{n}"), "bridge_type": "mcu",
                                    "address": "127.0.0.1", "username": "u",
                                    "capacity_ports": capacity});
    Event::Saved(Record::from_json(RecordKind::Bridge, fields).unwrap())
}

// Goal: each change's record before it (its key's previous row) is right however the
// catch-up found it: a catch-up meeting 270 records it has not met looks them up in chunks
// (full ones, and the last 14 one by one), a lone change looks up one key, and a rebuild past one batch with
// more keys than it keeps in memory (`CONFIG_KEYS_KEPT_MAX`, 100 in tests) empties its
// memory and looks them up again. Checked against the capacity each change replaced.
#[test]
fn every_change_shows_the_record_it_replaced_however_its_previous_row_was_found() {
    const KEYS: usize = 270;
    const APPEND_EVENTS: usize = 997;
    let writes = REBUILD_BATCH_EVENTS + 500;
    let capacity = |index: usize| 10 + (index / KEYS) as u32;
    let write = |index: usize| {
        new_event(2_000 + index as u64, 0, "alice", &bridge_named(index % KEYS, capacity(index)))
    };
    let dir = tempfile::tempdir().unwrap();
    let mut logs = Vec::new();
    for (name, each_append) in [("rebuilt.db", false), ("stepwise.db", true)] {
        let mut log = EventLog::open(&dir.path().join(name)).unwrap();
        for first in (0..writes).step_by(APPEND_EVENTS) {
            let events: Vec<_> = (first..(first + APPEND_EVENTS).min(writes)).map(write).collect();
            log.append(&events).unwrap();
            if each_append {
                catch_up(log.connection_mut()).unwrap();
            }
        }
        catch_up(log.connection_mut()).unwrap();
        log.append(&[write(writes)]).unwrap();
        catch_up(log.connection_mut()).unwrap();
        logs.push(log);
    }
    for log in &logs {
        let query = ConfigLogQuery { limit: LOG_PAGE_MAX, ..Default::default() };
        let entries = config_log(log.connection(), &query).unwrap();
        assert_eq!(entries.len(), LOG_PAGE_MAX);
        for entry in entries {
            let index = usize::try_from(entry.position).unwrap() - 1;
            let ports =
                |value: Option<serde_json::Value>| value.map(|v| v["capacity_ports"].clone());
            assert_eq!(entry.name, format!("b{}", index % KEYS));
            assert_eq!(ports(entry.after), Some(serde_json::json!(capacity(index))));
            let replaced =
                index.checked_sub(KEYS).map(|before| serde_json::json!(capacity(before)));
            assert_eq!(ports(entry.before), replaced, "change at {}", entry.position);
        }
    }
    assert_eq!(render(logs[0].connection()), render(logs[1].connection()));
}

// Goal: a log whose Configuration Log was written by the version before (no previous row in
// its rows, an index to find it instead) shows the same history after the next catch-up,
// which rebuilds it, and the old index is gone with the old table.
#[test]
fn the_configuration_log_of_the_previous_version_is_rebuilt_with_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/conference_chain.events");
    let mut log = log_from(dir.path(), &std::fs::read_to_string(data).unwrap());
    catch_up(log.connection_mut()).unwrap();
    let before = render(log.connection());
    assert!(before.contains("before={"), "the history shows records before a change");

    // As version 2 left it.
    log.connection()
        .execute_batch(
            "DROP TABLE proj_config_log; DROP TABLE proj_config_log_keys;
             CREATE TABLE proj_config_log (position INTEGER PRIMARY KEY, actor TEXT NOT NULL,
                 kind TEXT NOT NULL, name TEXT NOT NULL);
             INSERT INTO proj_config_log SELECT position, actor, kind, '' FROM events;
             CREATE INDEX proj_config_log_record ON proj_config_log (kind, name, position);
             UPDATE proj_checkpoints SET version = 2 WHERE name = 'config_log';",
        )
        .unwrap();
    let last = log.last_position();
    assert_eq!(catch_up(log.connection_mut()).unwrap(), last, "only the log was rebuilt");
    assert_eq!(render(log.connection()), before);
    let indexes: i64 = log
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'proj_config_log'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0);
}

/// Appends `events` with stamps from `at_ms`; returns them as stored and as given.
fn append_decoded(
    log: &mut EventLog,
    at_ms: u64,
    events: &[Event],
) -> (Vec<StoredEvent>, Vec<Event>) {
    let new: Vec<NewEvent> = events
        .iter()
        .enumerate()
        .map(|(index, event)| new_event(at_ms + index as u64, 0, "alice", event))
        .collect();
    (log.append(&new).unwrap(), events.to_vec())
}

// Goal: a writer handing over the events it just appended gets the read models catching up
// from the log gives, rewrites, removals and a late older event included; and when the
// projections stand further back (an earlier catch-up failed), the events before the handed
// ones are applied too, not skipped.
#[test]
fn handing_over_appended_events_matches_catching_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut remote = EventLog::open(&dir.path().join("remote.db")).unwrap();
    let late = remote.append(&[new_event(1_000, 0, "bob", &bridge(5))]).unwrap();
    let removed = Event::Removed(RecordKey { kind: RecordKind::Bridge, name: "b".to_owned() });
    let groups: [&[Event]; 5] = [
        &[bridge(10)],
        &[bridge(15), bridge(20)],
        &[removed, bridge(30)],
        &[bridge(35)],
        &[bridge(40)],
    ];
    let mut logs = Vec::new();
    for (name, hand_over) in [("handed.db", true), ("read.db", false)] {
        let mut log = EventLog::open(&dir.path().join(name)).unwrap();
        for (index, group) in groups.iter().enumerate() {
            let (stored, events) = append_decoded(&mut log, 2_000 + 100 * index as u64, group);
            if index == 2 {
                continue; // as a catch-up that failed: the next one must apply this group too
            }
            match hand_over {
                true => catch_up_appended(log.connection_mut(), &stored, &events).unwrap(),
                false => catch_up(log.connection_mut()).unwrap(),
            };
            assert_eq!(position(log.connection()).unwrap(), log.last_position());
        }
        let late = log.append_remote(late.clone()).unwrap();
        let event = Event::decode(&late[0].kind, late[0].version, &late[0].payload).unwrap();
        catch_up_appended(log.connection_mut(), &late, &[event]).unwrap();
        logs.push(log);
    }
    let [handed, read] = &logs[..] else { panic!("two logs") };
    let key = RecordKey { kind: RecordKind::Bridge, name: "b".to_owned() };
    let Some(Record::Bridge(bridge)) = get(handed.connection(), &key).unwrap() else {
        panic!("bridge missing")
    };
    assert_eq!(bridge.capacity_ports, 40, "the newest write stays");
    assert_eq!(render(handed.connection()), render(read.connection()));
    assert_eq!(position(handed.connection()).unwrap(), handed.last_position());
}

/// Rows whose stored `previous` is not the same key's previous row by position, and keys whose
/// row in `proj_config_log_keys` is not their newest row, as brute-force SQL finds them.
fn previous_mismatches(conn: &Connection) -> Vec<String> {
    let mut bad: Vec<String> = conn
        .prepare(
            "SELECT c.position, c.kind, c.name, c.previous,
                    (SELECT max(p.position) FROM proj_config_log AS p
                     WHERE p.kind = c.kind AND p.name = c.name AND p.position < c.position)
             FROM proj_config_log AS c
             WHERE c.previous IS NOT (SELECT max(p.position) FROM proj_config_log AS p
                     WHERE p.kind = c.kind AND p.name = c.name AND p.position < c.position)",
        )
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "row {} {}/{}: previous {:?}, expected {:?}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let keys: Vec<String> = conn
        .prepare(
            "SELECT 'key ' || kind || '/' || name || ' ' || ifnull(k, 'none') || ' vs ' || ifnull(m, 'none')
             FROM (SELECT c.kind, c.name, max(c.position) AS m,
                          (SELECT position FROM proj_config_log_keys AS k
                           WHERE k.kind = c.kind AND k.name = c.name) AS k
                   FROM proj_config_log AS c GROUP BY c.kind, c.name)
             WHERE k IS NOT m
             UNION ALL
             SELECT 'extra key ' || kind || '/' || name FROM proj_config_log_keys AS k
             WHERE NOT EXISTS (SELECT 1 FROM proj_config_log AS c
                               WHERE c.kind = k.kind AND c.name = k.name)",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    bad.extend(keys);
    bad
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// The removal of `b<n>`: a bridge for even `n`, else a bridge pool of the same name as the
/// bridge (two keys sharing a name).
fn removed_named(n: usize) -> Event {
    let kind = if n.is_multiple_of(2) { RecordKind::Bridge } else { RecordKind::BridgePool };
    Event::Removed(RecordKey { kind, name: format!("b{n}") })
}

/// `count` changes to bridges `b0`…`b<keys - 1>`, about one in `removal_one_in` a removal
/// (of a bridge or of a bridge pool of the same name), the others saves with random ports.
fn random_changes(rng: &mut Rng, count: usize, keys: usize, removal_one_in: usize) -> Vec<Event> {
    (0..count)
        .map(|_| {
            let n = rng.next(keys);
            if rng.next(removal_one_in) == 0 {
                removed_named(n)
            } else {
                bridge_named(n, rng.next(50) as u32)
            }
        })
        .collect()
}

/// Notes in `failures`, under `label`, the first rows [`previous_mismatches`] finds.
fn note_mismatches(failures: &mut Vec<String>, label: String, conn: &Connection) {
    let bad = previous_mismatches(conn);
    if !bad.is_empty() {
        failures.push(format!("{label}: {:?}", &bad[..bad.len().min(5)]));
    }
}

/// Rebuilds the Configuration Log from the first event, as a bump of its version does.
fn rebuild_config_log(log: &mut EventLog) {
    log.connection()
        .execute("UPDATE proj_checkpoints SET version = 0 WHERE name = 'config_log'", [])
        .unwrap();
    catch_up(log.connection_mut()).unwrap();
}

// Goal: whatever the number of keys a catch-up has not met (below, at and past the padding
// threshold, at and past a statement's 64, past CONFIG_KEYS_KEPT_MAX), however the events are
// grouped into catch-ups (one by one, handed over, in chunks of 64 and remainders), with
// removals and rewrites of one key in one batch, every row's previous row is the one a scan
// by position finds, and the keys table holds each key's newest row.
#[test]
fn every_row_names_its_keys_previous_row_however_the_catch_ups_were_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (case, &keys) in [1usize, 15, 16, 17, 40, 63, 64, 65, 80, 101, 150].iter().enumerate() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ keys as u64);
        let mut log = EventLog::open(&dir.path().join(format!("{case}.db"))).unwrap();
        let mut at = 1_000u64;
        for step in 0..40 {
            let group_len = [1, 2, 3, 15, 16, 17, 63, 64, 65, 129, 200][rng.next(11)];
            let events = random_changes(&mut rng, group_len, keys, 7);
            let (stored, events) = append_decoded(&mut log, at, &events);
            at += group_len as u64 + 1;
            match rng.next(4) {
                0 => {} // caught up by a later step
                1 => {
                    catch_up_appended(log.connection_mut(), &stored, &events).unwrap();
                }
                _ => {
                    catch_up(log.connection_mut()).unwrap();
                }
            }
            if step % 10 == 9 {
                catch_up(log.connection_mut()).unwrap();
                note_mismatches(
                    &mut failures,
                    format!("keys {keys} step {step}"),
                    log.connection(),
                );
            }
        }
        // And a rebuild of the same log.
        rebuild_config_log(&mut log);
        note_mismatches(&mut failures, format!("keys {keys} rebuilt"), log.connection());
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// Goal: catch-ups of several batches (CATCH_UP_BATCH_EVENTS, and a rebuild's
// REBUILD_BATCH_EVENTS) over more keys than CONFIG_KEYS_KEPT_MAX, so the memo is emptied
// between batches, keep every previous row right, in a catch-up and in a rebuild.
#[test]
fn every_row_names_its_keys_previous_row_across_batches_and_an_emptied_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(12345);
    let mut log = EventLog::open(&dir.path().join("log.db")).unwrap();
    let mut at = 1_000u64;
    let mut failures = Vec::new();
    for (round, (total, keys)) in
        [(300, 150), (4_100, 230), (1_500, 120), (17_000, 333)].into_iter().enumerate()
    {
        let events = random_changes(&mut rng, total, keys, 9);
        for chunk in events.chunks(977) {
            append_decoded(&mut log, at, chunk);
            at += chunk.len() as u64;
        }
        catch_up(log.connection_mut()).unwrap();
        note_mismatches(&mut failures, format!("round {round}"), log.connection());
    }
    assert!(log.last_position() > REBUILD_BATCH_EVENTS as u64);
    rebuild_config_log(&mut log);
    note_mismatches(&mut failures, "rebuilt".to_owned(), log.connection());
    assert!(failures.is_empty(), "{failures:#?}");
}
