//! Administrator accounts and their sessions: password checks (bounded, timing-safe, failures
//! in the Event Log), logging in and out, changing one's own password.

use super::{App, Error, Input, logins};
use crate::base::clock::now_ms;
use crate::base::journal::{self, EntryKind};
use crate::base::{auth, passwords};
use eventlog::Level;
use model::{Command, Record, RecordKey, RecordKind};
use std::net::IpAddr;

/// An argon2id hash of a random string, verified against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1yJbUSEQ3HYd5ONjQx5s8yNQ4x0HVqmEqN3PBXc0P5s";

/// Why a read-only account's change is refused, in every interface.
pub const READ_ONLY_REFUSAL: &str =
    "this account is read-only: it can see every page and read the API, but change nothing";

/// Where a login comes from, as its Event Log entry says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    Api,
    Web,
}

/// A session opened by [`log_in`].
pub struct Session {
    pub token: String,
    pub admin: model::record::Administrator,
}

/// The argon2id hash of a new administrator password, computed off the async runtime.
pub async fn hash(password: String) -> Result<String, Error> {
    passwords::hash(password).await?.map_err(Error::internal)
}

/// The administrator account `name`, if it exists (every authenticated request asks; see
/// [`super::records::current`]).
pub fn lookup_admin(app: &App, name: &str) -> Option<model::record::Administrator> {
    let key = RecordKey { kind: RecordKind::Administrator, name: name.to_owned() };
    match super::records::current(app, &key) {
        Some(Record::Administrator(admin)) => Some(admin),
        _ => None,
    }
}

/// Verifies an administrator's password from `source`, throttled (`services::logins`);
/// failures are recorded in the Event Log and refused as [`Error::WrongPassword`], whether the
/// name or the password is wrong.
pub async fn check_password(
    app: &App,
    source: IpAddr,
    name: &str,
    password: &str,
    via: Via,
) -> Result<model::record::Administrator, Error> {
    app.logins.admit(source, name)?;
    let admin = lookup_admin(app, name);
    // Hash even for an unknown user, so timing does not tell which names exist.
    let hash = admin.as_ref().map_or(DUMMY_HASH, |admin| &admin.password_hash).to_owned();
    let verified = passwords::verify(password.to_owned(), hash).await?;
    match admin {
        Some(admin) if verified => {
            app.logins.succeeded(source, name);
            Ok(admin)
        }
        _ => {
            let path = match via {
                Via::Api => logins::Path::Api,
                Via::Web => logins::Path::Web,
            };
            app.logins.failed(source, name, path);
            Err(Error::WrongPassword)
        }
    }
}

/// Checks the password and opens a session.
pub async fn log_in(
    app: &App,
    source: IpAddr,
    name: &str,
    password: &str,
    via: Via,
) -> Result<Session, Error> {
    let admin = check_password(app, source, name, password, via).await?;
    let token = app
        .sessions
        .open(&admin.name, now_ms())
        .ok_or_else(|| Error::internal("could not open a session"))?;
    let message = match via {
        Via::Api => "administrator logged in",
        Via::Web => "administrator logged in to the web interface",
    };
    app.writer.journal(journal::entry(
        Level::Info,
        EntryKind::LoginSucceeded,
        Some(&admin.name),
        message,
    ));
    Ok(Session { token, admin })
}

/// Closes the session `token` of `name`.
pub fn log_out(app: &App, name: &str, token: &str, via: Via) {
    app.sessions.close(token);
    let message = match via {
        Via::Api => "administrator logged out",
        Via::Web => "administrator logged out of the web interface",
    };
    app.writer.journal(journal::entry(Level::Info, EntryKind::Logout, Some(name), message));
}

/// Changes `name`'s own password after checking the current one; ends the account's other
/// sessions (all but `token`) and clears the forced change.
pub async fn change_own_password(
    app: &App,
    source: IpAddr,
    name: &str,
    token: Option<&str>,
    current_password: &str,
    new_password: String,
) -> Result<(), Error> {
    let via = if token.is_some() { Via::Web } else { Via::Api };
    let mut account = match check_password(app, source, name, current_password, via).await {
        Err(Error::WrongPassword) => {
            return Err(Error::field(Input::Fields, "current_password", "is not correct"));
        }
        checked => checked?,
    };
    if let Some(problem) = auth::password_problem(&new_password) {
        return Err(Error::field(Input::Fields, "new_password", problem));
    }
    if new_password == current_password {
        return Err(Error::field(
            Input::Fields,
            "new_password",
            "must differ from the current password",
        ));
    }
    account.password_hash = hash(new_password).await?;
    account.must_change_password = false;
    let command = Command::Save(Record::Administrator(account));
    app.writer.execute(name, command, now_ms()).await?;
    app.sessions.close_user(name, token);
    app.writer.journal(journal::entry(
        Level::Info,
        EntryKind::PasswordChanged,
        Some(name),
        "password changed",
    ));
    Ok(())
}
