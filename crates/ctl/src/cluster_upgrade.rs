//! `batonctl cluster upgrade <image>`: the seed's rolling upgrade ("Upgrading a cluster of
//! TelePresence Conductors", Tasks 1–7), done by the tool and checked at every step.
//!
//! One peer (the *last*) serves the VCS while the others (the *first group*) leave the cluster,
//! are upgraded and re-clustered; then the VCS is moved to them and the last peer follows.
//! Baton steers the VCS itself instead of the seed's "edit the VCS server addresses": a peer in
//! maintenance mode answers 503 on the status path, so the VCS moves its calls elsewhere (after
//! the peer's drain, during which the calls that still arrive are answered). A peer is only put
//! in maintenance while another one serves, so some peer serves at every moment.
//!
//! **Resume.** There is no state file: every run observes the peers (version, cluster list,
//! maintenance, links) and each step does only what is not done yet, so running the command
//! again after an interruption (or a failed check, once fixed) continues where it stopped.
//!
//! **Conferences.** The policy service records each conference it creates as a shared record
//! naming its bridge and its creator, who ends it once empty. While the cluster is split, only
//! the last peer creates conferences, and joining replaces its database (and its peer id).
//! So before the VCS moves to the upgraded peers, the last peer's conference records are
//! carried over to them, and records whose creator will not exist in the new cluster are
//! re-owned by a peer that will: a conference made while apart is routed to the bridge that
//! already hosts it (never created twice) and is still ended when empty (never leaked).

use crate::cli::{Globals, UpgradeArgs};
use crate::client::{self, Client};
use crate::output::Output;
use crate::{prompt, records, render};
use anyhow::{Context, bail};
use api::{ClusterStatus, PeerState, PolicyStatus};
use model::record::{Conference, Maintenance, REDACTED};
use model::{Record, Scope};
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a peer's state is polled while waiting for it.
const POLL_MS: u64 = 500;
/// How long links get to come up after a cluster change.
const LINKS_TIMEOUT_MS: u64 = 60_000;
/// How long a refusal must last before it ends the wait: right after a change, a peer line
/// can still show the refusal of the other side's settings before that change (links restart
/// on every settings change).
const REFUSAL_SETTLE_MS: u64 = 5_000;
/// How long a settings change gets to show in the peer's status (maintenance, standalone).
const SETTLE_TIMEOUT_MS: u64 = 20_000;
/// A drain longer than this is not waited for silently: something is wrong with the clock.
const DRAIN_WAIT_MAX_MS: u64 = 15 * 60_000;
/// How often the last peer's new conferences are carried over while both sides may get calls.
const CARRY_INTERVAL_MS: u64 = 200;
/// The upload's progress is reported every this many percent.
const PROGRESS_STEP_PERCENT: u64 = 10;
/// The upload of an image (hundreds of MiB on a slow link) may take this long.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3_600);

/// One peer of the cluster being upgraded.
struct Peer {
    url: String,
    client: Client,
    /// Its primary IPv4 address, as cluster lists name it.
    address: String,
}

/// How the operator names a peer: its address and its admin API URL.
struct Named {
    address: String,
    url: String,
}

/// What a peer shows now.
#[derive(Clone, Debug)]
struct Seen {
    version: String,
    peer_id: String,
    /// When the daemon started: a reboot changes it.
    started: String,
    projections_current: bool,
    /// Addresses in its cluster list, sorted; empty in standalone mode.
    listed: Vec<String>,
    /// Address → state ("this_system", "active", "failed", …) of every listed peer.
    lines: BTreeMap<String, String>,
    cluster_status: ClusterStatus,
    maintenance: bool,
    /// Its status path answers 200: the VCS may send it calls.
    serving: bool,
}

impl Seen {
    fn clustered(&self) -> bool {
        !self.listed.is_empty()
    }

    /// Every other listed peer is Active.
    fn links_up(&self) -> bool {
        self.lines.values().all(|state| state == "this_system" || state == "active")
    }
}

pub(crate) fn run(
    globals: &Globals,
    password: &str,
    out: Output,
    args: &UpgradeArgs,
) -> anyhow::Result<()> {
    // The whole chain is the message: which peer and which step matter as much as the API's
    // answer, which `main` would otherwise print alone.
    upgrade_cluster(globals, password, out, args).map_err(|error| anyhow::anyhow!("{error:#}"))
}

fn upgrade_cluster(
    globals: &Globals,
    password: &str,
    out: Output,
    args: &UpgradeArgs,
) -> anyhow::Result<()> {
    let manifest = read_manifest(&args.image)?;
    let target = manifest.version.to_string();
    let reboot_timeout_ms = args.reboot_timeout_s.saturating_mul(1000);
    let peers = discover(globals, password, &args.peers, reboot_timeout_ms)?;
    // A peer may be rebooting when a run resumes: give it the time a reboot gets.
    let mut seen = Vec::new();
    for peer in &peers {
        seen.push(wait_for_answer(peer, reboot_timeout_ms)?);
    }
    check_versions(&peers, &seen, &manifest)?;
    let named: Vec<Named> = peers
        .iter()
        .map(|peer| Named { address: peer.address.clone(), url: peer.url.clone() })
        .collect();
    let last = choose_last(&named, &seen, &target, args.last.as_deref(), &globals.url)?;
    check_starting_point(&peers, &seen, &target, last)?;
    let first: Vec<usize> = (0..peers.len()).filter(|index| *index != last).collect();
    let all_addresses: Vec<String> = sorted(peers.iter().map(|peer| peer.address.clone()));
    let done = seen.iter().all(|s| {
        s.version == target && s.listed == all_addresses && s.links_up() && !s.maintenance
    });
    if done {
        eprintln!("every peer already runs {target} in one cluster; nothing to do");
        return finish(&peers, out, &target);
    }
    for (index, s) in seen.iter().enumerate() {
        // The cluster as found must not name peers this run does not manage.
        if let Some(stranger) = s.listed.iter().find(|address| !all_addresses.contains(address)) {
            bail!(
                "{} lists {stranger}, which is not among the peers given ({}): give every peer \
                 with --peer URL",
                peers[index].address,
                all_addresses.join(", ")
            );
        }
    }
    eprintln!(
        "upgrading to {target}: {} last (it serves the VCS meanwhile), first {}",
        peers[last].address,
        first.iter().map(|index| peers[*index].address.as_str()).collect::<Vec<_>>().join(", ")
    );
    let key = prompt::cluster_key()?;
    let mut run =
        Run { peers: &peers, image: &args.image, target, last, first, uploaded: BTreeSet::new() };
    run.take_out_first_group()?;
    run.upgrade_first_group(reboot_timeout_ms)?;
    run.recluster_first_group(&key)?;
    run.switch_the_vcs()?;
    run.upgrade_last(reboot_timeout_ms)?;
    run.join_last(&key)?;
    finish(&peers, out, &run.target)
}

/// The peers and the plan of one run.
struct Run<'a> {
    peers: &'a [Peer],
    image: &'a Path,
    target: String,
    last: usize,
    first: Vec<usize>,
    /// Peers the image was uploaded to in this run (an upload is verified by the peer, so it
    /// is done before anything disturbs that peer, and not twice).
    uploaded: BTreeSet<usize>,
}

impl Run<'_> {
    fn peer(&self, index: usize) -> &Peer {
        &self.peers[index]
    }

    fn first_addresses(&self) -> Vec<String> {
        sorted(self.first.iter().map(|index| self.peers[*index].address.clone()))
    }

    /// Tasks 1–2: the first group is taken off the VCS (maintenance, after the last peer is
    /// seen serving), drained, placed in standalone mode, and the last peer stops listing it.
    /// Conferences the first group created are re-owned by the last peer, which serves alone.
    fn take_out_first_group(&mut self) -> anyhow::Result<()> {
        let last = self.last;
        let last_seen = observe(self.peer(last))?;
        if last_seen.version == self.target {
            return Ok(()); // Tasks 1–5 are behind us.
        }
        // Peers still to upgrade, and any that rebooted into the new version by accident while
        // still in the old cluster (it refuses them as a version mismatch): both must leave.
        let mut pending = Vec::new();
        for &index in &self.first {
            let s = observe(self.peer(index))?;
            if s.version != self.target || s.listed.contains(&self.peer(last).address) {
                pending.push(index);
            }
        }
        // The image is checked by each peer (signature, product, architecture, versions)
        // before any of them is disturbed.
        for &index in &pending {
            let s = observe(self.peer(index))?;
            if s.clustered() && s.version != self.target {
                self.upload(index)?;
            }
        }
        for &index in &pending {
            let s = observe(self.peer(index))?;
            if s.maintenance || !s.clustered() {
                continue;
            }
            eprintln!(
                "Task 1: {}: maintenance mode, so the VCS sends its calls to {}",
                self.peer(index).address,
                self.peer(last).address
            );
            self.require_other_serving(index)?;
            set_maintenance(self.peer(index), true)?;
        }
        for &index in &pending {
            if observe(self.peer(index))?.clustered() {
                wait_drained(self.peer(index))?;
            }
        }
        for &index in &pending {
            if observe(self.peer(index))?.clustered() {
                eprintln!("Task 2: {}: standalone mode", self.peer(index).address);
                standalone(self.peer(index))?;
            }
        }
        let s = observe(self.peer(last))?;
        let first = self.first_addresses();
        if s.listed.iter().any(|address| first.contains(address)) {
            let remaining: Vec<String> =
                s.listed.iter().filter(|address| !first.contains(address)).cloned().collect();
            eprintln!(
                "Task 2: {}: the cluster list becomes {remaining:?}",
                self.peer(last).address
            );
            save_cluster(self.peer(last), REDACTED, &remaining)?;
            wait_links(&[self.peer(last)], "the last peer alone")?;
            let owner = observe(self.peer(last))?.peer_id;
            let moved = reown(self.peer(last), &owner, &BTreeSet::from([owner.clone()]))?;
            if moved > 0 {
                eprintln!(
                    "  {moved} conference(s) made by the peers that left are now ended by {} when empty",
                    self.peer(last).address
                );
            }
        }
        Ok(())
    }

    /// Task 3: each peer of the first group gets the image and reboots into it.
    fn upgrade_first_group(&mut self, reboot_timeout_ms: u64) -> anyhow::Result<()> {
        for index in self.first.clone() {
            let s = observe(self.peer(index))?;
            if s.version == self.target {
                continue;
            }
            if s.clustered() || !s.maintenance {
                bail!(
                    "{} is not ready for its upgrade (it should be standalone and in maintenance \
                     mode, it is {}clustered and {}in maintenance): run the command again",
                    self.peer(index).address,
                    if s.clustered() { "" } else { "not " },
                    if s.maintenance { "" } else { "not " }
                );
            }
            eprintln!("Task 3: {}: upgrade to {}", self.peer(index).address, self.target);
            self.reboot_into_target(index, &s, reboot_timeout_ms)?;
        }
        Ok(())
    }

    /// Task 4: the upgraded peers form a cluster of their own: the lowest address founds it,
    /// the others join it (their configuration is replaced by the founder's).
    fn recluster_first_group(&self, key: &str) -> anyhow::Result<()> {
        if observe(self.peer(self.last))?.version == self.target {
            return Ok(()); // The last peer is upgraded too: Task 7 forms the whole cluster.
        }
        let wanted = self.first_addresses();
        let founder = self.first_founder();
        let s = observe(self.peer(founder))?;
        if !s.clustered() {
            eprintln!("Task 4: {}: founds the upgraded cluster", self.peer(founder).address);
            save_cluster(
                self.peer(founder),
                key,
                std::slice::from_ref(&self.peer(founder).address),
            )?;
            wait_links(&[self.peer(founder)], "the founder")?;
        }
        if observe(self.peer(founder))?.listed != wanted {
            save_cluster(self.peer(founder), REDACTED, &wanted)?;
        }
        for &index in &self.first {
            if index != founder && observe(self.peer(index))?.listed != wanted {
                eprintln!(
                    "Task 4: {}: joins {} (its configuration is replaced by the cluster's)",
                    self.peer(index).address,
                    self.peer(founder).address
                );
                save_cluster(self.peer(index), key, &wanted)?;
            }
        }
        let group: Vec<&Peer> = self.first.iter().map(|index| self.peer(*index)).collect();
        wait_links(&group, "the upgraded peers")
    }

    fn first_founder(&self) -> usize {
        let mut first = self.first.clone();
        first.sort_by(|a, b| {
            address_key(&self.peers[*a].address).cmp(&address_key(&self.peers[*b].address))
        });
        first[0]
    }

    /// Task 5: the VCS moves to the upgraded peers. The last peer's conferences are carried
    /// over first; then the upgraded peers leave maintenance (now two groups serve), then the
    /// last peer enters it (now only the upgraded ones), and what it made in between is
    /// carried over too.
    fn switch_the_vcs(&self) -> anyhow::Result<()> {
        let last = self.peer(self.last);
        let s = observe(last)?;
        if s.version == self.target || !s.clustered() {
            return Ok(()); // Already switched, and the last peer is on its way.
        }
        let founder = self.peer(self.first_founder());
        let group: Vec<Seen> =
            self.first.iter().map(|index| observe(self.peer(*index))).collect::<Result<_, _>>()?;
        let staying: BTreeSet<String> = group.iter().map(|s| s.peer_id.clone()).collect();
        let owner = observe(founder)?.peer_id;
        if group.iter().all(|s| s.maintenance) {
            // Nothing serves on the upgraded side yet: the last peer's records are the truth.
            let carried = carry_conferences(last, founder, &owner, &staying, true)?;
            eprintln!(
                "Task 5: {carried} conference change(s) carried over to the upgraded cluster"
            );
        }
        // From here both sides may get calls until the VCS's next status poll, and they do not
        // replicate to each other: what the last peer makes is carried over continuously, so
        // a conference it made is known upgraded-side a moment later.
        let carry = || -> anyhow::Result<()> {
            let carried = carry_conferences(last, founder, &owner, &staying, false)?;
            if carried > 0 {
                eprintln!("Task 5: {carried} more conference change(s) carried over");
            }
            Ok(())
        };
        for &index in &self.first {
            let peer = self.peer(index);
            if observe(peer)?.maintenance {
                eprintln!("Task 5: {}: out of maintenance, serving the VCS", peer.address);
                put_maintenance(peer, false)
                    .with_context(|| format!("ending maintenance mode on {}", peer.address))?;
            }
        }
        let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
        while !self.first.iter().all(|index| serving(self.peer(*index))) {
            carry()?;
            if Instant::now() > deadline {
                let peer = self.first.iter().map(|index| self.peer(*index)).find(|p| !serving(p));
                let peer = peer.unwrap_or(founder);
                bail!(
                    "{} does not serve the VCS after leaving maintenance mode ({}); the last \
                     peer still serves: fix it and run the command again",
                    peer.address,
                    unavailable_reason(peer)
                );
            }
            std::thread::sleep(Duration::from_millis(CARRY_INTERVAL_MS));
        }
        if !s.maintenance {
            eprintln!(
                "Task 5: {}: maintenance mode, so the VCS sends its calls to the upgraded peers",
                last.address
            );
            self.require_other_serving(self.last)?;
            put_maintenance(last, true)
                .with_context(|| format!("setting maintenance mode on {}", last.address))?;
        }
        // The last peer decides the calls that still reach it until its drain is over.
        let deadline =
            Instant::now() + Duration::from_millis(DRAIN_WAIT_MAX_MS + SETTLE_TIMEOUT_MS);
        loop {
            carry()?;
            if Instant::now() > deadline {
                bail!("{} did not stop serving the VCS after its drain", last.address);
            }
            let status: PolicyStatus = last.client.get("/api/v1/policy/status")?;
            match status.maintenance_drain_ms_left {
                Some(0) | None if !serving(last) => break,
                Some(left_ms) if left_ms > DRAIN_WAIT_MAX_MS => bail!(
                    "{} says its maintenance drains for {left_ms} ms more: check its clock",
                    last.address
                ),
                _ => std::thread::sleep(Duration::from_millis(CARRY_INTERVAL_MS)),
            }
        }
        // Calls decided just before the drain ended.
        carry()
    }

    /// Task 6: the last peer goes standalone and is upgraded.
    fn upgrade_last(&mut self, reboot_timeout_ms: u64) -> anyhow::Result<()> {
        let index = self.last;
        let s = observe(self.peer(index))?;
        if s.version == self.target {
            return Ok(());
        }
        if !s.maintenance {
            bail!(
                "{} should be in maintenance mode before its upgrade: run the command again",
                self.peer(index).address
            );
        }
        if s.clustered() {
            eprintln!("Task 6: {}: standalone mode", self.peer(index).address);
            standalone(self.peer(index))?;
        }
        eprintln!("Task 6: {}: upgrade to {}", self.peer(index).address, self.target);
        let s = observe(self.peer(index))?;
        self.reboot_into_target(index, &s, reboot_timeout_ms)
    }

    /// Task 7: the last peer joins the upgraded cluster, then serves again.
    fn join_last(&self, key: &str) -> anyhow::Result<()> {
        let everyone = sorted(self.peers.iter().map(|peer| peer.address.clone()));
        let last = self.peer(self.last);
        for &index in &self.first {
            let peer = self.peer(index);
            let s = observe(peer)?;
            if s.listed != everyone {
                eprintln!("Task 7: {}: lists {}", peer.address, last.address);
                save_cluster(peer, REDACTED, &everyone)?;
            }
        }
        let s = observe(last)?;
        if s.listed != everyone {
            eprintln!("Task 7: {}: joins the upgraded cluster", last.address);
            save_cluster(last, key, &everyone)?;
        }
        let all: Vec<&Peer> = self.peers.iter().collect();
        wait_links(&all, "the whole cluster")?;
        // Joining replaced its configuration; the cluster's arrives by replication. Until it
        // has, it would route calls on a partial picture (and make conferences twice).
        wait_caught_up(last, self.peer(self.first_founder()))?;
        if observe(last)?.maintenance {
            eprintln!("Task 7: {}: out of maintenance, serving the VCS", last.address);
            set_maintenance(last, false)?;
        }
        Ok(())
    }

    /// Before `index` stops serving: some other peer must serve, unless none did (a cluster
    /// no VCS uses, e.g. without a policy service account).
    fn require_other_serving(&self, index: usize) -> anyhow::Result<()> {
        let mut any_serving = false;
        let mut others_serving = Vec::new();
        for (other, peer) in self.peers.iter().enumerate() {
            let serving = serving(peer);
            any_serving |= serving;
            if serving && other != index {
                others_serving.push(peer.address.clone());
            }
        }
        if any_serving && others_serving.is_empty() {
            let reason = unavailable_reason(self.peer(self.last));
            bail!(
                "no other peer serves the VCS, so {} stays out of maintenance ({}: {reason}); fix \
                 that peer and run the command again",
                self.peer(index).address,
                self.peer(self.last).address
            );
        }
        Ok(())
    }

    /// Uploads the image (unless done in this run), reboots the peer and waits until it
    /// answers again running the target version with its projections current.
    fn reboot_into_target(
        &mut self,
        index: usize,
        before: &Seen,
        reboot_timeout_ms: u64,
    ) -> anyhow::Result<()> {
        self.upload(index)?;
        let peer = self.peer(index);
        peer.client
            .post::<()>("/api/v1/upgrade/reboot", &())
            .with_context(|| format!("asking {} to reboot into the new version", peer.address))?;
        eprintln!("  {}: rebooting", peer.address);
        let deadline = Instant::now() + Duration::from_millis(reboot_timeout_ms);
        loop {
            match observe(peer) {
                Ok(s)
                    if s.started != before.started
                        && s.version == self.target
                        && s.projections_current =>
                {
                    eprintln!("  {}: back, running {}", peer.address, s.version);
                    return Ok(());
                }
                // Back with the new version, still catching up: wait.
                Ok(s) if s.started != before.started && s.version == self.target => {}
                Ok(s) if s.started != before.started => {
                    let last_boot = match peer.client.get::<api::UpgradeStatus>("/api/v1/upgrade") {
                        Ok(boot) => boot.last_boot,
                        Err(error) => format!("unknown: {error:#}"),
                    };
                    bail!(
                        "{} came back running {}, not {} (last boot: {}); it still serves \
                         nothing and the cluster is served by the others. Look at its Event \
                         Log, then run the command again (or with another image)",
                        peer.address,
                        s.version,
                        self.target,
                        last_boot
                    );
                }
                _ => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer with version {} within {} s of its reboot: look at its \
                     console; run the command again once it answers",
                    peer.address,
                    self.target,
                    reboot_timeout_ms / 1000
                );
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    fn upload(&mut self, index: usize) -> anyhow::Result<()> {
        if self.uploaded.contains(&index) {
            return Ok(());
        }
        let peer = self.peer(index);
        upload(peer, &self.target, self.image)?;
        self.uploaded.insert(index);
        Ok(())
    }
}

/// The manifest of the image, read without verifying it: the peers verify the signature when
/// it is uploaded (they hold the trusted keys), before any of them is disturbed.
fn read_manifest(path: &Path) -> anyhow::Result<upgrade::Manifest> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut fixed = vec![0u8; upgrade::HEADER_FIXED_BYTES];
    file.read_exact(&mut fixed)
        .with_context(|| format!("{} is not an upgrade image (too short)", path.display()))?;
    if fixed[..upgrade::MAGIC.len()] != upgrade::MAGIC {
        bail!("{} is not an upgrade image (it does not start with BATONUPG)", path.display());
    }
    let length = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
    if length > upgrade::MANIFEST_SIZE_MAX_BYTES {
        bail!("{} has a manifest of {length} bytes: not an upgrade image", path.display());
    }
    let mut manifest = vec![0u8; usize::try_from(length)?];
    file.read_exact(&mut manifest)
        .with_context(|| format!("{} ends inside its manifest", path.display()))?;
    let manifest: upgrade::Manifest = serde_json::from_slice(&manifest)
        .with_context(|| format!("reading the manifest of {}", path.display()))?;
    if manifest.product != upgrade::PRODUCT {
        bail!("{} is an image of {:?}, not Baton", path.display(), manifest.product);
    }
    Ok(manifest)
}

/// The peers to upgrade: --url and every --peer, else the addresses --url's cluster lists.
fn discover(
    globals: &Globals,
    password: &str,
    given: &[String],
    answer_timeout_ms: u64,
) -> anyhow::Result<Vec<Peer>> {
    let connect = |url: &str| {
        Client::new(&Globals { url: url.to_owned(), ..globals.clone() }, password.to_owned())
    };
    let mut urls = vec![globals.url.trim_end_matches('/').to_owned()];
    if given.is_empty() {
        let here = connect(&urls[0])?;
        let status: ClusterStatus = here.get("/api/v1/cluster/status")?;
        let listed: Vec<String> = status
            .peers
            .iter()
            .filter(|line| line.state != PeerState::ThisSystem)
            .map(|line| line.address.to_string())
            .collect();
        if listed.is_empty() {
            bail!(
                "cannot tell the other peers from {}'s cluster settings (it lists no other \
                 peer): give every peer with --peer URL",
                urls[0]
            );
        }
        let port = port_of(&urls[0]);
        urls.extend(listed.iter().map(|address| format!("https://{address}{port}")));
    } else {
        urls.extend(given.iter().map(|url| url.trim_end_matches('/').to_owned()));
    }
    let mut peers: Vec<Peer> = Vec::new();
    for url in urls {
        let client = connect(&url)?;
        // A peer may be rebooting when a run resumes: it gets the time a reboot gets.
        let deadline = Instant::now() + Duration::from_millis(answer_timeout_ms);
        let mut said = false;
        let address = loop {
            match records::ipv4(&client) {
                Ok(ipv4) => break ipv4.address.to_string(),
                Err(error)
                    if error.downcast_ref::<client::ApiError>().is_none()
                        && Instant::now() < deadline =>
                {
                    if !said {
                        eprintln!("waiting for {url} to answer ({error:#})");
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(POLL_MS));
                }
                Err(error) => return Err(error.context(format!("reading the address of {url}"))),
            }
        };
        if address.is_empty() {
            bail!("{url} has no IPv4 address: it cannot be in a cluster");
        }
        if let Some(twice) = peers.iter().find(|peer| peer.address == address) {
            bail!("{url} and {} are the same peer ({address})", twice.url);
        }
        peers.push(Peer { url, client, address });
    }
    if peers.len() < 2 {
        bail!("a single peer needs no rolling upgrade: batonctl upgrade install");
    }
    Ok(peers)
}

/// `:port` of an `https://host:port` URL, or nothing for the default port.
fn port_of(url: &str) -> String {
    let authority = url.trim_start_matches("https://").split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((_, port)) if port.bytes().all(|b| b.is_ascii_digit()) => format!(":{port}"),
        _ => String::new(),
    }
}

/// Every peer not yet at the image's version must be able to take it.
fn check_versions(
    peers: &[Peer],
    seen: &[Seen],
    manifest: &upgrade::Manifest,
) -> anyhow::Result<()> {
    for (peer, s) in peers.iter().zip(seen) {
        if s.version == manifest.version.to_string() {
            continue;
        }
        let running: upgrade::Version = s.version.parse().map_err(|error: String| {
            anyhow::anyhow!("{} reports its version: {error}", peer.address)
        })?;
        if running > manifest.version {
            bail!(
                "{} runs {running}, newer than the image's {}: not a downgrade tool",
                peer.address,
                manifest.version
            );
        }
        if running < manifest.min_from_version {
            bail!(
                "the image upgrades from {} or later; {} runs {running}: upgrade it to an \
                 intermediate version first",
                manifest.min_from_version,
                peer.address
            );
        }
    }
    Ok(())
}

/// Before anything changes, the cluster must be sound: when nothing has been done yet (every
/// peer at the old version, none in maintenance), every peer lists every peer and sees each
/// one Active. (A run under way is judged step by step instead.)
fn check_starting_point(
    peers: &[Peer],
    seen: &[Seen],
    target: &str,
    last: usize,
) -> anyhow::Result<()> {
    let fresh = seen.iter().all(|s| s.version != target && !s.maintenance);
    if !fresh {
        return Ok(());
    }
    let everyone = sorted(peers.iter().map(|peer| peer.address.clone()));
    for (peer, s) in peers.iter().zip(seen) {
        if s.listed != everyone || !s.links_up() {
            bail!(
                "the cluster is not sound, so nothing was changed: {} shows\n{}every peer must \
                 list {} and see the others Active (batonctl cluster status)",
                peer.address,
                render::cluster(&s.cluster_status),
                everyone.join(", ")
            );
        }
    }
    if seen.iter().any(|s| s.serving) && !seen[last].serving {
        bail!(
            "{} would serve the VCS alone but does not serve it now ({}); nothing was changed: \
             fix it or choose another peer with --last",
            peers[last].address,
            unavailable_reason(&peers[last])
        );
    }
    Ok(())
}

/// The peer upgraded last: as chosen by the operator, else as the peers' state shows (a run
/// in progress), else the peer at --url.
fn choose_last(
    peers: &[Named],
    seen: &[Seen],
    target: &str,
    chosen: Option<&str>,
    url: &str,
) -> anyhow::Result<usize> {
    let old: Vec<usize> = (0..peers.len()).filter(|index| seen[*index].version != target).collect();
    let upgraded = old.len() < peers.len();
    let inferred = if old.is_empty() {
        // Everything upgraded: the last is the one still in maintenance, or not yet back in.
        (0..peers.len())
            .find(|index| seen[*index].maintenance)
            .or_else(|| (0..peers.len()).find(|index| !seen[*index].clustered()))
    } else if upgraded {
        // Some peers are upgraded: the last is the old one still in the old cluster (or the
        // only old one).
        match old.as_slice() {
            [only] => Some(*only),
            _ => old
                .iter()
                .copied()
                .find(|index| seen[*index].clustered() && !seen[*index].maintenance),
        }
    } else {
        // Nothing upgraded yet; if some peers already left, the last is the one serving in the
        // cluster they left.
        let candidates: Vec<usize> = old
            .iter()
            .copied()
            .filter(|index| seen[*index].clustered() && !seen[*index].maintenance)
            .collect();
        let someone_left =
            old.iter().any(|index| seen[*index].maintenance || !seen[*index].clustered());
        match candidates.as_slice() {
            [only] if someone_left => Some(*only),
            _ => None,
        }
    };
    let named = match chosen {
        Some(name) => {
            let name = name.trim_end_matches('/');
            let found = peers.iter().position(|peer| peer.address == name || peer.url == name);
            Some(found.with_context(|| {
                let all: Vec<&str> = peers.iter().map(|peer| peer.address.as_str()).collect();
                format!("--last {name}: not one of the peers ({})", all.join(", "))
            })?)
        }
        None => None,
    };
    match (named, inferred) {
        (Some(named), Some(inferred)) if named != inferred => bail!(
            "an upgrade is under way with {} as the last peer, not {}: run the same command \
             without --last",
            peers[inferred].address,
            peers[named].address
        ),
        (Some(named), _) => Ok(named),
        (None, Some(inferred)) => Ok(inferred),
        (None, None) => {
            // The peer at --url, unless it is already off the VCS: then one that serves.
            let url = url.trim_end_matches('/');
            let here = peers.iter().position(|peer| peer.url == url).unwrap_or(0);
            if !seen[here].maintenance {
                return Ok(here);
            }
            (0..peers.len())
                .find(|index| !seen[*index].maintenance && seen[*index].clustered())
                .with_context(|| "every peer is in maintenance mode: give --last".to_owned())
        }
    }
}

/// What a peer shows now (four requests).
fn observe(peer: &Peer) -> anyhow::Result<Seen> {
    let status: api::Status = peer.client.get("/api/v1/status")?;
    let lines: BTreeMap<String, String> = status
        .cluster
        .peers
        .iter()
        .map(|line| (line.address.to_string(), line.state.as_str().to_owned()))
        .collect();
    let maintenance = match records::maintenance(&peer.client) {
        Ok(maintenance) => maintenance.enabled,
        Err(error) if client::is_not_found(&error) => false,
        Err(error) => return Err(error),
    };
    Ok(Seen {
        version: status.version,
        peer_id: status.peer_id,
        started: status.started,
        projections_current: status.projections_current,
        listed: sorted(lines.keys().cloned()),
        lines,
        cluster_status: status.cluster,
        maintenance,
        serving: serving(peer),
    })
}

fn wait_for_answer(peer: &Peer, timeout_ms: u64) -> anyhow::Result<Seen> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut said = false;
    loop {
        match observe(peer) {
            Ok(seen) => return Ok(seen),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!("{} does not answer", peer.url)));
            }
            Err(error) => {
                if !said {
                    eprintln!("waiting for {} to answer ({error:#})", peer.url);
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(POLL_MS));
            }
        }
    }
}

/// Whether the peer's policy service serves the VCS, as its status path would tell the VCS
/// (which checks the policy-service credentials; this asks the admin API).
fn serving(peer: &Peer) -> bool {
    peer.client
        .get::<PolicyStatus>("/api/v1/policy/status")
        .is_ok_and(|status| status.unavailable.is_none())
}

fn unavailable_reason(peer: &Peer) -> String {
    match peer.client.get::<PolicyStatus>("/api/v1/policy/status") {
        Ok(status) => status.unavailable.unwrap_or_else(|| "serving".to_owned()),
        Err(error) => format!("{error:#}"),
    }
}

/// Turns maintenance mode on or off and waits until the status path says so.
fn set_maintenance(peer: &Peer, enabled: bool) -> anyhow::Result<()> {
    put_maintenance(peer, enabled)
        .with_context(|| format!("setting maintenance mode on {}", peer.address))?;
    wait_for(peer, if enabled { "to stop serving" } else { "to serve the VCS" }, |_| {
        serving(peer) != enabled
    })
    .map_err(|error| error.context(unavailable_reason(peer)))
}

/// Waits until a peer in maintenance has drained: the VCS has had its poll interval to move
/// its calls elsewhere.
fn wait_drained(peer: &Peer) -> anyhow::Result<()> {
    let status: PolicyStatus = peer.client.get("/api/v1/policy/status")?;
    let Some(left_ms) = status.maintenance_drain_ms_left else { return Ok(()) };
    if left_ms == 0 {
        return Ok(());
    }
    if left_ms > DRAIN_WAIT_MAX_MS {
        bail!(
            "{} says its maintenance drains for {left_ms} ms more: check its clock",
            peer.address
        );
    }
    eprintln!(
        "  {}: waiting {} s for the VCS to move its calls away",
        peer.address,
        left_ms.div_ceil(1000)
    );
    std::thread::sleep(Duration::from_millis(left_ms));
    Ok(())
}

/// Saves the peer's maintenance mode setting.
fn put_maintenance(peer: &Peer, enabled: bool) -> anyhow::Result<()> {
    let _: Record = peer.client.put("/api/v1/maintenance", &Maintenance { enabled })?;
    Ok(())
}

fn standalone(peer: &Peer) -> anyhow::Result<()> {
    save_cluster(peer, "", &[])?;
    wait_for(peer, "to be in standalone mode", |s| !s.clustered())
}

fn save_cluster(peer: &Peer, key: &str, peers: &[String]) -> anyhow::Result<()> {
    peer.client
        .put::<Record>("/api/v1/cluster", &json!({"pre_shared_key": key, "peers": peers}))
        .with_context(|| format!("saving the cluster settings of {}", peer.address))?;
    Ok(())
}

fn wait_for(peer: &Peer, what: &str, mut check: impl FnMut(&Seen) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    loop {
        if let Ok(s) = observe(peer)
            && check(&s)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not come {what} within {SETTLE_TIMEOUT_MS} ms", peer.address);
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// Waits until every peer of `group` shows every peer it lists as Active; a refusal (key,
/// list, version, different cluster) still shown after [`REFUSAL_SETTLE_MS`] ends the wait
/// with the status.
fn wait_links(group: &[&Peer], what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(LINKS_TIMEOUT_MS);
    let settled = started + Duration::from_millis(REFUSAL_SETTLE_MS);
    loop {
        let mut waiting = None;
        for peer in group {
            // A peer that has just joined refuses logins until the cluster's accounts arrive.
            let s = match observe(peer) {
                Ok(s) => s,
                Err(error) => {
                    waiting = Some((peer.address.clone(), format!("{error:#}\n")));
                    continue;
                }
            };
            if !s.links_up() || !s.projections_current {
                // A refusal ends the wait; a peer merely out of reach (or a peer of an older
                // release, which sends no code) may still come.
                let refused = s.cluster_status.peers.iter().any(|line| {
                    matches!(line.state, PeerState::Failed { .. })
                        && line.code.is_some_and(|code| !code.is_transient())
                });
                if refused && Instant::now() > settled {
                    bail!(
                        "{what}: {} refuses a peer:\n{}fix the cluster settings named there \
                         (batonctl cluster set) and run the command again",
                        peer.address,
                        render::cluster(&s.cluster_status)
                    );
                }
                waiting = Some((peer.address.clone(), render::cluster(&s.cluster_status)));
            }
        }
        let Some((address, shown)) = waiting else { return Ok(()) };
        if Instant::now() > deadline {
            bail!(
                "{what}: not every link is Active after {LINKS_TIMEOUT_MS} ms; {address} \
                 shows:\n{shown}"
            );
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// Waits until `peer` holds every shared record `reference` holds now.
fn wait_caught_up(peer: &Peer, reference: &Peer) -> anyhow::Result<()> {
    let wanted = shared_keys(reference)?;
    let deadline = Instant::now() + Duration::from_millis(LINKS_TIMEOUT_MS);
    loop {
        let missing = match shared_keys(peer) {
            Ok(held) => wanted.difference(&held).count(),
            Err(_) => wanted.len(), // Logins wait for the cluster's accounts.
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} still lacks {missing} of the cluster's records after {LINKS_TIMEOUT_MS} ms \
                 (replication stalled?): see batonctl cluster status",
                peer.address
            );
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// (kind, name) of every shared record the peer holds.
fn shared_keys(peer: &Peer) -> anyhow::Result<BTreeSet<(String, String)>> {
    let config: api::ConfigAnswer = peer.client.get("/api/v1/config")?;
    Ok(config
        .records
        .iter()
        .filter(|record| record.kind().scope() == Scope::Shared)
        .map(|record| (record.kind().as_str().to_owned(), record.name().to_owned()))
        .collect())
}

/// Streams the image to the peer, which verifies it and writes it to its inactive slot.
fn upload(peer: &Peer, target: &str, path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    eprintln!("  {}: uploading {target} ({} MiB)", peer.address, total_bytes.div_ceil(1 << 20));
    let reader =
        Progress { inner: file, done_bytes: 0, total_bytes, next_percent: PROGRESS_STEP_PERCENT };
    let request = peer
        .client
        .request(Method::POST, "/api/v1/upgrade")
        .timeout(UPLOAD_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::blocking::Body::sized(reader, total_bytes));
    let answer: api::Installed =
        client::answer(peer.client.send_raw(request).map_err(|error| {
            error.context(format!(
                "{} refused the image; nothing was changed on it (run the command again with an \
             image it accepts)",
                peer.address
            ))
        })?)?;
    eprintln!(
        "  {}: {} installed in slot {}; it boots next, on trial",
        peer.address, answer.version, answer.slot
    );
    Ok(())
}

/// A reader that reports how far the upload got, every [`PROGRESS_STEP_PERCENT`].
struct Progress {
    inner: std::fs::File,
    done_bytes: u64,
    total_bytes: u64,
    next_percent: u64,
}

impl Read for Progress {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.done_bytes += read as u64;
        let percent = (self.done_bytes * 100).checked_div(self.total_bytes).unwrap_or(100);
        while percent >= self.next_percent && self.next_percent <= 100 {
            eprintln!("    {}%", self.next_percent);
            self.next_percent += PROGRESS_STEP_PERCENT;
        }
        Ok(read)
    }
}

/// Re-owns, on `peer`, the conference records whose creator is not in `staying`: `owner`
/// will end them when empty. Returns how many changed.
fn reown(peer: &Peer, owner: &str, staying: &BTreeSet<String>) -> anyhow::Result<usize> {
    let mut changed = 0;
    for record in conferences(peer)?.into_values() {
        if !staying.contains(&record.created_by) {
            save_conference(peer, &record, owner)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Carries the conference records of `from` (the last peer) to `to` (the upgraded cluster's
/// founder), owned by `owner` unless their creator is in `staying`. With `authoritative`
/// (nothing serves on `to`'s side yet), `from`'s records win and records `from` no longer
/// has (ended while apart) are removed; otherwise `to` has served too and its records win.
fn carry_conferences(
    from: &Peer,
    to: &Peer,
    owner: &str,
    staying: &BTreeSet<String>,
    authoritative: bool,
) -> anyhow::Result<usize> {
    let source = conferences(from)?;
    let target = conferences(to)?;
    let mut changed = 0;
    let same_place = |a: &Conference, b: &Conference| {
        a.bridge == b.bridge && a.bridge_conference_id == b.bridge_conference_id
    };
    for (name, record) in &source {
        let keep = match target.get(name) {
            None => false,
            Some(existing) if !same_place(existing, record) => !authoritative,
            Some(_) => true,
        };
        if !keep {
            save_conference(to, record, owner)?;
            changed += 1;
        }
    }
    for (name, record) in &target {
        if source.contains_key(name) && !same_place(record, &source[name]) && authoritative {
            continue; // Replaced above.
        }
        if authoritative && !source.contains_key(name) {
            match to.client.delete(&format!("/api/v1/conferences/{}", client::encode(name))) {
                Err(error) if !client::is_not_found(&error) => {
                    return Err(error.context(format!("removing the ended conference {name}")));
                }
                _ => {}
            }
            changed += 1;
        } else if !staying.contains(&record.created_by) {
            save_conference(to, record, owner)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn conferences(peer: &Peer) -> anyhow::Result<BTreeMap<String, Conference>> {
    let listed = records::conferences(&peer.client)?;
    Ok(listed.into_iter().map(|conference| (conference.name.clone(), conference)).collect())
}

/// Saves `conference` on `peer`, owned by `owner`.
fn save_conference(peer: &Peer, conference: &Conference, owner: &str) -> anyhow::Result<()> {
    let name = &conference.name;
    let record = Conference { created_by: owner.to_owned(), ..conference.clone() };
    // A PUT updates a record; a record the peer does not have is created with a POST.
    let path = format!("/api/v1/conferences/{}", client::encode(name));
    let saved = match peer.client.put::<Record>(&path, &record) {
        Err(error) if client::is_not_found(&error) => {
            peer.client.post::<Record>("/api/v1/conferences", &record)
        }
        other => other,
    };
    saved.with_context(|| format!("saving conference {name} on {}", peer.address))?;
    Ok(())
}

/// The final check: every peer runs `target`, lists every peer, shows every link Active, is
/// out of maintenance and serves the VCS.
fn finish(peers: &[Peer], out: Output, target: &str) -> anyhow::Result<()> {
    let everyone = sorted(peers.iter().map(|peer| peer.address.clone()));
    let all: Vec<&Peer> = peers.iter().collect();
    wait_links(&all, "the upgraded cluster")?;
    let mut rows = Vec::new();
    for peer in peers {
        let s = observe(peer)?;
        let problem = if s.version != target {
            Some(format!("runs {}", s.version))
        } else if s.listed != everyone {
            Some(format!("lists {:?}", s.listed))
        } else if s.maintenance {
            Some("is in maintenance mode".to_owned())
        } else if !s.serving {
            Some(format!("does not serve the VCS: {}", unavailable_reason(peer)))
        } else {
            None
        };
        if let Some(problem) = problem {
            bail!("the upgrade did not finish: {} {problem}; run the command again", peer.address);
        }
        rows.push(Upgraded {
            address: peer.address.clone(),
            version: s.version,
            peer_id: s.peer_id,
        });
    }
    let answer = Finished { version: target.to_owned(), peers: rows };
    out.emit(&answer, |answer| {
        let mut text =
            format!("every peer runs {} in one cluster, serving the VCS\n", answer.version);
        for row in &answer.peers {
            text.push_str(&format!("{}  {}\n", row.address, row.version));
        }
        text
    })
}

/// The outcome of a rolling upgrade, as `--json` prints it.
#[derive(Serialize)]
struct Finished {
    version: String,
    peers: Vec<Upgraded>,
}

#[derive(Serialize)]
struct Upgraded {
    address: String,
    version: String,
    peer_id: String,
}

fn sorted(addresses: impl Iterator<Item = String>) -> Vec<String> {
    let mut addresses: Vec<String> = addresses.collect();
    addresses.sort_by_key(|address| address_key(address));
    addresses.dedup();
    addresses
}

/// Orders IPv4 addresses numerically (as the daemon sorts its list), anything else after.
fn address_key(address: &str) -> (u8, u32, String) {
    match address.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => (0, u32::from(ip), String::new()),
        Err(_) => (1, 0, address.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OLD: &str = "0.1.0";
    const NEW: &str = "1.0.0";

    fn named() -> Vec<Named> {
        (1..=3)
            .map(|x| Named { address: format!("10.0.0.{x}"), url: format!("https://10.0.0.{x}") })
            .collect()
    }

    /// A peer at `version`, listing `listed` (last octets), in maintenance or not.
    fn seen(version: &str, listed: &[u8], maintenance: bool) -> Seen {
        let cluster_status = ClusterStatus {
            mode: api::ClusterMode::Standalone,
            cluster_id: None,
            peer_id: String::new(),
            problems: Vec::new(),
            peers: Vec::new(),
        };
        Seen {
            version: version.to_owned(),
            peer_id: String::new(),
            started: String::new(),
            projections_current: true,
            listed: listed.iter().map(|x| format!("10.0.0.{x}")).collect(),
            lines: BTreeMap::new(),
            cluster_status,
            maintenance,
            serving: false,
        }
    }

    fn last(seen: &[Seen], chosen: Option<&str>) -> Result<String, String> {
        choose_last(&named(), seen, NEW, chosen, "https://10.0.0.1/")
            .map(|index| named()[index].address.clone())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_last_peer_is_chosen_then_read_back_from_the_peers_at_every_stage() {
        let cluster = [1, 2, 3];
        // Nothing done: the operator's choice, else the peer at --url.
        let fresh =
            [seen(OLD, &cluster, false), seen(OLD, &cluster, false), seen(OLD, &cluster, false)];
        assert_eq!(last(&fresh, None).unwrap(), "10.0.0.1");
        assert_eq!(last(&fresh, Some("10.0.0.2")).unwrap(), "10.0.0.2");
        assert_eq!(last(&fresh, Some("https://10.0.0.3")).unwrap(), "10.0.0.3");
        assert!(last(&fresh, Some("10.0.0.9")).unwrap_err().contains("not one of the peers"));
        // The others left (maintenance, standalone): the one serving the old cluster is last,
        // whatever --url is, and another --last is refused.
        let apart = [seen(OLD, &[], true), seen(OLD, &[2], false), seen(OLD, &[], true)];
        assert_eq!(last(&apart, None).unwrap(), "10.0.0.2");
        assert!(last(&apart, Some("10.0.0.1")).unwrap_err().contains("10.0.0.2 as the last peer"));
        // Only one went to maintenance so far: ambiguous from the state, so the choice holds,
        // and without one the peer at --url is not taken when it is already off the VCS.
        let one_off =
            [seen(OLD, &cluster, true), seen(OLD, &cluster, false), seen(OLD, &cluster, false)];
        assert_eq!(last(&one_off, Some("10.0.0.3")).unwrap(), "10.0.0.3");
        assert_eq!(last(&one_off, None).unwrap(), "10.0.0.2");
        // One upgraded, one waiting for its upgrade: the old peer still clustered is last.
        let midway = [seen(NEW, &[], true), seen(OLD, &[2], false), seen(OLD, &[], true)];
        assert_eq!(last(&midway, None).unwrap(), "10.0.0.2");
        // Only one old peer left: it is the last.
        let switched =
            [seen(NEW, &[1, 3], false), seen(OLD, &[2], true), seen(NEW, &[1, 3], false)];
        assert_eq!(last(&switched, None).unwrap(), "10.0.0.2");
        // All upgraded, the last not yet back in: the one not listing everyone.
        let rejoining =
            [seen(NEW, &[1, 3], false), seen(NEW, &[], true), seen(NEW, &[1, 3], false)];
        assert_eq!(last(&rejoining, None).unwrap(), "10.0.0.2");
    }

    #[test]
    fn an_image_is_read_for_its_version_and_anything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = upgrade::generate_signing_key().unwrap();
        let payload = vec![1u8; 1000];
        let (size, digest) = upgrade::digest_payload(&mut &payload[..]).unwrap();
        let manifest = upgrade::Manifest {
            format_version: upgrade::FORMAT_VERSION,
            product: upgrade::PRODUCT.to_owned(),
            version: "2.3.4".parse().unwrap(),
            architecture: "x86_64".to_owned(),
            payload_size_bytes: size,
            payload_sha256: digest,
            min_from_version: "0.0.0".parse().unwrap(),
            created_at_unix_s: 0,
        };
        let mut image = Vec::new();
        upgrade::write_image(&mut image, &manifest, &key, &mut &payload[..]).unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, &image).unwrap();
        assert_eq!(read_manifest(&path).unwrap().version.to_string(), "2.3.4");
        std::fs::write(&path, b"not an image, but long enough to hold a header of one......................................").unwrap();
        assert!(read_manifest(&path).unwrap_err().to_string().contains("BATONUPG"));
        std::fs::write(&path, &image[..100]).unwrap();
        assert!(format!("{:#}", read_manifest(&path).unwrap_err()).contains("ends inside"));
    }

    #[test]
    fn peer_urls_and_address_order() {
        assert_eq!(port_of("https://10.0.0.1:8443/"), ":8443");
        assert_eq!(port_of("https://baton.example.com"), "");
        assert_eq!(
            sorted(["10.0.0.10", "10.0.0.9", "10.0.0.9"].into_iter().map(str::to_owned)),
            ["10.0.0.9", "10.0.0.10"]
        );
    }
}
