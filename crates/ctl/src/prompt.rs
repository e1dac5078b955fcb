//! Passwords: from the environment, from lines of stdin, or asked for (without echo) when stdin
//! is a terminal. Never from a command-line flag, where `ps` and shell history would show them.

use crate::cli::Globals;
use anyhow::{Context, bail};
use std::io::{BufRead, IsTerminal, Write};
use std::process::{Command, Stdio};

/// The logged-in user's password for a request.
pub(crate) fn login_password(globals: &Globals) -> anyhow::Result<String> {
    if globals.password_stdin {
        return secret("password");
    }
    if let Some(password) = env("BATON_PASSWORD") {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        return secret(&format!("password for {}", globals.user));
    }
    bail!("no password: set BATON_PASSWORD or pass --password-stdin")
}

/// Current and new password for `batonctl password`: the current one from BATON_PASSWORD
/// unless --password-stdin (or it is not set), else stdin's first line; the new one from
/// BATON_NEW_PASSWORD, else the next line (asked twice on a terminal).
pub(crate) fn password_change(globals: &Globals) -> anyhow::Result<(String, String)> {
    let current = match env("BATON_PASSWORD").filter(|_| !globals.password_stdin) {
        Some(current) => current,
        None => secret("current password")?,
    };
    let new = match env("BATON_NEW_PASSWORD") {
        Some(new) => new,
        None if std::io::stdin().is_terminal() => {
            let new = secret("new password")?;
            if secret("new password again")? != new {
                bail!("the new passwords differ");
            }
            new
        }
        None => secret("new password")?,
    };
    Ok((current, new))
}

/// The cluster's pre-shared key for `cluster join`: BATON_CLUSTER_KEY, else the next line of
/// stdin (asked for without echo on a terminal).
pub(crate) fn cluster_key() -> anyhow::Result<String> {
    match env("BATON_CLUSTER_KEY") {
        Some(key) => Ok(key),
        None => secret("cluster pre-shared key"),
    }
}

/// The password of an encrypted backup: BATON_BACKUP_PASSWORD, else the next line of stdin
/// (asked twice on a terminal when `confirm`, i.e. when making a backup).
pub(crate) fn backup_password(confirm: bool) -> anyhow::Result<String> {
    if let Some(password) = env("BATON_BACKUP_PASSWORD") {
        return Ok(password);
    }
    let password = secret("backup password")?;
    if confirm && std::io::stdin().is_terminal() && secret("backup password again")? != password {
        bail!("the backup passwords differ");
    }
    Ok(password)
}

/// An environment variable that is set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// One secret: asked for without echo on a terminal, otherwise the next line of stdin.
fn secret(what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let _echo = if terminal {
        eprint!("{what}: ");
        std::io::stderr().flush().ok();
        Some(EchoOff::new())
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line).with_context(|| format!("reading the {what}"));
    if terminal {
        eprintln!();
    }
    if read? == 0 {
        bail!("no {what} on stdin");
    }
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(line)
}

/// Terminal echo turned off with `stty` (best effort) until dropped.
struct EchoOff(bool);

impl EchoOff {
    fn new() -> EchoOff {
        EchoOff(stty("-echo"))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.0 {
            stty("echo");
        }
    }
}

/// Runs `stty` on the terminal that is our stdin.
fn stty(setting: &str) -> bool {
    Command::new("stty")
        .arg(setting)
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
