//! `batonctl cluster …`: the peer's cluster settings (show, set, clear), each peer's status as
//! the operator sees it, and `join`, which performs the seed's Tasks 3–5 on every peer in one
//! step: the members list the new peer, the new peer takes the key and the list, and the
//! command waits until every link is active or says what blocks it.

use crate::cli::{ClusterAction, Globals, SettingsAction};
use crate::client::Client;
use crate::output::Output;
use crate::{prompt, records, render};
use anyhow::{Context, bail};
use model::RecordKind;
use model::record::REDACTED;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long `join` waits for every link to come up.
pub(crate) const JOIN_TIMEOUT_MS: u64 = 20_000;
const JOIN_POLL_MS: u64 = 500;

pub(crate) fn run(
    client: &Client,
    globals: &Globals,
    password: &str,
    out: Output,
    action: ClusterAction,
) -> anyhow::Result<()> {
    let settings = |action| records::settings(client, out, RecordKind::Cluster, action);
    match action {
        ClusterAction::Show => settings(SettingsAction::Show),
        ClusterAction::Set(body) => settings(SettingsAction::Set(body)),
        ClusterAction::Clear => settings(SettingsAction::Clear),
        ClusterAction::Status => out.emit(&client.get("/api/v1/cluster/status")?, render::cluster),
        ClusterAction::Join { members } => join(client, globals, password, out, &members),
        ClusterAction::Upgrade(args) => crate::cluster_upgrade::run(globals, password, out, &args),
    }
}

fn join(
    new: &Client,
    globals: &Globals,
    password: &str,
    out: Output,
    member_urls: &[String],
) -> anyhow::Result<()> {
    let members: Vec<Client> = member_urls
        .iter()
        .map(|url| {
            Client::new(&Globals { url: url.clone(), ..globals.clone() }, password.to_owned())
        })
        .collect::<anyhow::Result<_>>()?;
    let new_address = match new.get("/api/v1/ipv4") {
        Ok(ipv4) => ipv4["address"].as_str().unwrap_or_default().to_owned(),
        Err(error) if crate::client::is_not_found(&error) => {
            bail!("the new peer has no IPv4 address yet: batonctl ipv4 set --set address=…")
        }
        Err(error) => return Err(error),
    };
    // Every member must already agree on the list: the cluster is consistent before it grows.
    let mut lists = Vec::new();
    for (member, url) in members.iter().zip(member_urls) {
        let cluster = member.get("/api/v1/cluster").with_context(|| format!("reading {url}"))?;
        let mut peers: Vec<String> = cluster["peers"]
            .as_array()
            .map(|peers| peers.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        peers.sort();
        lists.push((url, peers));
    }
    let Some((_, list)) = lists.first().cloned() else { bail!("give at least one --member") };
    if list.is_empty() {
        bail!(
            "{} is in standalone mode: found the cluster on it first (batonctl --url {} cluster \
             set --set peers=<its address> --file - with the key)",
            member_urls[0],
            member_urls[0]
        );
    }
    if let Some((url, other)) = lists.iter().find(|(_, peers)| *peers != list) {
        bail!("the members disagree: {} lists {list:?}, {url} lists {other:?}", member_urls[0]);
    }
    if list.len() != members.len() + usize::from(list.contains(&new_address)) {
        eprintln!(
            "note: the cluster lists {list:?}; only the members given with --member are updated"
        );
    }
    let key = prompt::cluster_key()?;
    let mut peers = list.clone();
    if !peers.contains(&new_address) {
        peers.push(new_address.clone());
    }
    peers.sort();
    eprintln!("Task 3: listing {new_address} on every member");
    for (member, url) in members.iter().zip(member_urls) {
        // The members keep their key (sent back redacted), so a mistyped key cannot break them.
        member
            .put("/api/v1/cluster", &json!({"pre_shared_key": REDACTED, "peers": peers}))
            .with_context(|| format!("updating {url}"))?;
    }
    eprintln!(
        "Tasks 4–5: the new peer takes the key and the list; its shared configuration is replaced by the cluster's"
    );
    new.put("/api/v1/cluster", &json!({"pre_shared_key": key, "peers": peers}))
        .context("configuring the new peer")?;
    let deadline = Instant::now() + Duration::from_millis(JOIN_TIMEOUT_MS);
    loop {
        // The new peer may briefly refuse logins while the cluster's accounts arrive.
        let status = new.get("/api/v1/cluster/status").unwrap_or(Value::Null);
        let lines = status["peers"].as_array().cloned().unwrap_or_default();
        let waiting: Vec<&Value> = lines
            .iter()
            .filter(|line| !matches!(line["state"].as_str(), Some("this_system" | "active")))
            .collect();
        if !lines.is_empty() && waiting.is_empty() {
            return out.emit(&status, |status| format!("joined\n{}", render::cluster(status)));
        }
        // A refusal (wrong key, mismatch) will not cure itself: say so now, not at the deadline.
        let refused = waiting.iter().any(|line| {
            let text = line["text"].as_str().unwrap_or_default();
            line["state"] == "failed"
                && !text.starts_with("Failed: unreachable")
                && !text.starts_with("Failed: connection lost")
        });
        if refused {
            let render = render::cluster(&status);
            bail!(
                "the new peer was refused:\n{render}fix its settings with `batonctl cluster set` \
                 (e.g. the key, with --file -), or take it off the members' lists"
            );
        }
        if Instant::now() > deadline {
            let render = render::cluster(&status);
            bail!("not every peer is active after {JOIN_TIMEOUT_MS} ms:\n{render}");
        }
        std::thread::sleep(Duration::from_millis(JOIN_POLL_MS));
    }
}
