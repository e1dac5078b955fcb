//! The OpenAPI 3.1 description of the admin API, generated from the same record kinds the
//! router serves, so the two cannot drift apart.

use model::RecordKind;
use serde_json::{Map, Value, json};

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

fn operation(summary: String, ok: &str, body: bool) -> Value {
    let object = json!({"type": "object"});
    typed_operation(summary, ok, body.then_some(&object), Some(&object))
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
fn backup_operation() -> Value {
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
    op
}

/// `POST /api/v1/restore`: the archive as the body.
fn restore_operation() -> Value {
    let object = json!({"type": "object"});
    let mut op = typed_operation(
        "Restore a backup archive (the body, streamed) on this peer, at once; the password of an encrypted one in `X-Baton-Backup-Password`. Refused with nothing changed for another machine's backup (`backup_other_machine`), newer software (`backup_newer_software`), a wrong or missing password (`backup_wrong_password`, `backup_password_required`), a damaged, truncated or unknown file (`backup_corrupt`, `backup_truncated`, `backup_unknown_format`, `backup_unsafe_member`), or a clustered peer (`restore_clustered`)".into(),
        "200",
        None,
        Some(&object),
    );
    op["parameters"] = json!([{"name": "X-Baton-Backup-Password", "in": "header", "required": false, "schema": {"type": "string"}}]);
    op["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    op
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
    if matches!(
        kind,
        RecordKind::Administrator | RecordKind::PolicyService | RecordKind::RootPassword
    ) {
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

pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for &kind in RecordKind::ALL {
        let stored = kind.json_schema();
        let input_name = format!("{}_input", kind.as_str());
        schemas.insert(input_name.clone(), input_schema(kind, &stored));
        schemas.insert(kind.as_str().to_owned(), output_schema(kind, stored));
        let record = json!({"$ref": format!("#/components/schemas/{}", kind.as_str())});
        let input = json!({"$ref": format!("#/components/schemas/{input_name}")});
        let list = json!({"type": "array", "items": record});
        let what = kind.as_str().replace('_', " ");
        let scope = match kind.scope() {
            model::Scope::Shared => "shared by every cluster peer",
            model::Scope::Local => "this peer only; never replicated",
        };
        let collection = format!("/api/v1/{}", kind.collection());
        if kind.is_singleton() {
            paths.insert(
                collection,
                json!({
                    "get": typed_operation(format!("Show the {what} settings ({scope})"), "200", None, Some(&record)),
                    "put": typed_operation(format!("Set the {what} settings ({scope})"), "200", Some(&input), Some(&record)),
                    "delete": typed_operation(format!("Clear the {what} settings"), "204", None, None),
                }),
            );
        } else {
            paths.insert(
                collection.clone(),
                json!({
                    "get": typed_operation(format!("List {what} records ({scope})"), "200", None, Some(&list)),
                    "post": typed_operation(format!("Create a {what}"), "201", Some(&input), Some(&record)),
                }),
            );
            let name = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
            paths.insert(
                format!("{collection}/{{name}}"),
                json!({
                    "parameters": name,
                    "get": typed_operation(format!("Show one {what}"), "200", None, Some(&record)),
                    "put": typed_operation(format!("Replace one {what}; secrets sent back as \"********\" are kept"), "200", Some(&input), Some(&record)),
                    "delete": typed_operation(format!("Remove one {what}"), "204", None, None),
                }),
            );
        }
    }
    let fixed = json!({
        "/api/v1/sessions": {"post": operation("Log in: {username, password} → {token}; send it as `Authorization: Bearer`".into(), "201", true)},
        "/api/v1/sessions/current": {"delete": operation("Log out this session".into(), "204", false)},
        "/api/v1/password": {"post": operation("Change your own password: {current_password, new_password}. Allowed before the factory password is changed".into(), "200", true)},
        "/api/v1/status": {"get": operation("Version, peer identity, hardware serial, uptime, log and projection positions, cluster, and the OS settings applied (platform: each concern's latest result)".into(), "200", false)},
        "/api/v1/health": {"get": operation("The health gate's probe, without credentials: 200 when the daemon answers, its event log opens and the projections are current; 503 with the reasons otherwise".into(), "200", true)},
        "/api/v1/config": {"get": operation("The whole configuration now, or `?at=<RFC 3339 time>` as it was then".into(), "200", false)},
        "/api/v1/config/diff": {"get": operation("What changed between `?from=` and `?to=` (default now)".into(), "200", false)},
        "/api/v1/history/{kind}/{name}": {
            "parameters": [
                {"name": "kind", "in": "path", "required": true, "schema": {"type": "string"}, "description": "record kind or collection, e.g. bridges"},
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
            ],
            "get": operation("Every change to one record, newest first".into(), "200", false),
        },
        "/api/v1/logs/configuration": {"get": operation("Configuration Log: `actor`, `kind`, `name`, `since`, `until`, `before`, `limit`".into(), "200", false)},
        "/api/v1/logs/events": {"get": operation("Event Log of this peer: `level`, `kind` (prefix), `text`, `before`, `limit`".into(), "200", false)},
        "/api/v1/backups": {"post": backup_operation()},
        "/api/v1/backups/progress": {"get": operation("The running (or last) backup or restore: `{operation: {operation, running, done_bytes, total_bytes, started_ms, outcome}}`".into(), "200", false)},
        "/api/v1/restore": {"post": restore_operation()},
        "/api/v1/cluster/member-certificate": {"get": operation("`?url=https://member`: the SHA-256 fingerprint of the certificate a cluster member presents, `{member_url, sha256}`, to check against its Status page before joining through it".into(), "200", false)},
        "/api/v1/cluster/join": {"post": operation("This peer joins the cluster of a member: `{member_url, password, pre_shared_key, member_certificate_sha256}` (the cluster's administrator password; only that certificate is accepted from the member). A standalone member founds the cluster first; the other members (which must be active) list the new peer too, each reached through the admin port and certificate fingerprint the member shows on its peer line. Answers `{founded, other_members, status}` once every link is active; refusals (`member_certificate_changed`, `member_wrong_password`, `other_member_unavailable`, `member_update_failed`, `join_refused`, …) name the reason".into(), "200", true)},
    });
    if let Value::Object(fixed) = fixed {
        paths.extend(fixed);
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
