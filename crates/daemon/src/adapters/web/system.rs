//! System pages: one page per singleton setting (IP, DNS, system name, time, SNMP, syslog,
//! administration access, root password, certificates, licence, maintenance mode, policy
//! service credentials), each a generic record form, and the Clustering page with the peer
//! lines as the seed shows them, the pre-shared key (write-only) and the joining guide.

use super::forms::{self, Values};
use super::{
    FormPairs, Operator, OperatorForm, WebUser, esc, page, saved_note, scope_note, see_other,
};
use crate::adapters::api::ApiError;
use crate::services::{App, records};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use model::{FieldError, RecordKey, RecordKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::sync::Arc;

/// Peer address fields on the Clustering page: the largest cluster an edition allows.
pub(super) const PEER_FIELDS_MAX: usize = 3;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/system/clustering", get(clustering_page).post(save_clustering))
        .route("/system/{collection}", get(setting_page).post(save_setting))
}

/// `?saved=…` after a successful POST (post/redirect/get), `?deleted=…` after a removal.
#[derive(Deserialize, Default)]
pub(super) struct SavedQuery {
    saved: Option<String>,
    deleted: Option<String>,
    /// After leaving a cluster with its bridges (Clustering).
    bridges_deleted: Option<usize>,
}

impl SavedQuery {
    pub(super) fn saved(&self) -> Option<&str> {
        self.saved.as_deref()
    }

    pub(super) fn deleted(&self) -> Option<&str> {
        self.deleted.as_deref()
    }
}

/// What each setting page says above its form.
fn introduction(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Ipv4 => {
            "The primary IPv4 address of this peer. Never change it while the peer is in a cluster."
        }
        RecordKind::SystemName => {
            "System host name and DNS domain: host name.domain is this peer's FQDN."
        }
        RecordKind::Dns => "At least one DNS server is needed before clustering.",
        RecordKind::Ntp => {
            "Every cluster peer must use the same, or closely synchronised, NTP servers."
        }
        RecordKind::Licence => "The release key and edition decide how many peers may cluster.",
        RecordKind::Maintenance => {
            "In maintenance mode this peer tells the VCS it cannot serve, so calls move to another peer."
        }
        RecordKind::PolicyService => {
            "The credentials the VCS presents when it calls Baton's policy service."
        }
        RecordKind::Certificates => {
            "The server certificate of the admin and policy HTTPS listener. The private key is write-only."
        }
        RecordKind::RootPassword => {
            "The root account's password on this peer (each peer may differ)."
        }
        _ => "",
    }
}

fn title(kind: RecordKind) -> String {
    match kind {
        RecordKind::Ipv4 => "IP".to_owned(),
        RecordKind::Dns => "DNS".to_owned(),
        RecordKind::Ntp => "Time (NTP)".to_owned(),
        RecordKind::Snmp => "SNMP".to_owned(),
        RecordKind::Maintenance => "Maintenance mode".to_owned(),
        other => {
            let spaced = other.as_str().replace('_', " ");
            let mut chars = spaced.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
    }
}

fn setting_kind(collection: &str) -> Option<RecordKind> {
    RecordKind::from_collection(collection)
        .filter(|kind| kind.is_singleton() && *kind != RecordKind::Cluster)
}

fn stored(app: &App, kind: RecordKind) -> Option<Value> {
    records::current(app, RecordKey::singleton(kind)).as_ref().map(records::show)
}

fn setting_body(
    user: &WebUser,
    kind: RecordKind,
    values: &Values<'_>,
    error: Option<&ApiError>,
    saved: bool,
    live_state: &str,
) -> String {
    let mut body = String::new();
    body.push_str(scope_note(kind.scope()));
    let intro = introduction(kind);
    if !intro.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(intro));
    }
    body.push_str(live_state);
    if saved {
        body.push_str(&saved_note(&format!("{} saved.", title(kind))));
    }
    let fields = forms::fields(kind);
    let action = format!("/system/{}", kind.collection());
    body.push_str(&forms::render_form(user, &action, &fields, values, error, false, "Save"));
    body
}

/// What the machine says now about a setting, shown above its form: the NTP synchronisation
/// state on the Time page (the same `timedatectl` reading clustering requires).
async fn live_state(kind: RecordKind) -> String {
    if kind != RecordKind::Ntp {
        return String::new();
    }
    let state = match crate::services::cluster::ntp_synchronised().await {
        Ok(true) => "<span class=\"ok\">Synchronised</span>".to_owned(),
        Ok(false) => "<span class=\"bad\">Not synchronised</span>: clustering waits until the \
             clock is synchronised."
            .to_owned(),
        Err(problem) => format!("<span class=\"bad\">Unknown</span> ({})", esc(&problem)),
    };
    format!("<p id=\"ntp-state\" role=\"status\">NTP synchronisation: {state}</p>")
}

async fn setting_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Path(collection): Path<String>,
    Query(query): Query<SavedQuery>,
) -> Response {
    let Some(kind) = setting_kind(&collection) else { return not_found(&user) };
    let current = stored(&app, kind);
    let values = current.as_ref().map_or(Values::Empty, Values::Record);
    let live_state = live_state(kind).await;
    let body = setting_body(&user, kind, &values, None, query.saved.is_some(), &live_state);
    page(&title(kind), Some(&user), &body).into_response()
}

async fn save_setting(
    State(app): State<Arc<App>>,
    Path(collection): Path<String>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let Some(kind) = setting_kind(&collection) else { return not_found(&user) };
    let existing = stored(&app, kind).is_some();
    let fields = forms::fields(kind);
    let saved = match forms::body_from_form(&fields, &form, existing) {
        Ok(body) => records::save(&app, &user.name, Some(&user.token), kind, None, body)
            .await
            .map_err(ApiError::from)
            .map(|_| ()),
        Err(errors) => Err(forms::decoding_error(errors)),
    };
    match saved {
        Ok(()) => see_other(&format!("/system/{}?saved=1", kind.collection())),
        Err(error) => {
            let live_state = live_state(kind).await;
            let body = setting_body(
                &user,
                kind,
                &Values::Submitted(&form),
                Some(&error),
                false,
                &live_state,
            );
            (error.status(), page(&title(kind), Some(&user), &body)).into_response()
        }
    }
}

pub(super) fn not_found(user: &WebUser) -> Response {
    let body = super::error_note("There is no such page.");
    (StatusCode::NOT_FOUND, page("Not found", Some(user), &body)).into_response()
}

// ---- clustering ----------------------------------------------------------------------------

/// The peer lines as the seed shows them: the address, then "This system" or "Active as …"
/// in green, or the failure and its reason in red.
pub(super) fn peer_lines(status: &crate::services::cluster::ClusterStatus) -> String {
    use crate::services::cluster::PeerState;
    let mut html = String::new();
    if status.peers.is_empty() {
        html.push_str("<p>This peer is in standalone mode: it has no cluster peers.</p>");
    } else {
        html.push_str(
            "<table><caption>Cluster peers</caption><thead><tr><th scope=\"col\">Peer</th>\
             <th scope=\"col\">IP address</th><th scope=\"col\">Status</th></tr></thead><tbody>",
        );
        for (index, line) in status.peers.iter().enumerate() {
            let class = match line.state {
                PeerState::ThisSystem | PeerState::Active { .. } => "ok",
                PeerState::Failed { .. } => "bad",
                PeerState::Connecting | PeerState::Joining { .. } => "pending",
            };
            let _ = write!(
                html,
                "<tr><td>Peer {}</td><td>{}</td><td><span class=\"{class}\">{}</span>",
                index + 1,
                line.address,
                esc(&line.text)
            );
            for warning in &line.warnings {
                let _ = write!(html, "<br><span class=\"bad\">{}</span>", esc(warning));
            }
            html.push_str("</td></tr>");
        }
        html.push_str("</tbody></table>");
    }
    for problem in &status.problems {
        html.push_str(&super::error_note(problem));
    }
    html
}

pub(super) fn clustering_body(
    user: &WebUser,
    app: &App,
    stored: Option<&Value>,
    submitted: Option<&FormPairs>,
    error: Option<&ApiError>,
    saved: Option<&str>,
) -> String {
    let status = app.cluster.status();
    let mut body = String::new();
    body.push_str(
        "<p class=\"scope local\">The peer list and the pre-shared key apply to this peer only: \
         set them on every peer, identical on each (the order does not matter).</p>",
    );
    if let Some(saved) = saved {
        body.push_str(&saved_note(saved));
    }
    body.push_str("<h2>Peer status</h2>");
    body.push_str(&peer_lines(&status));
    let _ = write!(body, "<p>This peer's id: <code>{}</code>", esc(&status.peer_id));
    if let Some(cluster_id) = &status.cluster_id {
        let _ = write!(body, "; cluster id: <code>{}</code>", esc(cluster_id));
    }
    body.push_str("</p><h2>Cluster peers</h2>");
    let errors: Vec<FieldError> = error.map(|e| e.fields().to_vec()).unwrap_or_default();
    if let Some(error) = error {
        body.push_str(&super::error_note("Not saved: correct the fields marked below."));
        if errors.is_empty() {
            body.push_str(&super::error_note(error.message()));
        }
    }
    let stored_peers: Vec<String> = stored
        .and_then(|record| record["peers"].as_array())
        .map(|peers| peers.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let key_stored =
        stored.and_then(|record| record["pre_shared_key"].as_str()).is_some_and(|k| !k.is_empty());
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/system/clustering\" class=\"record\">{}",
        super::csrf_input(user)
    );
    body.push_str(&key_field(&errors, key_stored));
    body.push_str(&peer_fields(&errors, submitted, &stored_peers));
    if !stored_peers.is_empty() {
        body.push_str(LEAVE_WITH_BRIDGES_FIELD);
    }
    body.push_str("<button type=\"submit\">Save</button></form>");
    // Offered until this peer belongs to a cluster, so a join refused (a mistyped key) can be
    // tried again.
    if status.cluster_id.is_none() {
        body.push_str(BACKUP_BEFORE_JOINING);
        body.push_str(&super::join::join_form(user, "", None));
    }
    body.push_str(PEER_BY_PEER_STEPS);
    body
}

/// The seed's procedure, for operators who follow it rather than the one-flow join.
const PEER_BY_PEER_STEPS: &str = "<h2>Joining a cluster peer by peer</h2><ol>\
         <li>On the new peer, set IP, DNS, system name, Time (NTP) and the licence first, and \
         change the factory password.</li>\
         <li>To found a cluster, on its first peer enter a pre-shared key and only this \
         peer's own address, and save: it shows \"This system\".</li>\
         <li>On every existing peer, add the new peer's address here and save.</li>\
         <li>On the new peer, enter the same pre-shared key and the same peer addresses (its own \
         included) and save. It takes the cluster's shared configuration; its own is replaced.</li>\
         <li>Check that every peer shows \"This system\" for itself and \"Active as …\" in green \
         for the others. No restart is needed.</li>\
         <li>Add the new peer to the VCS's policy service as another server address.</li></ol>\
         <p>To leave a cluster, clear the key and every address here (standalone mode), then \
         remove this peer's address on the other peers.</p>";

/// The seed's prerequisite, with the way to do it.
const BACKUP_BEFORE_JOINING: &str = "<p class=\"hint\">We highly recommend that you take a \
    backup of this peer before adding it to a cluster: \
    <a href=\"/maintenance/backup\">Maintenance &gt; Backup and restore</a>.</p>";

/// Offered while clustered: the seed's removal (Task 1, steps 9–10) deletes the bridges of a
/// peer taken out of the cluster, so that two systems do not drive the same bridges.
const LEAVE_WITH_BRIDGES_FIELD: &str = "<div class=\"field\"><label>\
    <input type=\"checkbox\" name=\"delete_bridges\" value=\"1\"> When this save places the \
    peer in standalone mode, also delete its conference bridge entries</label>\
    <p class=\"hint\">Recommended when this peer leaves the cluster for good: otherwise it and \
    the cluster both drive the same bridges. Only this peer's copy is deleted, after it has left \
    (a standalone peer replicates nothing); the cluster keeps its bridges.</p></div>";

/// After a save that left the cluster (no peers saved: standalone, so nothing replicates),
/// deletes this peer's bridge entries. Returns how many were deleted.
async fn delete_bridges_after_leaving(app: &App, actor: &str) -> Result<usize, ApiError> {
    let bridges = records::list(app, RecordKind::Bridge);
    for bridge in &bridges {
        records::remove(app, actor, RecordKind::Bridge, bridge.name().to_owned()).await?;
    }
    Ok(bridges.len())
}

/// The pre-shared key field: never shown, kept when left empty, clearable.
fn key_field(errors: &[FieldError], key_stored: bool) -> String {
    let mut body = String::new();
    let key_errors: String = errors
        .iter()
        .filter(|e| e.field == "pre_shared_key")
        .map(|e| format!("<p class=\"error\">{}</p>", esc(&e.message)))
        .collect();
    let _ = write!(
        body,
        "<div class=\"field{}\"><label for=\"field-pre_shared_key\">Cluster pre-shared key</label>\
         <input type=\"password\" id=\"field-pre_shared_key\" name=\"pre_shared_key\" autocomplete=\"new-password\" aria-describedby=\"field-pre_shared_key-help\">\
         <div id=\"field-pre_shared_key-help\">{key_errors}<p class=\"hint\">{}</p></div>",
        if key_errors.is_empty() { "" } else { " invalid" },
        if key_stored {
            "A key is stored; it is never shown. Leave empty to keep it."
        } else {
            "No key is stored. The same key on every peer."
        }
    );
    if key_stored {
        body.push_str(
            "<label for=\"field-clear-key\"><input type=\"checkbox\" id=\"field-clear-key\" \
             name=\"clear_pre_shared_key\" value=\"true\"> Clear the stored key (standalone mode)</label>",
        );
    }
    body.push_str("</div>");
    body
}

/// One address field per possible peer, filled from the form sent or the stored list.
fn peer_fields(errors: &[FieldError], submitted: Option<&FormPairs>, stored: &[String]) -> String {
    let mut body = String::new();
    for index in 0..PEER_FIELDS_MAX {
        let name = format!("peer_{}", index + 1);
        let value = match submitted {
            Some(form) => super::form_value(form, &name).to_owned(),
            None => stored.get(index).cloned().unwrap_or_default(),
        };
        let messages: String = errors
            .iter()
            .filter(|e| e.field == format!("peers[{index}]") || (index == 0 && e.field == "peers"))
            .map(|e| format!("<p class=\"error\">{}</p>", esc(&e.message)))
            .collect();
        let _ = write!(
            body,
            "<div class=\"field{}\"><label for=\"field-{name}\">Peer {} IP address</label>\
             <input type=\"text\" id=\"field-{name}\" name=\"{name}\" value=\"{}\" aria-describedby=\"field-{name}-help\">\
             <div id=\"field-{name}-help\">{messages}</div></div>",
            if messages.is_empty() { "" } else { " invalid" },
            index + 1,
            esc(&value)
        );
    }
    body
}

async fn clustering_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(query): Query<SavedQuery>,
) -> Response {
    let stored = stored(&app, RecordKind::Cluster);
    let saved = query.saved.as_ref().map(|_| match query.bridges_deleted {
        Some(count) => format!(
            "Saved peer addresses and key. This peer is standalone; its {count} conference \
             bridge entries were deleted."
        ),
        None => "Saved peer addresses and key.".to_owned(),
    });
    let body = clustering_body(&user, &app, stored.as_ref(), None, None, saved.as_deref());
    page("Clustering", Some(&user), &body).into_response()
}

async fn save_clustering(
    State(app): State<Arc<App>>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let stored = stored(&app, RecordKind::Cluster);
    let mut body = Map::new();
    let key = super::form_value(&form, "pre_shared_key");
    let clear = !super::form_value(&form, "clear_pre_shared_key").is_empty();
    let key_value = if !key.is_empty() {
        key.to_owned()
    } else if clear {
        String::new()
    } else {
        // Kept by the API, as for any redacted secret sent back.
        model::record::REDACTED.to_owned()
    };
    if stored.is_some() || !key_value.is_empty() && key_value != model::record::REDACTED {
        body.insert("pre_shared_key".to_owned(), Value::String(key_value));
    }
    let mut peers = Vec::new();
    let mut errors = Vec::new();
    for index in 0..PEER_FIELDS_MAX {
        let text = super::form_value(&form, &format!("peer_{}", index + 1)).trim();
        if text.is_empty() {
            continue;
        }
        if text.parse::<std::net::Ipv4Addr>().is_err() {
            errors.push(FieldError {
                field: format!("peers[{index}]"),
                message: "is not an IPv4 address".to_owned(),
            });
        }
        peers.push(Value::String(text.to_owned()));
    }
    let standalone = peers.is_empty();
    body.insert("peers".to_owned(), Value::Array(peers));
    let saved = if errors.is_empty() {
        records::save(&app, &user.name, Some(&user.token), RecordKind::Cluster, None, body)
            .await
            .map_err(ApiError::from)
            .map(|_| ())
    } else {
        // Peer fields are numbered on the page, so a skipped blank keeps its number here.
        Err(forms::decoding_error(errors))
    };
    let delete_bridges = !super::form_value(&form, "delete_bridges").is_empty();
    let saved = match saved {
        // Only once standalone: from a clustered peer a deletion would replicate.
        Ok(()) if delete_bridges && standalone => {
            delete_bridges_after_leaving(&app, &user.name).await
        }
        Ok(()) => Ok(0),
        Err(error) => Err(error),
    };
    match saved {
        Ok(0) => see_other("/system/clustering?saved=1"),
        Ok(deleted) => see_other(&format!("/system/clustering?saved=1&bridges_deleted={deleted}")),
        Err(error) => {
            let body =
                clustering_body(&user, &app, stored.as_ref(), Some(&form), Some(&error), None);
            (error.status(), page("Clustering", Some(&user), &body)).into_response()
        }
    }
}
