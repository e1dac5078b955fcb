//! Configuration records: read, create, save and remove through the writer, with the acting
//! administrator as the actor, so the Configuration Log is the audit trail. Secrets are
//! redacted in every answer; a saved server certificate takes effect at once.

use super::{App, Error, Input};
use crate::base::{auth, tls};
use model::{Command, Record, RecordKey, RecordKind, Rejection};
use serde_json::Value;

/// The longest policy-service password: what the VCS stores.
pub const POLICY_SERVICE_PASSWORD_CHARS_MAX: usize = 30;

/// A record as every answer shows it: secrets redacted, with its `kind`.
pub fn show(record: &Record) -> Value {
    let mut value = record.redacted().to_json();
    if let Value::Object(map) = &mut value {
        map.insert("kind".to_owned(), Value::String(record.kind().as_str().to_owned()));
    }
    value
}

/// The record stored under `key` now, if any, from the writer's published state (the same
/// last-writer-wins fold as the `proj_records` table): no blocking task and no read
/// transaction per request.
pub fn current(app: &App, key: &RecordKey) -> Option<Record> {
    app.writer.published_state().get(key).cloned()
}

/// Every record of `kind` now, by name.
pub fn list(app: &App, kind: RecordKind) -> Vec<Record> {
    app.writer.published_state().list(kind).cloned().collect()
}

/// The record stored under `key`, or the rejection that names it.
pub fn read(app: &App, key: RecordKey) -> Result<Record, Error> {
    current(app, &key).ok_or_else(|| Rejection::NotFound { key }.into())
}

async fn execute(app: &App, actor: &str, command: Command) -> Result<(), Error> {
    app.writer.execute(actor, command, crate::base::clock::now_ms()).await?;
    Ok(())
}

/// The hash stored for a password of `kind`, after checking the password's rules.
async fn password_hash(kind: RecordKind, password: String) -> Result<String, Error> {
    let problem = if kind == RecordKind::PolicyService {
        (password.is_empty() || password.chars().count() > POLICY_SERVICE_PASSWORD_CHARS_MAX)
            .then(|| format!("must be 1 to {POLICY_SERVICE_PASSWORD_CHARS_MAX} characters"))
    } else {
        auth::password_problem(&password)
    };
    if let Some(problem) = problem {
        return Err(Error::field(Input::Fields, "password", problem));
    }
    if kind == RecordKind::RootPassword {
        tokio::task::spawn_blocking(move || auth::hash_root_password(&password))
            .await?
            .map_err(Error::internal)
    } else {
        super::accounts::hash(password).await
    }
}

/// Turns a body into a record: hashes `password` where the record keeps only a hash, and
/// keeps stored secrets that the client sent back as the redaction placeholder.
async fn record_from_body(
    kind: RecordKind,
    mut body: serde_json::Map<String, Value>,
    existing: Option<&Record>,
) -> Result<Record, Error> {
    if kind.hashes_password() {
        if body.get("password_hash").is_some_and(|hash| hash != model::record::REDACTED) {
            return Err(Error::field(
                Input::Body,
                "password_hash",
                "is computed by Baton: send `password` instead",
            ));
        }
        body.remove("password_hash");
        let hash = match body.remove("password") {
            Some(Value::String(password)) => password_hash(kind, password).await?,
            Some(_) => return Err(Error::field(Input::Body, "password", "must be a string")),
            None if existing.is_some() => model::record::REDACTED.to_owned(),
            None => return Err(Error::field(Input::Fields, "password", "is required")),
        };
        body.insert("password_hash".to_owned(), Value::String(hash));
    }
    let mut record = Record::from_json(kind, Value::Object(body)).map_err(|e| Error::body(&e))?;
    if let Some(existing) = existing {
        record.keep_secrets_from(existing);
    }
    Ok(record)
}

/// Creates a record from a body (an API body or a web form turned into one); returns it
/// redacted.
pub async fn create(
    app: &App,
    actor: &str,
    kind: RecordKind,
    body: serde_json::Map<String, Value>,
) -> Result<Record, Error> {
    let record = record_from_body(kind, body, None).await?;
    let shown = record.redacted();
    execute(app, actor, Command::Create(record)).await?;
    Ok(shown)
}

/// Puts the name from the URL (`path_name`) into the body, refusing a body naming another.
fn name_from_path(
    kind: RecordKind,
    path_name: &str,
    body: &mut serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let name_field = kind.name_field().unwrap_or("name");
    match body.get(name_field) {
        None => {
            body.insert(name_field.to_owned(), Value::String(path_name.to_owned()));
            Ok(())
        }
        Some(Value::String(body_name)) if body_name == path_name => Ok(()),
        Some(_) => Err(Error::field(
            Input::Body,
            name_field,
            "must match the name in the URL; records cannot be renamed",
        )),
    }
}

/// Replaces a named record that must exist (`path_name`), or sets a singleton; returns it
/// redacted. `token` is the acting session, kept when an administrator changes their own
/// password.
pub async fn save(
    app: &App,
    actor: &str,
    token: Option<&str>,
    kind: RecordKind,
    path_name: Option<String>,
    mut body: serde_json::Map<String, Value>,
) -> Result<Record, Error> {
    if let Some(path_name) = &path_name {
        name_from_path(kind, path_name, &mut body)?;
    }
    let name = path_name.clone().unwrap_or_else(|| kind.as_str().to_owned());
    let key = RecordKey { kind, name };
    let existing = current(app, &key);
    if path_name.is_some() && existing.is_none() {
        return Err(Rejection::NotFound { key }.into());
    }
    let record = record_from_body(kind, body, existing.as_ref()).await?;
    let shown = record.redacted();
    // A new server certificate must load before it is saved, so a mistake never reaches the
    // listener; once saved it takes effect for new connections at once.
    let new_tls = match &record {
        Record::Certificates(certificates) => Some((
            certificates.clone(),
            tls::configured_identity(&app.tls_files, Some(certificates)).map_err(|error| {
                Error::field(Input::Fields, "server_certificate_pem", format!("{error:#}"))
            })?,
        )),
        _ => None,
    };
    let command = if kind.is_singleton() { Command::Save(record) } else { Command::Update(record) };
    execute(app, actor, command).await?;
    if let Some((certificates, config)) = new_tls {
        app.tls.reload(config);
        announce_certificate(app, Some(&certificates));
    }
    if kind == RecordKind::Administrator && existing.is_some() {
        // A password changed by another administrator ends that account's other sessions.
        app.sessions.close_user(&key.name, token.filter(|_| actor == key.name));
    }
    Ok(shown)
}

/// Removes a record (or resets a singleton), undoing its run-time effects.
pub async fn remove(app: &App, actor: &str, kind: RecordKind, name: String) -> Result<(), Error> {
    execute(app, actor, Command::Remove(RecordKey { kind, name: name.clone() })).await?;
    if kind == RecordKind::Certificates {
        // Back to the identity made on first start.
        let config = tls::server_config(&app.tls_files)
            .map_err(|error| Error::internal(format!("{error:#}")))?;
        app.tls.reload(config);
        announce_certificate(app, None);
    }
    if kind == RecordKind::Administrator {
        app.sessions.close_user(&name, None);
    }
    Ok(())
}

/// Tells the cluster peers the certificate the admin API now presents (see `cluster_join`).
pub fn announce_certificate(app: &App, certificates: Option<&model::record::Certificates>) {
    match tls::presented_fingerprint(&app.tls_files, certificates) {
        Ok(certificate_sha256) => app.cluster.set_admin_certificate(certificate_sha256),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the admin certificate's fingerprint is unknown")
        }
    }
}

/// Pins the certificate the `https` bridge `name` presented last (as the status shows it), so
/// from now on exactly that certificate is accepted: the operator's one step after comparing
/// it. `expected` is the fingerprint the operator compared: refused if the bridge presented
/// another since. Returns the bridge redacted.
pub async fn pin_presented_certificate(
    app: &App,
    actor: &str,
    name: String,
    expected: Option<String>,
) -> Result<Record, Error> {
    let key = RecordKey { kind: RecordKind::Bridge, name };
    let Record::Bridge(mut bridge) = read(app, key)? else {
        return Err(Error::internal("a bridge key read another kind of record"));
    };
    let Some(presented) = app.policy.presented_fingerprint(&bridge) else {
        return Err(Error::field(
            Input::Fields,
            "pinned_sha256",
            "the bridge has presented no certificate to this peer yet (is it https, and reachable?)",
        ));
    };
    if let Some(expected) = expected {
        let same = model::validate::sha256_fingerprint(&expected)
            .is_some_and(|digest| model::validate::sha256_fingerprint(&presented) == Some(digest));
        if !same {
            return Err(Error::field(
                Input::Fields,
                "sha256",
                format!("the bridge now presents {presented}; compare again before pinning"),
            ));
        }
    }
    bridge.pinned_sha256 = Some(presented);
    let record = Record::Bridge(bridge);
    let shown = record.redacted();
    execute(app, actor, Command::Update(record)).await?;
    Ok(shown)
}
