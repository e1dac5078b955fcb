//! Backups and restores as the operator runs them (from the API or the web page): one at a
//! time, refused on a machine without a serial or a clustered peer, every refusal and failure
//! in the Event Log. The archive work itself is in [`super::backups`].

use super::backups::{self, Operation};
use super::{App, Error, Input};
use crate::base::clock::now_ms;
use crate::base::journal::{self, EntryKind};
use crate::base::tls;
use crate::store::StoreError;
use eventlog::Level;
use model::{Record, RecordKind};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// This machine's hardware serial, or why backups and restores are unavailable.
pub fn serial(app: &App) -> Result<String, Error> {
    app.hardware_serial.clone().map_err(Error::NoHardwareSerial)
}

/// A backup being streamed: its file name, and its bytes as they are produced (the first
/// chunk already read, so a backup that cannot start is an error, not a short download).
pub struct Download {
    pub file_name: String,
    pub encrypted: bool,
    pub first: Vec<u8>,
    pub rest: mpsc::Receiver<io::Result<Vec<u8>>>,
}

/// Starts a backup of the running daemon, streamed as it is made (encrypted when `password`
/// is given; an empty one is refused). The outcome goes to the Event Log.
pub async fn download(app: &App, actor: &str, password: Option<String>) -> Result<Download, Error> {
    if password.as_deref() == Some("") {
        return Err(Error::field(
            Input::Fields,
            "password",
            "must not be empty; leave it out for an unencrypted backup",
        ));
    }
    let serial = serial(app)?;
    let created_at_ms = now_ms();
    let operation = app
        .operations
        .begin(backups::OperationKind::Backup, created_at_ms)
        .ok_or(Error::OperationInProgress)?;
    let encrypted = password.is_some();
    let version = crate::base::version::software_version();
    let file_name = backup::file_name(version, &serial, created_at_ms, encrypted);
    let (queue, mut chunks) = mpsc::channel(backups::STREAM_QUEUE_CHUNKS);
    let (data_dir, writer, name) = (app.data_dir.clone(), app.writer.clone(), file_name.clone());
    let actor = actor.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut output = backups::ChannelWriter::new(queue);
        let result = backups::write_backup_of(
            &data_dir,
            &serial,
            created_at_ms,
            password.as_deref(),
            &mut output,
            &operation,
        )
        .and_then(|manifest| {
            io::Write::flush(&mut output).map_err(|e| e.to_string())?;
            Ok(manifest)
        });
        let entry = match &result {
            Ok(manifest) => journal::entry(
                Level::Info,
                EntryKind::BackupCreated,
                Some(&actor),
                format!(
                    "backup {name} created ({} bytes of data{})",
                    manifest.members_size_bytes(),
                    if encrypted { ", encrypted" } else { "" }
                ),
            ),
            Err(message) => {
                tracing::error!(%message, "backup failed");
                journal::entry(
                    Level::Error,
                    EntryKind::BackupFailed,
                    Some(&actor),
                    format!("backup {name} failed: {message}"),
                )
            }
        };
        writer.journal(entry);
        operation.finish(result.as_ref().map(|_| ()).map_err(String::clone));
        if let Err(message) = result {
            output.fail(message);
        }
    });
    let first = match chunks.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(error)) => return Err(Error::internal(format!("backup failed: {error}"))),
        None => return Err(Error::internal("the backup stopped without a word")),
    };
    Ok(Download { file_name, encrypted, first, rest: chunks })
}

/// Records a refused or failed restore in the Event Log and hands the error back.
pub fn refused(app: &App, actor: &str, error: Error) -> Error {
    let failed = matches!(error, Error::NoHardwareSerial(_)) || !error.is_refusal();
    app.writer.journal(journal::entry(
        if failed { Level::Error } else { Level::Warning },
        if failed { EntryKind::RestoreFailed } else { EntryKind::RestoreRefused },
        Some(actor),
        format!("restore not applied: {}", shown_message(&error)),
    ));
    error
}

/// An error as the operator is told it: an infrastructure failure's detail is logged, not shown.
fn shown_message(error: &Error) -> String {
    match error {
        Error::Internal(_) => "internal error; see the Event Log".to_owned(),
        Error::Backup(error) if !error.is_refusal() => {
            "internal error; see the Event Log".to_owned()
        }
        other => other.to_string(),
    }
}

fn clustered() -> Error {
    Error::RestoreClustered(StoreError::Clustered.to_string())
}

/// Takes the single backup/restore slot for a restore, refusing one on a clustered peer or a
/// machine without a serial (nothing is read or changed then).
pub fn begin(app: &App, actor: &str) -> Result<Operation, Error> {
    serial(app).map_err(|error| refused(app, actor, error))?;
    let operation = app
        .operations
        .begin(backups::OperationKind::Restore, now_ms())
        .ok_or(Error::OperationInProgress)?;
    if app.writer.cluster_settings().borrow().is_clustered() {
        let error = clustered();
        operation.finish(Err(error.to_string()));
        return Err(refused(app, actor, error));
    }
    Ok(operation)
}

/// Reads, verifies and stages an archive into `staging_dir` (see `store::stage_restore`):
/// nothing else changes. `over_limit` is set by a reader that stopped at the size limit.
/// On a refusal the operation is finished and the refusal journaled.
pub async fn stage(
    app: &App,
    actor: &str,
    operation: Operation,
    reader: impl io::Read + Send + 'static,
    over_limit: Arc<AtomicBool>,
    password: Option<String>,
    staging_dir: std::path::PathBuf,
) -> Result<(backup::Staged, Operation), Error> {
    let serial = serial(app).map_err(|error| refused(app, actor, error))?;
    let data_dir = app.data_dir.clone();
    let (staged, operation) = tokio::task::spawn_blocking(move || {
        let target = backup::StagingTarget {
            expected_serial: &serial,
            running_version: crate::base::version::software_version(),
            staging_dir: &staging_dir,
        };
        let staged = crate::store::stage_restore(reader, password.as_deref(), &target, &mut |p| {
            operation.report(p)
        });
        // A target that a rename could not replace is refused now, not half-way through.
        let staged = staged.and_then(|staged| staged.check_targets(&data_dir).map(|()| staged));
        (staged, operation)
    })
    .await?;
    match staged {
        Ok(staged) => Ok((staged, operation)),
        Err(error) => {
            let error = if over_limit.load(Ordering::SeqCst) {
                Error::BackupTooLarge { limit_bytes: backups::RESTORE_BODY_BYTES_MAX }
            } else {
                Error::Backup(error)
            };
            operation.finish(Err(shown_message(&error)));
            Err(refused(app, actor, error))
        }
    }
}

/// What an applied restore did: the archive's manifest and where the safety copies are.
pub struct Restored {
    pub manifest: backup::Manifest,
    pub applied: backups::Applied,
}

/// Applies a staged restore to the running daemon and reloads the TLS identity. Refused
/// (nothing changed) if this peer has joined a cluster meanwhile.
pub async fn apply(
    app: &App,
    actor: &str,
    staged: &backup::Staged,
    operation: Operation,
) -> Result<Restored, Error> {
    let applied =
        backups::apply(&app.writer, &app.readers, &app.data_dir, staged, actor, now_ms()).await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(backups::ApplyError::Store(StoreError::Clustered)) => {
            let error = clustered();
            operation.finish(Err(error.to_string()));
            return Err(refused(app, actor, error));
        }
        Err(error) => {
            operation.finish(Err(error.to_string()));
            return Err(refused(app, actor, Error::internal(error)));
        }
    };
    reload_tls(app).await?;
    operation.finish(Ok(()));
    Ok(Restored { manifest: staged.manifest().clone(), applied })
}

/// The restored certificates record and TLS files take effect for new connections.
async fn reload_tls(app: &App) -> Result<(), Error> {
    let state = app.writer.state().await?;
    let certificates = match state.list(RecordKind::Certificates).next() {
        Some(Record::Certificates(certificates)) => Some(certificates.clone()),
        _ => None,
    };
    match tls::configured_identity(&app.tls_files, certificates.as_ref())
        .or_else(|_| tls::server_config(&app.tls_files))
    {
        Ok(config) => {
            app.tls.reload(config);
            super::records::announce_certificate(app, certificates.as_ref());
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "restored TLS identity unusable; keeping the current one")
        }
    }
    Ok(())
}
