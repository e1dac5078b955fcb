//! Writing answers to stdout: the API's JSON with `--json`, otherwise text for people. A closed
//! pipe (`batonctl log events | head`) ends output quietly instead of panicking.

use anyhow::Context;
use serde::Serialize;
use std::io::Write;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// Prints `value` as JSON, or as `human` renders it. The JSON goes through
    /// `serde_json::Value`, so objects print with their keys sorted, whatever the type's field
    /// order: `--json` prints an answer as the daemon's JSON read by any client.
    pub(crate) fn emit<T: Serialize>(
        self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            let value = serde_json::to_value(value).context("encoding JSON")?;
            let mut text = serde_json::to_string_pretty(&value).context("encoding JSON")?;
            text.push('\n');
            write(&text)
        } else {
            write(&human(value))
        }
    }

    /// A confirmation for people; nothing with `--json`, as the API answered with no body.
    pub(crate) fn message(self, text: &str) -> anyhow::Result<()> {
        if self.json { Ok(()) } else { write(&format!("{text}\n")) }
    }
}

fn write(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
