//! What the model's JSON Schema says about a kind's fields: the field list in `--help`, and
//! `--set FIELD=VALUE` read as the type the field takes (so `chair_pin=0042` stays text and
//! `servers=a,b` becomes a list).

use model::RecordKind;
use serde_json::{Map, Value};

/// The write-only field the API takes instead of a `password_hash`, which it computes.
const PASSWORD: &str = "password";
const PASSWORD_HASH: &str = "password_hash";

/// The properties of a kind's schema, with `password_hash` replaced by the `password` the API
/// takes in its place.
fn properties(kind: RecordKind) -> (Map<String, Value>, Vec<String>) {
    let schema = kind.json_schema();
    let mut properties = schema["properties"].as_object().cloned().unwrap_or_default();
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if properties.remove(PASSWORD_HASH).is_some() {
        properties.insert(
            PASSWORD.to_owned(),
            serde_json::json!({
                "type": "string",
                "description": "Write-only: Baton stores only a hash of it. Required to create.",
            }),
        );
        required.retain(|name| name != PASSWORD_HASH);
    }
    (properties, required)
}

/// The schema of one field of `kind`, if the kind has it.
pub(crate) fn field(kind: RecordKind, name: &str) -> Option<Value> {
    properties(kind).0.remove(name)
}

/// `Fields:` help: each field with its type, whether it is required, its default and its
/// description. Required fields first, in record order.
pub(crate) fn help(kind: RecordKind) -> String {
    let (properties, required) = properties(kind);
    let mut names: Vec<&String> = required.iter().filter(|n| properties.contains_key(*n)).collect();
    names.extend(properties.keys().filter(|name| !required.contains(name)));
    let width = names.iter().map(|name| name.len()).max().unwrap_or(0);
    let mut out = String::from("Fields (for --set FIELD=VALUE, or the keys of a --file object):\n");
    for name in names {
        let schema = &properties[name.as_str()];
        let mut line = format!("  {name:<width$}  {}", describe(schema));
        if required.contains(name) {
            line += ", required";
        } else if let Some(default) = schema.get("default") {
            line += &format!(" (default {default})");
        }
        out += line.trim_end();
        out.push('\n');
        if let Some(description) = schema["description"].as_str() {
            for text in description.lines() {
                out += &format!("  {:width$}    {}\n", "", text.trim());
            }
        }
    }
    out
}

/// A field's type in a few words: `mcu | telepresence_server`, `list of IP address`, ….
fn describe(schema: &Value) -> String {
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().map(plain).collect::<Vec<_>>().join(" | ");
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        return choices
            .iter()
            .map(|choice| plain(&choice["const"]))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let types = types(schema);
    let base: Vec<String> = types
        .iter()
        .filter(|t| *t != "null")
        .map(|t| match (t.as_str(), schema["format"].as_str()) {
            ("string", Some("ipv4")) => "IPv4 address".to_owned(),
            ("string", Some("ip")) => "IP address".to_owned(),
            ("integer", _) => "integer".to_owned(),
            ("boolean", _) => "true | false".to_owned(),
            ("array", _) => format!("list of {}", describe(&schema["items"])),
            ("object", _) => {
                let keys: Vec<&String> = schema["properties"]
                    .as_object()
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
                format!("{{{}}}", keys.join(", "))
            }
            (other, _) => other.to_owned(),
        })
        .collect();
    let mut text = if base.is_empty() { "any JSON".to_owned() } else { base.join(" or ") };
    if types.iter().any(|t| t == "null") {
        text += " or null";
    }
    text
}

fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// The JSON types a schema allows, from `type` (one or a list) or the choices of `oneOf`/`enum`.
fn types(schema: &Value) -> Vec<String> {
    let mut found: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if let Some(choices) = schema["oneOf"].as_array().or_else(|| schema["anyOf"].as_array()) {
        found.extend(choices.iter().flat_map(types));
    }
    if let Some(values) = schema["enum"].as_array() {
        found.extend(values.iter().map(|v| type_of(v).to_owned()));
    }
    found.sort();
    found.dedup();
    found
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn allows(types: &[String], value: &Value) -> bool {
    let actual = type_of(value);
    types.iter().any(|t| t == actual || (t == "number" && actual == "integer"))
}

/// The value of `--set FIELD=TEXT` for a field with `schema` (`None`: a field the model does
/// not know; the API will say so). TEXT is JSON when it parses as a type the field takes;
/// a list field also takes comma-separated items; otherwise it is text.
pub(crate) fn value(schema: Option<&Value>, text: &str) -> Value {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let types = schema.map(types).unwrap_or_default();
    if types.is_empty() {
        return parsed.unwrap_or_else(|| Value::String(text.to_owned()));
    }
    if let Some(parsed) = &parsed
        && allows(&types, parsed)
    {
        return parsed.clone();
    }
    let has = |t: &str| types.iter().any(|allowed| allowed == t);
    if has("array") {
        let items = schema.map(|schema| &schema["items"]).filter(|items| !items.is_null());
        return Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| value(items, item))
                .collect(),
        );
    }
    if text.is_empty() && has("null") && !has("string") {
        return Value::Null;
    }
    if has("string") {
        return Value::String(text.to_owned());
    }
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(kind: RecordKind, field_name: &str, text: &str) -> Value {
        value(field(kind, field_name).as_ref(), text)
    }

    #[test]
    fn values_take_the_type_of_their_field() {
        use RecordKind::*;
        assert_eq!(set(Bridge, "capacity_ports", "40"), json!(40));
        assert_eq!(set(Bridge, "enabled", "false"), json!(false));
        assert_eq!(set(Bridge, "address", "mcu.example.com"), json!("mcu.example.com"));
        assert_eq!(set(Bridge, "name", "true"), json!("true"), "a name is text");
        assert_eq!(set(Bridge, "bridge_type", "mcu"), json!("mcu"));
        assert_eq!(set(Bridge, "password", "12345678"), json!("12345678"));
        assert_eq!(set(ConferenceTemplate, "chair_pin", "0042"), json!("0042"));
        assert_eq!(set(ConferenceTemplate, "chair_pin", "1234"), json!("1234"));
        assert_eq!(set(ConferenceTemplate, "chair_pin", "null"), json!(null));
        assert_eq!(set(ConferenceTemplate, "max_participants", "12"), json!(12));
        assert_eq!(set(ConferenceTemplate, "max_participants", ""), json!(null));
        assert_eq!(set(ConferenceTemplate, "conference_type", "lecture"), json!("lecture"));
        assert_eq!(set(Administrator, "password", "12345678"), json!("12345678"));
        assert_eq!(set(Ethernet, "speed", "1000_full"), json!("1000_full"));
    }

    #[test]
    fn list_fields_take_json_or_commas() {
        use RecordKind::*;
        assert_eq!(set(ServicePreference, "pools", r#"["a","b"]"#), json!(["a", "b"]));
        assert_eq!(set(ServicePreference, "pools", "a, b"), json!(["a", "b"]));
        assert_eq!(set(ServicePreference, "pools", "a"), json!(["a"]));
        assert_eq!(
            set(Dns, "servers", "192.0.2.1,2001:db8::1"),
            json!(["192.0.2.1", "2001:db8::1"])
        );
        assert_eq!(set(Licence, "option_keys", ""), json!([]));
        assert_eq!(
            set(Syslog, "servers", r#"[{"host":"log1"}]"#),
            json!([{"host": "log1"}]),
            "lists of objects are JSON"
        );
    }

    #[test]
    fn unknown_fields_are_json_when_they_parse() {
        assert_eq!(set(RecordKind::Bridge, "colour", "7"), json!(7));
        assert_eq!(set(RecordKind::Bridge, "colour", "blue"), json!("blue"));
    }

    #[test]
    fn help_lists_every_field_required_first() {
        let help = help(RecordKind::Bridge);
        let lines: Vec<&str> = help.lines().collect();
        assert!(lines[1].starts_with("  name "), "{help}");
        assert!(help.contains("  bridge_type     telepresence_server | mcu, required\n"), "{help}");
        assert!(help.contains("  enabled         true | false (default true)\n"), "{help}");
        assert!(help.contains("Host name or IP address"), "{help}");
        let admins = super::help(RecordKind::Administrator);
        assert!(admins.contains("  password ") && !admins.contains("password_hash"), "{admins}");
        assert!(super::help(RecordKind::Dns).contains("list of IP address, required"));
    }
}
