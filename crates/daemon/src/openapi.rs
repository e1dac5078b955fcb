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
    let mut responses = error_responses();
    responses[ok] = json!({"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}});
    let mut op = json!({"summary": summary, "responses": responses});
    if body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
    }
    op
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for &kind in RecordKind::ALL {
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
                    "get": operation(format!("Show the {what} settings ({scope})"), "200", false),
                    "put": operation(format!("Set the {what} settings ({scope})"), "200", true),
                    "delete": operation(format!("Clear the {what} settings"), "204", false),
                }),
            );
        } else {
            paths.insert(
                collection.clone(),
                json!({
                    "get": operation(format!("List {what} records ({scope})"), "200", false),
                    "post": operation(format!("Create a {what}"), "201", true),
                }),
            );
            let name = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
            paths.insert(
                format!("{collection}/{{name}}"),
                json!({
                    "parameters": name,
                    "get": operation(format!("Show one {what}"), "200", false),
                    "put": operation(format!("Replace one {what}; secrets sent back as \"********\" are kept"), "200", true),
                    "delete": operation(format!("Remove one {what}"), "204", false),
                }),
            );
        }
    }
    let fixed = json!({
        "/api/v1/sessions": {"post": operation("Log in: {username, password} → {token}; send it as `Authorization: Bearer`".into(), "201", true)},
        "/api/v1/sessions/current": {"delete": operation("Log out this session".into(), "204", false)},
        "/api/v1/password": {"post": operation("Change your own password: {current_password, new_password}. Allowed before the factory password is changed".into(), "200", true)},
        "/api/v1/status": {"get": operation("Version, peer identity, uptime, log and projection positions".into(), "200", false)},
        "/api/v1/config": {"get": operation("The whole configuration now, or `?at=<RFC 3339 time>` as it was then".into(), "200", false)},
        "/api/v1/config/diff": {"get": operation("What changed between `?from=` and `?to=` (default now)".into(), "200", false)},
        "/api/v1/history/{kind}/{name}": {"get": operation("Every change to one record, newest first".into(), "200", false)},
        "/api/v1/logs/configuration": {"get": operation("Configuration Log: `actor`, `kind`, `name`, `since`, `until`, `before`, `limit`".into(), "200", false)},
        "/api/v1/logs/events": {"get": operation("Event Log of this peer: `level`, `kind` (prefix), `text`, `before`, `limit`".into(), "200", false)},
    });
    if let Value::Object(fixed) = fixed {
        paths.extend(fixed);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Baton admin API", "version": env!("CARGO_PKG_VERSION")},
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
            "schemas": {
                "Error": {
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
                },
            },
        },
    })
}
