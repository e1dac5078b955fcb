//! Maintenance pages: Backup and restore, Upgrade, Restart options.
//!
//! Everything goes through the services the API uses (`restore::begin`/`stage`/`apply`,
//! `upgrades::install`, `upgrades::reboot`; downloads through the API's `backup_download`),
//! so refusals, progress and Event Log entries are the API's. Uploads are `multipart/form-data` forms that
//! work without JavaScript; `maintenance.js` only adds an upload progress bar.
//!
//! A restore is two steps: the upload is verified and staged aside (`restore-preview/`, which
//! nothing else reads), and the page shows what it would change; only the operator's
//! confirmation applies it. One restore waits for confirmation at a time, for the session that
//! uploaded it, and is forgotten after [`PENDING_RESTORE_TTL_MS`].

use super::{
    FormPairs, Operator, OperatorForm, WebState, WebUser, check_csrf, csrf_input, esc, page,
};
use crate::adapters::api::{self as http, ApiError};
use crate::services::upgrades::Power;
use crate::services::{App, records, restore, upgrades};
use axum::body::Bytes;
use axum::extract::multipart::Field;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use model::{RecordKind, State as ModelState};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// How long an uploaded backup waits for confirmation before it is forgotten.
pub(super) const PENDING_RESTORE_TTL_MS: u64 = 15 * 60 * 1000;
/// Uploaded chunks waiting for the blocking reader (restore staging or upgrade install).
const UPLOAD_QUEUE_CHUNKS: usize = 16;
/// Room for the form fields beside the file in an upload, and the most one text field holds.
const FORM_FIELDS_BYTES_MAX: usize = 64 * 1024;

const SCRIPT_JS: &str = include_str!("maintenance.js");

pub(super) fn routes() -> Router<Arc<App>> {
    let restore_limit = usize::try_from(crate::services::backups::RESTORE_BODY_BYTES_MAX)
        .unwrap_or(usize::MAX)
        .saturating_add(FORM_FIELDS_BYTES_MAX);
    let upgrade_limit = http::UPGRADE_IMAGE_BYTES_MAX.saturating_add(FORM_FIELDS_BYTES_MAX);
    Router::new()
        .route("/maintenance.js", get(script))
        .route("/maintenance/backup", get(backup_page))
        .route("/maintenance/backup/download", post(download))
        .route(
            "/maintenance/restore",
            post(restore_upload).layer(DefaultBodyLimit::max(restore_limit)),
        )
        .route("/maintenance/restore/confirm", post(restore_confirm))
        .route("/maintenance/restore/cancel", post(restore_cancel))
        .route(
            "/maintenance/upgrade",
            get(upgrade_page).post(upgrade_upload).layer(DefaultBodyLimit::max(upgrade_limit)),
        )
        .route("/maintenance/restart", get(restart_page))
        .merge(power_routes())
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT_JS,
    )
}

/// A backup verified and staged, waiting for the operator's confirmation.
pub(crate) struct PendingRestore {
    id: String,
    /// The session that uploaded it; no other may confirm it.
    session: String,
    staged: backup::Staged,
    created_ms: u64,
}

// ---- uploads --------------------------------------------------------------------------------

/// A blocking `Read` over uploaded chunks handed over by the async handler; stops (and sets
/// `over_limit`) past `limit_bytes`.
struct UploadReader {
    queue: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    read_bytes: u64,
    limit_bytes: u64,
    over_limit: Arc<AtomicBool>,
}

impl Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.queue.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.read_bytes += chunk.len() as u64;
                    if self.read_bytes > self.limit_bytes {
                        self.over_limit.store(true, Ordering::SeqCst);
                        return Err(io::Error::other("the upload is larger than allowed"));
                    }
                    self.current = chunk;
                }
                Some(Err(error)) => return Err(io::Error::other(error)),
            }
        }
        let length = self.current.len().min(buf.len());
        buf[..length].copy_from_slice(&self.current[..length]);
        let _ = self.current.split_to(length);
        Ok(length)
    }
}

fn upload_reader(limit_bytes: u64) -> (mpsc::Sender<Result<Bytes, String>>, UploadReader) {
    let (queue, chunks) = mpsc::channel(UPLOAD_QUEUE_CHUNKS);
    let reader = UploadReader {
        queue: chunks,
        current: Bytes::new(),
        read_bytes: 0,
        limit_bytes,
        over_limit: Arc::default(),
    };
    (queue, reader)
}

/// Feeds a file field's chunks to the reader until it ends or the reader stops listening (a
/// refusal); then reads and drops the rest, so the browser can read the answer instead of
/// seeing its upload cut off.
async fn pump(field: &mut Field<'_>, queue: mpsc::Sender<Result<Bytes, String>>) {
    let mut listening = true;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if listening && queue.send(Ok(chunk)).await.is_err() {
                    listening = false;
                }
            }
            Ok(None) => return,
            Err(error) => {
                let _ = queue.send(Err(error.to_string())).await;
                return;
            }
        }
    }
}

/// Reads a multipart form's text fields (each at most [`FORM_FIELDS_BYTES_MAX`]) up to its file
/// field `file_field`, then hands both to `then` (the file field still unread, so it can be
/// streamed). A macro because a `Field` borrows the `Multipart`, and the borrow checker does
/// not let a loop return it from a function.
macro_rules! with_file_field {
    ($multipart:expr, $file_field:expr, $user:expr, $title:expr, |$form:ident, $field:ident| $then:expr) => {{
        let mut $form = FormPairs::new();
        loop {
            let field = match $multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => {
                    if let Some(refused) = check_csrf(&$user, &$form) {
                        return refused;
                    }
                    return upload_refused(&$user, $title, "Choose a file to upload.");
                }
                Err(error) => {
                    return upload_refused(&$user, $title, &format!("The upload failed: {error}"));
                }
            };
            let name = field.name().unwrap_or_default().to_owned();
            if name == $file_field {
                let $field = field;
                if let Some(refused) = check_csrf(&$user, &$form) {
                    return refused;
                }
                return $then;
            }
            match text_field(field).await {
                Ok(value) => $form.push((name, value)),
                Err(error) => {
                    return upload_refused(&$user, $title, &format!("The upload failed: {error}"));
                }
            }
        }
    }};
}

/// A text field of an upload form, refused beyond [`FORM_FIELDS_BYTES_MAX`] (the route's body
/// limit is the file's).
async fn text_field(mut field: Field<'_>) -> Result<String, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|error| error.to_string())? {
        if bytes.len() + chunk.len() > FORM_FIELDS_BYTES_MAX {
            return Err(format!("a form field is longer than {FORM_FIELDS_BYTES_MAX} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| "a form field is not UTF-8 text".to_owned())
}

fn upload_refused(user: &WebUser, title: &str, message: &str) -> Response {
    let body = super::error_note(message);
    (StatusCode::BAD_REQUEST, page(title, Some(user), &body)).into_response()
}

// ---- backup and restore ---------------------------------------------------------------------

fn progress_note(app: &App) -> String {
    let Some(progress) = app.operations.progress() else { return String::new() };
    let state = match &progress.outcome {
        None => "<span class=\"pending\">running</span>".to_owned(),
        Some(outcome) if outcome == "ok" => "<span class=\"ok\">finished</span>".to_owned(),
        Some(outcome) => format!("<span class=\"bad\">failed: {}</span>", esc(outcome)),
    };
    let mut html = format!(
        "<p role=\"status\">Last operation: {} started {}, {state}",
        esc(progress.operation.as_str()),
        esc(&crate::base::clock::format_ms(progress.started_ms))
    );
    if progress.total_bytes > 0 {
        let _ = write!(
            html,
            " <progress max=\"{}\" value=\"{}\" aria-label=\"Progress\"></progress> {} of {} bytes",
            progress.total_bytes, progress.done_bytes, progress.done_bytes, progress.total_bytes
        );
    }
    html.push_str("</p>");
    html
}

fn upload_widgets(label: &str) -> String {
    format!(
        "<div class=\"upload-progress\" hidden><progress max=\"100\" value=\"0\" aria-label=\"{}\"></progress> \
         <span class=\"upload-status\" role=\"status\"></span></div>",
        esc(label)
    )
}

fn backup_body(app: &App, user: &WebUser, note: &str) -> String {
    let mut body = String::new();
    body.push_str(
        "<p class=\"scope local\">A backup holds this peer's whole configuration (shared and \
         peer-local) and its TLS identity. It can be restored only on this machine (same \
         hardware serial) and only while this peer is standalone.</p>",
    );
    body.push_str(note);
    body.push_str(&progress_note(app));
    match &app.hardware_serial {
        Ok(serial) => {
            let _ = write!(body, "<p>Hardware serial: <code>{}</code></p>", esc(serial));
        }
        Err(problem) => body.push_str(&super::error_note(&format!(
            "Backups and restores are unavailable: no hardware serial ({problem})."
        ))),
    }
    let _ = write!(
        body,
        "<h2>Create a backup</h2>\
         <form method=\"post\" action=\"/maintenance/backup/download\" class=\"record\">{}\
         <div class=\"field\"><label for=\"backup-password\">Password (optional)</label>\
         <input type=\"password\" id=\"backup-password\" name=\"password\" autocomplete=\"new-password\" aria-describedby=\"backup-password-help\">\
         <div id=\"backup-password-help\"><p class=\"hint\">With a password the backup is encrypted; \
         without it, anyone holding the file can read the configuration (secrets included).</p></div></div>\
         <button type=\"submit\">Download backup</button></form>",
        csrf_input(user)
    );
    let clustered = app.writer.cluster_settings().borrow().is_clustered();
    body.push_str("<h2>Restore a backup</h2>");
    if clustered {
        body.push_str(&super::error_note(
            "This peer is in a cluster: a restore is refused until it is standalone again \
             (System > Clustering). The other peers hold the same shared configuration.",
        ));
    }
    let _ = write!(
        body,
        "<p>The backup is checked and compared with the configuration now; nothing changes \
         until you confirm.</p>\
         <form method=\"post\" action=\"/maintenance/restore\" enctype=\"multipart/form-data\" class=\"record\" data-upload>{}\
         <div class=\"field\"><label for=\"restore-password\">Backup password (if it is encrypted)</label>\
         <input type=\"password\" id=\"restore-password\" name=\"password\" autocomplete=\"off\"></div>\
         <div class=\"field\"><label for=\"restore-file\">Backup file</label>\
         <input type=\"file\" id=\"restore-file\" name=\"backup\" required></div>\
         {}<button type=\"submit\">Upload and check</button></form>\
         <script src=\"/maintenance.js\" defer></script>",
        csrf_input(user),
        upload_widgets("Upload progress")
    );
    body
}

async fn backup_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Extension(web): Extension<Arc<WebState>>,
) -> Response {
    forget_expired(&web);
    let mut note = String::new();
    if pending_for(&web, &user).is_some() {
        note.push_str(
            "<p class=\"pending\">An uploaded backup is waiting for confirmation; uploading \
             another replaces it.</p>",
        );
    }
    page("Backup and restore", Some(&user), &backup_body(&app, &user, &note)).into_response()
}

async fn download(
    State(app): State<Arc<App>>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let password = Some(super::form_value(&form, "password").to_owned()).filter(|p| !p.is_empty());
    match http::backup_download(&app, &user.name, password).await {
        Ok(response) => response,
        Err(error) => {
            let note = super::error_note(&format!("No backup made: {}", error.message()));
            (
                error.status(),
                page("Backup and restore", Some(&user), &backup_body(&app, &user, &note)),
            )
                .into_response()
        }
    }
}

fn forget_expired(web: &WebState) {
    let mut pending = crate::base::sync::lock(&web.pending_restore);
    if pending.as_ref().is_some_and(|p| {
        crate::base::clock::now_ms().saturating_sub(p.created_ms) > PENDING_RESTORE_TTL_MS
    }) {
        *pending = None;
    }
}

fn pending_for(web: &WebState, user: &WebUser) -> Option<String> {
    let pending = crate::base::sync::lock(&web.pending_restore);
    pending.as_ref().filter(|p| p.session == user.token).map(|p| p.id.clone())
}

async fn restore_upload(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Extension(web): Extension<Arc<WebState>>,
    mut multipart: Multipart,
) -> Response {
    let title = "Backup and restore";
    with_file_field!(multipart, "backup", user, title, |form, field| {
        restore_uploaded(user, app, web, form, field).await
    })
}

async fn restore_uploaded(
    user: WebUser,
    app: Arc<App>,
    web: Arc<WebState>,
    form: FormPairs,
    mut field: Field<'_>,
) -> Response {
    let title = "Backup and restore";
    let refusal = |error: &ApiError| {
        let note = super::error_note(&format!(
            "Restore refused: {}. Nothing was changed.",
            error.message().trim_end_matches('.')
        ));
        (error.status(), page(title, Some(&user), &backup_body(&app, &user, &note))).into_response()
    };
    // A new upload replaces the one waiting for confirmation (and its staging folder).
    *crate::base::sync::lock(&web.pending_restore) = None;
    let operation = match restore::begin(&app, &user.name).map_err(ApiError::from) {
        Ok(operation) => operation,
        Err(error) => {
            pump(&mut field, upload_reader(0).0).await;
            return refusal(&error);
        }
    };
    let preview_dir = app.data_dir.join(crate::services::backups::PREVIEW_DIR);
    if preview_dir.exists()
        && let Err(error) = std::fs::remove_dir_all(&preview_dir)
    {
        operation.finish(Err(error.to_string()));
        return super::error_page(Some(&user), &ApiError::internal(error));
    }
    let password = Some(super::form_value(&form, "password").to_owned()).filter(|p| !p.is_empty());
    let (queue, reader) = upload_reader(crate::services::backups::RESTORE_BODY_BYTES_MAX);
    let over_limit = reader.over_limit.clone();
    let staging = restore::stage(
        &app,
        &user.name,
        operation,
        reader,
        over_limit,
        password,
        preview_dir.clone(),
    );
    let ((), staged) = tokio::join!(pump(&mut field, queue), staging);
    let (staged, operation) = match staged.map_err(ApiError::from) {
        Ok(staged) => staged,
        Err(error) => return refusal(&error),
    };
    // Verified: the operation ends here; the confirmation takes the slot again.
    operation.finish(Ok(()));
    let (changes, staged) = match changes_of(&app, staged).await {
        Ok(found) => found,
        Err(error) => return super::error_page(Some(&user), &error),
    };
    let Some(id) = crate::base::random::hex_token::<16>() else {
        return super::error_page(Some(&user), &ApiError::internal("no randomness"));
    };
    let manifest = staged.manifest().clone();
    *crate::base::sync::lock(&web.pending_restore) = Some(PendingRestore {
        id: id.clone(),
        session: user.token.clone(),
        staged,
        created_ms: crate::base::clock::now_ms(),
    });
    let body = preview_body(&user, &id, &manifest, &changes);
    page("Restore: check before applying", Some(&user), &body).into_response()
}

/// What the operator checks before confirming a restore: the backup's manifest and what
/// would change, with the confirm and cancel buttons.
fn preview_body(
    user: &WebUser,
    id: &str,
    manifest: &backup::Manifest,
    changes: &[Change],
) -> String {
    let mut body = String::new();
    body.push_str(
        "<p role=\"status\" class=\"saved\">The backup is intact and belongs to this machine. \
         Nothing has changed yet.</p><table><tbody>",
    );
    for (label, value) in [
        ("Made by software version", manifest.software_version.clone()),
        ("Hardware serial", manifest.hardware_serial.clone()),
        ("Made at", crate::base::clock::format_ms(manifest.created_at_ms)),
        ("Size of the data", format!("{} bytes", manifest.members_size_bytes())),
    ] {
        let _ = write!(body, "<tr><th scope=\"row\">{label}</th><td>{}</td></tr>", esc(&value));
    }
    body.push_str("</tbody></table><h2>What the restore would change</h2>");
    if changes.is_empty() {
        body.push_str("<p>Nothing: the backup holds the configuration in force now.</p>");
    } else {
        body.push_str(
            "<table class=\"changes\"><caption>Changes, from now to the backup</caption><thead><tr>\
             <th scope=\"col\">Kind</th><th scope=\"col\">Name</th><th scope=\"col\">Change</th>\
             </tr></thead><tbody>",
        );
        for change in changes {
            let what = match (&change.before, &change.after) {
                (None, Some(_)) => "added: ",
                (Some(_), None) => "removed: ",
                _ => "",
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{what}{}</td></tr>",
                esc(&change.kind),
                esc(&change.name),
                super::logs::diff(change.before.as_ref(), change.after.as_ref())
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<p>The database in force now is kept as a safety copy (<code>pre-restore-…db</code>) \
         in the data folder. The restore takes effect at once; no restart is needed.</p>\
         <form method=\"post\" action=\"/maintenance/restore/confirm\" class=\"inline\">{0}\
         <input type=\"hidden\" name=\"id\" value=\"{1}\">\
         <button type=\"submit\" id=\"confirm-restore\">Restore this backup</button></form> \
         <form method=\"post\" action=\"/maintenance/restore/cancel\" class=\"inline\">{0}\
         <button type=\"submit\">Cancel</button></form>",
        csrf_input(user),
        esc(id)
    );
    body
}

async fn restore_confirm(
    State(app): State<Arc<App>>,
    Extension(web): Extension<Arc<WebState>>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    forget_expired(&web);
    let title = "Backup and restore";
    let id = super::form_value(&form, "id");
    let pending = {
        let mut pending = crate::base::sync::lock(&web.pending_restore);
        if pending.as_ref().is_some_and(|p| p.id == id && p.session == user.token) {
            pending.take()
        } else {
            None
        }
    };
    let Some(pending) = pending else {
        let note = super::error_note(
            "That upload is no longer waiting for confirmation (it expired, was replaced or \
             cancelled). Upload the backup again.",
        );
        return (StatusCode::CONFLICT, page(title, Some(&user), &backup_body(&app, &user, &note)))
            .into_response();
    };
    let applied = match restore::begin(&app, &user.name) {
        Ok(operation) => restore::apply(&app, &user.name, &pending.staged, operation).await,
        Err(error) => Err(error),
    }
    .map_err(ApiError::from);
    drop(pending);
    match applied {
        Ok(restored) => {
            let safety = restored.applied.safety_database.display().to_string();
            let note = format!(
                "{}<p>The previous database is kept as <code>{}</code>.</p>",
                super::saved_note("backup restored; it is in force now."),
                esc(&safety)
            );
            page(title, Some(&user), &backup_body(&app, &user, &note)).into_response()
        }
        Err(error) => {
            let note = super::error_note(&format!(
                "Restore refused: {}. Nothing was changed.",
                error.message().trim_end_matches('.')
            ));
            (error.status(), page(title, Some(&user), &backup_body(&app, &user, &note)))
                .into_response()
        }
    }
}

async fn restore_cancel(
    Extension(web): Extension<Arc<WebState>>,
    OperatorForm { user, .. }: OperatorForm,
) -> Response {
    let mut pending = crate::base::sync::lock(&web.pending_restore);
    if pending.as_ref().is_some_and(|p| p.session == user.token) {
        *pending = None;
    }
    super::see_other("/maintenance/backup")
}

/// One record that a restore would add, remove or change.
struct Change {
    kind: String,
    name: String,
    before: Option<Value>,
    after: Option<Value>,
}

/// The records that differ between the configuration now and the staged backup's, as the API
/// shows them (secrets redacted).
async fn changes_of(
    app: &App,
    staged: backup::Staged,
) -> Result<(Vec<Change>, backup::Staged), ApiError> {
    let current = app.writer.state().await?;
    let (archived, staged) =
        tokio::task::spawn_blocking(move || (crate::store::staged_configuration(&staged), staged))
            .await
            .map_err(ApiError::internal)?;
    let archived = archived.map_err(ApiError::internal)?;
    let by_key = |state: &ModelState| -> BTreeMap<(String, String), Value> {
        state
            .records()
            .filter(|record| record.kind() != RecordKind::Conference)
            .map(|record| {
                // The kind has its own column; the fields are the record's as the API shows it.
                let mut shown = records::show(record);
                if let Value::Object(fields) = &mut shown {
                    fields.remove("kind");
                }
                ((record.kind().as_str().to_owned(), record.name().to_owned()), shown)
            })
            .collect()
    };
    let (now, then) = (by_key(&current), by_key(&archived));
    let mut keys: Vec<&(String, String)> = now.keys().chain(then.keys()).collect();
    keys.sort();
    keys.dedup();
    let changes = keys
        .into_iter()
        .filter(|key| now.get(*key) != then.get(*key))
        .map(|key| Change {
            kind: key.0.clone(),
            name: key.1.clone(),
            before: now.get(key).cloned(),
            after: then.get(key).cloned(),
        })
        .collect();
    Ok((changes, staged))
}

// ---- upgrade --------------------------------------------------------------------------------

async fn upgrade_body(app: &App, user: &WebUser, note: &str) -> String {
    let mut body = String::new();
    body.push_str(
        "<p class=\"scope local\">An upgrade applies to this peer only. Upgrade the peers of a \
         cluster one at a time: they must run the same version to replicate.</p>",
    );
    body.push_str(note);
    match upgrades::status_of(app).await.map_err(ApiError::from) {
        Ok(status) => {
            if status.installing.is_some() {
                // Reload while an image is being written, so the bar moves without script.
                body.insert_str(0, "<meta http-equiv=\"refresh\" content=\"2\">");
            }
            body.push_str("<h2>Software</h2><table><tbody>");
            let entries = if status.boot_entries.is_empty() {
                "(none)".to_owned()
            } else {
                status.boot_entries.join(", ")
            };
            for (label, value) in [
                ("Running version", status.running_version.clone()),
                ("Active slot", status.active_slot.clone()),
                ("Last boot", status.last_boot.clone()),
                ("Boot entries, in the order tried", entries),
            ] {
                let _ =
                    write!(body, "<tr><th scope=\"row\">{label}</th><td>{}</td></tr>", esc(&value));
            }
            if let Some(progress) = &status.installing {
                let _ = write!(
                    body,
                    "<tr><th scope=\"row\">Installing</th><td><progress max=\"{0}\" value=\"{1}\" \
                     aria-label=\"Install progress\"></progress> {1} of {0} bytes</td></tr>",
                    progress.total_bytes, progress.done_bytes
                );
            }
            body.push_str("</tbody></table>");
        }
        Err(error) => body.push_str(&super::error_note(&format!(
            "The boot slots cannot be read: {}",
            error.message()
        ))),
    }
    let _ = write!(
        body,
        "<h2>Install an upgrade</h2>\
         <p>Upload a signed Baton image. Its signature and version are checked before anything \
         is written; it goes into the inactive slot, and the running system is never touched. \
         The new slot boots on trial: if it fails its health check three times the peer falls \
         back to the slot running now.</p>\
         <form method=\"post\" action=\"/maintenance/upgrade\" enctype=\"multipart/form-data\" class=\"record\" data-upload>{}\
         <div class=\"field\"><label for=\"allow-downgrade\"><input type=\"checkbox\" id=\"allow-downgrade\" name=\"allow_downgrade\" value=\"true\"> \
         Allow an older version (downgrade)</label></div>\
         <div class=\"field\"><label for=\"upgrade-file\">Upgrade image</label>\
         <input type=\"file\" id=\"upgrade-file\" name=\"image\" required></div>\
         {}<button type=\"submit\">Upload and install</button></form>\
         <script src=\"/maintenance.js\" defer></script>\
         <p><a href=\"/maintenance/reboot\">Reboot now…</a> (asks for confirmation)</p>",
        csrf_input(user),
        upload_widgets("Upload progress")
    );
    body
}

async fn upgrade_page(Operator(user): Operator, State(app): State<Arc<App>>) -> Response {
    page("Upgrade", Some(&user), &upgrade_body(&app, &user, "").await).into_response()
}

async fn upgrade_upload(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    mut multipart: Multipart,
) -> Response {
    let title = "Upgrade";
    with_file_field!(multipart, "image", user, title, |form, field| {
        upgrade_uploaded(user, app, form, field).await
    })
}

async fn upgrade_uploaded(
    user: WebUser,
    app: Arc<App>,
    form: FormPairs,
    mut field: Field<'_>,
) -> Response {
    let title = "Upgrade";
    let allow_downgrade = !super::form_value(&form, "allow_downgrade").is_empty();
    let limit = u64::try_from(http::UPGRADE_IMAGE_BYTES_MAX).unwrap_or(u64::MAX);
    let (queue, reader) = upload_reader(limit);
    let install = upgrades::install(&app, &user.name, reader, allow_downgrade);
    let ((), installed) = tokio::join!(pump(&mut field, queue), install);
    match installed.map_err(ApiError::from) {
        Ok(installed) => {
            let note = format!(
                "{}<form method=\"get\" action=\"/maintenance/reboot\">\
                 <button type=\"submit\">Reboot now…</button></form>",
                super::saved_note(&format!(
                    "version {} installed in slot {}; it starts at the next boot, on trial.",
                    installed.version, installed.slot
                ))
            );
            page(title, Some(&user), &upgrade_body(&app, &user, &note).await).into_response()
        }
        Err(error) => {
            let note = super::error_note(&format!(
                "Upgrade refused: {}. The running system and its boot order are unchanged.",
                error.message().trim_end_matches('.')
            ));
            (error.status(), page(title, Some(&user), &upgrade_body(&app, &user, &note).await))
                .into_response()
        }
    }
}

// ---- restart --------------------------------------------------------------------------------

async fn restart_page(Operator(user): Operator) -> Response {
    let body = "<p class=\"saved\">Configuration changes never need a restart, a reboot or a \
         shutdown: each setting \
         (network, time, certificates, bridges, clustering, …) takes effect as soon as it is \
         saved, on this peer and (for shared settings) on every peer of the cluster.</p>\
         <p>Restart the Baton service when support asks for it; reboot to start an installed \
         upgrade; shut down before moving or powering off the machine. While this peer is away, \
         the other peers of a cluster keep serving the VCS. Each asks for confirmation and is \
         written to the Event Log.</p>\
         <form method=\"get\" action=\"/maintenance/restart-service\" class=\"inline\"><button type=\"submit\">Restart…</button></form> \
         <form method=\"get\" action=\"/maintenance/reboot\" class=\"inline\"><button type=\"submit\">Reboot…</button></form> \
         <form method=\"get\" action=\"/maintenance/shutdown\" class=\"inline\"><button type=\"submit\">Shutdown…</button></form>";
    page("Restart options", Some(&user), body).into_response()
}

/// Where each of the Restart options is asked and confirmed, its title and its question.
fn power_page(power: Power) -> (&'static str, &'static str, &'static str) {
    match power {
        Power::RestartService => (
            "/maintenance/restart-service",
            "Restart",
            "Restart the Baton service on this peer now? The web interface and the policy \
             service on this peer are unavailable for a few seconds.",
        ),
        Power::Reboot => (
            "/maintenance/reboot",
            "Reboot",
            "Reboot this peer now? The web interface and the policy service on this peer are \
             unavailable until it is back.",
        ),
        Power::Shutdown => (
            "/maintenance/shutdown",
            "Shutdown",
            "Shut this peer down now? It stays off until someone powers it on at the machine.",
        ),
    }
}

async fn power_question(user: WebUser, app: &App, power: Power) -> Response {
    let (action, title, question) = power_page(power);
    let next = match upgrades::status_of(app).await.map_err(ApiError::from) {
        Ok(status) if power == Power::Reboot => match status.boot_entries.first() {
            Some(entry) => format!("<p>It will boot <code>{}</code>.</p>", esc(entry)),
            None => String::new(),
        },
        _ => String::new(),
    };
    let body = format!(
        "<p class=\"problem\" role=\"alert\">{question}</p>{next}\
         <form method=\"post\" action=\"{action}\" class=\"inline\">{}\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" id=\"confirm-{}\">Yes, {} now</button></form> \
         <a href=\"/maintenance/restart\">No, go back</a>",
        csrf_input(&user),
        power.as_str(),
        title.to_lowercase()
    );
    page(title, Some(&user), &body).into_response()
}

async fn power_confirmed(
    app: &App,
    OperatorForm { user, form }: OperatorForm,
    power: Power,
) -> Response {
    let (action, title, _) = power_page(power);
    if super::form_value(&form, "confirm") != "yes" {
        return super::see_other(action);
    }
    match upgrades::power(app, &user.name, power).await.map_err(ApiError::from) {
        Ok(()) => {
            let done = match power {
                Power::RestartService => "Restarting the service. Log in again in a few seconds.",
                Power::Reboot => "Rebooting. Log in again in a few minutes.",
                Power::Shutdown => "Shutting down. This peer stays off until powered on.",
            };
            let body = format!("<p class=\"saved\" role=\"status\">{done}</p>");
            page(title, Some(&user), &body).into_response()
        }
        Err(error) => {
            let body =
                super::error_note(&format!("The {} failed: {}", power.as_str(), error.message()));
            (error.status(), page(title, Some(&user), &body)).into_response()
        }
    }
}

/// The question and the confirmed form of each Restart option.
fn power_routes() -> Router<Arc<App>> {
    let mut router = Router::new();
    for power in [Power::RestartService, Power::Reboot, Power::Shutdown] {
        let (action, _, _) = power_page(power);
        router = router.route(
            action,
            get(move |Operator(user): Operator, State(app): State<Arc<App>>| async move {
                power_question(user, &app, power).await
            })
            .post(move |State(app): State<Arc<App>>, form: OperatorForm| async move {
                power_confirmed(&app, form, power).await
            }),
        );
    }
    router
}
