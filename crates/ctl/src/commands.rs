//! Runs a parsed command line: status, password, configuration, history and logs here; record
//! collections in [`crate::records`], backups and upgrades in their own modules.

use crate::cli::{
    BackupCommand, Command, ConfigCommand, Globals, Invocation, LogCommand, Page, Parsed,
};
use crate::client::{self, Client};
use crate::output::Output;
use crate::{prompt, records, render};
use anyhow::bail;
use serde_json::json;

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
        Invocation::Named(kind, action) => records::named(&client, out, kind, action),
        Invocation::Settings(kind, action) => records::settings(&client, out, kind, action),
        Invocation::Command(command) => fixed(&client, out, command),
        Invocation::Unknown(_) => Ok(()),
    }
}

fn change_password(globals: &Globals, out: Output) -> anyhow::Result<()> {
    let (current, new) = prompt::password_change(globals)?;
    let client = Client::new(globals, current.clone())?;
    let body = json!({"current_password": current, "new_password": new});
    let answer = client.post("/api/v1/password", &body)?;
    out.emit(&answer, |_| "password changed\n".to_owned())
}

fn fixed(client: &Client, out: Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Status => out.emit(&client.get("/api/v1/status")?, |status| {
            let mut overview = status.clone();
            let cluster = overview.as_object_mut().and_then(|map| map.remove("cluster"));
            let mut text = render::fields(&overview);
            if let Some(cluster) = cluster {
                text.push_str("\ncluster ");
                text.push_str(&render::cluster(&cluster));
            }
            text
        }),
        Command::Password => Ok(()),
        Command::Backup(command) => crate::backups::run(client, out, command),
        Command::Upgrade(command) => crate::upgrades::run(client, out, command),
        Command::Config(ConfigCommand::Show { at }) => config_at(client, out, at),
        Command::Config(ConfigCommand::At { time }) => config_at(client, out, Some(time)),
        Command::Config(ConfigCommand::Diff { from, to }) => {
            let query = client::query(&[("from", Some(from)), ("to", to)]);
            out.emit(&client.get(&format!("/api/v1/config/diff{query}"))?, render::diff)
        }
        Command::History { collection, name, page } => {
            let name = name.unwrap_or_else(|| collection.as_str().to_owned());
            let path = format!(
                "/api/v1/history/{}/{}{}",
                collection.collection(),
                client::encode(&name),
                client::query(&paging(&page))
            );
            out.emit(&client.get(&path)?, render::config_log)
        }
        Command::Log(LogCommand::Config { actor, kind, name, since, until, page }) => {
            let mut pairs = vec![
                ("actor", actor),
                ("kind", kind.map(|kind| kind.as_str().to_owned())),
                ("name", name),
                ("since", since),
                ("until", until),
            ];
            pairs.extend(paging(&page));
            let path = format!("/api/v1/logs/configuration{}", client::query(&pairs));
            out.emit(&client.get(&path)?, render::config_log)
        }
        Command::Log(LogCommand::Events { level, kind, text, page }) => {
            let mut pairs = vec![("level", level), ("kind", kind), ("text", text)];
            pairs.extend(paging(&page));
            let path = format!("/api/v1/logs/events{}", client::query(&pairs));
            out.emit(&client.get(&path)?, render::event_log)
        }
    }
}

fn config_at(client: &Client, out: Output, at: Option<String>) -> anyhow::Result<()> {
    let path = format!("/api/v1/config{}", client::query(&[("at", at)]));
    out.emit(&client.get(&path)?, render::config)
}

fn paging(page: &Page) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("limit", page.limit.map(|limit| limit.to_string())),
        ("before", page.before.map(|before| before.to_string())),
    ]
}
