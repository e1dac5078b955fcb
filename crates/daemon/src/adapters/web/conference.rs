//! Conference configuration pages: bridges, bridge pools, service preferences, conference
//! templates, conference aliases, locations and this peer's location addresses, each a list
//! with an add form, an edit page and a delete button; and the list of conferences the policy
//! service created, each of which can be ended.

use super::forms::{self, Values};
use super::system::{SavedQuery, not_found};
use super::{
    Operator, OperatorForm, WebUser, esc, page, saved_note, scope_note, see_other, url_encode,
};
use crate::adapters::api::ApiError;
use crate::services::{App, records};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use model::{Record, RecordKey, RecordKind};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/configuration/{collection}", get(list_page).post(create))
        .route("/configuration/{collection}/{name}", get(edit_page).post(save))
        .route("/configuration/{collection}/{name}/delete", post(delete))
        .route("/conferences", get(conferences_page))
        .route("/conferences/{name}/end", post(end_conference))
}

fn collection_kind(collection: &str) -> Option<RecordKind> {
    RecordKind::from_collection(collection).filter(|kind| {
        matches!(
            kind,
            RecordKind::Bridge
                | RecordKind::BridgePool
                | RecordKind::ServicePreference
                | RecordKind::ConferenceTemplate
                | RecordKind::ConferenceAlias
                | RecordKind::Location
                | RecordKind::LocationAddresses
        )
    })
}

fn title(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Bridge => "Conference bridges",
        RecordKind::BridgePool => "Bridge pools",
        RecordKind::ServicePreference => "Service preferences",
        RecordKind::ConferenceTemplate => "Conference templates",
        RecordKind::ConferenceAlias => "Conference aliases",
        RecordKind::Location => "Locations",
        RecordKind::LocationAddresses => "Location addresses",
        _ => "Records",
    }
}

fn introduction(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Bridge => {
            "TelePresence MCUs and Servers Baton creates conferences on. Passwords are write-only."
        }
        RecordKind::BridgePool => {
            "Bridges of one type; conferences go to the one with most free ports."
        }
        RecordKind::ServicePreference => {
            "An ordered list of pools: the first with capacity hosts the conference."
        }
        RecordKind::ConferenceTemplate => {
            "What a conference is like, and which service preference hosts it."
        }
        RecordKind::ConferenceAlias => {
            "Dialled aliases matched by a regular expression; the replace string names the conference."
        }
        RecordKind::LocationAddresses => {
            "This peer's ad hoc and rendezvous addresses for each Location; they must differ between peers."
        }
        _ => "",
    }
}

/// Columns shown in the list, besides the name.
fn summary_fields(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Bridge => &["bridge_type", "address", "protocol", "capacity_ports", "enabled"],
        RecordKind::BridgePool => &["bridge_type", "bridges"],
        RecordKind::ServicePreference => &["bridge_type", "pools"],
        RecordKind::ConferenceTemplate => {
            &["conference_type", "service_preference", "max_participants"]
        }
        RecordKind::ConferenceAlias => {
            &["pattern", "conference_name", "role", "template", "priority"]
        }
        RecordKind::Location => &["description"],
        RecordKind::LocationAddresses => &["ad_hoc_address", "rendezvous_address"],
        _ => &[],
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn name_field(kind: RecordKind) -> &'static str {
    if kind == RecordKind::LocationAddresses { "location" } else { "name" }
}

async fn list_body(
    app: &App,
    user: &WebUser,
    kind: RecordKind,
    add_values: &Values<'_>,
    error: Option<&ApiError>,
    saved: Option<&str>,
) -> Result<String, ApiError> {
    let records = records::list(app, kind);
    let mut body = String::new();
    body.push_str(scope_note(kind.scope()));
    let intro = introduction(kind);
    if !intro.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(intro));
    }
    if let Some(saved) = saved {
        body.push_str(&saved_note(saved));
    }
    let collection = kind.collection();
    if records.is_empty() {
        body.push_str("<p>None yet.</p>");
    } else {
        let _ = write!(
            body,
            "<table><caption>{}</caption><thead><tr><th scope=\"col\">Name</th>",
            esc(title(kind))
        );
        for field in summary_fields(kind) {
            let _ = write!(body, "<th scope=\"col\">{}</th>", esc(&field.replace('_', " ")));
        }
        body.push_str("<th scope=\"col\">Actions</th></tr></thead><tbody>");
        for record in &records {
            let shown = records::show(record);
            let name = record.name();
            let href = format!("/configuration/{collection}/{}", url_encode(name));
            let _ = write!(body, "<tr><td><a href=\"{href}\">{}</a></td>", esc(name));
            for field in summary_fields(kind) {
                let _ = write!(body, "<td>{}</td>", esc(&cell(&shown[*field])));
            }
            let _ = write!(
                body,
                "<td><form class=\"inline\" method=\"post\" action=\"{href}/delete\">{}\
                 <button type=\"submit\" aria-label=\"Delete {}\">Delete</button></form></td></tr>",
                super::csrf_input(user),
                esc(name)
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(body, "<h2>Add</h2>");
    let mut fields = forms::fields(kind);
    forms::fill_references(app, &mut fields);
    let action = format!("/configuration/{collection}");
    body.push_str(&forms::render_form(user, &action, &fields, add_values, error, false, "Add"));
    Ok(body)
}

async fn list_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Path(collection): Path<String>,
    Query(query): Query<SavedQuery>,
) -> Response {
    let Some(kind) = collection_kind(&collection) else { return not_found(&user) };
    let saved = query
        .saved()
        .map(|name| format!("{name} saved."))
        .or_else(|| query.deleted().map(|name| format!("{name} deleted.")));
    match list_body(&app, &user, kind, &Values::Empty, None, saved.as_deref()).await {
        Ok(body) => page(title(kind), Some(&user), &body).into_response(),
        Err(error) => super::error_page(Some(&user), &error),
    }
}

async fn create(
    State(app): State<Arc<App>>,
    Path(collection): Path<String>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let Some(kind) = collection_kind(&collection) else { return not_found(&user) };
    let fields = forms::fields(kind);
    let created = match forms::body_from_form(&fields, &form, false) {
        Ok(body) => {
            records::create(&app, &user.name, kind, body).await.map_err(ApiError::from).map(|_| ())
        }
        Err(errors) => Err(forms::decoding_error(errors)),
    };
    match created {
        Ok(()) => {
            let name = super::form_value(&form, name_field(kind)).trim();
            see_other(&format!("/configuration/{collection}?saved={}", url_encode(name)))
        }
        Err(error) => {
            match list_body(&app, &user, kind, &Values::Submitted(&form), Some(&error), None).await
            {
                Ok(body) => (error.status(), page(title(kind), Some(&user), &body)).into_response(),
                Err(error) => super::error_page(Some(&user), &error),
            }
        }
    }
}

fn edit_body(
    user: &WebUser,
    fields: &[forms::Field],
    kind: RecordKind,
    name: &str,
    values: &Values<'_>,
    error: Option<&ApiError>,
    saved: bool,
) -> String {
    let mut body = String::new();
    body.push_str(scope_note(kind.scope()));
    if saved {
        body.push_str(&saved_note(&format!("{name} saved.")));
    }
    let href = format!("/configuration/{}/{}", kind.collection(), url_encode(name));
    body.push_str(&forms::render_form(user, &href, fields, values, error, true, "Save"));
    let _ = write!(
        body,
        "<p><a href=\"/configuration/{}\">Back to {}</a> · \
         <a href=\"/history?kind={}&amp;name={}\">History of {}</a></p>",
        kind.collection(),
        esc(title(kind)),
        kind.as_str(),
        url_encode(name),
        esc(name)
    );
    body
}

async fn edit_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Path((collection, name)): Path<(String, String)>,
    Query(query): Query<SavedQuery>,
) -> Response {
    let Some(kind) = collection_kind(&collection) else { return not_found(&user) };
    let stored = match records::current(&app, &RecordKey { kind, name: name.clone() }) {
        Some(record) => record,
        None => return not_found(&user),
    };
    let record = records::show(&stored);
    let mut fields = forms::fields(kind);
    forms::fill_references(&app, &mut fields);
    let mut body = edit_body(
        &user,
        &fields,
        kind,
        &name,
        &Values::Record(&record),
        None,
        query.saved().is_some(),
    );
    if let Record::Bridge(bridge) = &stored {
        body.push_str(&super::bridge_tls::section(&app, &user, bridge));
    }
    page(&format!("{}: {name}", title(kind)), Some(&user), &body).into_response()
}

async fn save(
    State(app): State<Arc<App>>,
    Path((collection, name)): Path<(String, String)>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let Some(kind) = collection_kind(&collection) else { return not_found(&user) };
    let fields = forms::fields(kind);
    let saved = match forms::body_from_form(&fields, &form, true) {
        Ok(body) => {
            records::save(&app, &user.name, Some(&user.token), kind, Some(name.clone()), body)
                .await
                .map_err(ApiError::from)
                .map(|_| ())
        }
        Err(errors) => Err(forms::decoding_error(errors)),
    };
    match saved {
        Ok(()) => see_other(&format!("/configuration/{collection}/{}?saved=1", url_encode(&name))),
        Err(error) => {
            let mut fields = fields;
            forms::fill_references(&app, &mut fields);
            let body = edit_body(
                &user,
                &fields,
                kind,
                &name,
                &Values::Submitted(&form),
                Some(&error),
                false,
            );
            (error.status(), page(&format!("{}: {name}", title(kind)), Some(&user), &body))
                .into_response()
        }
    }
}

async fn delete(
    State(app): State<Arc<App>>,
    Path((collection, name)): Path<(String, String)>,
    OperatorForm { user, .. }: OperatorForm,
) -> Response {
    let Some(kind) = collection_kind(&collection) else { return not_found(&user) };
    match records::remove(&app, &user.name, kind, name.clone()).await.map_err(ApiError::from) {
        Ok(()) => see_other(&format!("/configuration/{collection}?deleted={}", url_encode(&name))),
        Err(error) => {
            let body = format!(
                "{}<p><a href=\"/configuration/{collection}\">Back to {}</a></p>",
                super::error_note(&format!("Not deleted: {}", error.message())),
                esc(title(kind))
            );
            (error.status(), page(title(kind), Some(&user), &body)).into_response()
        }
    }
}

// ---- conferences ---------------------------------------------------------------------------

async fn conferences_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(query): Query<SavedQuery>,
) -> Response {
    let records = records::list(&app, RecordKind::Conference);
    let mut body = String::new();
    body.push_str(scope_note(model::Scope::Shared));
    body.push_str(
        "<p>Conferences the policy service created on the bridges. Ending one forgets it here \
         and on every peer; the peer that created it ends it on its bridge.</p>",
    );
    if let Some(saved) = query.saved() {
        body.push_str(&saved_note(&format!("{saved} ended.")));
    }
    if records.is_empty() {
        body.push_str("<p>No conferences.</p>");
    } else {
        body.push_str(
            "<table><caption>Conferences</caption><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">Bridge</th><th scope=\"col\">Template</th>\
             <th scope=\"col\">Created by peer</th><th scope=\"col\">Actions</th></tr></thead><tbody>",
        );
        for record in &records {
            let Record::Conference(conference) = record else { continue };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>\
                 <form class=\"inline\" method=\"post\" action=\"/conferences/{}/end\">{}\
                 <button type=\"submit\" aria-label=\"End {}\">End</button></form></td></tr>",
                esc(&conference.name),
                esc(&conference.bridge),
                esc(&conference.template),
                esc(&conference.created_by),
                url_encode(&conference.name),
                super::csrf_input(&user),
                esc(&conference.name)
            );
        }
        body.push_str("</tbody></table>");
    }
    page("Conferences", Some(&user), &body).into_response()
}

async fn end_conference(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    OperatorForm { user, .. }: OperatorForm,
) -> Response {
    match records::remove(&app, &user.name, RecordKind::Conference, name.clone())
        .await
        .map_err(ApiError::from)
    {
        Ok(()) => see_other(&format!("/conferences?saved={}", url_encode(&name))),
        Err(error) => super::error_page(Some(&user), &error),
    }
}
