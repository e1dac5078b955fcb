//! Users > Administrator accounts: the accounts shared by every peer of a cluster, each full
//! or read-only; add one, set another's password or role, remove one. The rules (password
//! length, the last full administrator stays) are the records service's, as in the API.

use super::{Operator, OperatorForm, WebUser, csrf_input, esc, form_value, page, see_other};
use crate::adapters::api::ApiError;
use crate::services::{App, records};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use model::record::{AdminRole, Administrator};
use model::{Record, RecordKind};
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::sync::Arc;

const PAGE: &str = "/users/administrators";
const TITLE: &str = "Administrator accounts";

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(PAGE, get(accounts_page).post(add))
        .route("/users/administrators/{name}", post(change))
        .route("/users/administrators/{name}/delete", post(remove))
}

/// What the role means, as the select offers it.
fn role_label(role: AdminRole) -> &'static str {
    match role {
        AdminRole::Full => "Full administrator",
        AdminRole::ReadOnly => "Read-only (sees everything, changes nothing)",
    }
}

fn role_select(id: &str, selected: AdminRole) -> String {
    let mut html = format!("<select id=\"{id}\" name=\"role\">");
    for role in [AdminRole::Full, AdminRole::ReadOnly] {
        let chosen = if role == selected { " selected" } else { "" };
        let _ = write!(
            html,
            "<option value=\"{}\"{chosen}>{}</option>",
            role.as_str(),
            role_label(role)
        );
    }
    html.push_str("</select>");
    html
}

/// One account's row: its role and password can be set, and it can be removed.
fn account_row(user: &WebUser, admin: &Administrator) -> String {
    let name = esc(&admin.name);
    let action = format!("{PAGE}/{}", super::url_encode(&admin.name));
    let id = format!("role-{}", super::url_encode(&admin.name));
    let factory = if admin.must_change_password { " (must change its password)" } else { "" };
    format!(
        "<tr><td>{name}{factory}</td><td>{role}</td><td>\
         <form class=\"inline\" method=\"post\" action=\"{action}\">{csrf}\
         <label for=\"{id}\">Role of {name}</label> {select} \
         <label for=\"password-{id}\">New password for {name}</label>\
         <input id=\"password-{id}\" name=\"password\" type=\"password\" autocomplete=\"new-password\" \
         placeholder=\"unchanged\"> <button type=\"submit\">Save {name}</button></form> \
         <form class=\"inline\" method=\"post\" action=\"{action}/delete\">{csrf}\
         <button type=\"submit\" aria-label=\"Remove {name}\">Remove</button></form></td></tr>",
        role = role_label(admin.role),
        csrf = csrf_input(user),
        select = role_select(&id, admin.role),
    )
}

fn add_form(user: &WebUser) -> String {
    format!(
        "<h2>Add an account</h2><form method=\"post\" action=\"{PAGE}\" class=\"record\">{}\
         <div class=\"field\"><label for=\"new-name\">User name</label>\
         <input id=\"new-name\" name=\"name\" required></div>\
         <div class=\"field\"><label for=\"new-password\">Password</label>\
         <input id=\"new-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         <p class=\"hint\">At least {} characters.</p></div>\
         <div class=\"field\"><label for=\"new-role\">Role</label>{}</div>\
         <button type=\"submit\">Add account</button></form>",
        csrf_input(user),
        crate::base::auth::PASSWORD_LENGTH_MIN,
        role_select("new-role", AdminRole::Full),
    )
}

/// The page, with `note` (a saved or refused message) above the list.
async fn render(app: &App, user: &WebUser, note: &str) -> Result<String, ApiError> {
    let accounts = records::list(app, RecordKind::Administrator);
    let mut body = String::from(super::scope_note(model::Scope::Shared));
    body.push_str(
        "<p>A read-only account sees every page and every read of the API but changes nothing: \
         give one to auditors and to the monitoring system that scrapes <code>/api/v1/metrics</code>. \
         The last full administrator can be neither removed nor made read-only. \
         To change your own password, use <a href=\"/password\">Change password</a>.</p>",
    );
    body.push_str(note);
    body.push_str(
        "<table><caption>Accounts</caption><thead><tr><th scope=\"col\">Name</th>\
         <th scope=\"col\">Role</th><th scope=\"col\">Actions</th></tr></thead><tbody>",
    );
    for record in &accounts {
        if let Record::Administrator(admin) = record {
            body.push_str(&account_row(user, admin));
        }
    }
    body.push_str("</tbody></table>");
    body.push_str(&add_form(user));
    Ok(body)
}

async fn accounts_page(Operator(user): Operator, State(app): State<Arc<App>>) -> Response {
    answer(&app, &user, Ok(String::new())).await
}

/// The page after a change: its note, or the refusal with the API's status and field messages.
async fn answer(app: &App, user: &WebUser, outcome: Result<String, ApiError>) -> Response {
    let (status, note) = match outcome {
        Ok(saved) if saved.is_empty() => (axum::http::StatusCode::OK, String::new()),
        Ok(saved) => (axum::http::StatusCode::OK, super::saved_note(&saved)),
        Err(error) => {
            let mut note = super::error_note(error.message());
            for field in error.fields() {
                note.push_str(&super::error_note(&format!("{}: {}", field.field, field.message)));
            }
            (error.status(), note)
        }
    };
    match render(app, user, &note).await {
        Ok(body) => (status, page(TITLE, Some(user), &body)).into_response(),
        Err(error) => super::error_page(Some(user), &error),
    }
}

fn role_from_form(form: &super::FormPairs) -> Value {
    Value::String(form_value(form, "role").to_owned())
}

async fn add(State(app): State<Arc<App>>, OperatorForm { user, form }: OperatorForm) -> Response {
    let name = form_value(&form, "name").trim().to_owned();
    let mut body = Map::new();
    body.insert("name".to_owned(), Value::String(name.clone()));
    body.insert("password".to_owned(), Value::String(form_value(&form, "password").to_owned()));
    body.insert("role".to_owned(), role_from_form(&form));
    let created = records::create(&app, &user.name, RecordKind::Administrator, body).await;
    answer(&app, &user, created.map(|_| format!("{name} added.")).map_err(ApiError::from)).await
}

async fn change(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let outcome = save(&app, &user, &name, &form).await;
    answer(&app, &user, outcome.map(|()| format!("{name} saved."))).await
}

/// Sets `name`'s role, and its password when one was typed (which also ends a forced change).
async fn save(
    app: &App,
    user: &WebUser,
    name: &str,
    form: &super::FormPairs,
) -> Result<(), ApiError> {
    let key = model::RecordKey { kind: RecordKind::Administrator, name: name.to_owned() };
    let existing = records::read(app, key)?;
    let password = form_value(form, "password");
    let mut body = Map::new();
    body.insert("role".to_owned(), role_from_form(form));
    // A password set by another administrator ends a forced change; otherwise it stays.
    let must_change = password.is_empty()
        && matches!(existing, Record::Administrator(admin) if admin.must_change_password);
    body.insert("must_change_password".to_owned(), Value::Bool(must_change));
    if !password.is_empty() {
        body.insert("password".to_owned(), Value::String(password.to_owned()));
    }
    let (kind, actor, token) = (RecordKind::Administrator, &user.name, Some(user.token.as_str()));
    records::save(app, actor, token, kind, Some(name.to_owned()), body).await?;
    Ok(())
}

async fn remove(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    OperatorForm { user, .. }: OperatorForm,
) -> Response {
    let removed = records::remove(&app, &user.name, RecordKind::Administrator, name.clone()).await;
    match removed {
        Ok(()) if name == user.name => see_other("/login"),
        outcome => {
            let outcome = outcome.map(|()| format!("{name} removed.")).map_err(ApiError::from);
            answer(&app, &user, outcome).await
        }
    }
}
