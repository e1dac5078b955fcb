//! The generic record form: fields made from a record kind's JSON schema
//! (`RecordKind::json_schema()`), filled from a record as the API shows it, and turned back
//! into the API's JSON body. Only input decoding happens here (numbers, addresses, lists);
//! every rule is the model's, reached through `services::records`, and its field errors are shown next
//! to the fields with the operator's input kept.

use super::{FormPairs, WebUser, csrf_input, esc, form_value};
use crate::adapters::api::ApiError;
use crate::services::{App, Error, Input as ErrorInput};
use model::{FieldError, RecordKind};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// How a field is edited.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Input {
    Text,
    /// A PEM block or other long text.
    TextArea,
    Number,
    Checkbox,
    Select(Vec<String>),
    /// A list of scalars, comma- or line-separated.
    List {
        numbers: bool,
    },
    /// Structured values (lists of objects) edited as JSON.
    Json,
    /// Write-only: never shown, kept when left empty.
    Secret,
    /// Names of existing records of `target` to choose from (filled by [`fill_references`]);
    /// `many`: an ordered list, one select per position.
    Reference {
        target: RecordKind,
        many: bool,
        options: Vec<String>,
    },
}

/// Fields that name other records, chosen from the existing ones rather than typed.
fn reference(kind: RecordKind, field: &str) -> Option<(RecordKind, bool)> {
    match (kind, field) {
        (RecordKind::BridgePool, "bridges") => Some((RecordKind::Bridge, true)),
        (RecordKind::ServicePreference, "pools") => Some((RecordKind::BridgePool, true)),
        (RecordKind::ConferenceTemplate, "service_preference") => {
            Some((RecordKind::ServicePreference, false))
        }
        (RecordKind::ConferenceAlias, "template") => Some((RecordKind::ConferenceTemplate, false)),
        _ => None,
    }
}

/// Extra selects after the chosen entries of a list reference, so one more can be added.
const REFERENCE_SLOTS_SPARE: usize = 2;

/// Reads the names each reference field offers (records of its target kind, in name order).
pub(crate) fn fill_references(app: &App, fields: &mut [Field]) {
    for field in fields.iter_mut() {
        if let Input::Reference { target, options, .. } = &mut field.input {
            let records = crate::services::records::list(app, *target);
            *options = records.iter().map(|record| record.name().to_owned()).collect();
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) input: Input,
    pub(crate) hint: Option<String>,
    /// `ipv4` or `ip`: checked to parse, so the error lands next to the field.
    pub(crate) address_format: Option<&'static str>,
    /// A password the API stores only as a hash: left out when empty, never a placeholder.
    pub(crate) hashed: bool,
}

fn label(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The base type of a schema (`"integer"` for `["integer", "null"]`).
fn base_type(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(name) => Some(name.as_str()),
        Value::Array(names) => names.iter().filter_map(Value::as_str).find(|name| *name != "null"),
        _ => None,
    }
}

/// Allowed values of an enum schema (`enum` or `oneOf` of `const`s).
fn choices(schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema["enum"].as_array() {
        return Some(values.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    }
    let variants = schema["oneOf"].as_array().or_else(|| schema["anyOf"].as_array())?;
    let mut names = Vec::new();
    for variant in variants {
        if let Some(name) = variant["const"].as_str() {
            names.push(name.to_owned());
        } else if let Some(values) = variant["enum"].as_array() {
            names.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }
    (!names.is_empty()).then_some(names)
}

fn address_format(schema: &Value) -> Option<&'static str> {
    match schema["format"].as_str() {
        Some("ipv4") => Some("ipv4"),
        Some("ip") => Some("ip"),
        _ => None,
    }
}

/// The form fields of `kind`, the name first and the rest in schema order.
pub(crate) fn fields(kind: RecordKind) -> Vec<Field> {
    let schema = kind.json_schema();
    let mut fields = Vec::new();
    let Some(properties) = schema["properties"].as_object() else { return fields };
    for (name, property) in properties {
        if kind.hashes_password() && name == "password_hash" {
            fields.push(Field {
                name: "password".to_owned(),
                label: "Password".to_owned(),
                input: Input::Secret,
                hint: Some("Stored only as a hash.".to_owned()),
                address_format: None,
                hashed: true,
            });
            continue;
        }
        let input = if kind.secret_fields().contains(&name.as_str()) {
            Input::Secret
        } else if let Some((target, many)) = reference(kind, name) {
            Input::Reference { target, many, options: Vec::new() }
        } else if let Some(choices) = choices(property) {
            Input::Select(choices)
        } else {
            match base_type(property) {
                Some("boolean") => Input::Checkbox,
                Some("integer") | Some("number") => Input::Number,
                Some("array") => match base_type(&property["items"]) {
                    Some("string") if choices(&property["items"]).is_none() => {
                        Input::List { numbers: false }
                    }
                    Some("integer") | Some("number") => Input::List { numbers: true },
                    _ => Input::Json,
                },
                Some("object") => Input::Json,
                _ if name.ends_with("_pem") => Input::TextArea,
                _ => Input::Text,
            }
        };
        let mut hint = property["description"].as_str().map(str::to_owned);
        match &input {
            Input::List { .. } => {
                hint = Some(join_hint(hint, "Separate values with commas."));
            }
            Input::Json => {
                hint = Some(join_hint(hint, "A JSON list, for example [] for none."));
            }
            _ => {}
        }
        let address_format =
            address_format(property).or_else(|| address_format(&property["items"]));
        fields.push(Field {
            name: name.clone(),
            label: label(name),
            input,
            hint,
            address_format,
            hashed: false,
        });
    }
    // serde_json keeps object keys sorted; the name (the record's identity) goes first.
    fields.sort_by_key(|field| !matches!(field.name.as_str(), "name" | "location"));
    fields
}

fn join_hint(hint: Option<String>, extra: &str) -> String {
    match hint {
        Some(hint) => format!("{hint} {extra}"),
        None => extra.to_owned(),
    }
}

/// What the form shows: submitted text (after an error) or a record's values.
pub(crate) enum Values<'a> {
    Empty,
    /// A record as the API shows it (secrets redacted).
    Record(&'a Value),
    /// The operator's own input, kept after a refusal.
    Submitted(&'a FormPairs),
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Values<'_> {
    fn text(&self, field: &Field) -> String {
        match self {
            Values::Empty => String::new(),
            Values::Submitted(form) => form_value(form, &field.name).to_owned(),
            Values::Record(record) => {
                let value = &record[&field.name];
                match (&field.input, value) {
                    (Input::Secret, _) => String::new(),
                    (Input::List { .. }, Value::Array(items)) => {
                        items.iter().map(scalar_text).collect::<Vec<_>>().join(", ")
                    }
                    (Input::Json, Value::Null) => String::new(),
                    (Input::Json, other) => serde_json::to_string_pretty(other).unwrap_or_default(),
                    (_, other) => scalar_text(other),
                }
            }
        }
    }

    /// Every value of a list field, in order.
    fn items(&self, field: &Field) -> Vec<String> {
        match self {
            Values::Empty => Vec::new(),
            Values::Submitted(form) => form
                .iter()
                .filter(|(name, value)| name == &field.name && !value.trim().is_empty())
                .map(|(_, value)| value.trim().to_owned())
                .collect(),
            Values::Record(record) => record[&field.name]
                .as_array()
                .map(|items| items.iter().map(scalar_text).collect())
                .unwrap_or_default(),
        }
    }

    fn checked(&self, field: &Field) -> bool {
        match self {
            Values::Empty => matches!(field.name.as_str(), "enabled"),
            Values::Submitted(form) => form.iter().any(|(name, _)| name == &field.name),
            Values::Record(record) => record[&field.name].as_bool().unwrap_or(false),
        }
    }

    /// Whether a secret is stored (shown as such, never its value).
    fn secret_stored(&self, field: &Field) -> bool {
        match self {
            Values::Record(record) => {
                record[&field.name].as_str().is_some_and(|text| !text.is_empty())
                    || (field.hashed
                        && record["password_hash"].as_str().is_some_and(|text| !text.is_empty()))
            }
            _ => false,
        }
    }
}

/// The error messages for `field`: errors on `field`, `field[2]` or `field.x`.
fn errors_for<'a>(errors: &'a [FieldError], field: &str) -> Vec<&'a str> {
    errors
        .iter()
        .filter(|error| {
            error.field == field
                || error
                    .field
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
        })
        .map(|error| error.message.as_str())
        .collect()
}

/// Errors that belong to no field of the form, shown above it.
pub(crate) fn unplaced_errors(fields: &[Field], error: &ApiError) -> Vec<String> {
    if error.fields().is_empty() {
        return vec![error.message().to_owned()];
    }
    error
        .fields()
        .iter()
        .filter(|e| fields.iter().all(|f| errors_for(std::slice::from_ref(*e), &f.name).is_empty()))
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

/// One field's markup.
pub(crate) fn render_field(
    html: &mut String,
    field: &Field,
    values: &Values<'_>,
    errors: &[FieldError],
    read_only: bool,
) {
    let id = format!("field-{}", field.name);
    let messages = errors_for(errors, &field.name);
    let invalid = !messages.is_empty();
    let _ = write!(html, "<div class=\"field{}\">", if invalid { " invalid" } else { "" });
    let attrs = Attrs {
        id: id.clone(),
        name: esc(&field.name),
        described: format!(" aria-describedby=\"{id}-help\""),
        invalid: if invalid { " aria-invalid=\"true\"" } else { "" },
    };
    let (name, described, invalid_attr) = (&attrs.name, &attrs.described, attrs.invalid);
    match &field.input {
        Input::Checkbox => {
            let checked = if values.checked(field) { " checked" } else { "" };
            let _ = write!(
                html,
                "<label for=\"{id}\"><input type=\"checkbox\" id=\"{id}\" name=\"{name}\" value=\"true\"{checked}{described}{invalid_attr}> {}</label>",
                esc(&field.label)
            );
        }
        Input::Select(choices) => render_select(html, field, &attrs, values, choices),
        Input::Reference { target, many, options } => {
            render_references(html, field, &attrs, values, (target, *many, options))
        }
        Input::TextArea | Input::Json => {
            let _ = write!(
                html,
                "<label for=\"{id}\">{}</label><textarea id=\"{id}\" name=\"{name}\"{described}{invalid_attr}>{}</textarea>",
                esc(&field.label),
                esc(&values.text(field))
            );
        }
        Input::Secret => render_secret(html, field, &attrs, values),
        Input::Text | Input::Number | Input::List { .. } => {
            let kind = if field.input == Input::Number { "number" } else { "text" };
            let readonly = if read_only { " readonly" } else { "" };
            let _ = write!(
                html,
                "<label for=\"{id}\">{}</label><input type=\"{kind}\" id=\"{id}\" name=\"{name}\" value=\"{}\"{readonly}{described}{invalid_attr}>",
                esc(&field.label),
                esc(&values.text(field))
            );
        }
    }
    let _ = write!(html, "<div id=\"{id}-help\">");
    for message in messages {
        let _ = write!(html, "<p class=\"error\">{}</p>", esc(message));
    }
    if let Some(hint) = &field.hint {
        let _ = write!(html, "<p class=\"hint\">{}</p>", esc(hint));
    }
    html.push_str("</div></div>");
}

/// What every control of a field carries: its id, name and ARIA attributes.
struct Attrs {
    id: String,
    name: String,
    described: String,
    invalid: &'static str,
}

impl Attrs {
    /// A select's label and opening tag.
    fn open_select(&self, html: &mut String, label: &str) {
        let (id, name, described, invalid) = (&self.id, &self.name, &self.described, self.invalid);
        let _ = write!(
            html,
            "<label for=\"{id}\">{}</label><select id=\"{id}\" name=\"{name}\"{described}{invalid}>",
            esc(label)
        );
    }
}

/// A choice among fixed values.
fn render_select(
    html: &mut String,
    field: &Field,
    attrs: &Attrs,
    values: &Values<'_>,
    choices: &[String],
) {
    let current = values.text(field);
    attrs.open_select(html, &field.label);
    if current.is_empty() {
        html.push_str("<option value=\"\">(choose)</option>");
    }
    for choice in choices {
        let selected = if *choice == current { " selected" } else { "" };
        let _ = write!(
            html,
            "<option value=\"{0}\"{selected}>{1}</option>",
            esc(choice),
            esc(&label(choice))
        );
    }
    html.push_str("</select>");
}

/// A reference to one record chosen among the existing ones, or (`many`) to several: one
/// select each, and spare ones.
fn render_references(
    html: &mut String,
    field: &Field,
    attrs: &Attrs,
    values: &Values<'_>,
    (target, many, options): (&RecordKind, bool, &[String]),
) {
    if !many {
        attrs.open_select(html, &field.label);
        reference_options(html, options, &values.text(field), "(choose)");
        html.push_str("</select>");
        no_records_hint(html, target, options, "one");
        return;
    }
    let (id, name, invalid) = (&attrs.id, &attrs.name, attrs.invalid);
    let chosen = values.items(field);
    let described = &attrs.described;
    let _ = write!(html, "<fieldset id=\"{id}\"{described}><legend>{}</legend>", esc(&field.label));
    let singular = field.label.trim_end_matches('s');
    for index in 0..chosen.len() + REFERENCE_SLOTS_SPARE {
        let current = chosen.get(index).map_or("", String::as_str);
        let _ = write!(
            html,
            "<label for=\"{id}-{0}\">{1} {0}</label><select id=\"{id}-{0}\" name=\"{name}\"{invalid}>",
            index + 1,
            esc(singular)
        );
        reference_options(html, options, current, "(none)");
        html.push_str("</select>");
    }
    html.push_str("</fieldset>");
    no_records_hint(html, target, options, "them");
}

/// Says that a reference has nothing to choose from yet.
fn no_records_hint(html: &mut String, target: &RecordKind, options: &[String], what: &str) {
    if options.is_empty() {
        let _ = write!(
            html,
            "<p class=\"hint\">There are no {} yet: add {what} first.</p>",
            esc(&target.collection().replace('-', " "))
        );
    }
}

/// A secret: never shown; a stored one is kept when left empty, or cleared.
fn render_secret(html: &mut String, field: &Field, attrs: &Attrs, values: &Values<'_>) {
    let (id, name, described, invalid_attr) =
        (&attrs.id, &attrs.name, &attrs.described, attrs.invalid);
    let stored = values.secret_stored(field);
    let _ = write!(
        html,
        "<label for=\"{id}\">{}</label><input type=\"password\" id=\"{id}\" name=\"{name}\" autocomplete=\"new-password\"{described}{invalid_attr}>",
        esc(&field.label)
    );
    if stored {
        let _ = write!(
            html,
            "<p class=\"hint\">A value is stored; it is never shown. Leave empty to keep it.</p>\
                 <label for=\"{id}-clear\"><input type=\"checkbox\" id=\"{id}-clear\" name=\"clear_{name}\" value=\"true\"> Clear the stored value</label>"
        );
    }
}

/// A reference select's options: "(none)", the existing names, and the current value even if
/// its record is gone (a concurrent removal elsewhere can leave it dangling).
fn reference_options(html: &mut String, options: &[String], current: &str, empty_label: &str) {
    let none_selected = if current.is_empty() { " selected" } else { "" };
    let _ = write!(html, "<option value=\"\"{none_selected}>{empty_label}</option>");
    for option in options {
        let selected = if option == current { " selected" } else { "" };
        let _ = write!(html, "<option value=\"{0}\"{selected}>{0}</option>", esc(option));
    }
    if !current.is_empty() && !options.iter().any(|option| option == current) {
        let _ = write!(
            html,
            "<option value=\"{0}\" selected>{0} (no longer exists)</option>",
            esc(current)
        );
    }
}

/// A whole record form posting to `action`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render_form(
    user: &WebUser,
    action: &str,
    fields: &[Field],
    values: &Values<'_>,
    error: Option<&ApiError>,
    fixed_name: bool,
    submit: &str,
) -> String {
    let mut html = String::new();
    let placed: Vec<FieldError> = error.map(|e| e.fields().to_vec()).unwrap_or_default();
    if let Some(error) = error {
        html.push_str(&super::error_note("Not saved: correct the fields marked below."));
        for message in unplaced_errors(fields, error) {
            html.push_str(&super::error_note(&message));
        }
    }
    let _ = write!(html, "<form method=\"post\" action=\"{}\" class=\"record\">", esc(action));
    html.push_str(&csrf_input(user));
    for field in fields {
        let read_only = fixed_name && matches!(field.name.as_str(), "name" | "location");
        render_field(&mut html, field, values, &placed, read_only);
    }
    let _ = write!(html, "<button type=\"submit\">{}</button></form>", esc(submit));
    html
}

/// Turns a submitted form into the API's JSON body, or field errors for input that is not
/// even of the right shape. `existing`: the record being edited exists (secrets left empty
/// are kept).
pub(crate) fn body_from_form(
    fields: &[Field],
    form: &FormPairs,
    existing: bool,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut body = Map::new();
    let mut errors = Vec::new();
    for field in fields {
        match decode_field(field, form, existing) {
            Ok(Some(value)) => {
                body.insert(field.name.clone(), value);
            }
            Ok(None) => {}
            Err(messages) => errors.extend(
                messages
                    .into_iter()
                    .map(|message| FieldError { field: field.name.clone(), message }),
            ),
        }
    }
    if errors.is_empty() { Ok(body) } else { Err(errors) }
}

/// One field's value in the API body (`None`: left out), or what is wrong with the input.
fn decode_field(
    field: &Field,
    form: &FormPairs,
    existing: bool,
) -> Result<Option<Value>, Vec<String>> {
    let text = form_value(form, &field.name).trim();
    match &field.input {
        Input::Checkbox => Ok(Some(Value::Bool(form.iter().any(|(key, _)| key == &field.name)))),
        Input::Secret => {
            let clear = !form_value(form, &format!("clear_{}", field.name)).is_empty();
            Ok(if !text.is_empty() {
                Some(Value::String(form_value(form, &field.name).to_owned()))
            } else if clear && !field.hashed {
                Some(Value::String(String::new()))
            } else if existing && !field.hashed {
                // The API keeps the stored secret when it gets the placeholder back.
                Some(Value::String(model::record::REDACTED.to_owned()))
            } else {
                None
            })
        }
        Input::Number if text.is_empty() => Ok(None),
        Input::Number => match text.parse::<i64>() {
            Ok(number) => Ok(Some(Value::from(number))),
            Err(_) => Err(vec!["must be a whole number".to_owned()]),
        },
        Input::List { numbers } => decode_list(field, text, *numbers).map(Some),
        Input::Json if text.is_empty() => Ok(None),
        Input::Json => match serde_json::from_str::<Value>(text) {
            Ok(value) => Ok(Some(value)),
            Err(error) => Err(vec![format!("is not valid JSON: {error}")]),
        },
        Input::Reference { many: true, .. } => Ok(Some(Value::Array(
            form.iter()
                .filter(|(key, value)| key == &field.name && !value.trim().is_empty())
                .map(|(_, value)| Value::String(value.trim().to_owned()))
                .collect(),
        ))),
        // An empty field is left out: the record's default applies, or the model names the
        // field as missing.
        Input::Text | Input::TextArea | Input::Select(_) | Input::Reference { .. }
            if text.is_empty() =>
        {
            Ok(None)
        }
        Input::Text | Input::TextArea | Input::Select(_) | Input::Reference { .. } => {
            if let Some(format) = field.address_format
                && !address_ok(format, text)
            {
                return Err(vec![format!("is not an {format} address")]);
            }
            let raw = form_value(form, &field.name);
            let value = if field.input == Input::TextArea { raw } else { text };
            Ok(Some(Value::String(value.to_owned())))
        }
    }
}

/// A comma- or line-separated list, each item a number or (when the field says) an address.
fn decode_list(field: &Field, text: &str, numbers: bool) -> Result<Value, Vec<String>> {
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for item in text.split([',', '\n']).map(str::trim).filter(|item| !item.is_empty()) {
        if numbers {
            match item.parse::<i64>() {
                Ok(number) => items.push(Value::from(number)),
                Err(_) => problems.push(format!("{item:?} is not a number")),
            }
        } else {
            if let Some(format) = field.address_format
                && !address_ok(format, item)
            {
                problems.push(format!("{item:?} is not an {format} address"));
            }
            items.push(Value::String(item.to_owned()));
        }
    }
    if problems.is_empty() { Ok(Value::Array(items)) } else { Err(problems) }
}

fn address_ok(format: &str, text: &str) -> bool {
    match format {
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        _ => text.parse::<std::net::IpAddr>().is_ok(),
    }
}

/// Field errors from decoding, as the API's error so pages show both the same way.
pub(crate) fn decoding_error(errors: Vec<FieldError>) -> ApiError {
    let message = "some fields are not valid".to_owned();
    ApiError::from(Error::Invalid { input: ErrorInput::Fields, message, fields: errors })
}

#[cfg(test)]
mod tests {
    use super::{Input, fields};
    use model::RecordKind;

    // Goal: every secret the API redacts is a secret on the forms too (typed, never shown),
    // so a backup schedule's password is not put back into the page as text.
    #[test]
    fn every_secret_field_is_a_secret_input() {
        for &kind in RecordKind::ALL {
            let form = fields(kind);
            for secret in kind.secret_fields() {
                let name = if *secret == "password_hash" { "password" } else { secret };
                let field = form.iter().find(|field| field.name == name);
                assert!(
                    field.is_some_and(|field| matches!(field.input, Input::Secret)),
                    "{kind:?}.{secret} is not a secret input"
                );
            }
        }
        let schedule = fields(RecordKind::BackupSchedule);
        assert!(schedule.iter().any(|f| f.name == "password" && matches!(f.input, Input::Secret)));
    }
}
