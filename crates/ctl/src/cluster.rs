//! `batonctl cluster …`: the peer's cluster settings (show, set, clear), each peer's status as
//! the operator sees it, and `join`, which performs the seed's Tasks 3–5 on every peer in one
//! step: the new peer's `POST /api/v1/cluster/join` (the same join the web page runs) has
//! every member list it (the others reached through the certificates the first one relays),
//! takes the key and the list, and waits until every link is active or says what blocks it.
//! The first member's certificate, verified here against `--ca`, is pinned for the daemon;
//! further `--member`s are only checked to agree with it.

use crate::cli::{ClusterAction, Globals, SettingsAction};
use crate::client::Client;
use crate::output::Output;
use crate::{prompt, records, render};
use anyhow::bail;
use model::RecordKind;

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
        ClusterAction::Status => {
            let status: api::ClusterStatus = client.get("/api/v1/cluster/status")?;
            out.emit(&status, render::cluster)
        }
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
    let new_address = match records::ipv4(new) {
        Ok(ipv4) => ipv4.address.to_string(),
        Err(error) if crate::client::is_not_found(&error) => {
            bail!("the new peer has no IPv4 address yet: batonctl ipv4 set --set address=…")
        }
        Err(error) => return Err(error),
    };
    // Every member must already agree on the list: the cluster is consistent before it grows.
    let mut lists = Vec::new();
    for (member, url) in members.iter().zip(member_urls) {
        let listed = match records::cluster(member) {
            Ok(cluster) => cluster.peers,
            // A standalone member has no cluster settings yet.
            Err(error) if crate::client::is_not_found(&error) => Vec::new(),
            Err(error) => return Err(error.context(format!("reading {url}"))),
        };
        let mut peers: Vec<String> = listed.iter().map(ToString::to_string).collect();
        peers.sort();
        lists.push((url, peers));
    }
    let Some((_, list)) = lists.first().cloned() else { bail!("give at least one --member") };
    if list.is_empty() && members.len() > 1 {
        bail!(
            "{} is in standalone mode: give only it with --member, and the join founds the \
             cluster on it first",
            member_urls[0]
        );
    }
    if let Some((url, other)) = lists.iter().find(|(_, peers)| *peers != list) {
        bail!("the members disagree: {} lists {list:?}, {url} lists {other:?}", member_urls[0]);
    }
    let key = prompt::cluster_key()?;
    // The first member's certificate, verified against --ca here, is the one the new peer's
    // daemon will accept from it.
    let fingerprint = members[0].certificate_sha256()?;
    eprintln!(
        "Tasks 3–5: the new peer joins through {}: every member lists {new_address}, the new \
         peer takes the key and the list; its shared configuration is replaced by the cluster's",
        member_urls[0]
    );
    let request = api::JoinRequest {
        member_url: member_urls[0].clone(),
        password: password.to_owned(),
        pre_shared_key: key,
        member_certificate_sha256: fingerprint,
    };
    let joined: api::Joined = new.post("/api/v1/cluster/join", &request).map_err(|error| {
        let advice = "fix the new peer's settings with `batonctl cluster set` (e.g. the key, \
             with --file -), or take it off the members' lists";
        anyhow::anyhow!("{error:#}\n{advice}")
    })?;
    out.emit(&joined.status, |status| format!("joined\n{}", render::cluster(status)))
}
