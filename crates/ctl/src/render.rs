//! Human-readable output: tables, `field: value` lines, logs and diffs.

use crate::client::ApiError;
use serde_json::Value;

/// Widest cell in a table before it is cut.
pub(crate) const CELL_WIDTH_MAX: usize = 40;
/// Columns shown after the name in a list.
pub(crate) const LIST_FIELDS_MAX: usize = 4;

pub(crate) fn api_error(error: &ApiError) -> String {
    let mut out = format!("error: {}\n", error.message);
    for (field, message) in &error.fields {
        out += &format!("  {field}: {message}\n");
    }
    out
}

/// A scalar or list as one line of text.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(_) => value.to_string(),
        other => other.to_string(),
    }
}

fn cut(cell: String) -> String {
    if cell.chars().count() <= CELL_WIDTH_MAX {
        return cell;
    }
    let mut short: String = cell.chars().take(CELL_WIDTH_MAX - 1).collect();
    short.push('…');
    short
}

/// Aligned columns with a header row.
pub(crate) fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

/// A list of records: the name, then the first few scalar fields.
pub(crate) fn table(value: &Value) -> String {
    let Some(records) = value.as_array() else { return fields(value) };
    if records.is_empty() {
        return "(none)\n".to_owned();
    }
    let name_field = if records[0].get("name").is_some() { "name" } else { "location" };
    let extra: Vec<&str> = records[0]
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(key, value)| *key != name_field && *key != "kind" && !value.is_object())
                .map(|(key, _)| key.as_str())
                .take(LIST_FIELDS_MAX)
                .collect()
        })
        .unwrap_or_default();
    let header: Vec<&str> = std::iter::once(name_field).chain(extra.iter().copied()).collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| header.iter().map(|field| cut(text(&record[*field]))).collect())
        .collect();
    columns(&header, &rows)
}

/// `field: value` lines of one object.
pub(crate) fn fields(value: &Value) -> String {
    let Some(map) = value.as_object() else { return format!("{}\n", text(value)) };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    map.iter()
        .filter(|(key, _)| *key != "kind")
        .map(|(key, value)| format!("{key:<width$}  {}\n", text(value)))
        .collect()
}

/// The whole configuration, one record per line.
pub(crate) fn config(value: &Value) -> String {
    let mut out = format!("configuration at {}\n", text(&value["at"]));
    let records = value["records"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let name = record
                .get("name")
                .or_else(|| record.get("location"))
                .map_or_else(String::new, text);
            let mut rest = record.clone();
            if let Some(map) = rest.as_object_mut() {
                for key in ["kind", "name"] {
                    map.remove(key);
                }
            }
            vec![text(&record["kind"]), name, cut(rest.to_string())]
        })
        .collect();
    out += &columns(&["kind", "name", "fields"], &rows);
    out
}

fn more(value: &Value, rows: usize) -> String {
    match value["next_before"].as_u64() {
        Some(next) if rows > 0 => format!("more: --before {next}\n"),
        _ => String::new(),
    }
}

pub(crate) fn config_log(value: &Value) -> String {
    let entries = value["entries"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let changed = changed_fields(&e["before"], &e["after"]).join(", ");
            vec![
                text(&e["position"]),
                text(&e["at"]),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["kind"]),
                text(&e["name"]),
                cut(changed),
            ]
        })
        .collect();
    columns(&["#", "time", "actor", "action", "kind", "name", "changed"], &rows)
        + &more(value, rows.len())
}

pub(crate) fn event_log(value: &Value) -> String {
    let entries = value["entries"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                text(&e["id"]),
                text(&e["at"]),
                text(&e["level"]),
                text(&e["kind"]),
                text(&e["actor"]),
                text(&e["message"]),
            ]
        })
        .collect();
    columns(&["id", "time", "level", "kind", "actor", "message"], &rows) + &more(value, rows.len())
}

fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).filter(|k| *k != "kind").collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| b.get(*k) != a.get(*k)).cloned().collect()
}

/// `+ kind name`, `- kind name`, `~ kind name: field: old → new`.
pub(crate) fn diff(value: &Value) -> String {
    let mut out = format!("changes from {} to {}\n", text(&value["from"]), text(&value["to"]));
    let changes = value["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        out += "(no changes)\n";
    }
    for change in changes {
        let (kind, name) = (text(&change["kind"]), text(&change["name"]));
        match (change["before"].is_null(), change["after"].is_null()) {
            (true, _) => out += &format!("+ {kind} {name}\n"),
            (_, true) => out += &format!("- {kind} {name}\n"),
            _ => {
                for field in changed_fields(&change["before"], &change["after"]) {
                    out += &format!(
                        "~ {kind} {name}: {field}: {} → {}\n",
                        text(&change["before"][&field]),
                        text(&change["after"][&field])
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_cut_long_cells() {
        let records = json!([
            {"kind": "bridge", "name": "mcu1", "address": "192.0.2.5", "capacity_ports": 40, "bridges": ["a", "b"]},
            {"kind": "bridge", "name": "a-much-longer-name", "address": "x".repeat(60), "capacity_ports": 8, "bridges": []},
        ]);
        let out = table(&records);
        let lines: Vec<&str> = out.lines().collect();
        // Fields come in the API's (alphabetical) order.
        assert_eq!(
            lines[0],
            "NAME                ADDRESS                                   BRIDGES  CAPACITY_PORTS"
        );
        assert!(lines[1].starts_with("mcu1                192.0.2.5 "));
        assert!(lines[1].ends_with("a, b     40"), "{}", lines[1]);
        assert!(lines[2].contains(&format!("{}…", "x".repeat(39))));
        assert_eq!(table(&json!([])), "(none)\n");
    }

    #[test]
    fn diffs_show_added_removed_and_changed_fields() {
        let value = json!({"from": "t1", "to": "t2", "changes": [
            {"kind": "bridge", "name": "new", "before": null, "after": {"name": "new"}},
            {"kind": "ntp", "name": "ntp", "before": {"servers": ["a"]}, "after": null},
            {"kind": "bridge", "name": "b", "before": {"name": "b", "capacity_ports": 4}, "after": {"name": "b", "capacity_ports": 8}},
        ]});
        assert_eq!(
            diff(&value),
            "changes from t1 to t2\n+ bridge new\n- ntp ntp\n~ bridge b: capacity_ports: 4 → 8\n"
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
    }
}
