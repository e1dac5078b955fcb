//! Text for people: tables of records, `field: value` lines, log pages, configuration diffs
//! and API errors. Pure functions of the API's answers (the `api` crate's types); a record's
//! fields, whose schema is its kind's, are shown generically from their JSON.

use crate::client::ApiError;
use api::{ClusterStatus, ConfigAnswer, ConfigDiff, ConfigLogEntry, EventLogEntry, Page};
use model::{Record, RecordKind};
use serde_json::{Map, Value};

/// Widest cell in a table before it is cut.
pub(crate) const CELL_WIDTH_MAX: usize = 40;
/// Columns shown after the name in a list.
pub(crate) const LIST_FIELDS_MAX: usize = 4;
/// Fields never worth a column: secrets, shown only as `********` anyway.
const SECRET_FIELDS: &[&str] =
    &["password", "password_hash", "community", "server_private_key_pem", "pre_shared_key"];

/// `error: <message>` and one indented line per field.
pub(crate) fn api_error(error: &ApiError) -> String {
    let mut out = format!("error: {}\n", error.message);
    for (field, message) in &error.fields {
        let line = format!("{field}: {message}");
        // A single-field error's message is often that very line; say it once.
        if line != error.message {
            out += &format!("  {line}\n");
        }
    }
    if error.code == api::codes::PASSWORD_CHANGE_REQUIRED {
        out += "hint: change it with `batonctl password`\n";
    } else if error.code == api::codes::UNAUTHENTICATED {
        out += "hint: check --user (BATON_USER) and the password (BATON_PASSWORD)\n";
    }
    out
}

/// A value as one line of text: lists joined by `, `, objects as `key=value` pairs.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| format!("{key}={}", text(value)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Like [`text`], but an empty string shows as `""` so it is not mistaken for nothing.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        Value::Array(items) if items.is_empty() => "(none)".to_owned(),
        other => text(other),
    }
}

fn cut(cell: String) -> String {
    let cell = cell.replace('\n', " ");
    if cell.chars().count() <= CELL_WIDTH_MAX {
        return cell;
    }
    let mut short: String = cell.chars().take(CELL_WIDTH_MAX - 1).collect();
    short.push('…');
    short
}

/// Aligned columns under an upper-case header; the last column is not padded.
pub(crate) fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>());
    for row in rows {
        out += &line(row);
    }
    out
}

/// A record's fields as JSON, without its `kind`.
pub(crate) fn record_fields(record: &Record) -> Map<String, Value> {
    match record.to_json() {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

/// The field naming records of `kind`: `name`, or `location` for location addresses.
fn name_field(kind: RecordKind) -> &'static str {
    if kind == RecordKind::LocationAddresses { "location" } else { "name" }
}

/// A list of records: the name, then the first few scalar (or list-of-scalar) fields in record
/// order, secrets left out, cells cut at [`CELL_WIDTH_MAX`].
pub(crate) fn table(records: &[Record]) -> String {
    let Some(first) = records.first() else { return "(none)\n".to_owned() };
    let name = name_field(first.kind());
    let scalar = |value: &Value| match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|item| !item.is_object() && !item.is_array()),
        _ => true,
    };
    let first_fields = record_fields(first);
    let extra: Vec<&str> = first_fields
        .iter()
        .filter(|(key, value)| {
            *key != name && !SECRET_FIELDS.contains(&key.as_str()) && scalar(value)
        })
        .map(|(key, _)| key.as_str())
        .take(LIST_FIELDS_MAX)
        .collect();
    let header: Vec<&str> = std::iter::once(name).chain(extra).collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let fields = record_fields(record);
            header
                .iter()
                .map(|field| cut(text(fields.get(*field).unwrap_or(&Value::Null))))
                .collect()
        })
        .collect();
    columns(&header, &rows)
}

/// One record, `field: value` per line.
pub(crate) fn record(record: &Record) -> String {
    fields(&Value::Object(record_fields(record)))
}

/// A bridge's health lines under its record in `bridges show`: up or why not (a refused
/// certificate says why), and the certificate it presented, to compare and pin.
pub(crate) fn bridge_health(health: Option<&api::BridgeHealth>) -> String {
    let Some(health) = health else { return "health: not polled yet\n".to_owned() };
    let state = match (health.up, &health.problem) {
        (true, _) => "up".to_owned(),
        (false, Some(problem)) => format!("down: {problem}"),
        (false, None) => "down".to_owned(),
    };
    let presented = health.presented_sha256.as_deref().unwrap_or("none (no TLS handshake yet)");
    format!("health: {state}\npresented_sha256: {presented}\n")
}

/// `field: value` lines of one object, values aligned; multi-line text (certificates) is
/// indented below its field.
pub(crate) fn fields(value: &Value) -> String {
    let Some(map) = value.as_object() else { return format!("{}\n", text(value)) };
    let visible: Vec<(&String, &Value)> = map.iter().filter(|(key, _)| *key != "kind").collect();
    let width = visible.iter().map(|(key, _)| key.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in visible {
        let label = format!("{key}:");
        match value.as_str().filter(|text| text.contains('\n')) {
            Some(text) => {
                out += &format!("{label}\n");
                for line in text.trim_end().lines() {
                    out += &format!("    {line}\n");
                }
            }
            None => out += &format!("{label:<width$} {}\n", shown(value)),
        }
    }
    out
}

/// The whole configuration, one record per line.
pub(crate) fn config(answer: &ConfigAnswer) -> String {
    let mut out = format!("configuration at {}\n", answer.at);
    let rows: Vec<Vec<String>> = answer
        .records
        .iter()
        .map(|record| {
            let mut rest = record_fields(record);
            // Singletons have no name field (a time zone's `name` is its value): shown as `-`.
            let name = rest.remove(name_field(record.kind())).unwrap_or(Value::Null);
            rest.retain(|key, _| !SECRET_FIELDS.contains(&key.as_str()));
            vec![record.kind().as_str().to_owned(), text(&name), cut(text(&Value::Object(rest)))]
        })
        .collect();
    out += &columns(&["kind", "name", "fields"], &rows);
    out
}

/// `more: --before N` when the daemon says older rows may exist.
fn more(next_before: Option<u64>, rows: usize) -> String {
    match next_before {
        Some(next) if rows > 0 => format!("more: --before {next}\n"),
        _ => String::new(),
    }
}

/// A page of the Configuration Log (or a record's history): time, actor, action, kind, name
/// and the fields the change touched.
pub(crate) fn config_log(page: &Page<ConfigLogEntry>) -> String {
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            // Creations and removals touch every field; only changes list theirs.
            let changed = match (&e.before, &e.after) {
                (Some(before), Some(after)) if before.is_object() && after.is_object() => {
                    changed_fields(before, after).join(", ")
                }
                _ => String::new(),
            };
            let peer = match &e.origin_name {
                Some(name) => name.clone(),
                None => format!("peer {}", e.origin.get(..8).unwrap_or(&e.origin)),
            };
            vec![
                e.at.clone(),
                peer,
                e.actor.clone(),
                e.action.clone(),
                e.kind.clone(),
                e.name.clone(),
                cut(changed),
            ]
        })
        .collect();
    columns(&["time", "peer", "actor", "action", "kind", "name", "changed"], &rows)
        + &more(page.next_before, rows.len())
}

/// A page of the Event Log: time, level, kind, actor, message.
pub(crate) fn event_log(page: &Page<EventLogEntry>) -> String {
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                e.at.clone(),
                e.level.as_str().to_owned(),
                e.kind.clone(),
                e.actor.clone().unwrap_or_else(|| "-".to_owned()),
                e.message.clone(),
            ]
        })
        .collect();
    columns(&["time", "level", "kind", "actor", "message"], &rows)
        + &more(page.next_before, rows.len())
}

/// Fields that differ between two versions of a record, sorted.
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let empty = Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).filter(|k| *k != "kind").collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| b.get(*k) != a.get(*k)).cloned().collect()
}

/// `+ kind name`, `- kind name`, and `~ kind name: field: old → new` per changed field.
pub(crate) fn diff(diff: &ConfigDiff) -> String {
    let mut out = format!("changes from {} to {}\n", diff.from, diff.to);
    if diff.changes.is_empty() {
        out += "(no changes)\n";
    }
    for change in &diff.changes {
        let (kind, name) = (change.kind.as_str(), &change.name);
        match (&change.before, &change.after) {
            (None, _) => out += &format!("+ {kind} {name}\n"),
            (_, None) => out += &format!("- {kind} {name}\n"),
            (Some(before), Some(after)) => {
                let (before, after) =
                    (Value::Object(record_fields(before)), Value::Object(record_fields(after)));
                for field in changed_fields(&before, &after) {
                    let (old, new) = (&before[&field], &after[&field]);
                    out += &format!("~ {kind} {name}: {field}: {} → {}\n", shown(old), shown(new));
                }
            }
        }
    }
    out
}

/// The cluster status: one line per peer address, as the Clustering page shows them.
pub(crate) fn cluster(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let mode = status.mode.as_str();
    match &status.cluster_id {
        Some(id) => out.push_str(&format!("mode: {mode}, cluster {}\n", &id[..id.len().min(12)])),
        None => out.push_str(&format!("mode: {mode}\n")),
    }
    let addresses: Vec<String> = status.peers.iter().map(|line| line.address.to_string()).collect();
    let width = addresses.iter().map(String::len).max().unwrap_or(0);
    for (line, address) in status.peers.iter().zip(&addresses) {
        let mut text = line.text.clone();
        if let Some(latency_ms) = line.latency_ms() {
            text.push_str(&format!(" ({latency_ms} ms round trip)"));
        }
        out.push_str(&format!("{address:<width$}  {text}\n"));
        for warning in &line.warnings {
            out.push_str(&format!("{:<width$}  warning: {warning}\n", ""));
        }
    }
    for problem in &status.problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A record as the API shows it.
    fn record(value: Value) -> Record {
        serde_json::from_value(value).unwrap()
    }

    fn bridge(name: &str, address: &str, capacity_ports: u32, username: &str) -> Record {
        record(json!({"kind": "bridge", "name": name, "bridge_type": "mcu", "address": address,
            "capacity_ports": capacity_ports, "password": "********", "username": username}))
    }

    #[test]
    fn tables_align_cut_long_cells_and_leave_out_secrets() {
        let records = [
            bridge("mcu1", "192.0.2.5", 40, "api"),
            bridge("a-much-longer-name", &"x".repeat(60), 8, "u"),
        ];
        let out = table(&records);
        let lines: Vec<&str> = out.lines().collect();
        // Fields come in the API's (alphabetical) order, at most four after the name.
        assert_eq!(
            lines[0],
            "NAME                ADDRESS                                   BRIDGE_TYPE  CAPACITY_PORTS  ENABLED"
        );
        assert_eq!(
            lines[1],
            format!("mcu1                {:<40}  mcu          40              true", "192.0.2.5")
        );
        assert!(lines[2].contains(&format!("{}… ", "x".repeat(39))), "{}", lines[2]);
        assert!(!out.contains("PASSWORD") && !out.contains("USERNAME"));
        assert_eq!(table(&[]), "(none)\n");
    }

    #[test]
    fn tables_of_location_addresses_are_named_by_location() {
        let records = [record(json!({"kind": "location_addresses", "location": "oslo",
            "ad_hoc_address": "192.0.2.1", "rendezvous_address": "192.0.2.2"}))];
        let out = table(&records);
        assert!(out.starts_with("LOCATION  AD_HOC_ADDRESS  RENDEZVOUS_ADDRESS\n"), "{out}");
        assert!(out.contains("oslo      192.0.2.1       192.0.2.2\n"), "{out}");
    }

    #[test]
    fn fields_show_one_per_line() {
        let record = json!({"kind": "ntp", "servers": ["a", "b"], "name": "", "max": null,
            "pem": "-----BEGIN-----\nabc\n-----END-----\n", "list": [{"host": "h", "port": null}]});
        assert_eq!(
            fields(&record),
            "list:    host=h\nmax:     -\nname:    \"\"\npem:\n    -----BEGIN-----\n    abc\n    \
             -----END-----\nservers: a, b\n"
        );
    }

    #[test]
    fn diffs_show_added_removed_and_changed_fields() {
        let value: ConfigDiff =
            serde_json::from_value(json!({"from": "t1", "to": "t2", "changes": [
                {"kind": "bridge", "name": "new", "before": null,
                 "after": serde_json::to_value(bridge("new", "192.0.2.9", 4, "")).unwrap()},
                {"kind": "ntp", "name": "ntp", "before": {"kind": "ntp", "servers": ["a"]},
                 "after": null},
                {"kind": "bridge", "name": "b",
                 "before": serde_json::to_value(bridge("b", "192.0.2.5", 4, "")).unwrap(),
                 "after": serde_json::to_value(bridge("b", "192.0.2.5", 8, "api")).unwrap()},
                {"kind": "dns", "name": "dns", "before": {"kind": "dns", "servers": ["192.0.2.1"]},
                 "after": {"kind": "dns", "servers": ["192.0.2.1", "192.0.2.2"]}},
            ]}))
            .unwrap();
        assert_eq!(
            diff(&value),
            "changes from t1 to t2\n+ bridge new\n- ntp ntp\n~ bridge b: capacity_ports: 4 → 8\n\
             ~ bridge b: username: \"\" → api\n~ dns dns: servers: 192.0.2.1 → 192.0.2.1, 192.0.2.2\n"
        );
        let none = ConfigDiff { from: "t1".into(), to: "t2".into(), changes: Vec::new() };
        assert_eq!(diff(&none), "changes from t1 to t2\n(no changes)\n");
    }

    #[test]
    fn logs_align_and_offer_the_next_page() {
        let page: Page<ConfigLogEntry> = serde_json::from_value(json!({"entries": [
            {"position": 7, "at": "2026-11-24T10:00:00.000Z", "origin": "ab", "actor": "admin",
             "origin_name": "this peer", "action": "saved", "kind": "bridge", "name": "mcu1",
             "before": {"capacity_ports": 4, "name": "mcu1"},
             "after": {"capacity_ports": 8, "name": "mcu1"}},
            {"position": 6, "at": "2026-11-24T09:00:00.000Z", "origin": "ab", "actor": "admin",
             "action": "saved", "kind": "bridge", "name": "mcu1", "before": null,
             "after": {"name": "mcu1"}},
        ], "next_before": 6}))
        .unwrap();
        assert_eq!(
            config_log(&page),
            "TIME                      PEER       ACTOR  ACTION  KIND    NAME  CHANGED\n\
             2026-11-24T10:00:00.000Z  this peer  admin  saved   bridge  mcu1  capacity_ports\n\
             2026-11-24T09:00:00.000Z  peer ab    admin  saved   bridge  mcu1\n\
             more: --before 6\n"
        );
        let events: Page<EventLogEntry> = serde_json::from_value(json!({"entries": [
            {"id": 3, "at": "T", "level": "warning", "kind": "login.failed", "actor": "eve",
             "message": "wrong user name or password"},
            {"id": 2, "at": "T", "level": "info", "kind": "started", "actor": null, "message": "up"},
        ], "next_before": null}))
        .unwrap();
        assert_eq!(
            event_log(&events),
            "TIME  LEVEL    KIND          ACTOR  MESSAGE\n\
             T     warning  login.failed  eve    wrong user name or password\n\
             T     info     started       -      up\n"
        );
        assert_eq!(
            event_log(&Page { entries: Vec::new(), next_before: None }),
            "TIME  LEVEL  KIND  ACTOR  MESSAGE\n"
        );
    }

    #[test]
    fn configurations_list_every_record() {
        let value = ConfigAnswer {
            at: "T".into(),
            records: vec![
                bridge("mcu1", "192.0.2.5", 40, "api"),
                record(json!({"kind": "ntp", "servers": ["a"]})),
                record(json!({"kind": "time_zone", "name": "Europe/Oslo"})),
            ],
        };
        assert_eq!(
            config(&value),
            "configuration at T\nKIND       NAME         FIELDS\n\
             bridge     mcu1         address=192.0.2.5 bridge_type=mcu capac…\n\
             ntp        -            servers=a\ntime_zone  Europe/Oslo\n"
        );
    }

    #[test]
    fn cluster_status_lines() {
        let status: ClusterStatus = serde_json::from_value(json!({"mode": "clustered",
        "cluster_id": "6a1f0c9e2b7d4e58a3c1f0e9d8b7a6c5", "peer_id": "p", "problems": ["no NTP"],
        "peers": [
            {"address": "10.0.0.1", "state": "this_system", "text": "This system", "warnings": []},
            {"address": "10.0.0.22", "state": "active", "host_name": "b", "peer_id": "q",
             "last_contact_ms": 1, "latency_ms": 31, "admin_port": null,
             "admin_certificate_sha256": null, "text": "Active as b", "warnings": ["slow"]},
        ]}))
        .unwrap();
        assert_eq!(
            cluster(&status),
            "mode: clustered, cluster 6a1f0c9e2b7d\n10.0.0.1   This system\n\
             10.0.0.22  Active as b (31 ms round trip)\n           warning: slow\nproblem: no NTP\n"
        );
    }

    #[test]
    fn errors_list_every_field() {
        let error = ApiError {
            status: 422,
            code: "invalid_fields".into(),
            message: "2 invalid field(s)".into(),
            fields: vec![
                ("name".into(), "must not be empty".into()),
                ("capacity_ports".into(), "too big".into()),
            ],
        };
        assert_eq!(
            api_error(&error),
            "error: 2 invalid field(s)\n  name: must not be empty\n  capacity_ports: too big\n"
        );
        let single = ApiError {
            status: 422,
            code: "invalid_fields".into(),
            message: "new_password: too short".into(),
            fields: vec![("new_password".into(), "too short".into())],
        };
        assert_eq!(api_error(&single), "error: new_password: too short\n");
        let blocked = ApiError {
            status: 403,
            code: "password_change_required".into(),
            message: "change it".into(),
            fields: Vec::new(),
        };
        assert!(api_error(&blocked).ends_with("hint: change it with `batonctl password`\n"));
    }
}
