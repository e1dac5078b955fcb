//! The admin API: JSON over HTTPS under `/api/v1`. Every change goes through the writer as a
//! command with the authenticated administrator as its actor, so the Configuration Log is the
//! audit trail. Errors are JSON `{"error": {"code", "message", "fields": [{"field", "message"}]}}`
//! with stable codes.

pub mod openapi;

use crate::base::auth::{self, Sessions};
use crate::store::{ReadError, Readers, StoreError, Writer};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use eventlog::{JournalQuery, Level, NewJournalEntry};
use model::{Command, FieldError, Record, RecordKey, RecordKind, Rejection};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest request body; the biggest legitimate one is a certificates record.
pub const BODY_BYTES_MAX: usize = 256 * 1024;
/// Requests served at once; more wait in the kernel's accept queue.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
pub const API_PREFIX: &str = "/api/v1";
/// Password checks run at once. Each argon2id check takes ~19 MiB and tens of milliseconds,
/// so unbounded checks would let anyone exhaust memory with bogus logins.
pub const PASSWORD_CHECKS_IN_FLIGHT_MAX: usize = 4;

pub struct App {
    pub writer: Writer,
    pub readers: Readers,
    pub sessions: Sessions,
    pub started_ms: u64,
    pub password_checks: tokio::sync::Semaphore,
    /// The live TLS configuration of the admin API, swapped when the certificates change.
    pub tls: axum_server::tls_rustls::RustlsConfig,
    pub tls_files: crate::base::tls::TlsFiles,
    pub cluster: Arc<crate::services::cluster::Board>,
    pub upgrade: Arc<crate::services::upgrades::UpgradeService>,
    /// For the web Status page: bridge health as the policy service sees it.
    pub policy: Arc<crate::services::policy::PolicyService>,
    /// Holds the database, the TLS identity, safety copies and the restore staging folder.
    pub data_dir: std::path::PathBuf,
    /// This machine's hardware serial (`backup::hardware_serial`), or why it is unknown.
    pub hardware_serial: Result<String, String>,
    /// The backup or restore running, if any, and its progress.
    pub operations: crate::services::backups::Operations,
    /// Peer-local settings applied to the operating system, and the latest results.
    pub platform: Arc<crate::services::platform::PlatformService>,
}

pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/api/v1/sessions", post(login))
        .route("/api/v1/sessions/current", axum::routing::delete(logout))
        .route("/api/v1/password", post(change_password))
        .route("/api/v1/status", get(status))
        .route("/api/v1/health", get(health))
        .route("/api/v1/cluster/status", get(cluster_status))
        .route("/api/v1/cluster/member-certificate", get(member_certificate))
        .route("/api/v1/cluster/join", post(cluster_join))
        .route(
            "/api/v1/upgrade",
            get(upgrade_status)
                .post(upgrade_install)
                .layer(DefaultBodyLimit::max(UPGRADE_IMAGE_BYTES_MAX)),
        )
        .route("/api/v1/upgrade/reboot", post(upgrade_reboot))
        .route("/api/v1/policy/status", get(policy_status))
        .route("/api/v1/config", get(config))
        .route("/api/v1/config/diff", get(config_diff))
        .route("/api/v1/history/{collection}/{name}", get(history))
        .route("/api/v1/logs/configuration", get(configuration_log))
        .route("/api/v1/logs/events", get(event_log))
        .route("/api/v1/backups", post(create_backup))
        .route("/api/v1/backups/progress", get(backup_progress))
        .route(
            "/api/v1/restore",
            // The archive is streamed, never buffered; the limit is enforced while reading.
            post(restore).layer(DefaultBodyLimit::max(
                usize::try_from(crate::services::backups::RESTORE_BODY_BYTES_MAX)
                    .unwrap_or(usize::MAX),
            )),
        )
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document()) }));
    for &kind in RecordKind::ALL {
        let collection = format!("{API_PREFIX}/{}", kind.collection());
        if kind.is_singleton() {
            router = router.route(
                &collection,
                get(move |a: Ready, s: State<Arc<App>>| {
                    read_one(a, s, kind, kind.as_str().to_owned())
                })
                .put(move |a: Ready, s: State<Arc<App>>, b: JsonBody| save(a, s, kind, None, b))
                .delete(move |a: Ready, s: State<Arc<App>>| {
                    remove(a, s, kind, kind.as_str().to_owned())
                }),
            );
        } else {
            router = router
                .route(
                    &collection,
                    get(move |a: Ready, s: State<Arc<App>>| list(a, s, kind)).post(
                        move |a: Ready, s: State<Arc<App>>, b: JsonBody| create(a, s, kind, b),
                    ),
                )
                .route(
                    &format!("{collection}/{{name}}"),
                    get(move |a: Ready, s: State<Arc<App>>, Path(name): Path<String>| {
                        read_one(a, s, kind, name)
                    })
                    .put(
                        move |a: Ready,
                              s: State<Arc<App>>,
                              Path(name): Path<String>,
                              b: JsonBody| {
                            save(a, s, kind, Some(name), b)
                        },
                    )
                    .delete(
                        move |a: Ready, s: State<Arc<App>>, Path(name): Path<String>| {
                            remove(a, s, kind, name)
                        },
                    ),
                );
        }
    }
    router
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower::limit::ConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
        .with_state(app)
}

// ---- errors --------------------------------------------------------------------------------

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldError>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError { status, code, message: message.into(), fields: Vec::new() }
    }

    pub(crate) fn field(
        status: StatusCode,
        code: &'static str,
        field: &str,
        message: impl Into<String>,
    ) -> ApiError {
        let message = message.into();
        ApiError {
            status,
            code,
            message: format!("{field}: {message}"),
            fields: vec![FieldError { field: field.to_owned(), message }],
        }
    }

    fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in with an administrator account",
        )
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the Event Log",
        )
    }
}

/// Read access for the web pages, which show the same errors as HTML.
impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn fields(&self) -> &[FieldError] {
        &self.fields
    }

    pub(crate) fn set_fields(&mut self, fields: Vec<FieldError>) {
        self.fields = fields;
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "fields": self.fields}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"baton\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Rejected(rejection) => rejection.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> ApiError {
        ApiError::internal(error)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let message = rejection.to_string();
        match rejection {
            Rejection::Invalid { errors } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_fields",
                message,
                fields: errors,
            },
            Rejection::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            Rejection::AlreadyExists { .. } => {
                ApiError::field(StatusCode::CONFLICT, "already_exists", "name", message)
            }
            Rejection::InUse { .. } => ApiError::new(StatusCode::CONFLICT, "in_use", message),
            Rejection::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
        }
    }
}

// ---- extractors ----------------------------------------------------------------------------

/// An authenticated administrator, who may still have to change the factory password.
pub struct Admin {
    pub name: String,
    pub must_change_password: bool,
    pub token: Option<String>,
}

/// An authenticated administrator allowed to do anything.
pub struct Ready(pub Admin);

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, ApiError> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(ApiError::unauthenticated)?;
        if let Some(token) = authorization.strip_prefix("Bearer ") {
            let name = app.sessions.user(token, now_ms()).ok_or_else(ApiError::unauthenticated)?;
            let admin = lookup_admin(app, &name).await?.ok_or_else(ApiError::unauthenticated)?;
            return Ok(Admin {
                name,
                must_change_password: admin.must_change_password,
                token: Some(token.to_owned()),
            });
        }
        if let Some(encoded) = authorization.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(ApiError::unauthenticated)?;
            let (name, password) = decoded.split_once(':').ok_or_else(ApiError::unauthenticated)?;
            let admin = check_password(app, name, password).await?;
            return Ok(Admin {
                name: admin.name,
                must_change_password: admin.must_change_password,
                token: None,
            });
        }
        Err(ApiError::unauthenticated())
    }
}

impl FromRequestParts<Arc<App>> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Ready, ApiError> {
        let admin = Admin::from_request_parts(parts, app).await?;
        if admin.must_change_password {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "the factory default password must be changed first: POST /api/v1/password",
            ));
        }
        Ok(Ready(admin))
    }
}

/// Query parameters, refused with a JSON error (naming the parameter) when they do not parse.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let field = text.split('`').nth(1).filter(|_| text.contains(" field `"));
                Err(match field {
                    Some(field) => ApiError::field(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        field,
                        text.clone(),
                    ),
                    None => ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", text),
                })
            }
        }
    }
}

/// A JSON request body, refused with a JSON error when too large, not JSON, or not an object.
pub struct JsonBody(pub serde_json::Map<String, Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<JsonBody, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value.split(';').next().is_some_and(|mime| mime.trim() == "application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request bodies are limited to {BODY_BYTES_MAX} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonBody(map)),
            Ok(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object",
            )),
            Err(error) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {error}"),
            )),
        }
    }
}

fn body_error(error: &serde_json::Error) -> ApiError {
    let text = error.to_string();
    // serde names the offending field between backticks: "unknown field `x`, expected …".
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"));
    let code = if text.starts_with("unknown field") { "unknown_field" } else { "invalid_body" };
    match field {
        Some(field) => ApiError::field(StatusCode::BAD_REQUEST, code, field, text.clone()),
        None => ApiError::new(StatusCode::BAD_REQUEST, code, text),
    }
}

// ---- helpers -------------------------------------------------------------------------------

pub fn now_ms() -> u64 {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn format_ms(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Accepts RFC 3339 (`2026-11-24T10:00:00Z`) or milliseconds since the epoch.
pub(crate) fn parse_time(field: &str, text: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            field,
            "must be RFC 3339 time or epoch milliseconds",
        )
    })?;
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn show(record: &Record) -> Value {
    let mut value = record.redacted().to_json();
    if let Value::Object(map) = &mut value {
        map.insert("kind".to_owned(), Value::String(record.kind().as_str().to_owned()));
    }
    value
}

pub(crate) async fn lookup_admin(
    app: &App,
    name: &str,
) -> Result<Option<model::record::Administrator>, ApiError> {
    let key = RecordKey { kind: RecordKind::Administrator, name: name.to_owned() };
    let record = app.readers.read(move |conn| Ok(projections::get(conn, &key)?)).await?;
    Ok(match record {
        Some(Record::Administrator(admin)) => Some(admin),
        _ => None,
    })
}

/// Verifies an administrator's password; failures are recorded in the Event Log.
pub(crate) async fn check_password(
    app: &App,
    name: &str,
    password: &str,
) -> Result<model::record::Administrator, ApiError> {
    let admin = lookup_admin(app, name).await?;
    let (hash, password_owned) =
        (admin.as_ref().map(|a| a.password_hash.clone()), password.to_owned());
    let _permit = app.password_checks.acquire().await.map_err(ApiError::internal)?;
    let verified = tokio::task::spawn_blocking(move || {
        // Hash even for an unknown user, so timing does not tell which names exist.
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        auth::verify_password(&password_owned, &hash)
    })
    .await
    .map_err(ApiError::internal)?;
    match admin {
        Some(admin) if verified => Ok(admin),
        _ => {
            app.writer.journal(journal_entry(
                Level::Warning,
                "login.failed",
                Some(name),
                "wrong user name or password",
            ));
            Err(ApiError::unauthenticated())
        }
    }
}

/// An argon2id hash of a random string, verified against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1yJbUSEQ3HYd5ONjQx5s8yNQ4x0HVqmEqN3PBXc0P5s";

pub(crate) fn journal_entry(
    level: Level,
    kind: &str,
    actor: Option<&str>,
    message: impl Into<String>,
) -> NewJournalEntry {
    NewJournalEntry {
        at_ms: now_ms(),
        level,
        kind: kind.to_owned(),
        actor: actor.map(str::to_owned),
        message: message.into(),
    }
}

async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

async fn root_hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || auth::hash_root_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Record kinds whose secret the API takes as `password` and stores only as a hash.
pub(crate) fn hashed_secret(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::Administrator | RecordKind::PolicyService | RecordKind::RootPassword)
}

/// Turns an API body into a record: hashes `password` where the record keeps only a hash, and
/// keeps stored secrets that the client sent back as the redaction placeholder.
async fn record_from_body(
    kind: RecordKind,
    mut body: serde_json::Map<String, Value>,
    existing: Option<&Record>,
) -> Result<Record, ApiError> {
    if hashed_secret(kind) {
        if body.get("password_hash").is_some_and(|hash| hash != model::record::REDACTED) {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "password_hash",
                "is computed by Baton: send `password` instead",
            ));
        }
        body.remove("password_hash");
        let hash = match body.remove("password") {
            Some(Value::String(password)) => {
                let problem = if kind == RecordKind::PolicyService {
                    // The VCS stores at most 30 characters for a policy service password.
                    (password.is_empty() || password.chars().count() > 30)
                        .then(|| "must be 1 to 30 characters".to_owned())
                } else {
                    auth::password_problem(&password)
                };
                if let Some(problem) = problem {
                    return Err(ApiError::field(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_fields",
                        "password",
                        problem,
                    ));
                }
                if kind == RecordKind::RootPassword {
                    root_hash(password).await?
                } else {
                    hash(password).await?
                }
            }
            Some(_) => {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "password",
                    "must be a string",
                ));
            }
            None if existing.is_some() => model::record::REDACTED.to_owned(),
            None => {
                return Err(ApiError::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_fields",
                    "password",
                    "is required",
                ));
            }
        };
        body.insert("password_hash".to_owned(), Value::String(hash));
    }
    let mut record =
        Record::from_json(kind, Value::Object(body)).map_err(|error| body_error(&error))?;
    if let Some(existing) = existing {
        record.keep_secrets_from(existing);
    }
    Ok(record)
}

async fn execute(app: &App, actor: &str, command: Command) -> Result<(), ApiError> {
    app.writer.execute(actor, command, now_ms()).await?;
    Ok(())
}

pub(crate) async fn current(app: &App, key: RecordKey) -> Result<Option<Record>, ApiError> {
    Ok(app.readers.read(move |conn| Ok(projections::get(conn, &key)?)).await?)
}

// ---- record handlers -----------------------------------------------------------------------

async fn list(
    _: Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
) -> Result<Json<Value>, ApiError> {
    let records = app.readers.read(move |conn| Ok(projections::list(conn, kind)?)).await?;
    Ok(Json(Value::Array(records.iter().map(show).collect())))
}

async fn read_one(
    _: Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    name: String,
) -> Result<Json<Value>, ApiError> {
    let key = RecordKey { kind, name };
    match current(&app, key.clone()).await? {
        Some(record) => Ok(Json(show(&record))),
        None => Err(Rejection::NotFound { key }.into()),
    }
}

async fn create(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let shown = create_record(&app, &admin.name, kind, body).await?;
    Ok((StatusCode::CREATED, Json(shown)))
}

/// Creates a record from an API body (or a web form turned into one); returns it redacted.
pub(crate) async fn create_record(
    app: &App,
    actor: &str,
    kind: RecordKind,
    body: serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let record = record_from_body(kind, body, None).await?;
    let shown = show(&record);
    execute(app, actor, Command::Create(record)).await?;
    Ok(shown)
}

/// PUT: replaces a named record that must exist, or sets a singleton.
async fn save(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    path_name: Option<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let token = admin.token.clone();
    Ok(Json(save_record(&app, &admin.name, token.as_deref(), kind, path_name, body).await?))
}

/// Replaces a named record that must exist (`path_name`), or sets a singleton; returns it
/// redacted. `token` is the acting session, kept when an administrator changes their own
/// password.
pub(crate) async fn save_record(
    app: &App,
    actor: &str,
    token: Option<&str>,
    kind: RecordKind,
    path_name: Option<String>,
    mut body: serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let name = path_name.clone().unwrap_or_else(|| kind.as_str().to_owned());
    if let Some(path_name) = &path_name {
        let name_field = if kind == RecordKind::LocationAddresses { "location" } else { "name" };
        match body.get(name_field) {
            None => {
                body.insert(name_field.to_owned(), Value::String(path_name.clone()));
            }
            Some(Value::String(body_name)) if body_name == path_name => {}
            Some(_) => {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    name_field,
                    "must match the name in the URL; records cannot be renamed",
                ));
            }
        }
    }
    let key = RecordKey { kind, name };
    let existing = current(app, key.clone()).await?;
    if path_name.is_some() && existing.is_none() {
        return Err(Rejection::NotFound { key }.into());
    }
    let record = record_from_body(kind, body, existing.as_ref()).await?;
    let shown = show(&record);
    // A new server certificate must load before it is saved, so a mistake never reaches the
    // listener; once saved it takes effect for new connections at once.
    let new_tls = match &record {
        Record::Certificates(certificates) => Some((
            certificates.clone(),
            crate::base::tls::configured_identity(&app.tls_files, Some(certificates)).map_err(
                |error| {
                    ApiError::field(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_fields",
                        "server_certificate_pem",
                        format!("{error:#}"),
                    )
                },
            )?,
        )),
        _ => None,
    };
    let command = if kind.is_singleton() { Command::Save(record) } else { Command::Update(record) };
    execute(app, actor, command).await?;
    if let Some((certificates, config)) = new_tls {
        app.tls.reload_from_config(config);
        announce_certificate(app, Some(&certificates));
    }
    if kind == RecordKind::Administrator && existing.is_some() {
        // A password changed by another administrator ends that account's other sessions.
        app.sessions.close_user(&key.name, token.filter(|_| actor == key.name));
    }
    Ok(shown)
}

async fn remove(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    kind: RecordKind,
    name: String,
) -> Result<StatusCode, ApiError> {
    remove_record(&app, &admin.name, kind, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a record (or resets a singleton), undoing its run-time effects.
pub(crate) async fn remove_record(
    app: &App,
    actor: &str,
    kind: RecordKind,
    name: String,
) -> Result<(), ApiError> {
    execute(app, actor, Command::Remove(RecordKey { kind, name: name.clone() })).await?;
    if kind == RecordKind::Certificates {
        // Back to the identity made on first start.
        let config = crate::base::tls::server_config(&app.tls_files)
            .map_err(|error| ApiError::internal(format!("{error:#}")))?;
        app.tls.reload_from_config(config);
        announce_certificate(app, None);
    }
    if kind == RecordKind::Administrator {
        app.sessions.close_user(&name, None);
    }
    Ok(())
}

// ---- sessions and password -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: LoginRequest =
        serde_json::from_value(Value::Object(body)).map_err(|error| body_error(&error))?;
    let admin = check_password(&app, &request.username, &request.password).await?;
    let token =
        app.sessions.open(&admin.name, now_ms()).ok_or_else(|| ApiError::internal("no session"))?;
    app.writer.journal(journal_entry(
        Level::Info,
        "login.succeeded",
        Some(&admin.name),
        "administrator logged in",
    ));
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "user": admin.name,
            "must_change_password": admin.must_change_password,
            "idle_timeout_s": auth::SESSION_IDLE_TIMEOUT_MS / 1000,
        })),
    ))
}

async fn logout(admin: Admin, State(app): State<Arc<App>>) -> Result<StatusCode, ApiError> {
    let token = admin.token.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_session",
            "this request used Basic authentication, not a session",
        )
    })?;
    app.sessions.close(&token);
    app.writer.journal(journal_entry(
        Level::Info,
        "logout",
        Some(&admin.name),
        "administrator logged out",
    ));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let request: PasswordChange =
        serde_json::from_value(Value::Object(body)).map_err(|error| body_error(&error))?;
    change_own_password(
        &app,
        &admin.name,
        admin.token.as_deref(),
        &request.current_password,
        request.new_password,
    )
    .await?;
    Ok(Json(json!({"message": "password changed"})))
}

/// Changes `name`'s own password after checking the current one; ends the account's other
/// sessions (all but `token`) and clears the forced change.
pub(crate) async fn change_own_password(
    app: &App,
    name: &str,
    token: Option<&str>,
    current_password: &str,
    new_password: String,
) -> Result<(), ApiError> {
    let mut account = check_password(app, name, current_password).await.map_err(|_| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fields",
            "current_password",
            "is not correct",
        )
    })?;
    if let Some(problem) = auth::password_problem(&new_password) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fields",
            "new_password",
            problem,
        ));
    }
    if new_password == current_password {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fields",
            "new_password",
            "must differ from the current password",
        ));
    }
    account.password_hash = hash(new_password).await?;
    account.must_change_password = false;
    execute(app, name, Command::Save(Record::Administrator(account))).await?;
    app.sessions.close_user(name, token);
    app.writer.journal(journal_entry(
        Level::Info,
        "password.changed",
        Some(name),
        "password changed",
    ));
    Ok(())
}

// ---- status, configuration, history, logs --------------------------------------------------

async fn status(_: Ready, State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let (log_position, projections_position) = app
        .readers
        .read(|conn| {
            let log_position = eventlog::last_position(conn)?;
            Ok((log_position, projections::position(conn)?))
        })
        .await?;
    let now = now_ms();
    Ok(Json(json!({
        "product": "Baton",
        "version": crate::base::version::software_version(),
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
async fn health(State(app): State<Arc<App>>) -> Response {
    let read = app
        .readers
        .read(|conn| Ok((eventlog::last_position(conn)?, projections::position(conn)?)))
        .await;
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
            (
                status,
                json!({
                    "healthy": current,
                    "version": crate::base::version::software_version(),
                    "log_opens": true,
                    "log_position": log_position,
                    "projections_position": projections_position,
                    "projections_current": current,
                    "problems": problems,
                }),
            )
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "healthy": false,
                "version": crate::base::version::software_version(),
                "log_opens": false,
                "problems": [format!("the event log does not open: {error}")],
            }),
        ),
    };
    (status, Json(body)).into_response()
}

/// The largest upgrade image accepted: a root file system slot and its header.
pub const UPGRADE_IMAGE_BYTES_MAX: usize = 4 * 1024 * 1024 * 1024 + 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpgradeQuery {
    /// Install an image older than the running software.
    allow_downgrade: Option<bool>,
    /// Reboot into the new slot as soon as it is installed.
    reboot: Option<bool>,
}

fn upgrade_error(error: crate::services::upgrades::UpgradeError) -> ApiError {
    use crate::services::upgrades::UpgradeError;
    match error {
        UpgradeError::Upgrade(error) if error.is_refusal() => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "upgrade_refused", error.to_string())
        }
        UpgradeError::Busy => {
            ApiError::new(StatusCode::CONFLICT, "upgrade_busy", UpgradeError::Busy.to_string())
        }
        other => ApiError::internal(other),
    }
}

async fn upgrade_status(_: Ready, State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let status = upgrade_status_of(&app).await?;
    Ok(Json(serde_json::to_value(status).map_err(ApiError::internal)?))
}

/// The upgrade service's status, read off the async runtime (boot entries are files).
pub(crate) async fn upgrade_status_of(
    app: &App,
) -> Result<crate::services::upgrades::UpgradeStatus, ApiError> {
    let service = app.upgrade.clone();
    tokio::task::spawn_blocking(move || service.status())
        .await
        .map_err(ApiError::internal)?
        .map_err(upgrade_error)
}

/// The image is the request body, streamed: it is checked and written as it arrives and never
/// held in memory.
async fn upgrade_install(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<UpgradeQuery>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    use futures_util::TryStreamExt as _;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let image = tokio_util::io::SyncIoBridge::new(reader);
    let installed =
        install_upgrade(&app, &admin.name, image, query.allow_downgrade.unwrap_or(false)).await?;
    if query.reboot.unwrap_or(false) {
        reboot(&app, &admin.name).await?;
    }
    Ok(Json(serde_json::to_value(installed).map_err(ApiError::internal)?))
}

/// Installs the image read from `image` into the inactive slot (as the API and the web page
/// do), journaling the outcome; a refusal wrote nothing.
pub(crate) async fn install_upgrade(
    app: &App,
    actor: &str,
    mut image: impl std::io::Read + Send + 'static,
    allow_downgrade: bool,
) -> Result<crate::services::upgrades::InstalledView, ApiError> {
    let service = app.upgrade.clone();
    let installed = tokio::task::spawn_blocking(move || {
        let installed = service.install(&mut image, allow_downgrade);
        if installed.is_err() {
            // Most refusals come after the header, long before the body ends. Answering then
            // would close the connection under a client still sending, which sees a broken
            // upload instead of the reason: read the rest (bounded by the body limit) first.
            let _ = std::io::copy(&mut image, &mut std::io::sink());
        }
        installed
    })
    .await
    .map_err(ApiError::internal)?;
    let installed = match installed {
        Ok(installed) => installed,
        Err(error) => {
            let message = format!("upgrade image refused: {error}");
            app.writer.journal(journal_entry(
                Level::Warning,
                "upgrade.refused",
                Some(actor),
                message,
            ));
            return Err(upgrade_error(error));
        }
    };
    app.writer.journal(journal_entry(
        Level::Info,
        "upgrade.installed",
        Some(actor),
        format!(
            "version {} installed in slot {}; it boots next, on trial",
            installed.version, installed.slot
        ),
    ));
    Ok(installed)
}

async fn upgrade_reboot(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
) -> Result<StatusCode, ApiError> {
    reboot(&app, &admin.name).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(crate) async fn reboot(app: &App, actor: &str) -> Result<(), ApiError> {
    app.writer.journal(journal_entry(
        Level::Warning,
        "system.reboot",
        Some(actor),
        "reboot requested",
    ));
    let service = app.upgrade.clone();
    tokio::task::spawn_blocking(move || service.reboot())
        .await
        .map_err(ApiError::internal)?
        .map_err(upgrade_error)
}

/// The policy service on this peer: whether it serves, and each bridge's health as seen here.
async fn policy_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<crate::services::policy::PolicyStatus> {
    Json(app.policy.status().await)
}

/// Each peer of this peer's list as the operator sees it: "This system", "Active as …", or
/// the reason it is not.
async fn cluster_status(
    _: Ready,
    State(app): State<Arc<App>>,
) -> Json<crate::services::cluster::ClusterStatus> {
    Json(app.cluster.status())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberQuery {
    /// The member's admin URL, `https://address[:port]`.
    url: String,
}

/// The API's answer to a join that did not happen or did not finish.
pub(crate) fn join_error(error: crate::services::cluster_join::JoinError) -> ApiError {
    use crate::services::cluster_join::JoinError as E;
    let (status, code) = match &error {
        E::BadUrl => (StatusCode::BAD_REQUEST, "invalid_member_url"),
        E::NoAddress => (StatusCode::CONFLICT, "no_ipv4_address"),
        E::AlreadyClustered => (StatusCode::CONFLICT, "already_clustered"),
        E::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "member_unreachable"),
        E::FingerprintChanged { .. } => (StatusCode::CONFLICT, "member_certificate_changed"),
        E::WrongPassword => (StatusCode::UNPROCESSABLE_ENTITY, "member_wrong_password"),
        E::Member(_) => (StatusCode::UNPROCESSABLE_ENTITY, "member_refused"),
        E::Local(_) => (StatusCode::UNPROCESSABLE_ENTITY, "join_settings_refused"),
        E::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "join_refused"),
        E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "join_timeout"),
        E::OtherMember { .. } => (StatusCode::CONFLICT, "other_member_unavailable"),
        E::Update { .. } => (StatusCode::BAD_GATEWAY, "member_update_failed"),
        E::Tls(_) => return ApiError::internal(error),
    };
    ApiError::new(status, code, error.to_string())
}

/// `GET /api/v1/cluster/member-certificate?url=…`: the SHA-256 fingerprint of the certificate
/// a cluster member presents, to be checked against its Status page before joining through it.
async fn member_certificate(
    _: Ready,
    Query(query): Query<MemberQuery>,
) -> Result<Json<Value>, ApiError> {
    let sha256 =
        crate::services::cluster_join::member_fingerprint(&query.url).await.map_err(join_error)?;
    Ok(Json(json!({"member_url": query.url, "sha256": sha256})))
}

/// `POST /api/v1/cluster/join`: this peer joins the cluster of the member named in the body
/// (see `cluster_join`), and answers once every link is active.
async fn cluster_join(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let request: crate::services::cluster_join::JoinRequest =
        serde_json::from_value(Value::Object(body)).map_err(|error| body_error(&error))?;
    let joined = run_join(&app, &admin.name, &request).await?;
    Ok(Json(serde_json::to_value(joined).map_err(ApiError::internal)?))
}

/// A join as the API and the web page run it, with its outcome in the Event Log.
pub(crate) async fn run_join(
    app: &App,
    actor: &str,
    request: &crate::services::cluster_join::JoinRequest,
) -> Result<crate::services::cluster_join::Joined, ApiError> {
    match crate::services::cluster_join::join(app, actor, request).await {
        Ok(joined) => {
            app.writer.journal(journal_entry(
                Level::Info,
                "cluster.joined",
                Some(actor),
                format!("joined the cluster through {}", request.member_url),
            ));
            Ok(joined)
        }
        Err(error) => {
            app.writer.journal(journal_entry(
                Level::Warning,
                "cluster.join_failed",
                Some(actor),
                format!("joining through {} failed: {error}", request.member_url),
            ));
            Err(join_error(error))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AtQuery {
    at: Option<String>,
}

fn records_json<'a>(records: impl Iterator<Item = &'a Record>) -> Value {
    Value::Array(records.map(show).collect())
}

async fn config(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<AtQuery>,
) -> Result<Json<Value>, ApiError> {
    let (at_ms, records) = config_records(&app, query.at.as_deref()).await?;
    Ok(Json(json!({"at": format_ms(at_ms), "records": records_json(records.iter())})))
}

/// Every record now, or as the log says it was at `at` (RFC 3339 or epoch milliseconds).
pub(crate) async fn config_records(
    app: &App,
    at: Option<&str>,
) -> Result<(u64, Vec<Record>), ApiError> {
    match at {
        None => {
            let records = app
                .readers
                .read(|conn| {
                    let mut records = Vec::new();
                    for &kind in RecordKind::ALL {
                        records.extend(projections::list(conn, kind)?);
                    }
                    Ok(records)
                })
                .await?;
            Ok((now_ms(), records))
        }
        Some(at) => {
            let at_ms = parse_time("at", at)?;
            let state = app.readers.read(move |conn| crate::store::state_at(conn, at_ms)).await?;
            Ok((at_ms, state.records().cloned().collect()))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: String,
    to: Option<String>,
}

async fn config_diff(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let from_ms = parse_time("from", &query.from)?;
    let to_ms = match &query.to {
        Some(to) => parse_time("to", to)?,
        None => now_ms(),
    };
    let changes = app
        .readers
        .read(move |conn| {
            let before = crate::store::state_at(conn, from_ms)?;
            let after = crate::store::state_at(conn, to_ms)?;
            Ok(before.diff(&after))
        })
        .await?;
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

/// Filters of both logs, as query parameters (the web pages take the same ones).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    pub(crate) actor: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) before: Option<u64>,
    pub(crate) limit: Option<usize>,
    pub(crate) level: Option<String>,
    pub(crate) text: Option<String>,
}

/// Rows per page when the client does not say.
pub const LOG_PAGE_DEFAULT: usize = 100;

fn log_entry_json(entry: &projections::ConfigLogEntry) -> Value {
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

fn parse_kind(text: &str) -> Result<RecordKind, ApiError> {
    RecordKind::from_name(text).or_else(|| RecordKind::from_collection(text)).ok_or_else(|| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "kind",
            format!("{text:?} is not a record kind"),
        )
    })
}

async fn configuration_log(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    config_log_page(&app, config_log_filter(query)?).await
}

/// The Configuration Log's filter from query parameters.
pub(crate) fn config_log_filter(query: LogQuery) -> Result<projections::ConfigLogQuery, ApiError> {
    if query.level.is_some() || query.text.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "level and text filter the Event Log only",
        ));
    }
    let filter = projections::ConfigLogQuery {
        actor: query.actor,
        kind: query.kind.as_deref().map(parse_kind).transpose()?,
        name: query.name,
        since_ms: query.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until_ms: query.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
        before_position: query.before,
        limit: page_limit(query.limit),
    };
    Ok(filter)
}

async fn config_log_page(
    app: &App,
    filter: projections::ConfigLogQuery,
) -> Result<Json<Value>, ApiError> {
    let limit = filter.limit;
    let entries = app.readers.read(move |conn| Ok(projections::config_log(conn, &filter)?)).await?;
    let last = entries.last().map(|e| e.position);
    Ok(Json(page(entries.iter().map(log_entry_json).collect(), limit, last)))
}

/// Rows asked for, within bounds.
fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(LOG_PAGE_DEFAULT).clamp(1, projections::LOG_PAGE_MAX)
}

/// One page of a log. `next_before` is set only when the page is full, so a client knows
/// whether older rows may exist.
fn page(entries: Vec<Value>, limit: usize, last: Option<u64>) -> Value {
    let next_before = if entries.len() == limit { last } else { None };
    json!({"entries": entries, "next_before": next_before})
}

async fn history(
    _: Ready,
    State(app): State<Arc<App>>,
    Path((collection, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&collection)?;
    let filter = projections::ConfigLogQuery {
        kind: Some(kind),
        name: Some(name),
        before_position: query.before,
        limit: page_limit(query.limit),
        ..Default::default()
    };
    config_log_page(&app, filter).await
}

async fn event_log(
    _: Ready,
    State(app): State<Arc<App>>,
    Query(query): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = journal_filter(query)?;
    let limit = filter.limit;
    let entries = app.readers.read(move |conn| Ok(eventlog::query_journal(conn, &filter)?)).await?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({
                "id": entry.id,
                "at": format_ms(entry.at_ms),
                "level": format!("{:?}", entry.level).to_lowercase(),
                "kind": entry.kind,
                "actor": entry.actor,
                "message": entry.message,
            })
        })
        .collect();
    Ok(Json(page(rows, limit, entries.last().map(|e| e.id))))
}

/// The Event Log's filter from query parameters.
pub(crate) fn journal_filter(query: LogQuery) -> Result<JournalQuery, ApiError> {
    if query.actor.is_some()
        || query.name.is_some()
        || query.since.is_some()
        || query.until.is_some()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "the Event Log filters by level, kind and text",
        ));
    }
    let level_min = match query.level.as_deref() {
        None => None,
        Some("info") => Some(Level::Info),
        Some("warning") => Some(Level::Warning),
        Some("error") => Some(Level::Error),
        Some(_) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "level",
                "must be info, warning or error",
            ));
        }
    };
    let filter = JournalQuery {
        level_min,
        kind_prefix: query.kind,
        text: query.text,
        before_id: query.before,
        limit: page_limit(query.limit),
    };
    Ok(filter)
}

// ---- backup and restore --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    password: Option<String>,
}

fn serial(app: &App) -> Result<String, ApiError> {
    app.hardware_serial.clone().map_err(|problem| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_hardware_serial", problem)
    })
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "operation_in_progress",
        "a backup or restore is already running; see GET /api/v1/backups/progress",
    )
}

/// `POST /api/v1/backups`: streams a backup archive (encrypted when the optional JSON body
/// gives a password). The copy is taken from a read connection, so the daemon keeps serving.
async fn create_backup(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: BackupRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BackupRequest { password: None }
    } else {
        serde_json::from_slice(&body).map_err(|error| body_error(&error))?
    };
    backup_download(&app, &admin.name, request.password).await
}

/// A backup streamed as a download (`Content-Disposition: attachment`), for the API and the
/// web page alike. `password`: encrypt it; an empty one is refused.
pub(crate) async fn backup_download(
    app: &App,
    actor: &str,
    password: Option<String>,
) -> Result<Response, ApiError> {
    if password.as_deref() == Some("") {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fields",
            "password",
            "must not be empty; leave it out for an unencrypted backup",
        ));
    }
    let serial = serial(app)?;
    let created_at_ms = now_ms();
    let operation = app.operations.begin("backup", created_at_ms).ok_or_else(busy)?;
    let encrypted = password.is_some();
    let file_name = backup::file_name(
        crate::base::version::software_version(),
        &serial,
        created_at_ms,
        encrypted,
    );
    let (queue, mut chunks) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(
        crate::services::backups::STREAM_QUEUE_CHUNKS,
    );
    let data_dir = app.data_dir.clone();
    let writer = app.writer.clone();
    let name = file_name.clone();
    let actor = actor.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut output = crate::services::backups::ChannelWriter::new(queue);
        let result = crate::services::backups::write_backup_of(
            &data_dir,
            &serial,
            created_at_ms,
            password.as_deref(),
            &mut output,
            &operation,
        )
        .and_then(|manifest| {
            std::io::Write::flush(&mut output).map_err(|e| e.to_string())?;
            Ok(manifest)
        });
        match result {
            Ok(manifest) => {
                writer.journal(journal_entry(
                    Level::Info,
                    "backup.created",
                    Some(&actor),
                    format!(
                        "backup {name} created ({} bytes of data{})",
                        manifest.members_size_bytes(),
                        if encrypted { ", encrypted" } else { "" }
                    ),
                ));
                operation.finish(Ok(()));
            }
            Err(message) => {
                tracing::error!(%message, "backup failed");
                writer.journal(journal_entry(
                    Level::Error,
                    "backup.failed",
                    Some(&actor),
                    format!("backup {name} failed: {message}"),
                ));
                operation.finish(Err(message.clone()));
                output.fail(message);
            }
        }
    });
    // Wait for the first bytes, so a backup that cannot start is a JSON error, not a 200.
    let first = match chunks.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(error)) => return Err(ApiError::internal(format!("backup failed: {error}"))),
        None => return Err(ApiError::internal("the backup stopped without a word")),
    };
    let rest = futures_util::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    });
    let stream =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), rest);
    let content_type = if encrypted { "application/octet-stream" } else { "application/gzip" };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file_name}\"")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/v1/backups/progress`: the running (or last) backup or restore.
async fn backup_progress(_: Ready, State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({"operation": app.operations.progress()}))
}

/// The API's answer to a refused or failed restore, with a stable code per refusal.
fn restore_error(error: &backup::Error) -> ApiError {
    use backup::Error as E;
    let code = match error {
        E::UnknownFormat { .. } => "backup_unknown_format",
        E::FormatTooNew { .. } => "backup_format_too_new",
        E::PasswordRequired => "backup_password_required",
        E::WrongPasswordOrTampered => "backup_wrong_password",
        E::Corrupt { .. } | E::BadVersion { .. } => "backup_corrupt",
        E::Truncated => "backup_truncated",
        E::UnsafeMember { .. } | E::BadExtraFile { .. } => "backup_unsafe_member",
        E::WrongSerial { .. } => "backup_other_machine",
        E::NewerSoftware { .. } => "backup_newer_software",
        _ => return ApiError::internal(error),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, error.to_string())
}

/// `POST /api/v1/restore`: the archive as the body, streamed; the password of an encrypted one
/// in `X-Baton-Backup-Password`. Refused (and nothing changed) unless the archive verifies,
/// belongs to this machine and this peer is standalone; otherwise applied without a restart.
async fn restore(
    Ready(admin): Ready,
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let password = match headers.get(crate::services::backups::PASSWORD_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            refused_restore(
                &app,
                &admin.name,
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_header",
                    "the backup password header must be visible ASCII",
                ),
            )
        })?),
    };
    let operation = begin_restore(&app, &admin.name)?;
    let reader = crate::services::backups::BodyReader::new(
        tokio::runtime::Handle::current(),
        body,
        crate::services::backups::RESTORE_BODY_BYTES_MAX,
    );
    let over_limit = reader.over_limit.clone();
    let staging_dir = app.data_dir.join(crate::services::backups::STAGING_DIR);
    let (staged, operation) =
        stage_restore(&app, &admin.name, operation, reader, over_limit, password, staging_dir)
            .await?;
    let applied = apply_restore(&app, &admin.name, &staged, operation).await?;
    Ok(Json(applied))
}

/// Records a refused or failed restore in the Event Log and hands the error back.
fn refused_restore(app: &App, actor: &str, error: ApiError) -> ApiError {
    app.writer.journal(journal_entry(
        if error.status.is_server_error() { Level::Error } else { Level::Warning },
        if error.status.is_server_error() { "restore.failed" } else { "restore.refused" },
        Some(actor),
        format!("restore not applied: {}", error.message),
    ));
    error
}

fn clustered_restore() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "restore_clustered", StoreError::Clustered.to_string())
}

/// Takes the single backup/restore slot for a restore, refusing one on a clustered peer or a
/// machine without a serial (nothing is read or changed then).
pub(crate) fn begin_restore(
    app: &App,
    actor: &str,
) -> Result<crate::services::backups::Operation, ApiError> {
    serial(app).map_err(|error| refused_restore(app, actor, error))?;
    let operation = app.operations.begin("restore", now_ms()).ok_or_else(busy)?;
    if app.writer.cluster_settings().borrow().is_clustered() {
        let error = clustered_restore();
        operation.finish(Err(error.message.clone()));
        return Err(refused_restore(app, actor, error));
    }
    Ok(operation)
}

/// Reads, verifies and stages an archive into `staging_dir` (see `backup::stage_restore`):
/// nothing else changes. `over_limit` is set by a reader that stopped at the size limit.
/// On a refusal the operation is finished and the refusal journaled.
pub(crate) async fn stage_restore(
    app: &App,
    actor: &str,
    operation: crate::services::backups::Operation,
    reader: impl std::io::Read + Send + 'static,
    over_limit: Arc<std::sync::atomic::AtomicBool>,
    password: Option<String>,
    staging_dir: std::path::PathBuf,
) -> Result<(backup::Staged, crate::services::backups::Operation), ApiError> {
    let serial = serial(app).map_err(|error| refused_restore(app, actor, error))?;
    let (staged, operation) = tokio::task::spawn_blocking(move || {
        let staged = backup::stage_restore(
            reader,
            password.as_deref(),
            &serial,
            crate::base::version::software_version(),
            &staging_dir,
            &mut |p| operation.report(p),
        );
        (staged, operation)
    })
    .await
    .map_err(ApiError::internal)?;
    match staged {
        Ok(staged) => Ok((staged, operation)),
        Err(error) => {
            let api_error = if over_limit.load(std::sync::atomic::Ordering::SeqCst) {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "backup_too_large",
                    format!(
                        "restore uploads are limited to {} bytes",
                        crate::services::backups::RESTORE_BODY_BYTES_MAX
                    ),
                )
            } else {
                restore_error(&error)
            };
            operation.finish(Err(api_error.message.clone()));
            Err(refused_restore(app, actor, api_error))
        }
    }
}

/// Tells the cluster peers the certificate the admin API now presents (see `cluster_join`).
fn announce_certificate(app: &App, certificates: Option<&model::record::Certificates>) {
    match crate::base::tls::presented_fingerprint(&app.tls_files, certificates) {
        Ok(certificate_sha256) => app.cluster.set_admin_certificate(certificate_sha256),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the admin certificate's fingerprint is unknown")
        }
    }
}

/// Applies a staged restore to the running daemon and reloads the TLS identity; the answer
/// the API gives. Refused (nothing changed) if this peer has joined a cluster meanwhile.
pub(crate) async fn apply_restore(
    app: &App,
    actor: &str,
    staged: &backup::Staged,
    operation: crate::services::backups::Operation,
) -> Result<Value, ApiError> {
    let applied =
        crate::services::backups::apply(&app.writer, &app.data_dir, staged, actor, now_ms()).await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(crate::services::backups::ApplyError::Store(StoreError::Clustered)) => {
            let error = clustered_restore();
            operation.finish(Err(error.message.clone()));
            return Err(refused_restore(app, actor, error));
        }
        Err(error) => {
            operation.finish(Err(error.to_string()));
            return Err(refused_restore(app, actor, ApiError::internal(error)));
        }
    };
    let manifest = staged.manifest().clone();
    // The restored certificates record and TLS files take effect for new connections.
    let state = app.writer.state().await?;
    let certificates = match state.list(RecordKind::Certificates).next() {
        Some(Record::Certificates(certificates)) => Some(certificates.clone()),
        _ => None,
    };
    match crate::base::tls::configured_identity(&app.tls_files, certificates.as_ref())
        .or_else(|_| crate::base::tls::server_config(&app.tls_files))
    {
        Ok(config) => {
            app.tls.reload_from_config(config);
            announce_certificate(app, certificates.as_ref());
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "restored TLS identity unusable; keeping the current one")
        }
    }
    operation.finish(Ok(()));
    Ok(json!({
        "message": "restored",
        "manifest": manifest,
        "safety_database": applied.safety_database,
        "safety_files_dir": applied.safety_files_dir,
        "files": applied.files,
    }))
}
