//! The API's handlers, each thin: extract, call a service, answer as JSON.

use super::extract::{Admin, JsonBody, Query, Ready};
use super::{ApiError, BodyReader, PASSWORD_HEADER};
use crate::adapters::Source;
use crate::base::clock::format_ms;
use crate::base::{auth, version};
use crate::services::accounts::{self, Via};
use crate::services::history::{self, LogQuery, Page};
use crate::services::records::{self, show};
use crate::services::{App, Error, Input, backups, cluster_join, restore, upgrades};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{Record, RecordKey, RecordKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Answer<T = Json<Value>> = Result<T, ApiError>;

fn body_error(error: &serde_json::Error) -> ApiError {
    Error::body(error).into()
}

/// A JSON body as the typed request `T`.
fn request<T: serde::de::DeserializeOwned>(body: serde_json::Map<String, Value>) -> Answer<T> {
    serde_json::from_value(Value::Object(body)).map_err(|error| body_error(&error))
}

fn to_json(value: impl serde::Serialize) -> Answer {
    Ok(Json(serde_json::to_value(value).map_err(ApiError::internal)?))
}

// ---- records -------------------------------------------------------------------------------

pub(super) async fn list(_: Ready, State(app): State<Arc<App>>, kind: RecordKind) -> Answer {
    let records = records::list(&app, kind).await?;
    Ok(Json(Value::Array(records.iter().map(show).collect())))
}

pub(super) async fn read_one(
    _: Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    name: String,
) -> Answer {
    Ok(Json(show(&records::read(&app, RecordKey { kind, name }).await?)))
}

pub(super) async fn create(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    JsonBody(body): JsonBody,
) -> Answer<(StatusCode, Json<Value>)> {
    let shown = records::create(&app, &admin.name, kind, body).await?;
    Ok((StatusCode::CREATED, Json(shown)))
}

/// PUT: replaces a named record that must exist, or sets a singleton.
pub(super) async fn save(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    path_name: Option<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let token = admin.token.as_deref();
    Ok(Json(records::save(&app, &admin.name, token, kind, path_name, body).await?))
}

pub(super) async fn remove(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    name: String,
) -> Answer<StatusCode> {
    records::remove(&app, &admin.name, kind, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- sessions and password -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

pub(super) async fn login(
    Source(source): Source,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer<(StatusCode, Json<Value>)> {
    let login: LoginRequest = request(body)?;
    let session =
        accounts::log_in(&app, source, &login.username, &login.password, Via::Api).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": session.token,
            "user": session.admin.name,
            "must_change_password": session.admin.must_change_password,
            "idle_timeout_s": auth::SESSION_IDLE_TIMEOUT_MS / 1000,
        })),
    ))
}

pub(super) async fn logout(admin: Admin, State(app): State<Arc<App>>) -> Answer<StatusCode> {
    let token = admin.token.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_session",
            "this request used Basic authentication, not a session",
        )
    })?;
    accounts::log_out(&app, &admin.name, &token, Via::Api);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub(super) async fn change_password(
    admin: Admin,
    Source(source): Source,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer {
    let change: PasswordChange = request(body)?;
    let token = admin.token.as_deref();
    let (current, new) = (&change.current_password, change.new_password.clone());
    accounts::change_own_password(&app, source, &admin.name, token, current, new).await?;
    Ok(Json(json!({"message": "password changed"})))
}

// ---- status, health, upgrade, policy, cluster ----------------------------------------------

pub(super) async fn status(_: Ready, State(app): State<Arc<App>>) -> Answer {
    let (log_position, projections_position) = app
        .readers
        .read(|conn| Ok((eventlog::last_position(conn)?, projections::position(conn)?)))
        .await
        .map_err(Error::from)?;
    let now = crate::base::clock::now_ms();
    Ok(Json(json!({
        "product": "Baton",
        "version": version::software_version(),
        "peer_id": app.writer.peer_id().to_hex(),
        "started": format_ms(app.started_ms),
        "uptime_s": now.saturating_sub(app.started_ms) / 1000,
        "log_position": log_position,
        "projections_position": projections_position,
        "projections_current": projections_position == log_position,
        "cluster": app.cluster.status(),
        "hardware_serial": app.hardware_serial.as_ref().ok(),
        "hardware_serial_problem": app.hardware_serial.as_ref().err(),
        "platform": app.platform.status(),
    })))
}

/// The health gate's probe (`baton-health-gate.service`, which blesses a boot on trial): the
/// daemon answers, the event log opens on a fresh read connection, and the projections have
/// applied every event. Without credentials: the gate has none, and this reveals no more than
/// positions and the version.
pub(super) async fn health(State(app): State<Arc<App>>) -> Response {
    let read = app
        .readers
        .read(|conn| Ok((eventlog::last_position(conn)?, projections::position(conn)?)))
        .await;
    let version = version::software_version();
    let (status, body) = match read {
        Ok((log_position, projections_position)) => {
            let current = projections_position == log_position;
            let mut problems = Vec::new();
            if !current {
                problems.push(format!(
                    "the projections are at {projections_position}, the event log at {log_position}"
                ));
            }
            let status = if current { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = json!({
                "healthy": current,
                "version": version,
                "log_opens": true,
                "log_position": log_position,
                "projections_position": projections_position,
                "projections_current": current,
                "problems": problems,
            });
            (status, body)
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "healthy": false,
                "version": version,
                "log_opens": false,
                "problems": [format!("the event log does not open: {error}")],
            }),
        ),
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpgradeQuery {
    /// Install an image older than the running software.
    allow_downgrade: Option<bool>,
    /// Reboot into the new slot as soon as it is installed.
    reboot: Option<bool>,
}

pub(super) async fn upgrade_status(_: Ready, State(app): State<Arc<App>>) -> Answer {
    to_json(upgrades::status_of(&app).await?)
}

/// The image is the request body, streamed: it is checked and written as it arrives and never
/// held in memory.
pub(super) async fn upgrade_install(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<UpgradeQuery>,
    body: axum::body::Body,
) -> Answer {
    use futures_util::TryStreamExt as _;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let image = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let allow_downgrade = query.allow_downgrade.unwrap_or(false);
    let installed = upgrades::install(&app, &admin.name, image, allow_downgrade).await?;
    if query.reboot.unwrap_or(false) {
        upgrades::reboot(&app, &admin.name).await?;
    }
    to_json(installed)
}

pub(super) async fn upgrade_reboot(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
) -> Answer<StatusCode> {
    upgrades::reboot(&app, &admin.name).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The policy service on this peer: whether it serves, and each bridge's health as seen here.
pub(super) async fn policy_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<crate::services::policy::PolicyStatus> {
    Json(app.policy.status().await)
}

/// Each peer of this peer's list as the operator sees it: "This system", "Active as …", or
/// the reason it is not.
pub(super) async fn cluster_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<crate::services::cluster::ClusterStatus> {
    Json(app.cluster.status())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MemberQuery {
    /// The member's admin URL, `https://address[:port]`.
    url: String,
}

/// The SHA-256 fingerprint of the certificate a cluster member presents, to be checked
/// against its Status page before joining through it.
pub(super) async fn member_certificate(_: Ready, Query(query): Query<MemberQuery>) -> Answer {
    let sha256 = cluster_join::member_fingerprint(&query.url).await.map_err(Error::from)?;
    Ok(Json(json!({"member_url": query.url, "sha256": sha256})))
}

/// This peer joins the cluster of the member named in the body (see `cluster_join`), and
/// answers once every link is active.
pub(super) async fn cluster_join(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer {
    let join: cluster_join::JoinRequest = request(body)?;
    to_json(cluster_join::run(&app, &admin.name, &join).await.map_err(Error::from)?)
}

// ---- configuration, history, logs ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AtQuery {
    at: Option<String>,
}

fn records_json<'a>(records: impl Iterator<Item = &'a Record>) -> Value {
    Value::Array(records.map(show).collect())
}

pub(super) async fn config(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<AtQuery>,
) -> Answer {
    let (at_ms, records) = history::config_records(&app, query.at.as_deref()).await?;
    Ok(Json(json!({"at": format_ms(at_ms), "records": records_json(records.iter())})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQuery {
    from: String,
    to: Option<String>,
}

pub(super) async fn config_diff(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<DiffQuery>,
) -> Answer {
    let (from_ms, to_ms, changes) =
        history::config_diff(&app, &query.from, query.to.as_deref()).await?;
    let changes: Vec<Value> = changes
        .iter()
        .map(|change| {
            json!({
                "kind": change.key.kind.as_str(),
                "name": change.key.name,
                "before": change.before.as_ref().map(show),
                "after": change.after.as_ref().map(show),
            })
        })
        .collect();
    Ok(Json(json!({"from": format_ms(from_ms), "to": format_ms(to_ms), "changes": changes})))
}

fn page_json<T>(page: &Page<T>, row: impl Fn(&T) -> Value) -> Json<Value> {
    let entries: Vec<Value> = page.entries.iter().map(row).collect();
    Json(json!({"entries": entries, "next_before": page.next_before}))
}

fn config_log_json(entry: &projections::ConfigLogEntry) -> Value {
    json!({
        "position": entry.position,
        "at": format_ms(entry.at_ms),
        "origin": entry.origin,
        "actor": entry.actor,
        "action": entry.action,
        "kind": entry.kind,
        "name": entry.name,
        "before": entry.before,
        "after": entry.after,
    })
}

pub(super) async fn configuration_log(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<LogQuery>,
) -> Answer {
    let page = history::config_log(&app, history::config_log_filter(query)?).await?;
    Ok(page_json(&page, config_log_json))
}

pub(super) async fn record_history(
    _: Ready,
    State(app): State<Arc<App>>,
    Path((kind, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Answer {
    let filter = history::record_history_filter(&kind, name, query)?;
    Ok(page_json(&history::config_log(&app, filter).await?, config_log_json))
}

pub(super) async fn event_log(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<LogQuery>,
) -> Answer {
    let page = history::event_log(&app, history::journal_filter(query)?).await?;
    Ok(page_json(&page, |entry| {
        json!({
            "id": entry.id,
            "at": format_ms(entry.at_ms),
            "level": format!("{:?}", entry.level).to_lowercase(),
            "kind": entry.kind,
            "actor": entry.actor,
            "message": entry.message,
        })
    }))
}

// ---- backup and restore --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    password: Option<String>,
}

/// Streams a backup archive (encrypted when the optional JSON body gives a password). The
/// copy is taken from a read connection, so the daemon keeps serving.
pub(super) async fn create_backup(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Answer<Response> {
    let backup: BackupRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BackupRequest { password: None }
    } else {
        serde_json::from_slice(&body).map_err(|error| body_error(&error))?
    };
    backup_download(&app, &admin.name, backup.password).await
}

/// A backup streamed as a download (`Content-Disposition: attachment`), for the API and the
/// web page alike.
pub(crate) async fn backup_download(
    app: &App,
    actor: &str,
    password: Option<String>,
) -> Answer<Response> {
    let download = restore::download(app, actor, password).await?;
    let rest = futures_util::stream::unfold(download.rest, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk.map(axum::body::Bytes::from), chunks))
    });
    let first = axum::body::Bytes::from(download.first);
    let stream =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), rest);
    let content_type =
        if download.encrypted { "application/octet-stream" } else { "application/gzip" };
    let disposition = format!("attachment; filename=\"{}\"", download.file_name);
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// The running (or last) backup or restore.
pub(super) async fn backup_progress(_: Ready, State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({"operation": app.operations.progress()}))
}

/// The archive as the body, streamed; the password of an encrypted one in
/// `X-Baton-Backup-Password`. Refused (and nothing changed) unless the archive verifies,
/// belongs to this machine and this peer is standalone; otherwise applied without a restart.
pub(super) async fn restore(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Answer {
    let password = match headers.get(PASSWORD_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            let error =
                Error::invalid(Input::Header, "the backup password header must be visible ASCII");
            restore::refused(&app, &admin.name, error)
        })?),
    };
    let operation = restore::begin(&app, &admin.name)?;
    let runtime = tokio::runtime::Handle::current();
    let reader = BodyReader::new(runtime, body, backups::RESTORE_BODY_BYTES_MAX);
    let over_limit = reader.over_limit.clone();
    let staging_dir = app.data_dir.join(backups::STAGING_DIR);
    let (staged, operation) =
        restore::stage(&app, &admin.name, operation, reader, over_limit, password, staging_dir)
            .await?;
    Ok(Json(restored_json(restore::apply(&app, &admin.name, &staged, operation).await?)))
}

/// The answer to an applied restore, for the API and the web page.
fn restored_json(restored: restore::Restored) -> Value {
    json!({
        "message": "restored",
        "manifest": restored.manifest,
        "safety_database": restored.applied.safety_database,
        "safety_files_dir": restored.applied.safety_files_dir,
        "files": restored.applied.files,
    })
}
