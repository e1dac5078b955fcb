//! Text for people: tables of records, `field: value` lines, log pages, configuration diffs
//! and API errors. Pure functions of the API's JSON.

use crate::client::ApiError;
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
    if error.code == "password_change_required" {
        out += "hint: change it with `batonctl password`\n";
    } else if error.code == "unauthenticated" {
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

/// The field naming a record: `name`, or `location` for location addresses.
fn name_field(record: &Value) -> &'static str {
    if record.get("name").is_none() && record.get("location").is_some() {
        "location"
    } else {
        "name"
    }
}

/// A list of records: the name, then the first few scalar (or list-of-scalar) fields in record
/// order, secrets left out, cells cut at [`CELL_WIDTH_MAX`].
pub(crate) fn table(value: &Value) -> String {
    let Some(records) = value.as_array() else { return fields(value) };
    let Some(first) = records.first() else { return "(none)\n".to_owned() };
    let name = name_field(first);
    let scalar = |value: &Value| match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|item| !item.is_object() && !item.is_array()),
        _ => true,
    };
    let extra: Vec<&str> = first
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(key, value)| {
                    *key != name
                        && *key != "kind"
                        && !SECRET_FIELDS.contains(&key.as_str())
                        && scalar(value)
                })
                .map(|(key, _)| key.as_str())
                .take(LIST_FIELDS_MAX)
                .collect()
        })
        .unwrap_or_default();
    let header: Vec<&str> = std::iter::once(name).chain(extra).collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| header.iter().map(|field| cut(text(&record[*field]))).collect())
        .collect();
    columns(&header, &rows)
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
pub(crate) fn config(value: &Value) -> String {
    let mut out = format!("configuration at {}\n", text(&value["at"]));
    let records = value["records"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let name_field = name_field(record);
            let mut rest = record.as_object().cloned().unwrap_or_default();
            rest.retain(|key, _| {
                key != "kind" && key != name_field && !SECRET_FIELDS.contains(&key.as_str())
            });
            vec![text(&record["kind"]), text(&record[name_field]), cut(text(&Value::Object(rest)))]
        })
        .collect();
    out += &columns(&["kind", "name", "fields"], &rows);
    out
}

/// `more: --before N` when the daemon says older rows may exist.
fn more(value: &Value, rows: usize) -> String {
    match value["next_before"].as_u64() {
        Some(next) if rows > 0 => format!("more: --before {next}\n"),
        _ => String::new(),
    }
}

fn entries(value: &Value) -> &[Value] {
    value["entries"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A page of the Configuration Log (or a record's history): time, actor, action, kind, name
/// and the fields the change touched.
pub(crate) fn config_log(value: &Value) -> String {
    let rows: Vec<Vec<String>> = entries(value)
        .iter()
        .map(|e| {
            // Creations and removals touch every field; only changes list theirs.
            let changed = if e["before"].is_object() && e["after"].is_object() {
                changed_fields(&e["before"], &e["after"]).join(", ")
            } else {
                String::new()
            };
            vec![
                text(&e["at"]),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["kind"]),
                text(&e["name"]),
                cut(changed),
            ]
        })
        .collect();
    columns(&["time", "actor", "action", "kind", "name", "changed"], &rows)
        + &more(value, rows.len())
}

/// A page of the Event Log: time, level, kind, actor, message.
pub(crate) fn event_log(value: &Value) -> String {
    let rows: Vec<Vec<String>> = entries(value)
        .iter()
        .map(|e| {
            vec![
                text(&e["at"]),
                text(&e["level"]),
                text(&e["kind"]),
                text(&e["actor"]),
                text(&e["message"]),
            ]
        })
        .collect();
    columns(&["time", "level", "kind", "actor", "message"], &rows) + &more(value, rows.len())
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
pub(crate) fn diff(value: &Value) -> String {
    let mut out = format!("changes from {} to {}\n", text(&value["from"]), text(&value["to"]));
    let changes = value["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if changes.is_empty() {
        out += "(no changes)\n";
    }
    for change in changes {
        let (kind, name) = (text(&change["kind"]), text(&change["name"]));
        let (before, after) = (&change["before"], &change["after"]);
        match (before.is_null(), after.is_null()) {
            (true, _) => out += &format!("+ {kind} {name}\n"),
            (_, true) => out += &format!("- {kind} {name}\n"),
            _ => {
                for field in changed_fields(before, after) {
                    let (old, new) = (&before[&field], &after[&field]);
                    out += &format!("~ {kind} {name}: {field}: {} → {}\n", shown(old), shown(new));
                }
            }
        }
    }
    out
}

/// The cluster status: one line per peer address, as the Clustering page shows them.
pub(crate) fn cluster(status: &Value) -> String {
    let mut out = String::new();
    let mode = status["mode"].as_str().unwrap_or("unknown");
    match status["cluster_id"].as_str() {
        Some(id) => out.push_str(&format!("mode: {mode}, cluster {}\n", &id[..id.len().min(12)])),
        None => out.push_str(&format!("mode: {mode}\n")),
    }
    let lines = status["peers"].as_array().cloned().unwrap_or_default();
    let width =
        lines.iter().filter_map(|line| line["address"].as_str()).map(str::len).max().unwrap_or(0);
    for line in &lines {
        let address = line["address"].as_str().unwrap_or("?");
        let mut text = line["text"].as_str().unwrap_or("?").to_owned();
        if let Some(latency_ms) = line["latency_ms"].as_u64() {
            text.push_str(&format!(" ({latency_ms} ms round trip)"));
        }
        out.push_str(&format!("{address:<width$}  {text}\n"));
        for warning in line["warnings"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:<width$}  warning: {}\n",
                "",
                warning.as_str().unwrap_or("?")
            ));
        }
    }
    for problem in status["problems"].as_array().into_iter().flatten() {
        out.push_str(&format!("problem: {}\n", problem.as_str().unwrap_or("?")));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_cut_long_cells_and_leave_out_secrets() {
        let records = json!([
            {"kind": "bridge", "name": "mcu1", "address": "192.0.2.5", "bridges": ["a", "b"],
             "capacity_ports": 40, "password": "********", "enabled": true, "username": "api"},
            {"kind": "bridge", "name": "a-much-longer-name", "address": "x".repeat(60),
             "bridges": [], "capacity_ports": 8, "password": "", "enabled": false, "username": "u"},
        ]);
        let out = table(&records);
        let lines: Vec<&str> = out.lines().collect();
        // Fields come in the API's (alphabetical) order, at most four after the name.
        assert_eq!(
            lines[0],
            "NAME                ADDRESS                                   BRIDGES  CAPACITY_PORTS  ENABLED"
        );
        assert_eq!(
            lines[1],
            format!("mcu1                {:<40}  a, b     40              true", "192.0.2.5")
        );
        assert!(lines[2].contains(&format!("{}… ", "x".repeat(39))), "{}", lines[2]);
        assert!(!out.contains("PASSWORD") && !out.contains("USERNAME"));
        assert_eq!(table(&json!([])), "(none)\n");
    }

    #[test]
    fn tables_of_location_addresses_are_named_by_location() {
        let records = json!([{"kind": "location_addresses", "location": "oslo",
            "ad_hoc_address": "192.0.2.1", "rendezvous_address": "192.0.2.2"}]);
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
        let value = json!({"from": "t1", "to": "t2", "changes": [
            {"kind": "bridge", "name": "new", "before": null, "after": {"name": "new"}},
            {"kind": "ntp", "name": "ntp", "before": {"servers": ["a"]}, "after": null},
            {"kind": "bridge", "name": "b",
             "before": {"kind": "bridge", "name": "b", "capacity_ports": 4, "username": ""},
             "after": {"kind": "bridge", "name": "b", "capacity_ports": 8, "username": "api"}},
            {"kind": "dns", "name": "dns", "before": {"servers": ["192.0.2.1"]},
             "after": {"servers": ["192.0.2.1", "192.0.2.2"]}},
        ]});
        assert_eq!(
            diff(&value),
            "changes from t1 to t2\n+ bridge new\n- ntp ntp\n~ bridge b: capacity_ports: 4 → 8\n\
             ~ bridge b: username: \"\" → api\n~ dns dns: servers: 192.0.2.1 → 192.0.2.1, 192.0.2.2\n"
        );
        assert_eq!(
            diff(&json!({"from": "t1", "to": "t2", "changes": []})),
            "changes from t1 to t2\n(no changes)\n"
        );
    }

    #[test]
    fn logs_align_and_offer_the_next_page() {
        let page = json!({"entries": [
            {"position": 7, "at": "2026-11-24T10:00:00.000Z", "actor": "admin", "action": "update",
             "kind": "bridge", "name": "mcu1", "before": {"capacity_ports": 4, "name": "mcu1"},
             "after": {"capacity_ports": 8, "name": "mcu1"}},
            {"position": 6, "at": "2026-11-24T09:00:00.000Z", "actor": "admin", "action": "create",
             "kind": "bridge", "name": "mcu1", "before": null, "after": {"name": "mcu1"}},
        ], "next_before": 6});
        assert_eq!(
            config_log(&page),
            "TIME                      ACTOR  ACTION  KIND    NAME  CHANGED\n\
             2026-11-24T10:00:00.000Z  admin  update  bridge  mcu1  capacity_ports\n\
             2026-11-24T09:00:00.000Z  admin  create  bridge  mcu1\n\
             more: --before 6\n"
        );
        let events = json!({"entries": [
            {"id": 3, "at": "T", "level": "warning", "kind": "login.failed", "actor": "eve",
             "message": "wrong user name or password"},
            {"id": 2, "at": "T", "level": "info", "kind": "started", "actor": null, "message": "up"},
        ], "next_before": null});
        assert_eq!(
            event_log(&events),
            "TIME  LEVEL    KIND          ACTOR  MESSAGE\n\
             T     warning  login.failed  eve    wrong user name or password\n\
             T     info     started       -      up\n"
        );
        assert_eq!(
            event_log(&json!({"entries": [], "next_before": null})),
            "TIME  LEVEL  KIND  ACTOR  MESSAGE\n"
        );
    }

    #[test]
    fn configurations_list_every_record() {
        let value = json!({"at": "T", "records": [
            {"kind": "bridge", "name": "mcu1", "capacity_ports": 40, "password": "********"},
            {"kind": "ntp", "servers": ["a"]},
        ]});
        assert_eq!(
            config(&value),
            "configuration at T\nKIND    NAME  FIELDS\nbridge  mcu1  capacity_ports=40\nntp     -     servers=a\n"
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
