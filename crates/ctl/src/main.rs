//! `batonctl`: the command-line client of Baton's admin API. Tables for people by default,
//! `--json` for scripts. Talks HTTPS with HTTP Basic authentication on every request.

mod client;
mod render;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use client::Client;
use serde_json::{Map, Value};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "batonctl", version, about = "Manage a Baton appliance through its admin API")]
#[command(
    after_help = "Record collections: administrators, bridges, bridge-pools, service-preferences,
conference-templates, conference-aliases, locations, location-addresses (list, show, create,
update, delete); and the settings policy-service, licence, ethernet, ipv4, system-name, dns,
ntp, time-zone, snmp, syslog, certificates, administration-access, root-password (show, set,
clear). Example: batonctl bridges create --set name=mcu1 --set bridge_type=mcu \\
  --set address=192.0.2.5 --set username=api --set password=secret --set capacity_ports=40"
)]
struct Cli {
    #[command(flatten)]
    connection: client::Connection,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, peer identity, uptime and log position.
    Status,
    /// Change your password: reads the current and the new password from two lines of stdin
    /// (or the current one from BATON_PASSWORD and the new one from BATON_NEW_PASSWORD).
    Password,
    /// The whole configuration, now or at a past time, and differences between two times.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Every change to one record, newest first.
    History { collection: String, name: String },
    /// The Configuration Log or this peer's Event Log.
    #[command(subcommand)]
    Log(LogCommand),
    /// `<collection> <action>`: see the list of collections below.
    #[command(external_subcommand)]
    Record(Vec<String>),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The configuration now, or `--at` a past time.
    Show {
        #[arg(long)]
        at: Option<String>,
    },
    /// The configuration as it was at TIME (RFC 3339, e.g. 2026-11-24T10:00:00Z).
    At { time: String },
    /// What changed between FROM and TO (default: now).
    Diff { from: String, to: Option<String> },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Who changed what, when.
    Config {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// System events of this peer: start, stop, logins, failures.
    Events {
        #[arg(long)]
        level: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        text: Option<String>,
        #[command(flatten)]
        page: Page,
    },
}

#[derive(Args)]
struct Page {
    /// Rows per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Show rows older than this position/id (from the previous page's "more" hint).
    #[arg(long)]
    before: Option<u64>,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct RecordCli {
    #[command(subcommand)]
    action: RecordAction,
}

#[derive(Subcommand)]
enum RecordAction {
    List,
    /// Show one record (or the settings, for a settings collection).
    Show {
        name: Option<String>,
    },
    Create(Body),
    /// Change some fields of a record; others keep their values.
    Update {
        name: String,
        #[command(flatten)]
        body: Body,
    },
    Delete {
        name: String,
    },
    /// Set a settings collection (fields not given keep their values).
    Set(Body),
    /// Clear a settings collection.
    Clear,
}

#[derive(Args)]
struct Body {
    /// A JSON file with the fields.
    #[arg(long)]
    file: Option<PathBuf>,
    /// `field=value`; the value is read as JSON when it parses (numbers, true, ["a","b"]),
    /// otherwise as text.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        match error.downcast_ref::<client::ApiError>() {
            Some(api) => eprint!("{}", render::api_error(api)),
            None => eprintln!("error: {error:#}"),
        }
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    let client = Client::new(&cli.connection)?;
    let show = |value: &Value, human: &dyn Fn(&Value) -> String| {
        if json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            print!("{}", human(value));
        }
    };
    match cli.command {
        Command::Status => show(&client.get("/api/v1/status")?, &render::fields),
        Command::Password => {
            let (current, new) = client::read_password_change()?;
            let body = serde_json::json!({"current_password": current, "new_password": new});
            let answer = client.send("POST", "/api/v1/password", Some(&body), Some(&current))?;
            show(&answer, &|_| "password changed\n".to_owned());
        }
        Command::Config(ConfigCommand::Show { at }) => show_config(&client, at.as_deref(), &show)?,
        Command::Config(ConfigCommand::At { time }) => show_config(&client, Some(&time), &show)?,
        Command::Config(ConfigCommand::Diff { from, to }) => {
            let mut path = format!("/api/v1/config/diff?from={}", client::encode(&from));
            if let Some(to) = to {
                path += &format!("&to={}", client::encode(&to));
            }
            show(&client.get(&path)?, &render::diff);
        }
        Command::History { collection, name } => {
            let path = format!(
                "/api/v1/history/{}/{}",
                client::encode(&collection),
                client::encode(&name)
            );
            show(&client.get(&path)?, &render::config_log);
        }
        Command::Log(LogCommand::Config { actor, kind, name, since, until, page }) => {
            let query = client::query(&[
                ("actor", actor),
                ("kind", kind),
                ("name", name),
                ("since", since),
                ("until", until),
                ("limit", Some(page.limit.to_string())),
                ("before", page.before.map(|b| b.to_string())),
            ]);
            show(&client.get(&format!("/api/v1/logs/configuration{query}"))?, &render::config_log);
        }
        Command::Log(LogCommand::Events { level, kind, text, page }) => {
            let query = client::query(&[
                ("level", level),
                ("kind", kind),
                ("text", text),
                ("limit", Some(page.limit.to_string())),
                ("before", page.before.map(|b| b.to_string())),
            ]);
            show(&client.get(&format!("/api/v1/logs/events{query}"))?, &render::event_log);
        }
        Command::Record(words) => {
            let Some((collection, rest)) = words.split_first() else { bail!("name a collection") };
            let kind = model::RecordKind::from_collection(collection).with_context(|| {
                format!("{collection:?} is not a collection; see `batonctl --help`")
            })?;
            let action = match RecordCli::try_parse_from(rest) {
                Ok(parsed) => parsed.action,
                Err(error) => error.exit(),
            };
            record_command(&client, kind, action, &show)?;
        }
    }
    Ok(())
}

/// Prints an answer: its JSON with `--json`, otherwise the human rendering given.
type Show<'a> = &'a dyn Fn(&Value, &dyn Fn(&Value) -> String);

fn show_config(client: &Client, at: Option<&str>, show: Show<'_>) -> anyhow::Result<()> {
    let path = match at {
        Some(at) => format!("/api/v1/config?at={}", client::encode(at)),
        None => "/api/v1/config".to_owned(),
    };
    show(&client.get(&path)?, &render::config);
    Ok(())
}

fn record_command(
    client: &Client,
    kind: model::RecordKind,
    action: RecordAction,
    show: Show<'_>,
) -> anyhow::Result<()> {
    let collection = format!("/api/v1/{}", kind.collection());
    let one = |name: &str| format!("{collection}/{}", client::encode(name));
    let singleton_only = |action: &str| {
        if !kind.is_singleton() {
            bail!(
                "`{action}` is for settings; {} has list, show, create, update, delete",
                kind.collection()
            );
        }
        Ok(())
    };
    let named_only = |action: &str| {
        if kind.is_singleton() {
            bail!(
                "`{action}` is for record collections; {} has show, set, clear",
                kind.collection()
            );
        }
        Ok(())
    };
    match action {
        RecordAction::List => {
            named_only("list")?;
            show(&client.get(&collection)?, &render::table);
        }
        RecordAction::Show { name } => {
            let path = match (&name, kind.is_singleton()) {
                (Some(name), false) => one(name),
                (None, true) => collection.clone(),
                (None, false) => {
                    bail!("say which record: batonctl {} show <name>", kind.collection())
                }
                (Some(_), true) => bail!(
                    "{} is a settings collection: batonctl {} show",
                    kind.collection(),
                    kind.collection()
                ),
            };
            show(&client.get(&path)?, &render::fields);
        }
        RecordAction::Create(body) => {
            named_only("create")?;
            let body = body_from(&body, Map::new())?;
            show(
                &client.send("POST", &collection, Some(&Value::Object(body)), None)?,
                &render::fields,
            );
        }
        RecordAction::Update { name, body } => {
            named_only("update")?;
            let current = client.get(&one(&name))?;
            let body = body_from(&body, editable(current))?;
            show(
                &client.send("PUT", &one(&name), Some(&Value::Object(body)), None)?,
                &render::fields,
            );
        }
        RecordAction::Delete { name } => {
            named_only("delete")?;
            client.send("DELETE", &one(&name), None, None)?;
            show(&Value::Null, &|_| format!("deleted {} {name:?}\n", kind.as_str()));
        }
        RecordAction::Set(body) => {
            singleton_only("set")?;
            let current = match client.get(&collection) {
                Ok(current) => editable(current),
                Err(error)
                    if error
                        .downcast_ref::<client::ApiError>()
                        .is_some_and(|e| e.status == 404) =>
                {
                    Map::new()
                }
                Err(error) => return Err(error),
            };
            let body = body_from(&body, current)?;
            show(
                &client.send("PUT", &collection, Some(&Value::Object(body)), None)?,
                &render::fields,
            );
        }
        RecordAction::Clear => {
            singleton_only("clear")?;
            client.send("DELETE", &collection, None, None)?;
            show(&Value::Null, &|_| format!("cleared {}\n", kind.as_str()));
        }
    }
    Ok(())
}

/// A record as read, ready to send back: without the `kind` tag and the redacted hash fields
/// the API computes itself.
fn editable(record: Value) -> Map<String, Value> {
    let mut map = match record {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.remove("kind");
    map.remove("password_hash");
    map
}

/// Builds a request body: the file's fields, then `--set` pairs over `base`.
fn body_from(body: &Body, mut base: Map<String, Value>) -> anyhow::Result<Map<String, Value>> {
    if let Some(file) = &body.file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        match serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?
        {
            Value::Object(fields) => base.extend(fields),
            _ => bail!("{} must hold a JSON object", file.display()),
        }
    }
    for pair in &body.set {
        let (field, value) = parse_set(pair)?;
        base.insert(field, value);
    }
    if body.file.is_none() && body.set.is_empty() {
        bail!("give the fields with --set field=value or --file record.json");
    }
    Ok(base)
}

fn parse_set(pair: &str) -> anyhow::Result<(String, Value)> {
    let (field, value) =
        pair.split_once('=').with_context(|| format!("--set {pair:?}: expected field=value"))?;
    if field.is_empty() {
        bail!("--set {pair:?}: the field name is empty");
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((field.to_owned(), value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_values_are_json_when_they_parse_and_text_otherwise() {
        assert_eq!(parse_set("capacity_ports=40").unwrap(), ("capacity_ports".into(), json!(40)));
        assert_eq!(parse_set("enabled=false").unwrap(), ("enabled".into(), json!(false)));
        assert_eq!(parse_set("pools=[\"a\",\"b\"]").unwrap(), ("pools".into(), json!(["a", "b"])));
        assert_eq!(
            parse_set("address=mcu.example.com").unwrap(),
            ("address".into(), json!("mcu.example.com"))
        );
        assert_eq!(
            parse_set("pin=0042").unwrap().1,
            json!("0042"),
            "not a valid JSON number, so text"
        );
        assert_eq!(parse_set("conference_name=a=b").unwrap().1, json!("a=b"));
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("=x").is_err());
    }

    #[test]
    fn updates_merge_over_the_current_record() {
        let current = editable(
            json!({"kind": "bridge", "name": "b", "capacity_ports": 4, "password": "********"}),
        );
        let body = Body { file: None, set: vec!["capacity_ports=8".into()] };
        let merged = body_from(&body, current).unwrap();
        assert_eq!(
            Value::Object(merged),
            json!({"name": "b", "capacity_ports": 8, "password": "********"})
        );
        assert!(body_from(&Body { file: None, set: vec![] }, Map::new()).is_err());
    }
}
