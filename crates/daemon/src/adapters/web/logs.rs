//! Logs and history: the Event Log (this peer's journal) and the Configuration Log, filtered
//! by the same query parameters as the API's, and the configuration history: what changed,
//! by whom, when, as a field-by-field diff, with the whole configuration at any moment.

use super::{Operator, WebUser, esc, page, url_encode};
use crate::adapters::api::ApiError;
use crate::services::history::{self, LogQuery};
use crate::services::{App, Error, Input, records};
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/logs/events", get(event_log))
        .route("/logs/configuration", get(configuration_log))
        .route("/history", get(history))
        .route("/history/at", get(configuration_at))
}

type Pairs = Vec<(String, String)>;

/// The API's log filter from a filter form: empty fields mean "no filter".
fn log_query(pairs: &Pairs) -> Result<LogQuery, ApiError> {
    let mut query = LogQuery::default();
    for (name, value) in pairs {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let number = |field: &str| {
            value
                .parse::<u64>()
                .map_err(|_| ApiError::from(Error::field(Input::Query, field, "must be a number")))
        };
        match name.as_str() {
            "actor" => query.actor = Some(value.to_owned()),
            "kind" => query.kind = Some(value.to_owned()),
            "name" => query.name = Some(value.to_owned()),
            "since" => query.since = Some(value.to_owned()),
            "until" => query.until = Some(value.to_owned()),
            "level" => query.level = Some(value.to_owned()),
            "text" => query.text = Some(value.to_owned()),
            "origin" => query.origin = Some(origin(value)?),
            "before" => query.before = Some(number("before")?),
            "limit" => query.limit = Some(usize::try_from(number("limit")?).unwrap_or(usize::MAX)),
            other => {
                let message = format!("unknown filter {other:?}");
                return Err(Error::invalid(Input::Query, message).into());
            }
        }
    }
    Ok(query)
}

/// The Configuration Log's origin filter as its select names it.
fn origin(value: &str) -> Result<history::LogOrigin, ApiError> {
    [history::LogOrigin::ThisPeer, history::LogOrigin::AllPeers]
        .into_iter()
        .find(|origin| origin.as_str() == value)
        .ok_or_else(|| {
            Error::field(Input::Query, "origin", "must be this_peer or all_peers").into()
        })
}

/// The Configuration Log's choice of whose changes to show.
fn origin_select(pairs: &Pairs) -> String {
    let chosen = value_of(pairs, "origin");
    let option = |value: &str, label: &str| {
        let selected = if chosen == value { " selected" } else { "" };
        format!("<option value=\"{value}\"{selected}>{label}</option>")
    };
    format!(
        "<div class=\"field\"><label for=\"filter-origin\">Changes made on</label>\
         <select id=\"filter-origin\" name=\"origin\">{}{}</select></div>",
        option("this_peer", "this peer"),
        option("all_peers", "this peer and the other peers")
    )
}

fn value_of<'a>(pairs: &'a Pairs, name: &str) -> &'a str {
    pairs.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
}

/// A GET filter form with text fields `names` (label, name, hint), then `extra` fields.
fn filter_form(action: &str, pairs: &Pairs, fields: &[(&str, &str, &str)], extra: &str) -> String {
    let mut html = format!("<form method=\"get\" action=\"{action}\" class=\"record filter\">");
    for (label, name, hint) in fields {
        let _ = write!(
            html,
            "<div class=\"field\"><label for=\"filter-{name}\">{label}</label>\
             <input type=\"text\" id=\"filter-{name}\" name=\"{name}\" value=\"{}\" placeholder=\"{}\"></div>",
            esc(value_of(pairs, name)),
            esc(hint)
        );
    }
    html.push_str(extra);
    html.push_str("<button type=\"submit\">Filter</button></form>");
    html
}

/// A link to the next (older) page, keeping the filters.
fn older_link(action: &str, pairs: &Pairs, next_before: Option<u64>) -> String {
    let Some(before) = next_before else { return String::new() };
    let mut query: Vec<String> = pairs
        .iter()
        .filter(|(name, value)| name != "before" && !value.is_empty())
        .map(|(name, value)| format!("{}={}", url_encode(name), url_encode(value)))
        .collect();
    query.push(format!("before={before}"));
    format!("<p><a href=\"{action}?{}\">Older entries</a></p>", esc(&query.join("&")))
}

fn refused(user: &WebUser, title: &str, form: &str, error: &ApiError) -> Response {
    let body = format!("{form}{}", super::error_note(error.message()));
    (error.status(), page(title, Some(user), &body)).into_response()
}

async fn event_log(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(pairs): Query<Pairs>,
) -> Response {
    let form = filter_form(
        "/logs/events",
        &pairs,
        &[
            ("Lowest level", "level", "info, warning or error"),
            ("Kind starts with", "kind", "login."),
            ("Text contains", "text", ""),
        ],
        "",
    );
    let title = "Event Log";
    let filter = match log_query(&pairs).and_then(|query| Ok(history::journal_filter(query)?)) {
        Ok(filter) => filter,
        Err(error) => return refused(&user, title, &form, &error),
    };
    let limit = filter.limit;
    let entries =
        match app.readers.read(move |conn| Ok(eventlog::query_journal(conn, &filter)?)).await {
            Ok(entries) => entries,
            Err(error) => return super::error_page(Some(&user), &ApiError::from(error)),
        };
    let mut body = String::from(
        "<p class=\"scope local\">The Event Log reports activity on this peer only.</p>",
    );
    body.push_str(&form);
    body.push_str(
        "<table><caption>Events, newest first</caption><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Level</th><th scope=\"col\">Kind</th><th scope=\"col\">User</th>\
         <th scope=\"col\">Message</th></tr></thead><tbody>",
    );
    for entry in &entries {
        let level = format!("{:?}", entry.level).to_lowercase();
        let class = match entry.level {
            eventlog::Level::Info => "",
            _ => " class=\"bad\"",
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td{class}>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&crate::base::clock::format_ms(entry.at_ms)),
            esc(&level),
            esc(&entry.kind),
            esc(entry.actor.as_deref().unwrap_or("")),
            esc(&entry.message)
        );
    }
    body.push_str("</tbody></table>");
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id)).flatten();
    body.push_str(&older_link("/logs/events", &pairs, next));
    page(title, Some(&user), &body).into_response()
}

const CONFIG_FILTERS: &[(&str, &str, &str)] = &[
    ("User", "actor", "admin"),
    ("Record kind", "kind", "bridge"),
    ("Record name", "name", ""),
    ("Since", "since", "2026-01-01T00:00:00Z"),
    ("Until", "until", ""),
];

async fn config_entries(
    app: &App,
    pairs: &Pairs,
) -> Result<(Vec<projections::ConfigLogEntry>, Option<u64>), ApiError> {
    let filter = history::config_log_filter(log_query(pairs)?, app.writer.peer_id())?;
    let limit = filter.limit;
    let entries = app.readers.read(move |conn| Ok(projections::config_log(conn, &filter)?)).await?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.position)).flatten();
    Ok((entries, next))
}

/// A peer id short enough for a table cell (as `git` shortens hashes).
fn short_id(peer_id: &str) -> String {
    format!("peer {}", peer_id.get(..8).unwrap_or(peer_id))
}

/// The fields that differ between two versions of a record, as `field: old → new`.
pub(super) fn diff(before: Option<&Value>, after: Option<&Value>) -> String {
    let empty = serde_json::Map::new();
    let before_map = before.and_then(Value::as_object).unwrap_or(&empty);
    let after_map = after.and_then(Value::as_object).unwrap_or(&empty);
    let keys: BTreeSet<&String> = before_map.keys().chain(after_map.keys()).collect();
    let mut html = String::from("<ul class=\"diff\">");
    for key in keys {
        let (old, new) = (before_map.get(key), after_map.get(key));
        if old == new {
            continue;
        }
        let show = |value: Option<&Value>| match value {
            None => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        };
        let _ = write!(html, "<li>{}: ", esc(key));
        if old.is_some() {
            let _ = write!(html, "<del>{}</del>", esc(&show(old)));
        }
        if old.is_some() && new.is_some() {
            html.push_str(" → ");
        }
        if new.is_some() {
            let _ = write!(html, "<ins>{}</ins>", esc(&show(new)));
        }
        html.push_str("</li>");
    }
    html.push_str("</ul>");
    html
}

async fn configuration_log(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(pairs): Query<Pairs>,
) -> Response {
    let title = "Configuration Log";
    let form = filter_form("/logs/configuration", &pairs, CONFIG_FILTERS, &origin_select(&pairs));
    let (entries, next) = match config_entries(&app, &pairs).await {
        Ok(found) => found,
        Err(error) => return refused(&user, title, &form, &error),
    };
    let mut body = String::from(
        "<p>The configuration changes made on this peer, by whom and when; choose \
         <em>this peer and the other peers</em> to add the changes that arrived from the other \
         peers of the cluster, each with the peer it was made on. Secrets are never shown.</p>",
    );
    body.push_str(&form);
    body.push_str(
        "<table><caption>Changes, newest first</caption><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Peer</th><th scope=\"col\">User</th><th scope=\"col\">Action</th>\
         <th scope=\"col\">Kind</th><th scope=\"col\">Name</th><th scope=\"col\">Changes</th>\
         </tr></thead><tbody>",
    );
    let names = history::origin_names(&app);
    for entry in &entries {
        let peer = names.get(&entry.origin).cloned().unwrap_or_else(|| short_id(&entry.origin));
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&crate::base::clock::format_ms(entry.at_ms)),
            esc(&peer),
            esc(&entry.actor),
            esc(&entry.action),
            esc(&entry.kind),
            esc(&entry.name),
            diff(entry.before.as_ref(), entry.after.as_ref())
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&older_link("/logs/configuration", &pairs, next));
    page(title, Some(&user), &body).into_response()
}

async fn history(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(pairs): Query<Pairs>,
) -> Response {
    let title = "Configuration history";
    let form = filter_form("/history", &pairs, CONFIG_FILTERS, &origin_select(&pairs));
    let (entries, next) = match config_entries(&app, &pairs).await {
        Ok(found) => found,
        Err(error) => return refused(&user, title, &form, &error),
    };
    let mut body = String::from(
        "<p>What changed, by whom and when. Each change links to the whole configuration as it \
         was right after it.</p>",
    );
    body.push_str(&form);
    for entry in &entries {
        let _ = write!(
            body,
            "<section class=\"change\"><h2>{} {} {}</h2><p>{} by {} (from peer <code>{}</code>) · \
             <a href=\"/history/at?at={}\">Show configuration at this time</a></p>{}</section>",
            esc(&entry.action),
            esc(&entry.kind),
            esc(&entry.name),
            esc(&crate::base::clock::format_ms(entry.at_ms)),
            esc(&entry.actor),
            esc(&entry.origin),
            entry.at_ms,
            diff(entry.before.as_ref(), entry.after.as_ref())
        );
    }
    if entries.is_empty() {
        body.push_str("<p>No changes match.</p>");
    }
    body.push_str(&older_link("/history", &pairs, next));
    page(title, Some(&user), &body).into_response()
}

async fn configuration_at(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(pairs): Query<Pairs>,
) -> Response {
    let title = "Configuration at a time";
    let at = value_of(&pairs, "at").trim().to_owned();
    let form = format!(
        "<form method=\"get\" action=\"/history/at\" class=\"record filter\">\
         <div class=\"field\"><label for=\"filter-at\">Time</label>\
         <input type=\"text\" id=\"filter-at\" name=\"at\" value=\"{}\" placeholder=\"RFC 3339 or epoch milliseconds\"></div>\
         <button type=\"submit\">Show</button></form>",
        esc(&at)
    );
    let at = (!at.is_empty()).then_some(at);
    let (at_ms, records) =
        match history::config_records(&app, at.as_deref()).await.map_err(ApiError::from) {
            Ok(found) => found,
            Err(error) => return refused(&user, title, &form, &error),
        };
    let mut body = form;
    let _ = write!(
        body,
        "<p>The configuration as of {}:</p>",
        esc(&crate::base::clock::format_ms(at_ms))
    );
    let mut current_kind = None;
    for record in &records {
        if current_kind != Some(record.kind()) {
            current_kind = Some(record.kind());
            let _ = write!(body, "<h2>{}</h2>", esc(record.kind().as_str()));
        }
        let shown = records::show(record);
        let _ = write!(
            body,
            "<h3>{}</h3><pre>{}</pre>",
            esc(record.name()),
            esc(&serde_json::to_string_pretty(&shown).unwrap_or_default())
        );
    }
    page(title, Some(&user), &body).into_response()
}
