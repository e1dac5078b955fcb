//! `batonctl alarms`: this peer's active alarms, most severe first, with what to do about
//! each; `batonctl alarms acknowledge ID [SUBJECT]` silences one. Also `batonctl system
//! restart|reboot|shutdown --yes`, Maintenance > Restart options.

use crate::cli::{AlarmsCommand, SystemCommand};
use crate::client::{self, Client};
use crate::output::Output;
use api::{AlarmAcknowledge, Alarms};
use reqwest::Method;
use std::fmt::Write as _;

pub(crate) fn run(
    client: &Client,
    out: Output,
    action: Option<AlarmsCommand>,
) -> anyhow::Result<()> {
    match action.unwrap_or(AlarmsCommand::List) {
        AlarmsCommand::List => {
            let alarms: Alarms = client.get("/api/v1/alarms")?;
            out.emit(&alarms, text)
        }
        AlarmsCommand::Acknowledge { id, subject } => {
            let body = AlarmAcknowledge { id, subject: subject.unwrap_or_default() };
            let request = client.request(Method::POST, "/api/v1/alarms/acknowledge").json(&body);
            // 204 No Content.
            client::answer::<()>(client.send_raw(request)?)?;
            out.emit(&serde_json::json!({"acknowledged": true}), |_| "acknowledged\n".to_owned())
        }
    }
}

/// One block per alarm: "SEVERITY id (subject): title", the detail, what to do.
fn text(alarms: &Alarms) -> String {
    if alarms.alarms.is_empty() {
        return "no alarms\n".to_owned();
    }
    let mut text = String::new();
    for alarm in &alarms.alarms {
        let subject =
            if alarm.subject.is_empty() { String::new() } else { format!(" ({})", alarm.subject) };
        let acknowledged = match &alarm.acknowledged_by {
            Some(by) => format!(" [acknowledged by {by}]"),
            None => String::new(),
        };
        let _ = writeln!(
            text,
            "{} {}{subject}: {}{acknowledged}\n  {}\n  raised {}; to do: {}",
            alarm.severity.to_uppercase(),
            alarm.id,
            alarm.title,
            alarm.detail,
            alarm.raised,
            alarm.action
        );
    }
    text
}

/// Restarts the service, reboots or shuts down this peer, once confirmed with `--yes`.
pub(crate) fn system(client: &Client, out: Output, command: SystemCommand) -> anyhow::Result<()> {
    let (word, confirm) = match command {
        SystemCommand::Restart(confirm) => ("restart", confirm),
        SystemCommand::Reboot(confirm) => ("reboot", confirm),
        SystemCommand::Shutdown(confirm) => ("shutdown", confirm),
    };
    if !confirm.yes {
        anyhow::bail!("nothing done: add --yes to confirm the {word} of this peer");
    }
    let path = format!("/api/v1/system/{word}");
    // 202 Accepted, without a body.
    client::answer::<()>(client.send_raw(client.request(Method::POST, &path))?)?;
    out.emit(&serde_json::json!({"requested": word}), |_| format!("{word} requested\n"))
}
