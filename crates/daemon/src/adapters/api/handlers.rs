//! The API's handlers, each thin: extract, call a service, answer as JSON.

use super::extract::{Admin, JsonBody, Query, Ready};
use super::{ApiError, BodyReader, PASSWORD_HEADER};
use crate::adapters::Source;
use crate::base::clock::format_ms;
use crate::base::{auth, version};
use crate::services::accounts::{self, Via};
use crate::services::history::{self, LogQuery, Page};
use crate::services::records;
use crate::services::{App, Error, Input, alarms, backups, cluster_join, restore, upgrades};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{Record, RecordKey, RecordKind};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

type Answer<T> = Result<T, ApiError>;

fn body_error(error: &serde_json::Error) -> ApiError {
    Error::body(error).into()
}

/// A JSON body as the typed request `T`.
fn request<T: serde::de::DeserializeOwned>(body: serde_json::Map<String, Value>) -> Answer<T> {
    serde_json::from_value(Value::Object(body)).map_err(|error| body_error(&error))
}

// ---- records -------------------------------------------------------------------------------

pub(super) async fn list(
    _: Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
) -> Answer<Json<Vec<Record>>> {
    let records = records::list(&app, kind);
    Ok(Json(records.iter().map(Record::redacted).collect()))
}

pub(super) async fn read_one(
    _: Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    name: String,
) -> Answer<Json<Record>> {
    Ok(Json(records::read(&app, RecordKey { kind, name })?.redacted()))
}

pub(super) async fn create(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    JsonBody(body): JsonBody,
) -> Answer<(StatusCode, Json<Record>)> {
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
) -> Answer<Json<Record>> {
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

pub(super) async fn login(
    Source(source): Source,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer<(StatusCode, Json<::api::LoginAnswer>)> {
    let login: ::api::LoginRequest = request(body)?;
    let session =
        accounts::log_in(&app, source, &login.username, &login.password, Via::Api).await?;
    let answer = ::api::LoginAnswer {
        token: session.token,
        user: session.admin.name,
        must_change_password: session.admin.must_change_password,
        idle_timeout_s: auth::SESSION_IDLE_TIMEOUT_MS / 1000,
    };
    Ok((StatusCode::CREATED, Json(answer)))
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

pub(super) async fn change_password(
    admin: Admin,
    Source(source): Source,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer<Json<::api::Message>> {
    let change: ::api::PasswordChange = request(body)?;
    let token = admin.token.as_deref();
    let (current, new) = (&change.current_password, change.new_password.clone());
    accounts::change_own_password(&app, source, &admin.name, token, current, new).await?;
    Ok(Json(::api::Message { message: "password changed".to_owned() }))
}

// ---- status, health, upgrade, policy, cluster ----------------------------------------------

pub(super) async fn status(_: Ready, State(app): State<Arc<App>>) -> Answer<Json<::api::Status>> {
    let (log_position, projections_position) = app
        .readers
        .read(|conn| Ok((eventlog::last_position(conn)?, projections::position(conn)?)))
        .await
        .map_err(Error::from)?;
    let now = crate::base::clock::now_ms();
    Ok(Json(::api::Status {
        product: "Baton".to_owned(),
        version: version::software_version().to_owned(),
        peer_id: app.writer.peer_id().to_hex(),
        started: format_ms(app.started_ms),
        uptime_s: now.saturating_sub(app.started_ms) / 1000,
        log_position,
        projections_position,
        projections_current: projections_position == log_position,
        cluster: app.cluster.status(),
        hardware_serial: app.hardware_serial.as_ref().ok().cloned(),
        hardware_serial_problem: app.hardware_serial.as_ref().err().cloned(),
        platform: app.platform.status(),
    }))
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
    let version = version::software_version().to_owned();
    let stopped =
        app.writer.stopped().map(|why| format!("the database takes no more changes: {why}"));
    let (status, body) = match read {
        Ok((log_position, projections_position)) => {
            let current = projections_position == log_position;
            let mut problems = Vec::new();
            if !current {
                problems.push(format!(
                    "the projections are at {projections_position}, the event log at {log_position}"
                ));
            }
            let healthy = current && stopped.is_none();
            problems.extend(stopped);
            let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = ::api::Health {
                healthy,
                version,
                log_opens: true,
                log_position: Some(log_position),
                projections_position: Some(projections_position),
                projections_current: Some(current),
                problems,
            };
            (status, body)
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ::api::Health {
                healthy: false,
                version,
                log_opens: false,
                log_position: None,
                projections_position: None,
                projections_current: None,
                problems: std::iter::once(format!("the event log does not open: {error}"))
                    .chain(stopped)
                    .collect(),
            },
        ),
    };
    (status, Json(body)).into_response()
}

pub(super) async fn upgrade_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Answer<Json<::api::UpgradeStatus>> {
    Ok(Json(upgrades::status_of(&app).await?))
}

/// The image is the request body, streamed: it is checked and written as it arrives and never
/// held in memory.
pub(super) async fn upgrade_install(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<::api::UpgradeQuery>,
    body: axum::body::Body,
) -> Answer<Json<::api::Installed>> {
    use futures_util::TryStreamExt as _;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let image = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let allow_downgrade = query.allow_downgrade.unwrap_or(false);
    let installed = upgrades::install(&app, &admin.name, image, allow_downgrade).await?;
    if query.reboot.unwrap_or(false) {
        upgrades::reboot(&app, &admin.name).await?;
    }
    Ok(Json(installed))
}

pub(super) async fn upgrade_reboot(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
) -> Answer<StatusCode> {
    upgrades::reboot(&app, &admin.name).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The active alarms, most severe first.
pub(super) async fn alarms(_: Ready, State(app): State<Arc<App>>) -> Json<api::Alarms> {
    Json(alarms::view(&app))
}

pub(super) async fn acknowledge_alarm(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer<StatusCode> {
    let request: api::AlarmAcknowledge = request(body)?;
    alarms::acknowledge(&app, &request.id, &request.subject, &admin.name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts the service, reboots or shuts down this peer (Maintenance > Restart options).
pub(super) async fn power(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    power: upgrades::Power,
) -> Answer<StatusCode> {
    upgrades::power(&app, &admin.name, power).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The policy service on this peer: whether it serves, and each bridge's health as seen here.
/// The metrics, as a Prometheus server scrapes them.
pub(super) async fn metrics(_: Ready, State(app): State<Arc<App>>) -> Answer<Response> {
    let text = crate::services::metrics::render(&app).await?;
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

pub(super) async fn policy_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<crate::services::policy::PolicyStatus> {
    Json(app.policy.status().await)
}

/// What a call to an alias would get now and why (no side effect).
pub(super) async fn policy_explain(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<::api::ExplainQuery>,
) -> Answer<Json<::api::Explanation>> {
    Ok(Json(app.policy.explain(&query.alias, query.source.as_deref())?))
}

/// The conferences the bridges host now, with their participants.
pub(super) async fn live_conferences(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<::api::LiveConferences> {
    Json(app.policy.live_conferences().await)
}

/// Pins the certificate a bridge presented (the operator compared it first).
pub(super) async fn pin_bridge_certificate(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer<Json<Record>> {
    let pin: api::PinRequest = request(body)?;
    Ok(Json(records::pin_presented_certificate(&app, &admin.name, name, pin.sha256).await?))
}

/// Each peer of this peer's list as the operator sees it: "This system", "Active as …", or
/// the reason it is not.
pub(super) async fn cluster_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<crate::services::cluster::ClusterStatus> {
    Json(app.cluster.status())
}

/// The SHA-256 fingerprint of the certificate a cluster member presents, to be checked
/// against its Status page before joining through it.
pub(super) async fn member_certificate(
    _: Ready,
    Query(query): Query<::api::MemberQuery>,
) -> Answer<Json<::api::MemberCertificate>> {
    let sha256 = cluster_join::member_fingerprint(&query.url).await.map_err(Error::from)?;
    Ok(Json(::api::MemberCertificate { member_url: query.url, sha256 }))
}

/// This peer joins the cluster of the member named in the body (see `cluster_join`), and
/// answers once every link is active.
pub(super) async fn cluster_join(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Answer<Json<::api::Joined>> {
    let join: ::api::JoinRequest = request(body)?;
    Ok(Json(cluster_join::run(&app, &admin.name, &join).await.map_err(Error::from)?))
}

// ---- configuration, history, logs ----------------------------------------------------------

pub(super) async fn config(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<::api::AtQuery>,
) -> Answer<Json<::api::ConfigAnswer>> {
    let (at_ms, records) = history::config_records(&app, query.at.as_deref()).await?;
    let records = records.iter().map(Record::redacted).collect();
    Ok(Json(::api::ConfigAnswer { at: format_ms(at_ms), records }))
}

pub(super) async fn config_diff(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<::api::DiffQuery>,
) -> Answer<Json<::api::ConfigDiff>> {
    let (from_ms, to_ms, changes) =
        history::config_diff(&app, &query.from, query.to.as_deref()).await?;
    let changes = changes
        .iter()
        .map(|change| ::api::RecordChange {
            kind: change.key.kind,
            name: change.key.name.clone(),
            before: change.before.as_ref().map(Record::redacted),
            after: change.after.as_ref().map(Record::redacted),
        })
        .collect();
    Ok(Json(::api::ConfigDiff { from: format_ms(from_ms), to: format_ms(to_ms), changes }))
}

fn page_json<T, R>(page: &Page<T>, row: impl Fn(&T) -> R) -> Json<::api::Page<R>> {
    Json(::api::Page {
        entries: page.entries.iter().map(row).collect(),
        next_before: page.next_before,
    })
}

fn config_log_json(
    entry: &projections::ConfigLogEntry,
    names: &HashMap<String, String>,
) -> ::api::ConfigLogEntry {
    ::api::ConfigLogEntry {
        position: entry.position,
        at: format_ms(entry.at_ms),
        origin: entry.origin.clone(),
        origin_name: names.get(&entry.origin).cloned(),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        kind: entry.kind.clone(),
        name: entry.name.clone(),
        before: entry.before.clone(),
        after: entry.after.clone(),
    }
}

pub(super) async fn configuration_log(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<LogQuery>,
) -> Answer<Json<::api::Page<::api::ConfigLogEntry>>> {
    let filter = history::config_log_filter(query, app.writer.peer_id())?;
    let page = history::config_log(&app, filter).await?;
    let names = history::origin_names(&app);
    Ok(page_json(&page, |entry| config_log_json(entry, &names)))
}

pub(super) async fn record_history(
    _: Ready,
    State(app): State<Arc<App>>,
    Path((kind, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Answer<Json<::api::Page<::api::ConfigLogEntry>>> {
    let filter = history::record_history_filter(&kind, name, query)?;
    let names = history::origin_names(&app);
    let page = history::config_log(&app, filter).await?;
    Ok(page_json(&page, |entry| config_log_json(entry, &names)))
}

pub(super) async fn verify_log(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Answer<Json<::api::LogVerification>> {
    Ok(Json(history::verify_log(&app).await?))
}

pub(super) async fn event_log(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<LogQuery>,
) -> Answer<Json<::api::Page<::api::EventLogEntry>>> {
    let page = history::event_log(&app, history::journal_filter(query)?).await?;
    Ok(page_json(&page, |entry| ::api::EventLogEntry {
        id: entry.id,
        at: format_ms(entry.at_ms),
        level: match entry.level {
            eventlog::Level::Info => ::api::LogLevel::Info,
            eventlog::Level::Warning => ::api::LogLevel::Warning,
            eventlog::Level::Error => ::api::LogLevel::Error,
        },
        kind: entry.kind.clone(),
        actor: entry.actor.clone(),
        message: entry.message.clone(),
    }))
}

// ---- backup and restore --------------------------------------------------------------------

/// Streams a backup archive (encrypted when the optional JSON body gives a password). The
/// copy is taken from a read connection, so the daemon keeps serving.
pub(super) async fn create_backup(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Answer<Response> {
    let backup: ::api::BackupRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ::api::BackupRequest { password: None }
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
pub(super) async fn backup_progress(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<::api::BackupProgress> {
    Json(::api::BackupProgress { operation: app.operations.progress() })
}

/// The archive as the body, streamed; the password of an encrypted one in
/// `X-Baton-Backup-Password`. Refused (and nothing changed) unless the archive verifies,
/// belongs to this machine and this peer is standalone; otherwise applied without a restart.
pub(super) async fn restore(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Answer<Json<::api::Restored>> {
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

/// The answer to an applied restore.
fn restored_json(restored: restore::Restored) -> ::api::Restored {
    let path = |path: &std::path::Path| path.display().to_string();
    ::api::Restored {
        message: "restored".to_owned(),
        manifest: manifest_answer(&restored.manifest),
        safety_database: path(&restored.applied.safety_database),
        safety_files_dir: restored.applied.safety_files_dir.as_deref().map(path),
        files: restored.applied.files,
    }
}

/// A backup's manifest as the API shows it.
fn manifest_answer(manifest: &backup::Manifest) -> ::api::BackupManifest {
    ::api::BackupManifest {
        format: manifest.format,
        product: manifest.product.clone(),
        software_version: manifest.software_version.clone(),
        hardware_serial: manifest.hardware_serial.clone(),
        created_at_ms: manifest.created_at_ms,
        peer_id: manifest.peer_id.clone(),
        heads: manifest
            .heads
            .iter()
            .map(|head| ::api::ChainHead {
                origin: head.origin.clone(),
                stream: head.stream.clone(),
                seq: head.seq,
                hash: head.hash.clone(),
            })
            .collect(),
        members: manifest
            .members
            .iter()
            .map(|member| ::api::ArchiveMember {
                name: member.name.clone(),
                size_bytes: member.size_bytes,
                sha256: member.sha256.clone(),
            })
            .collect(),
    }
}
