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
use model::Record;
use reqwest::Method;
use serde_json::{Value, json};
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
            out.emit(&client.get("/api/v1/backups/progress")?, |value| progress_line(value) + "\n")
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
        request = request.json(&json!({"password": prompt::backup_password(true)?}));
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
        request = request.header("x-baton-backup-password", password);
    }
    let answer = with_progress(client, || client::answer(client.send_raw(request)?))?;
    out.emit(&answer, |answer| {
        format!(
            "restored the backup of {} made by Baton {}; the previous database is kept as {}\n",
            render::text(&answer["manifest"]["hardware_serial"]),
            render::text(&answer["manifest"]["software_version"]),
            render::text(&answer["safety_database"]),
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
                if let Ok(value) = client.get("/api/v1/backups/progress") {
                    eprint!("\r{}   ", progress_line(&value));
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

fn progress_line(value: &Value) -> String {
    let operation = &value["operation"];
    if operation.is_null() {
        return "no backup or restore since the daemon started".to_owned();
    }
    let (done, total) = (
        operation["done_bytes"].as_u64().unwrap_or(0),
        operation["total_bytes"].as_u64().unwrap_or(0),
    );
    let percent = done.saturating_mul(100).checked_div(total).unwrap_or(0);
    let state = match operation["outcome"].as_str() {
        None => "running".to_owned(),
        Some("ok") => "done".to_owned(),
        Some(error) => format!("failed: {error}"),
    };
    format!(
        "{} {state}: {done} of {total} bytes ({percent}%)",
        render::text(&operation["operation"])
    )
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
    let archived: BTreeMap<(String, String), Value> =
        state.records().map(|record| (key(record), shown(record))).collect();

    let (changes, daemon_problem) = match current_config(globals) {
        Ok(current) => (Some(diff(&current, &archived)), None),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    let answer = json!({
        "manifest": manifest,
        "records": archived.len(),
        "changes": changes,
        "daemon_unreachable": daemon_problem,
    });
    out.emit(&answer, render_inspect)
}

fn key(record: &Record) -> (String, String) {
    (record.kind().as_str().to_owned(), record.name().to_owned())
}

/// A record as the API shows it: secrets redacted, with its kind.
fn shown(record: &Record) -> Value {
    let mut value = record.redacted().to_json();
    if let Value::Object(map) = &mut value {
        map.insert("kind".to_owned(), Value::String(record.kind().as_str().to_owned()));
    }
    value
}

/// The configuration the daemon serves now, by (kind, name).
fn current_config(globals: &Globals) -> anyhow::Result<BTreeMap<(String, String), Value>> {
    let client = Client::new(globals, prompt::login_password(globals)?)?;
    let config = client.get("/api/v1/config")?;
    let mut records = BTreeMap::new();
    for value in config["records"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let kind = value["kind"].as_str().and_then(model::RecordKind::from_name);
        let Some(kind) = kind else { continue };
        let mut fields = value.clone();
        if let Value::Object(map) = &mut fields {
            map.remove("kind");
        }
        // Parsed to find the name the same way for every kind; the JSON is compared as shown.
        let record = Record::from_json(kind, fields)
            .with_context(|| format!("the daemon's {} record", kind.as_str()))?;
        records.insert(key(&record), value.clone());
    }
    Ok(records)
}

/// The changes a restore would make, in the form of `GET /api/v1/config/diff`'s `changes`.
fn diff(
    current: &BTreeMap<(String, String), Value>,
    archived: &BTreeMap<(String, String), Value>,
) -> Vec<Value> {
    let mut keys: Vec<&(String, String)> = current.keys().chain(archived.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| current.get(*key) != archived.get(*key))
        .map(|(kind, name)| {
            let key = (kind.clone(), name.clone());
            json!({
                "kind": kind,
                "name": name,
                "before": current.get(&key),
                "after": archived.get(&key),
            })
        })
        .collect()
}

fn render_inspect(answer: &Value) -> String {
    let manifest = &answer["manifest"];
    let mut out = render::fields(&json!({
        "product": manifest["product"],
        "software_version": manifest["software_version"],
        "hardware_serial": manifest["hardware_serial"],
        "created": manifest["created_at_ms"],
        "peer_id": manifest["peer_id"],
        "members": manifest["members"].as_array().map(|members| members.iter()
            .map(|m| format!("{} ({} bytes)", render::text(&m["name"]), m["size_bytes"]))
            .collect::<Vec<_>>().join(", ")),
        "records": answer["records"],
    }));
    match answer["changes"].as_array() {
        Some(changes) => {
            out += "\nA restore would change, compared with the daemon's configuration now:\n";
            let diff = json!({"from": "now", "to": "the backup", "changes": changes});
            out += &render::diff(&diff);
        }
        None => {
            out += &format!(
                "\n(no daemon reachable, so no comparison: {})\n",
                render::text(&answer["daemon_unreachable"])
            );
        }
    }
    out
}
