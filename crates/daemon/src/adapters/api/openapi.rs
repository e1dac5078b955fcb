//! The OpenAPI 3.1 description of the admin API, built from the route table
//! ([`super::routes`]) that the router serves, so the two cannot drift apart.

use super::routes::{Route, path_parameters};
use model::RecordKind;
use serde_json::{Map, Value, json};

/// One operation's description (an OpenAPI operation object); empty when undescribed.
#[derive(Clone, Default)]
pub struct Doc(Value);

fn error_responses() -> Value {
    json!({
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
        "409": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"},
        "415": {"$ref": "#/components/responses/Error"},
        "422": {"$ref": "#/components/responses/Error"},
    })
}

/// An operation answering a JSON object, taking one when `body`.
pub fn doc(summary: &str, ok: &str, body: bool) -> Doc {
    let object = json!({"type": "object"});
    Doc(typed_operation(summary.to_owned(), ok, body.then_some(&object), Some(&object)))
}

/// An operation whose request and answer bodies follow the given schemas.
fn typed_operation(
    summary: String,
    ok: &str,
    request: Option<&Value>,
    answer: Option<&Value>,
) -> Value {
    let mut responses = error_responses();
    responses[ok] = match answer {
        Some(schema) => {
            json!({"description": "success", "content": {"application/json": {"schema": schema}}})
        }
        None => json!({"description": "success"}),
    };
    let mut op = json!({"summary": summary, "responses": responses});
    if let Some(schema) = request {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    op
}

/// `POST /api/v1/backups`: an optional JSON body, a streamed archive as the answer.
pub fn backup() -> Doc {
    let mut op = typed_operation(
        "Stream a backup archive of this peer (`<version>_<serial>_<YYYYMMDD>_<HHMMSS>_backup.tar.gz`, `.enc` appended when encrypted); body `{password}` (optional) encrypts it".into(),
        "200",
        None,
        None,
    );
    op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"password": {"type": "string"}}, "additionalProperties": false,
    }}}});
    op["responses"]["200"] = json!({"description": "the archive, streamed", "content": {
        "application/gzip": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }});
    Doc(op)
}

/// `POST /api/v1/restore`: the archive as the body.
pub fn restore() -> Doc {
    streamed_upload(
        "Restore a backup archive (the body, streamed) on this peer, at once; the password of an encrypted one in `X-Baton-Backup-Password`. Refused with nothing changed for another machine's backup (`backup_other_machine`), newer software (`backup_newer_software`), a wrong or missing password (`backup_wrong_password`, `backup_password_required`), a damaged, truncated or unknown file (`backup_corrupt`, `backup_truncated`, `backup_unknown_format`, `backup_unsafe_member`), or a clustered peer (`restore_clustered`)",
        json!([{"name": "X-Baton-Backup-Password", "in": "header", "required": false, "schema": {"type": "string"}}]),
    )
}

/// `POST /api/v1/upgrade`: a signed image as the body, streamed into the inactive slot.
pub fn upgrade_install() -> Doc {
    streamed_upload(
        "Install a signed upgrade image (the body, streamed) into the inactive slot and boot it next, on trial; `?allow_downgrade=true` accepts an older version, `?reboot=true` reboots once it is installed. A bad or forbidden image is refused (`upgrade_refused`) before anything is written; one install at a time (`upgrade_busy`)",
        json!([
            {"name": "allow_downgrade", "in": "query", "required": false, "schema": {"type": "boolean"}},
            {"name": "reboot", "in": "query", "required": false, "schema": {"type": "boolean"}},
        ]),
    )
}

/// An operation whose body is a file, streamed, answered by a JSON object.
fn streamed_upload(summary: &str, parameters: Value) -> Doc {
    let object = json!({"type": "object"});
    let mut op = typed_operation(summary.to_owned(), "200", None, Some(&object));
    op["parameters"] = parameters;
    op["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    Doc(op)
}

/// What the API answers for a record: its fields plus the `kind` tag.
fn output_schema(kind: RecordKind, mut schema: Value) -> Value {
    if let Some(properties) = schema["properties"].as_object_mut() {
        properties.insert("kind".to_owned(), json!({"const": kind.as_str()}));
    }
    if let Some(required) = schema["required"].as_array_mut() {
        required.push(json!("kind"));
    }
    schema
}

/// What clients send for a record: kinds that store a password hash take `password` instead.
fn input_schema(kind: RecordKind, stored: &Value) -> Value {
    let mut schema = stored.clone();
    if kind.hashes_password() {
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties.remove("password_hash");
            properties.insert(
                "password".to_owned(),
                json!({"type": "string", "writeOnly": true, "description": "required on create; hashed with argon2id"}),
            );
        }
        if let Some(required) = schema["required"].as_array_mut() {
            required.retain(|field| field != "password_hash");
        }
    }
    schema
}

/// The descriptions of one record kind's routes.
pub struct RecordDocs {
    pub list: Doc,
    pub create: Doc,
    pub show: Doc,
    pub set: Doc,
    pub clear: Doc,
}

impl RecordDocs {
    pub fn of(kind: RecordKind) -> RecordDocs {
        let record = json!({"$ref": format!("#/components/schemas/{}", kind.as_str())});
        let input = json!({"$ref": format!("#/components/schemas/{}_input", kind.as_str())});
        let list = json!({"type": "array", "items": record});
        let what = kind.as_str().replace('_', " ");
        let scope = match kind.scope() {
            model::Scope::Shared => "shared by every cluster peer",
            model::Scope::Local => "this peer only; never replicated",
        };
        let op = |summary: String, ok: &str, request: Option<&Value>, answer: Option<&Value>| {
            Doc(typed_operation(summary, ok, request, answer))
        };
        if kind.is_singleton() {
            return RecordDocs {
                list: Doc::default(),
                create: Doc::default(),
                show: op(format!("Show the {what} settings ({scope})"), "200", None, Some(&record)),
                set: op(
                    format!("Set the {what} settings ({scope})"),
                    "200",
                    Some(&input),
                    Some(&record),
                ),
                clear: op(format!("Clear the {what} settings"), "204", None, None),
            };
        }
        RecordDocs {
            list: op(format!("List {what} records ({scope})"), "200", None, Some(&list)),
            create: op(format!("Create a {what}"), "201", Some(&input), Some(&record)),
            show: op(format!("Show one {what}"), "200", None, Some(&record)),
            set: op(
                format!("Replace one {what}; secrets sent back as \"********\" are kept"),
                "200",
                Some(&input),
                Some(&record),
            ),
            clear: op(format!("Remove one {what}"), "204", None, None),
        }
    }
}

/// The OpenAPI document describing `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes.iter().filter(|route| !route.doc.0.is_null()) {
        let path = paths.entry(route.path.clone()).or_insert_with(|| {
            let parameters: Vec<Value> = path_parameters(&route.path)
                .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                .collect();
            if parameters.is_empty() { json!({}) } else { json!({"parameters": parameters}) }
        });
        path[route.method.as_str()] = route.doc.0.clone();
    }
    let mut schemas = Map::new();
    for &kind in RecordKind::ALL {
        let stored = kind.json_schema();
        schemas.insert(format!("{}_input", kind.as_str()), input_schema(kind, &stored));
        schemas.insert(kind.as_str().to_owned(), output_schema(kind, stored));
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": "Baton admin API", "version": crate::base::version::software_version()},
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "responses": {
                "Error": {
                    "description": "A JSON error with a stable code",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
            "schemas": schemas,
        },
    });
    document["components"]["schemas"]["Error"] = json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                }},
            },
        }},
    });
    document
}
