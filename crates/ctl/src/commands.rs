//! Runs a parsed command line: status, password, configuration, history and logs here; record
//! collections in [`crate::records`], backups and upgrades in their own modules.

use crate::cli::{
    BackupCommand, Command, ConfigCommand, Globals, Invocation, LogCommand, Page, Parsed,
    PolicyCommand,
};
use crate::client::{self, Client};
use crate::output::Output;
use crate::{prompt, records, render};
use anyhow::{Context, bail};
use api::{ConfigAnswer, ConfigDiff, ConfigLogEntry, EventLogEntry, Status};

pub(crate) fn run(parsed: Parsed) -> anyhow::Result<()> {
    let Parsed { globals, invocation } = parsed;
    let out = Output { json: globals.json };
    if let Invocation::Unknown(name) = &invocation {
        let advice = match crate::cli::suggestion(name) {
            Some(close) => format!("did you mean `{close}`?"),
            None => "see `batonctl --help`".to_owned(),
        };
        bail!("{name:?} is not a collection or command; {advice}");
    }
    if let Invocation::Command(Command::Password) = invocation {
        return change_password(&globals, out);
    }
    if let Invocation::Command(Command::Backup(BackupCommand::Inspect { file })) = &invocation {
        // The archive is read first: a daemon is only needed for the diff.
        return crate::backups::inspect(&globals, out, file);
    }
    let password = prompt::login_password(&globals)?;
    let client = Client::new(&globals, password.clone())?;
    match invocation {
        Invocation::Cluster(action) => {
            crate::cluster::run(&client, &globals, &password, out, action)
        }
        Invocation::LiveConferences => crate::policy::live(&client, out),
        Invocation::Named(kind, action) => records::named(&client, out, kind, action),
        Invocation::PinBridge(pin) => records::pin_bridge(&client, out, pin),
        Invocation::Settings(kind, action) => records::settings(&client, out, kind, action),
        Invocation::Command(command) => fixed(&client, out, command),
        Invocation::Unknown(_) => Ok(()),
    }
}

fn change_password(globals: &Globals, out: Output) -> anyhow::Result<()> {
    let (current, new) = prompt::password_change(globals)?;
    let client = Client::new(globals, current.clone())?;
    let body = api::PasswordChange { current_password: current, new_password: new };
    let answer: api::Message = client.post("/api/v1/password", &body)?;
    out.emit(&answer, |_| "password changed\n".to_owned())
}

fn fixed(client: &Client, out: Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Status => {
            let status: Status = client.get("/api/v1/status")?;
            let text = status_text(&status)?;
            out.emit(&status, |_| text)
        }
        Command::Password => Ok(()),
        Command::Backup(command) => crate::backups::run(client, out, command),
        Command::Upgrade(command) => crate::upgrades::run(client, out, command),
        Command::Alarms { action } => crate::alarms::run(client, out, action),
        Command::Policy(PolicyCommand::Status) => crate::policy::status(client, out),
        Command::Policy(PolicyCommand::Explain { alias, source }) => {
            crate::policy::explain(client, out, alias, source)
        }
        Command::System(command) => crate::alarms::system(client, out, command),
        Command::Config(ConfigCommand::Show { at }) => config_at(client, out, at),
        Command::Config(ConfigCommand::At { time }) => config_at(client, out, Some(time)),
        Command::Config(ConfigCommand::Diff { from, to }) => {
            let query = client::query(&[("from", Some(from)), ("to", to)]);
            let diff: ConfigDiff = client.get(&format!("/api/v1/config/diff{query}"))?;
            out.emit(&diff, render::diff)
        }
        Command::History { collection, name, page } => {
            let name = name.unwrap_or_else(|| collection.as_str().to_owned());
            let path = format!(
                "/api/v1/history/{}/{}{}",
                collection.collection(),
                client::encode(&name),
                client::query(&paging(&page))
            );
            let page: api::Page<ConfigLogEntry> = client.get(&path)?;
            out.emit(&page, render::config_log)
        }
        Command::Log(LogCommand::Config { all_peers, actor, kind, name, since, until, page }) => {
            let origin = all_peers.then(|| api::LogOrigin::AllPeers.as_str().to_owned());
            let mut pairs = vec![
                ("origin", origin),
                ("actor", actor),
                ("kind", kind.map(|kind| kind.as_str().to_owned())),
                ("name", name),
                ("since", since),
                ("until", until),
            ];
            pairs.extend(paging(&page));
            let path = format!("/api/v1/logs/configuration{}", client::query(&pairs));
            let page: api::Page<ConfigLogEntry> = client.get(&path)?;
            out.emit(&page, render::config_log)
        }
        Command::Log(LogCommand::Events { level, kind, text, page }) => {
            let mut pairs = vec![("level", level), ("kind", kind), ("text", text)];
            pairs.extend(paging(&page));
            let path = format!("/api/v1/logs/events{}", client::query(&pairs));
            let page: api::Page<EventLogEntry> = client.get(&path)?;
            out.emit(&page, render::event_log)
        }
    }
}

fn config_at(client: &Client, out: Output, at: Option<String>) -> anyhow::Result<()> {
    let path = format!("/api/v1/config{}", client::query(&[("at", at)]));
    let config: ConfigAnswer = client.get(&path)?;
    out.emit(&config, render::config)
}

/// The status as `field: value` lines, then the cluster's lines.
fn status_text(status: &Status) -> anyhow::Result<String> {
    let mut overview = serde_json::to_value(status).context("encoding the status")?;
    if let Some(fields) = overview.as_object_mut() {
        fields.remove("cluster");
    }
    let mut text = render::fields(&overview);
    text.push_str("\ncluster ");
    text.push_str(&render::cluster(&status.cluster));
    Ok(text)
}

fn paging(page: &Page) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("limit", page.limit.map(|limit| limit.to_string())),
        ("before", page.before.map(|before| before.to_string())),
    ]
}
