//! `batonctl <collection> <action>`: list, show, create, update and delete named records, and
//! show, set and clear settings. Updates merge the given fields over the record as read.

use crate::cli::{Body, NamedAction, SettingsAction};
use crate::client::{self, Client};
use crate::output::Output;
use crate::{fields, render};
use anyhow::{Context, bail};
use model::RecordKind;
use serde_json::{Map, Value};
use std::io::Read;

pub(crate) fn named(
    client: &Client,
    out: Output,
    kind: RecordKind,
    action: NamedAction,
) -> anyhow::Result<()> {
    let collection = format!("/api/v1/{}", kind.collection());
    let one = |name: &str| format!("{collection}/{}", client::encode(name));
    match action {
        NamedAction::List => out.emit(&client.get(&collection)?, render::table),
        NamedAction::Show { name } => out.emit(&client.get(&one(&name))?, render::fields),
        NamedAction::Create(body) => {
            let body = body_from(kind, &body, Map::new())?;
            let created = client.post(&collection, &body)?;
            out.emit(&created, |record| {
                format!("created {} {}\n{}", kind.as_str(), name_of(record), render::fields(record))
            })
        }
        NamedAction::Update { name, body } => {
            let path = one(&name);
            let body = body_from(kind, &body, editable(client.get(&path)?))?;
            let saved = client.put(&path, &body)?;
            out.emit(&saved, |record| {
                format!("updated {} {name}\n{}", kind.as_str(), render::fields(record))
            })
        }
        NamedAction::Delete { name } => {
            client.delete(&one(&name))?;
            out.message(&format!("deleted {} {name}", kind.as_str()))
        }
    }
}

pub(crate) fn settings(
    client: &Client,
    out: Output,
    kind: RecordKind,
    action: SettingsAction,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/{}", kind.collection());
    match action {
        SettingsAction::Show => match client.get(&path) {
            Ok(record) => out.emit(&record, render::fields),
            // Settings never set are not an error: there is simply nothing to show.
            Err(error) if client::is_not_found(&error) => {
                out.emit(&Value::Null, |_| format!("{} is not set\n", kind.collection()))
            }
            Err(error) => Err(error),
        },
        SettingsAction::Set(body) => {
            let current = match client.get(&path) {
                Ok(current) => editable(current),
                Err(error) if client::is_not_found(&error) => Map::new(),
                Err(error) => return Err(error),
            };
            let body = body_from(kind, &body, current)?;
            let saved = client.put(&path, &body)?;
            out.emit(&saved, |record| {
                format!("saved {}\n{}", kind.as_str(), render::fields(record))
            })
        }
        SettingsAction::Clear => {
            client.delete(&path)?;
            out.message(&format!("cleared {}", kind.as_str()))
        }
    }
}

fn name_of(record: &Value) -> String {
    record
        .get("name")
        .or_else(|| record.get("location"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A record as read, ready to send back: without the `kind` tag, and without the hash the API
/// computes itself (it keeps the stored one when no `password` is given). Other secrets come
/// back as the redaction placeholder, which the API also keeps.
pub(crate) fn editable(record: Value) -> Map<String, Value> {
    let mut map = match record {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.remove("kind");
    map.remove("password_hash");
    map
}

/// The request body: `base` (the current record, for updates), then the file's fields, then
/// each `--set`.
pub(crate) fn body_from(
    kind: RecordKind,
    body: &Body,
    base: Map<String, Value>,
) -> anyhow::Result<Value> {
    let file = match &body.file {
        None => None,
        Some(path) => {
            let (text, from) = if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the fields from stdin")?;
                (text, "stdin".to_owned())
            } else {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                (text, path.display().to_string())
            };
            Some(parse_object(&text).with_context(|| format!("in {from}"))?)
        }
    };
    Ok(Value::Object(merge(kind, base, file, &body.set)))
}

fn parse_object(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text).context("not valid JSON")? {
        Value::Object(fields) => Ok(fields),
        _ => bail!("the fields must be a JSON object"),
    }
}

/// `base`, overwritten by the `file` fields, overwritten by each `--set` pair (read as the type
/// its field takes).
pub(crate) fn merge(
    kind: RecordKind,
    mut base: Map<String, Value>,
    file: Option<Map<String, Value>>,
    set: &[(String, String)],
) -> Map<String, Value> {
    base.extend(file.unwrap_or_default());
    for (field, text) in set {
        base.insert(field.clone(), fields::value(fields::field(kind, field).as_ref(), text));
    }
    base
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(f, v)| ((*f).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn updates_merge_over_the_current_record_and_keep_secrets() {
        let current = editable(json!({
            "kind": "bridge", "name": "b", "capacity_ports": 4, "password": "********",
            "address": "192.0.2.5",
        }));
        let merged = merge(RecordKind::Bridge, current, None, &pairs(&[("capacity_ports", "8")]));
        assert_eq!(
            Value::Object(merged),
            json!({"name": "b", "capacity_ports": 8, "password": "********", "address": "192.0.2.5"})
        );
    }

    #[test]
    fn hashes_are_left_for_the_api_to_keep_or_recompute() {
        let current = editable(json!({
            "kind": "administrator", "name": "ops", "password_hash": "********",
            "must_change_password": false,
        }));
        assert_eq!(
            Value::Object(current.clone()),
            json!({"name": "ops", "must_change_password": false})
        );
        let merged =
            merge(RecordKind::Administrator, current, None, &pairs(&[("password", "1234")]));
        assert_eq!(merged["password"], json!("1234"));
    }

    #[test]
    fn set_pairs_win_over_the_file_which_wins_over_the_record() {
        let base = editable(json!({"kind": "ntp", "servers": ["old"]}));
        let file = parse_object(r#"{"servers": ["from-file"], "extra": 1}"#).unwrap();
        let merged = merge(RecordKind::Ntp, base.clone(), Some(file.clone()), &[]);
        assert_eq!(Value::Object(merged), json!({"servers": ["from-file"], "extra": 1}));
        let merged = merge(RecordKind::Ntp, base, Some(file), &pairs(&[("servers", "a,b")]));
        assert_eq!(Value::Object(merged), json!({"servers": ["a", "b"], "extra": 1}));
    }

    #[test]
    fn files_must_hold_an_object() {
        assert!(parse_object("[1]").is_err());
        assert!(parse_object("{").is_err());
        assert!(parse_object("{}").unwrap().is_empty());
    }

    #[test]
    fn bodies_read_files() {
        let dir = std::env::temp_dir().join(format!("batonctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bridge.json");
        std::fs::write(&path, r#"{"name": "b", "capacity_ports": 4}"#).unwrap();
        let body = Body { file: Some(path.clone()), set: pairs(&[("capacity_ports", "6")]) };
        let value = body_from(RecordKind::Bridge, &body, Map::new()).unwrap();
        assert_eq!(value, json!({"name": "b", "capacity_ports": 6}));
        let missing = Body { file: Some(dir.join("missing.json")), set: Vec::new() };
        let error = body_from(RecordKind::Bridge, &missing, Map::new()).unwrap_err();
        assert!(format!("{error:#}").contains("missing.json"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
