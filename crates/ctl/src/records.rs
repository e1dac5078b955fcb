//! `batonctl <collection> <action>`: list, show, create, update and delete named records, and
//! show, set and clear settings. Updates merge the given fields over the record as read.
//! Answers are read as [`model::Record`]s of the collection's kind.

use crate::cli::{Body, NamedAction, PinBridge, SettingsAction};
use crate::client::{self, Client};
use crate::output::Output;
use crate::{fields, render};
use anyhow::{Context, bail};
use model::{Record, RecordKind};
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
        NamedAction::List => {
            let records = of_kind(kind, client.get::<Vec<Record>>(&collection)?)?;
            out.emit(&records, |records| render::table(records))
        }
        NamedAction::Show { name } if kind == RecordKind::Bridge => {
            let record = read(client, kind, &one(&name))?;
            let health = bridge_health(client, &name)?;
            out.emit(&record, |record| {
                format!("{}{}", render::record(record), render::bridge_health(health.as_ref()))
            })
        }
        NamedAction::Show { name } => out.emit(&read(client, kind, &one(&name))?, render::record),
        NamedAction::Create(body) => {
            let body = body_from(kind, &body, Map::new())?;
            let created = expect_kind(kind, client.post(&collection, &body)?)?;
            out.emit(&created, |record| {
                format!("created {} {}\n{}", kind.as_str(), record.name(), render::record(record))
            })
        }
        NamedAction::Update { name, body } => {
            let path = one(&name);
            let body = body_from(kind, &body, editable(&read(client, kind, &path)?))?;
            let saved = expect_kind(kind, client.put(&path, &body)?)?;
            out.emit(&saved, |record| {
                format!("updated {} {name}\n{}", kind.as_str(), render::record(record))
            })
        }
        NamedAction::Delete { name } => {
            client.delete(&one(&name))?;
            out.message(&format!("deleted {} {name}", kind.as_str()))
        }
    }
}

/// The bridge's health as this peer sees it (`None`: not listed, e.g. just created).
fn bridge_health(client: &Client, name: &str) -> anyhow::Result<Option<api::BridgeHealth>> {
    let status: api::PolicyStatus = client.get("/api/v1/policy/status")?;
    Ok(status.bridges.into_iter().find(|bridge| bridge.name == name))
}

/// Pins the certificate the bridge presents: the one given with `--sha256`, or else the one
/// `bridges show` prints now (sent along, so a certificate changed since is refused).
pub(crate) fn pin_bridge(client: &Client, out: Output, pin: PinBridge) -> anyhow::Result<()> {
    let sha256 = match pin.sha256 {
        Some(sha256) => sha256,
        None => bridge_health(client, &pin.name)?
            .and_then(|health| health.presented_sha256)
            .with_context(|| {
                format!("bridge {} has presented no certificate to this peer yet", pin.name)
            })?,
    };
    let path = format!("/api/v1/bridges/{}/pin", client::encode(&pin.name));
    let body = api::PinRequest { sha256: Some(sha256.clone()) };
    let pinned = expect_kind(RecordKind::Bridge, client.post(&path, &body)?)?;
    out.emit(&pinned, |record| {
        format!(
            "pinned bridge {} to the certificate {sha256}\n{}",
            pin.name,
            render::record(record)
        )
    })
}

pub(crate) fn settings(
    client: &Client,
    out: Output,
    kind: RecordKind,
    action: SettingsAction,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/{}", kind.collection());
    match action {
        SettingsAction::Show => match read(client, kind, &path) {
            Ok(record) => out.emit(&record, render::record),
            // Settings never set are not an error: there is simply nothing to show.
            Err(error) if client::is_not_found(&error) => {
                out.emit(&Value::Null, |_| format!("{} is not set\n", kind.collection()))
            }
            Err(error) => Err(error),
        },
        SettingsAction::Set(body) => {
            let current = match read(client, kind, &path) {
                Ok(current) => editable(&current),
                Err(error) if client::is_not_found(&error) => Map::new(),
                Err(error) => return Err(error),
            };
            let body = body_from(kind, &body, current)?;
            let saved = expect_kind(kind, client.put(&path, &body)?)?;
            out.emit(&saved, |record| {
                format!("saved {}\n{}", kind.as_str(), render::record(record))
            })
        }
        SettingsAction::Clear => {
            client.delete(&path)?;
            out.message(&format!("cleared {}", kind.as_str()))
        }
    }
}

/// The record at `path`, which must be of `kind`.
pub(crate) fn read(client: &Client, kind: RecordKind, path: &str) -> anyhow::Result<Record> {
    expect_kind(kind, client.get(path)?)
}

/// `record`, unless the daemon answered with a record of another kind than asked for.
fn expect_kind(kind: RecordKind, record: Record) -> anyhow::Result<Record> {
    if record.kind() != kind {
        return Err(wrong_kind(kind, &record));
    }
    Ok(record)
}

fn wrong_kind(kind: RecordKind, record: &Record) -> anyhow::Error {
    anyhow::anyhow!(
        "the daemon answered with a {} record, not a {} one",
        record.kind().as_str(),
        kind.as_str()
    )
}

/// This peer's IPv4 settings.
pub(crate) fn ipv4(client: &Client) -> anyhow::Result<model::record::Ipv4> {
    match client.get("/api/v1/ipv4")? {
        Record::Ipv4(ipv4) => Ok(ipv4),
        other => Err(wrong_kind(RecordKind::Ipv4, &other)),
    }
}

/// This peer's cluster settings.
pub(crate) fn cluster(client: &Client) -> anyhow::Result<model::record::Cluster> {
    match client.get("/api/v1/cluster")? {
        Record::Cluster(cluster) => Ok(cluster),
        other => Err(wrong_kind(RecordKind::Cluster, &other)),
    }
}

/// This peer's maintenance mode setting.
pub(crate) fn maintenance(client: &Client) -> anyhow::Result<model::record::Maintenance> {
    match client.get("/api/v1/maintenance")? {
        Record::Maintenance(maintenance) => Ok(maintenance),
        other => Err(wrong_kind(RecordKind::Maintenance, &other)),
    }
}

/// Every conference record.
pub(crate) fn conferences(client: &Client) -> anyhow::Result<Vec<model::record::Conference>> {
    let records: Vec<Record> = client.get("/api/v1/conferences")?;
    records
        .into_iter()
        .map(|record| match record {
            Record::Conference(conference) => Ok(conference),
            other => Err(wrong_kind(RecordKind::Conference, &other)),
        })
        .collect()
}

/// `records`, all of `kind`.
fn of_kind(kind: RecordKind, records: Vec<Record>) -> anyhow::Result<Vec<Record>> {
    records.into_iter().map(|record| expect_kind(kind, record)).collect()
}

/// A record as read, ready to send back: its fields without the hash the API computes itself
/// (it keeps the stored one when no `password` is given). Other secrets come back as the
/// redaction placeholder, which the API also keeps.
pub(crate) fn editable(record: &Record) -> Map<String, Value> {
    let mut map = render::record_fields(record);
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

    fn record(value: Value) -> Record {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn updates_merge_over_the_current_record_and_keep_secrets() {
        let current = editable(&record(json!({
            "kind": "bridge", "name": "b", "bridge_type": "mcu", "capacity_ports": 4,
            "password": "********", "address": "192.0.2.5", "username": "api",
        })));
        let merged = merge(RecordKind::Bridge, current, None, &pairs(&[("capacity_ports", "8")]));
        assert_eq!(
            Value::Object(merged),
            json!({"name": "b", "bridge_type": "mcu", "capacity_ports": 8, "password": "********",
                   "address": "192.0.2.5", "username": "api", "protocol": "https", "pinned_sha256": null,
                   "enabled": true})
        );
    }

    #[test]
    fn hashes_are_left_for_the_api_to_keep_or_recompute() {
        let current = editable(&record(json!({
            "kind": "administrator", "name": "ops", "password_hash": "********",
            "must_change_password": false,
        })));
        assert_eq!(
            Value::Object(current.clone()),
            json!({"name": "ops", "must_change_password": false, "role": "full"})
        );
        let merged =
            merge(RecordKind::Administrator, current, None, &pairs(&[("password", "1234")]));
        assert_eq!(merged["password"], json!("1234"));
    }

    #[test]
    fn set_pairs_win_over_the_file_which_wins_over_the_record() {
        let base = editable(&record(json!({"kind": "ntp", "servers": ["old"]})));
        let file = parse_object(r#"{"servers": ["from-file"], "extra": 1}"#).unwrap();
        let merged = merge(RecordKind::Ntp, base.clone(), Some(file.clone()), &[]);
        assert_eq!(Value::Object(merged), json!({"servers": ["from-file"], "extra": 1}));
        let merged = merge(RecordKind::Ntp, base, Some(file), &pairs(&[("servers", "a,b")]));
        assert_eq!(Value::Object(merged), json!({"servers": ["a", "b"], "extra": 1}));
    }

    #[test]
    fn answers_of_another_kind_are_refused() {
        let ntp = record(json!({"kind": "ntp", "servers": ["a"]}));
        assert!(expect_kind(RecordKind::Ntp, ntp.clone()).is_ok());
        let error = expect_kind(RecordKind::Dns, ntp).unwrap_err().to_string();
        assert_eq!(error, "the daemon answered with a ntp record, not a dns one");
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
