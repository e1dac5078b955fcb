//! `batonctl backup`: download a backup, restore one, watch their progress, and inspect an
//! archive locally — its manifest, and what restoring it would change compared with the
//! configuration a reachable daemon serves. Inspecting reads the archive with the `backup`
//! crate (checking every digest and hash chain) and folds its events with `model`; it never
//! changes anything.

use crate::cli::{BackupCommand, Globals};
use crate::client::{self, Client};
use crate::output::Output;
use crate::{prompt, render};
use anyhow::{Context, bail};
use api::{BackupProgress, ConfigAnswer, ConfigDiff, RecordChange, Restored};
use model::Record;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Backups and restores may take long; this bounds only a daemon that stopped answering.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A downloaded backup's permissions: owner read and write only.
const BACKUP_FILE_MODE: u32 = 0o600;
/// How often the progress line is refreshed on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) fn run(client: &Client, out: Output, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create { output, encrypt } => {
            create(client, out, output.as_deref(), encrypt)
        }
        BackupCommand::Restore { file } => restore(client, out, &file),
        BackupCommand::Progress => {
            let progress: BackupProgress = client.get("/api/v1/backups/progress")?;
            out.emit(&progress, |progress| progress_line(progress) + "\n")
        }
        // Handled before a client is made (see `commands::run`).
        BackupCommand::Inspect { .. } => Ok(()),
    }
}

fn create(
    client: &Client,
    out: Output,
    output: Option<&Path>,
    encrypt: bool,
) -> anyhow::Result<()> {
    let mut request = client.request(Method::POST, "/api/v1/backups").timeout(TRANSFER_TIMEOUT);
    if encrypt {
        let body = api::BackupRequest { password: Some(prompt::backup_password(true)?) };
        request = request.json(&body);
    }
    let mut response = with_progress(client, || client.send_raw(request))?;
    let name = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('"').nth(1))
        .map(str::to_owned)
        .context("the daemon did not name the backup")?;
    if name.contains('/') || name.starts_with('.') {
        bail!("the daemon named the backup {name:?}, which is not a plain file name");
    }
    let path = output.map_or_else(|| Path::new(&name).to_path_buf(), Path::to_path_buf);
    // Written aside and renamed, so a failed download never looks like a backup.
    let partial = path.with_extension("partial");
    let written = (|| -> anyhow::Result<u64> {
        let mut file = create_private(&partial)?;
        let bytes = with_progress(client, || {
            response.copy_to(&mut file).context("downloading the backup")
        })?;
        file.sync_all().context("writing the backup")?;
        std::fs::rename(&partial, &path).with_context(|| format!("naming {}", path.display()))?;
        Ok(bytes)
    })();
    let bytes = written.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    let answer = json!({"file": path, "size_bytes": bytes, "encrypted": encrypt});
    out.emit(&answer, |_| format!("backup written to {} ({bytes} bytes)\n", path.display()))
}

/// Whether the archive at `path` is encrypted (its header says so before anything else).
fn is_encrypted(path: &Path) -> anyhow::Result<bool> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(matches!(backup::inspect(file.take(4096), None), Err(backup::Error::PasswordRequired)))
}

fn restore(client: &Client, out: Output, path: &Path) -> anyhow::Result<()> {
    let password = if is_encrypted(path)? { Some(prompt::backup_password(false)?) } else { None };
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut request = client
        .request(Method::POST, "/api/v1/restore")
        .timeout(TRANSFER_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::blocking::Body::new(file));
    if let Some(password) = password {
        request = request.header(api::backups::PASSWORD_HEADER, password);
    }
    let answer: Restored = with_progress(client, || client::answer(client.send_raw(request)?))?;
    out.emit(&answer, |answer| {
        format!(
            "restored the backup of {} made by Baton {}; the previous database is kept as {}\n",
            answer.manifest.hardware_serial,
            answer.manifest.software_version,
            answer.safety_database,
        )
    })
}

/// Runs `transfer` while a progress line is shown on a terminal's stderr.
fn with_progress<T>(client: &Client, transfer: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return transfer();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(PROGRESS_INTERVAL);
                if let Ok(progress) = client.get::<BackupProgress>("/api/v1/backups/progress") {
                    eprint!("\r{}   ", progress_line(&progress));
                    let _ = std::io::stderr().flush();
                }
            }
            eprintln!();
        });
        let result = transfer();
        done.store(true, Ordering::SeqCst);
        result
    })
}

fn progress_line(progress: &BackupProgress) -> String {
    let Some(operation) = &progress.operation else {
        return "no backup or restore since the daemon started".to_owned();
    };
    let (done, total) = (operation.done_bytes, operation.total_bytes);
    let percent = done.saturating_mul(100).checked_div(total).unwrap_or(0);
    let state = match operation.outcome.as_deref() {
        None => "running".to_owned(),
        Some(api::backups::OUTCOME_OK) => "done".to_owned(),
        Some(error) => format!("failed: {error}"),
    };
    format!("{} {state}: {done} of {total} bytes ({percent}%)", operation.operation.as_str())
}

/// Creates a new file only its owner can read or write: an unencrypted backup holds the
/// peer's private keys and password hashes. The mode is set at creation, so there is no
/// moment at which the file is readable by others.
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(BACKUP_FILE_MODE)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

// ---- inspect -------------------------------------------------------------------------------

pub(crate) fn inspect(globals: &Globals, out: Output, path: &Path) -> anyhow::Result<()> {
    let password = if is_encrypted(path)? { Some(prompt::backup_password(false)?) } else { None };
    let open = || std::fs::File::open(path).with_context(|| format!("opening {}", path.display()));
    let manifest = backup::inspect(open()?, password.as_deref())
        .with_context(|| format!("reading {}", path.display()))?;
    // Unpacked in a private folder and verified (digests, hash chains) like a restore would.
    let scratch = tempfile::tempdir().context("creating a temporary folder")?;
    let staged = backup::stage_restore(
        open()?,
        password.as_deref(),
        &manifest.hardware_serial,
        &manifest.software_version,
        &scratch.path().join("staged"),
        &mut |_| {},
    )
    .with_context(|| format!("unpacking {}", path.display()))?;
    let state = staged.configuration().context("reading the archived configuration")?;
    let archived: BTreeMap<Key, Record> =
        state.records().map(|record| (key(record), record.redacted())).collect();

    let (changes, daemon_problem) = match current_config(globals) {
        Ok(current) => (Some(diff(&current, &archived)), None),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    let answer = Inspection {
        manifest,
        records: archived.len(),
        changes,
        daemon_unreachable: daemon_problem,
    };
    out.emit(&answer, render_inspect)
}

/// What `backup inspect` found.
#[derive(Serialize)]
struct Inspection {
    manifest: backup::Manifest,
    /// Records in the archived configuration.
    records: usize,
    /// What a restore would change, when a daemon was reachable to compare with.
    changes: Option<Vec<RecordChange>>,
    /// Why no daemon was reachable.
    daemon_unreachable: Option<String>,
}

/// A record's kind name and name: changes are listed in this order, as the daemon's diff
/// lists them.
type Key = (&'static str, String);

fn key(record: &Record) -> Key {
    (record.kind().as_str(), record.name().to_owned())
}

/// The configuration the daemon serves now (secrets redacted), by (kind, name).
fn current_config(globals: &Globals) -> anyhow::Result<BTreeMap<Key, Record>> {
    let client = Client::new(globals, prompt::login_password(globals)?)?;
    let config: ConfigAnswer = client.get("/api/v1/config")?;
    Ok(config.records.into_iter().map(|record| (key(&record), record)).collect())
}

/// The changes a restore would make, in the form of `GET /api/v1/config/diff`'s `changes`.
fn diff(current: &BTreeMap<Key, Record>, archived: &BTreeMap<Key, Record>) -> Vec<RecordChange> {
    let mut keys: Vec<&Key> = current.keys().chain(archived.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (before, after) = (current.get(key), archived.get(key));
            let kind = before.or(after)?.kind();
            (before != after).then(|| RecordChange {
                kind,
                name: key.1.clone(),
                before: before.cloned(),
                after: after.cloned(),
            })
        })
        .collect()
}

fn render_inspect(answer: &Inspection) -> String {
    let manifest = &answer.manifest;
    let members: Vec<String> = manifest
        .members
        .iter()
        .map(|member| format!("{} ({} bytes)", member.name, member.size_bytes))
        .collect();
    let mut out = render::fields(&json!({
        "product": manifest.product,
        "software_version": manifest.software_version,
        "hardware_serial": manifest.hardware_serial,
        "created": manifest.created_at_ms,
        "peer_id": manifest.peer_id,
        "members": members.join(", "),
        "records": answer.records,
    }));
    match &answer.changes {
        Some(changes) => {
            out += "\nA restore would change, compared with the daemon's configuration now:\n";
            let diff = ConfigDiff {
                from: "now".to_owned(),
                to: "the backup".to_owned(),
                changes: changes.clone(),
            };
            out += &render::diff(&diff);
        }
        None => {
            out += &format!(
                "\n(no daemon reachable, so no comparison: {})\n",
                answer.daemon_unreachable.as_deref().unwrap_or("-")
            );
        }
    }
    out
}
