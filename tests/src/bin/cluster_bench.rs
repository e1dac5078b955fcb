//! `cluster-bench`: replication numbers of real release `batond` clusters (2 and 3 peers on
//! 127.0.0.1/.2/.3) printed beside an etcd cluster of as many members (Debian `etcd-server`)
//! measured in the same run, on the same machine, with the same write pattern, as ratios.
//! Run through `cargo xtask bench cluster [options]`; never part of the test suite.
//!
//! Measures, for each cluster size:
//! - replication latency: from the acknowledgement of a durable change on the first member
//!   (HTTP 201 of `POST /api/v1/bridges`; etcd: `/v3/kv/put` answered) to the moment a reader
//!   polling another member sees it; p50/p99 of the time until every other member shows it;
//! - sustained changes: several writers on the first member for a fixed time; acknowledged
//!   changes per second, and how long after the last acknowledgement every member shows it;
//! - catch-up: the last member stopped (SIGTERM), many changes made meanwhile, then restarted;
//!   the time from its restart until it shows the last change, its count checked afterwards.
//!
//! Both systems are driven the same way: HTTPS with keep-alive connections through one
//! `reqwest` client per thread, doing its I/O on that thread (Baton with a session token, so
//! no password hash per request; etcd through its JSON gateway with `--auto-tls`), a change is
//! a ~150-byte value under a fresh key, and readers on the other members read locally (etcd:
//! serializable ranges, or a lagging member would wait for the leader instead of answering what
//! it holds). etcd writes go to its leader, its best case: a write to a follower costs an extra
//! forward.

use anyhow::{Context, bail};
use base64::Engine as _;
use baton_tests::{Address, Batond, Peer, TEST_PASSWORD, free_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Loopback addresses of the members, in order; the first one takes the writes.
const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const CLUSTER_KEY: &str = "a long pre-shared key for the benchmark cluster";
/// How long a cluster gets to form, a member to start, or a change to show up anywhere.
const SETTLE_TIMEOUT_MS: u64 = 120_000;
/// How long a restarted member gets to catch up: 10^5 changes take minutes.
const CATCH_UP_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Pause between two checks while waiting for a cluster to settle.
const SETTLE_POLL_MS: u64 = 50;
/// Pause between two reads of the restarted member: a catch-up takes a few tenths of a
/// second, which checks every 50 ms measured to ±25%. A read of one key costs either system
/// far less than this.
const CATCH_UP_POLL_MS: u64 = 5;
/// Changes made and waited for before latencies are recorded, so connections, caches and
/// links are warm.
const WARM_UP_CHANGES: usize = 10;
const ETCD_INSTALL: &str = "apt-get install -y etcd-server etcd-client";

struct Options {
    peer_counts: Vec<usize>,
    latency_changes: usize,
    sustained_s: u64,
    writers: usize,
    catch_up_changes: usize,
    /// Pause between two reads of a polling reader: its resolution against the load it adds.
    /// The default, [`POLL_PAUSE_US`], is small beside the latencies measured.
    poll_pause_us: u64,
    etcd: bool,
}

const USAGE: &str = "usage: cluster-bench [--peers 2,3] [--latency-changes 200] [--sustained-s 10] \
     [--writers 4] [--catch-up-changes 100000] [--poll-pause-us 20] [--no-etcd]";

/// A reader's default pause between reads. At 200 µs the pause (plus a read) was most of the
/// error on latencies of 0.3–0.5 ms: a change seen late by up to a whole pause. Measured in
/// one session at 2 peers over 300 changes: Baton's p50 0.43 ms with a 200 µs pause and
/// 0.28 ms with 20 µs; etcd's 0.47 and 0.43 ms.
const POLL_PAUSE_US: u64 = 20;

fn main() -> anyhow::Result<()> {
    baton_tests::kill_children_on_signal()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let options = Options {
        peer_counts: flag::<String>(&args, "--peers")?
            .unwrap_or_else(|| "2,3".to_owned())
            .split(',')
            .map(|count| match count.parse() {
                Ok(count @ 2..=3) => Ok(count),
                _ => bail!("--peers takes 2 and/or 3, comma-separated"),
            })
            .collect::<anyhow::Result<_>>()?,
        latency_changes: flag(&args, "--latency-changes")?.unwrap_or(200),
        sustained_s: flag(&args, "--sustained-s")?.unwrap_or(10),
        writers: flag(&args, "--writers")?.unwrap_or(4).max(1),
        catch_up_changes: flag(&args, "--catch-up-changes")?.unwrap_or(100_000),
        poll_pause_us: flag(&args, "--poll-pause-us")?.unwrap_or(POLL_PAUSE_US),
        etcd: !args.iter().any(|arg| arg == "--no-etcd"),
    };
    if options.etcd && !on_path("etcd") {
        bail!(
            "`etcd` is not on PATH; the reference cluster needs it: `{ETCD_INSTALL}` \
             (or pass --no-etcd to measure Baton alone)"
        );
    }
    let batond = baton_tests::binary("batond")?;
    println!("cluster-bench: batond {}", batond.display());
    if options.etcd {
        println!("reference: {}", etcd_version()?);
    }
    println!(
        "latency: {} changes; sustained: {} writers for {} s; catch-up: {} changes missed \
         ({} writers); readers pause {} µs between reads",
        options.latency_changes,
        options.writers,
        options.sustained_s,
        options.catch_up_changes,
        options.writers,
        options.poll_pause_us
    );

    let mut columns = Vec::new();
    for &members in &options.peer_counts {
        let dir = tempfile::tempdir().context("temporary directory")?;
        println!("\n## Baton, {members} peers (data in {})", dir.path().display());
        let mut baton = BatonCluster::form(dir.path(), members)?;
        let baton_results = measure(&mut baton, &options, "baton")?;
        drop(baton);
        let etcd_results = if options.etcd {
            let dir = tempfile::tempdir().context("temporary directory")?;
            println!("\n## etcd, {members} members (data in {})", dir.path().display());
            let mut etcd = EtcdCluster::form(dir.path(), members)?;
            Some(measure(&mut etcd, &options, "etcd")?)
        } else {
            None
        };
        columns.push((members, baton_results, etcd_results));
    }
    print_table(&columns, &options);
    Ok(())
}

/// The value of `--name` parsed, if given; an error if it does not parse.
fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> anyhow::Result<Option<T>> {
    let Some(index) = args.iter().position(|arg| arg == name) else { return Ok(None) };
    let value = args.get(index + 1).with_context(|| format!("{name} needs a value"))?;
    value.parse().map(Some).map_err(|_| anyhow::anyhow!("{name}: cannot parse {value:?}\n{USAGE}"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn etcd_version() -> anyhow::Result<String> {
    let output = Command::new("etcd").arg("--version").output().context("running etcd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("etcd (unknown version)").to_owned())
}

// ---- the systems under test ------------------------------------------------------------------

/// A cluster under test: its first member takes the writes; any member can be read.
trait System: Sync {
    fn members(&self) -> usize;
    /// A new connection to `member`, for one thread.
    fn client(&self, member: usize) -> anyhow::Result<Box<dyn Client>>;
    /// Stops `member` cleanly (SIGTERM), keeping its data.
    fn stop(&mut self, member: usize) -> anyhow::Result<()>;
    /// Starts a stopped `member` again on its data; returns once it answers requests.
    fn restart(&mut self, member: usize) -> anyhow::Result<()>;
    /// Whether the cluster accepts writes with `member` stopped.
    fn writable_without(&self, member: usize) -> bool;
}

/// One keep-alive connection to one member.
trait Client: Send {
    /// A durable change under a fresh `key`, acknowledged when this returns.
    fn write(&mut self, key: &str) -> anyhow::Result<()>;
    /// Whether the member holds `key`, answered from its own state.
    fn visible(&mut self, key: &str) -> anyhow::Result<bool>;
    /// How many keys starting with `prefix` the member holds.
    fn count(&mut self, prefix: &str) -> anyhow::Result<usize>;
}

/// A change: a bridge record, the kind operators create most; etcd stores the same JSON as its
/// value, so both systems carry the same payload. Disabled, so that it is only configuration:
/// an enabled one would also be polled for health and listed for conferences by every peer,
/// and thousands of them at an address nobody answers measured that, not replication.
fn bridge(name: &str) -> Value {
    json!({"name": name, "bridge_type": "mcu", "address": "127.0.0.9", "enabled": false,
           "username": "api", "password": "secret", "capacity_ports": 10})
}

/// An HTTPS client that does its I/O on the calling thread. reqwest's blocking client hands
/// every request to a runtime thread of its own and back: that cost this 2-core machine about
/// 86 µs of CPU per write, a quarter of what Baton's two peers spent on it (about 360 µs), and
/// the load generator's CPU is taken from the servers it measures (Baton's more than etcd's, as Baton
/// serves more writes per second).
struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// An answer read whole.
struct Answer {
    status: reqwest::StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("an answer that is not JSON")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    fn new(ca_pem: Option<&[u8]>) -> anyhow::Result<Http> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_millis(SETTLE_TIMEOUT_MS))
            .pool_max_idle_per_host(1);
        builder = match ca_pem {
            Some(ca) => builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca)?),
            // etcd's `--auto-tls` certificate is self-signed and made up at start: nothing to pin.
            None => builder.danger_accept_invalid_certs(true),
        };
        let client = builder.build().context("building an HTTPS client")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Http { runtime, client })
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        self.runtime.block_on(async {
            let response = request.send().await?;
            let status = response.status();
            Ok(Answer { status, body: response.bytes().await?.to_vec() })
        })
    }
}

/// Polls `check` until it holds or the settle timeout passes.
fn wait_for(what: &str, check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    wait_for_ms(what, SETTLE_TIMEOUT_MS, SETTLE_POLL_MS, check)
}

/// Polls `check` every `poll_ms` until it holds or `timeout_ms` passes.
fn wait_for_ms(
    what: &str,
    timeout_ms: u64,
    poll_ms: u64,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let last = match check() {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout_ms} ms (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(poll_ms));
    }
}

/// Release `batond` peers, clustered through the admin API as an operator would.
struct BatonCluster {
    /// `None` while stopped; the data directory and flags are kept in `stopped`.
    peers: Vec<Option<Peer>>,
    stopped: Vec<Option<Stopped>>,
}

/// What restarts a stopped peer: its data directory, address, flags and admin listen address.
struct Stopped {
    data: PathBuf,
    ip: String,
    args: Vec<String>,
    listen: String,
}

impl BatonCluster {
    fn form(dir: &Path, members: usize) -> anyhow::Result<BatonCluster> {
        let port = free_port()?;
        let mut peers = Vec::new();
        for ip in &IPS[..members] {
            let data = dir.join(ip);
            std::fs::create_dir_all(&data)?;
            peers.push(Peer::start(&data, ip, port, &[])?);
        }
        let ips = &IPS[..members];
        // The first peer founds the cluster; then every peer lists them all (the seed's order).
        let listed: Vec<&dyn Address> = ips.iter().map(|ip| ip as &dyn Address).collect();
        peers[0].save_cluster(CLUSTER_KEY, &listed[..1])?;
        for peer in &peers {
            peer.save_cluster(CLUSTER_KEY, &listed)?;
        }
        for from in &peers {
            for to in ips.iter().filter(|ip| **ip != from.ip) {
                wait_for(&format!("{} shows {to} active", from.ip), || {
                    Ok(from.status_line(to)?.starts_with("Active as"))
                })?;
            }
        }
        let started = Instant::now();
        let cluster = BatonCluster {
            stopped: peers.iter().map(|_| None).collect(),
            peers: peers.into_iter().map(Some).collect(),
        };
        // A joined peer has no administrator until the cluster's account replicates.
        for member in 0..members {
            wait_for("logging in", || cluster.client(member).map(|_| true))?;
        }
        println!("formed, links active; logins possible after {:?}", started.elapsed());
        Ok(cluster)
    }

    fn peer(&self, member: usize) -> anyhow::Result<&Peer> {
        self.peers[member].as_ref().with_context(|| format!("peer {member} is stopped"))
    }
}

impl System for BatonCluster {
    fn members(&self) -> usize {
        self.peers.len()
    }

    fn client(&self, member: usize) -> anyhow::Result<Box<dyn Client>> {
        let daemon = &self.peer(member)?.daemon;
        let ca = std::fs::read(daemon.data_dir.join("tls/ca.pem")).context("reading the CA")?;
        let http = Http::new(Some(&ca))?;
        let login = json!({"username": "admin", "password": TEST_PASSWORD});
        let response =
            http.send(http.post(&format!("{}/api/v1/sessions", daemon.url)).json(&login))?;
        if response.status != 201 {
            bail!("login on {}: {}", daemon.url, response.status);
        }
        let session = response.json()?;
        let token = session["token"].as_str().context("login answer without a token")?;
        Ok(Box::new(BatonClient { http, url: daemon.url.clone(), token: token.to_owned() }))
    }

    fn stop(&mut self, member: usize) -> anyhow::Result<()> {
        let peer = self.peers[member].take().context("already stopped")?;
        let Peer { daemon, ip, args, listen } = peer;
        let data = daemon.data_dir.clone();
        let status = daemon.stop()?;
        if !status.success() {
            bail!("batond on {ip} exited with {status} on SIGTERM");
        }
        self.stopped[member] = Some(Stopped { data, ip, args, listen });
        Ok(())
    }

    fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        let Stopped { data, ip, args, listen } =
            self.stopped[member].take().context("not stopped")?;
        let daemon = Batond::start_listening(&data, &listen, &args, &[])?;
        self.peers[member] = Some(Peer { daemon, ip, args, listen });
        Ok(())
    }

    fn writable_without(&self, _member: usize) -> bool {
        // Multi-master: every peer accepts changes whoever else is down.
        true
    }
}

struct BatonClient {
    http: Http,
    url: String,
    token: String,
}

impl Client for BatonClient {
    fn write(&mut self, key: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/bridges", self.url);
        let request = self.http.post(&url).bearer_auth(&self.token).json(&bridge(key));
        let response = self.http.send(request)?;
        if response.status != 201 {
            bail!("creating bridge {key}: {} {}", response.status, response.text());
        }
        Ok(())
    }

    fn visible(&mut self, key: &str) -> anyhow::Result<bool> {
        let url = format!("{}/api/v1/bridges/{key}", self.url);
        let response = self.http.send(self.http.get(&url).bearer_auth(&self.token))?;
        match response.status.as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => bail!("reading bridge {key}: {status}"),
        }
    }

    fn count(&mut self, prefix: &str) -> anyhow::Result<usize> {
        let url = format!("{}/api/v1/bridges", self.url);
        let listed = self.http.send(self.http.get(&url).bearer_auth(&self.token))?.json()?;
        let bridges = listed.as_array().with_context(|| format!("bridges: {listed}"))?;
        Ok(bridges
            .iter()
            .filter(|bridge| bridge["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
            .count())
    }
}

/// etcd members on the same loopback addresses, each with its own data directory, durable
/// writes (etcd's default: the WAL is fsynced before a proposal is acknowledged), and TLS on
/// both its client and peer ports as Baton has.
struct EtcdCluster {
    members: Vec<EtcdMember>,
}

struct EtcdMember {
    name: String,
    ip: &'static str,
    url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl EtcdMember {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new("etcd")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        self.child = Some(child);
        Ok(())
    }
}

impl EtcdCluster {
    fn form(dir: &Path, members: usize) -> anyhow::Result<EtcdCluster> {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let initial: Vec<String> = (0..members)
            .map(|index| format!("m{}=https://{}:{peer_port}", index + 1, IPS[index]))
            .collect();
        let mut cluster = EtcdCluster { members: Vec::new() };
        for (index, ip) in IPS[..members].iter().enumerate() {
            let name = format!("m{}", index + 1);
            let client_url = format!("https://{ip}:{client_port}");
            let peer_url = format!("https://{ip}:{peer_port}");
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &dir.join(&name).to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &format!("bench-{members}"),
                "--auto-tls",
                "--peer-auto-tls",
                "--logger",
                "zap",
                "--log-level",
                "error",
            ]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect();
            cluster.members.push(EtcdMember {
                log: dir.join(format!("{name}.log")),
                name,
                ip,
                url: client_url,
                args,
                child: None,
            });
        }
        for member in &mut cluster.members {
            member.spawn()?;
        }
        for member in 0..members {
            cluster.wait_healthy(member)?;
        }
        // Writes go to the leader (etcd's best case): put it first.
        let leader = cluster.leader()?;
        cluster.members.swap(0, leader);
        println!(
            "formed; leader {} on {} takes the writes",
            cluster.members[0].name, cluster.members[0].ip
        );
        Ok(cluster)
    }

    fn wait_healthy(&self, member: usize) -> anyhow::Result<()> {
        let http = Http::new(None)?;
        let url = format!("{}/health", self.members[member].url);
        wait_for(&format!("etcd {} healthy", self.members[member].name), || {
            let health = http.send(http.get(&url))?.json()?;
            Ok(health["health"] == "true")
        })
    }

    /// The index of the member that is the Raft leader.
    fn leader(&self) -> anyhow::Result<usize> {
        let http = Http::new(None)?;
        for (index, member) in self.members.iter().enumerate() {
            let url = format!("{}/v3/maintenance/status", member.url);
            let status = http.send(http.post(&url).json(&json!({})))?.json()?;
            if status["leader"].is_string() && status["leader"] == status["header"]["member_id"] {
                return Ok(index);
            }
        }
        bail!("no etcd member says it leads")
    }
}

impl Drop for EtcdCluster {
    /// Never leaves an etcd behind, whatever failed; the data directory is the caller's
    /// `TempDir`, removed when it drops.
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl System for EtcdCluster {
    fn members(&self) -> usize {
        self.members.len()
    }

    fn client(&self, member: usize) -> anyhow::Result<Box<dyn Client>> {
        Ok(Box::new(EtcdClient { http: Http::new(None)?, url: self.members[member].url.clone() }))
    }

    fn stop(&mut self, member: usize) -> anyhow::Result<()> {
        let mut child = self.members[member].child.take().context("already stopped")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        child.wait()?;
        Ok(())
    }

    fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        self.members[member].spawn()?;
        // Not `/health`: it needs the member to reach the leader; here "answers requests" is
        // enough, as for Baton, and catching up is what is being timed.
        let http = Http::new(None)?;
        let url = format!("{}/version", self.members[member].url);
        wait_for("etcd restarted", || Ok(http.send(http.get(&url))?.status.is_success()))
    }

    fn writable_without(&self, _member: usize) -> bool {
        // Raft needs a majority of the members for any write.
        self.members.len() - 1 > self.members.len() / 2
    }
}

struct EtcdClient {
    http: Http,
    url: String,
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Client for EtcdClient {
    fn write(&mut self, key: &str) -> anyhow::Result<()> {
        let value = bridge(key).to_string();
        let put = json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())});
        let url = format!("{}/v3/kv/put", self.url);
        let response = self.http.send(self.http.post(&url).json(&put))?;
        if !response.status.is_success() {
            bail!("etcd put {key}: {} {}", response.status, response.text());
        }
        Ok(())
    }

    fn visible(&mut self, key: &str) -> anyhow::Result<bool> {
        let range = json!({"key": base64(key.as_bytes()), "serializable": true, "keys_only": true});
        let url = format!("{}/v3/kv/range", self.url);
        let answer = self.http.send(self.http.post(&url).json(&range))?.json()?;
        if answer.get("header").is_none() {
            bail!("etcd range {key}: {answer}");
        }
        // The gateway leaves out empty fields: no `kvs` means no such key.
        Ok(answer["kvs"].as_array().is_some_and(|kvs| !kvs.is_empty()))
    }

    fn count(&mut self, prefix: &str) -> anyhow::Result<usize> {
        // The end of a prefix range: the prefix with its last byte incremented.
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let range = json!({"key": base64(prefix.as_bytes()), "range_end": base64(&end),
                           "serializable": true, "count_only": true});
        let url = format!("{}/v3/kv/range", self.url);
        let answer = self.http.send(self.http.post(&url).json(&range))?.json()?;
        // int64 fields are strings in the gateway's JSON.
        match &answer["count"] {
            Value::Null if answer.get("header").is_some() => Ok(0),
            Value::String(count) => Ok(count.parse()?),
            other => bail!("etcd count {prefix}: {other} in {answer}"),
        }
    }
}

// ---- measurements ----------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    sustained_changes_per_s: f64,
    sustained_lag_ms: f64,
    /// `None` when the system cannot take writes with a member stopped.
    catch_up_s: Option<f64>,
    catch_up_writes_per_s: Option<f64>,
}

fn measure(system: &mut dyn System, options: &Options, label: &str) -> anyhow::Result<Results> {
    let mut results = Results::default();
    let mut latencies_ms = replication_latencies(system, options, label)?;
    latencies_ms.sort_by(f64::total_cmp);
    results.latency_p50_ms = percentile(&latencies_ms, 0.50);
    results.latency_p99_ms = percentile(&latencies_ms, 0.99);
    println!(
        "replication latency to every other member over {} changes: p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms",
        latencies_ms.len(),
        results.latency_p50_ms,
        results.latency_p99_ms,
        latencies_ms.last().copied().unwrap_or_default()
    );

    let (changes_per_s, lag_ms) = sustained(system, options, label)?;
    results.sustained_changes_per_s = changes_per_s;
    results.sustained_lag_ms = lag_ms;
    println!(
        "sustained: {changes_per_s:.0} acknowledged changes/s; last one visible everywhere \
         {lag_ms:.1} ms after its acknowledgement"
    );

    let last = system.members() - 1;
    if system.writable_without(last) {
        let (catch_up_s, writes_per_s) = catch_up(system, options, label)?;
        results.catch_up_s = Some(catch_up_s);
        results.catch_up_writes_per_s = Some(writes_per_s);
    } else {
        println!("catch-up: not measurable, no writes without a majority of the members");
    }
    Ok(results)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// For each change: the time from its acknowledgement until the last of the other members
/// shows it. One reader thread per other member starts polling before the write is sent, so
/// it sees the change as soon as it lands (to within one read plus the pause).
fn replication_latencies(
    system: &dyn System,
    options: &Options,
    label: &str,
) -> anyhow::Result<Vec<f64>> {
    let others: Vec<usize> = (1..system.members()).collect();
    let pause = Duration::from_micros(options.poll_pause_us);
    std::thread::scope(|scope| {
        let (seen_sender, seen) = mpsc::channel::<anyhow::Result<Instant>>();
        let mut keys_to_readers = Vec::new();
        for &member in &others {
            let (key_sender, keys) = mpsc::channel::<String>();
            keys_to_readers.push(key_sender);
            let mut reader = system.client(member)?;
            let seen_sender = seen_sender.clone();
            scope.spawn(move || {
                for key in keys {
                    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
                    let outcome = loop {
                        match reader.visible(&key) {
                            Ok(true) => break Ok(Instant::now()),
                            Ok(false) if Instant::now() < deadline => std::thread::sleep(pause),
                            Ok(false) => break Err(anyhow::anyhow!("{key} never showed")),
                            Err(error) => break Err(error),
                        }
                    };
                    if seen_sender.send(outcome).is_err() {
                        return;
                    }
                }
            });
        }
        let mut writer = system.client(0)?;
        let mut latencies_ms = Vec::new();
        for index in 0..WARM_UP_CHANGES + options.latency_changes {
            let key = format!("{label}-lat-{index}");
            for reader in &keys_to_readers {
                reader.send(key.clone())?;
            }
            writer.write(&key)?;
            let acknowledged = Instant::now();
            let mut slowest = Duration::ZERO;
            for _ in &others {
                let visible = seen.recv()??;
                // A reader may see the change before the writer sees its acknowledgement:
                // that counts as no delay.
                slowest = slowest.max(visible.saturating_duration_since(acknowledged));
            }
            if index >= WARM_UP_CHANGES {
                latencies_ms.push(ms(slowest));
            }
        }
        // Closing the key channels ends the readers.
        drop(keys_to_readers);
        Ok(latencies_ms)
    })
}

/// Writes `keys(writer)` from `options.writers` threads on the first member; returns how many
/// were acknowledged, the last key of each writer and when the last acknowledgement came.
fn write_from_threads(
    system: &dyn System,
    writers: usize,
    keys: impl Fn(usize, usize) -> Option<String> + Sync,
) -> anyhow::Result<(usize, Vec<String>, Instant)> {
    let keys = &keys;
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for writer_index in 0..writers {
            let mut client = system.client(0)?;
            handles.push(scope.spawn(
                move || -> anyhow::Result<(usize, Option<String>, Instant)> {
                    let mut written = 0;
                    let mut last = None;
                    let mut last_acknowledged = Instant::now();
                    while let Some(key) = keys(writer_index, written) {
                        client.write(&key)?;
                        last_acknowledged = Instant::now();
                        written += 1;
                        last = Some(key);
                    }
                    Ok((written, last, last_acknowledged))
                },
            ));
        }
        let mut total = 0;
        let mut lasts = Vec::new();
        let mut last_acknowledged = None::<Instant>;
        for handle in handles {
            let (written, last, acknowledged) =
                handle.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
            total += written;
            lasts.extend(last);
            last_acknowledged =
                Some(last_acknowledged.map_or(acknowledged, |t| t.max(acknowledged)));
        }
        Ok((total, lasts, last_acknowledged.unwrap_or_else(Instant::now)))
    })
}

/// Polls `member` through `client` until every key shows; returns when the last one did.
fn wait_visible(
    mut client: Box<dyn Client>,
    member: usize,
    keys: &[String],
    pause_us: u64,
) -> anyhow::Result<Instant> {
    for key in keys {
        let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
        while !client.visible(key)? {
            if Instant::now() > deadline {
                bail!("{key} not visible on member {member} within {SETTLE_TIMEOUT_MS} ms");
            }
            std::thread::sleep(Duration::from_micros(pause_us));
        }
    }
    Ok(Instant::now())
}

/// How often an idle reader reads during the load. Baton closes a keep-alive connection
/// that brings no request for its header deadline (10 s: hyper counts the wait for the next
/// request in it); a reader left idle for a load of that length lost the race with that close
/// now and then and failed with a reset.
const KEEP_WARM_MS: u64 = 1_000;

/// A member's index and a client reading from it.
type Reader = (usize, Box<dyn Client>);

/// Runs `load` while each reader reads every [`KEEP_WARM_MS`], so their connections are open
/// and warm when the load ends, as a client in use keeps them; returns them with its result.
fn kept_warm<T>(
    readers: Vec<Reader>,
    load: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<Reader>, T)> {
    std::thread::scope(|scope| {
        // Dropping a reader's sender wakes it at once: the lag is measured from then on.
        let (stops, warm): (Vec<_>, Vec<_>) = readers
            .into_iter()
            .map(|(member, mut client)| {
                let (stop, stopped) = mpsc::channel::<()>();
                let reader = scope.spawn(move || {
                    let pause = Duration::from_millis(KEEP_WARM_MS);
                    while stopped.recv_timeout(pause) == Err(mpsc::RecvTimeoutError::Timeout) {
                        client.visible("keep-warm")?;
                    }
                    anyhow::Ok((member, client))
                });
                (stop, reader)
            })
            .unzip();
        let loaded = load();
        drop(stops);
        let readers = warm
            .into_iter()
            .map(|reader| reader.join().map_err(|_| anyhow::anyhow!("a reader panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((readers, loaded?))
    })
}

/// Acknowledged changes per second from several writers over the sustained period, and the
/// time from the last acknowledgement until every member shows every writer's last change.
fn sustained(system: &dyn System, options: &Options, label: &str) -> anyhow::Result<(f64, f64)> {
    // The readers connect (and log in) before the load: the lag measured is replication's,
    // not a TLS handshake's or a password check's.
    let others: Vec<usize> = (1..system.members()).collect();
    let readers = others
        .iter()
        .map(|&member| Ok((member, system.client(member)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let stop = started + Duration::from_secs(options.sustained_s);
    let (readers, (total, lasts, last_acknowledged)) = kept_warm(readers, || {
        write_from_threads(system, options.writers, |writer, index| {
            (Instant::now() < stop).then(|| format!("{label}-sus-{writer}-{index}"))
        })
    })?;
    let changes_per_s = total as f64 / last_acknowledged.duration_since(started).as_secs_f64();
    // All members at once: waiting for one after the other would add their reads up.
    let lasts = &lasts;
    let visible = std::thread::scope(|scope| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|(member, client)| {
                scope.spawn(move || wait_visible(client, member, lasts, options.poll_pause_us))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().map_err(|_| anyhow::anyhow!("a reader panicked"))?)
            .collect::<anyhow::Result<Vec<Instant>>>()
    })?;
    let everywhere = visible.into_iter().max().unwrap_or(last_acknowledged);
    Ok((changes_per_s, ms(everywhere.saturating_duration_since(last_acknowledged))))
}

/// Stops the last member, makes `catch_up_changes` changes on the first one, restarts it and
/// times until it shows the last change; then checks it holds them all. Returns the catch-up
/// time in seconds and the write rate while the member was away.
fn catch_up(system: &mut dyn System, options: &Options, label: &str) -> anyhow::Result<(f64, f64)> {
    let last = system.members() - 1;
    let changes = options.catch_up_changes;
    let prefix = format!("{label}-cu-");
    system.stop(last)?;
    let started = Instant::now();
    let writers = options.writers;
    let (written, _, _) = write_from_threads(&*system, writers, |writer, index| {
        let key_index = index * writers + writer;
        (key_index < changes).then(|| format!("{prefix}{key_index:07}"))
    })?;
    // Written after every other one is acknowledged, so it is the newest of them all.
    let sentinel = format!("{prefix}sentinel");
    system.client(0)?.write(&sentinel)?;
    let writing_s = started.elapsed().as_secs_f64();
    let writes_per_s = (written + 1) as f64 / writing_s;
    println!(
        "catch-up: member {} stopped; {} changes made in {writing_s:.1} s ({writes_per_s:.0}/s)",
        last + 1,
        written + 1
    );

    let restarted = Instant::now();
    system.restart(last)?;
    let answering = restarted.elapsed();
    let mut client = None;
    let what = "the restarted member showing the last change";
    wait_for_ms(what, CATCH_UP_TIMEOUT_MS, CATCH_UP_POLL_MS, || {
        if client.is_none() {
            client = Some(system.client(last)?);
        }
        client.as_mut().map_or(Ok(false), |client| client.visible(&sentinel))
    })?;
    let catch_up_s = restarted.elapsed().as_secs_f64();
    let held = system.client(last)?.count(&prefix)?;
    println!(
        "catch-up: restarted member answers after {:.2} s, shows the last change after \
         {catch_up_s:.3} s (checked every {CATCH_UP_POLL_MS} ms), holds {held} of {} changes",
        answering.as_secs_f64(),
        written + 1
    );
    if held != written + 1 {
        bail!("the restarted member holds {held} changes, not {}", written + 1);
    }
    Ok((catch_up_s, writes_per_s))
}

// ---- report ----------------------------------------------------------------------------------

fn print_table(columns: &[(usize, Results, Option<Results>)], options: &Options) {
    type Row = (&'static str, fn(&Results) -> Option<f64>);
    let rows: [Row; 6] = [
        ("replication latency p50 (ms)", |r| Some(r.latency_p50_ms)),
        ("replication latency p99 (ms)", |r| Some(r.latency_p99_ms)),
        ("sustained acknowledged changes/s", |r| Some(r.sustained_changes_per_s)),
        ("sustained: last change visible everywhere (ms)", |r| Some(r.sustained_lag_ms)),
        ("catch-up after missed changes (ms)", |r| r.catch_up_s.map(|s| s * 1000.0)),
        ("writes/s while a member is down", |r| r.catch_up_writes_per_s),
    ];
    println!(
        "\n## Summary (ratio = Baton / etcd; catch-up after {} missed changes)",
        options.catch_up_changes
    );
    let mut header = format!("| {:<48} |", "measure");
    let mut rule = format!("|{}|", "-".repeat(50));
    for (members, _, _) in columns {
        header += &format!(
            " {:>14} | {:>14} | {:>7} |",
            format!("Baton {members}"),
            format!("etcd {members}"),
            "ratio"
        );
        rule += &format!("{}|{}|{}|", "-".repeat(16), "-".repeat(16), "-".repeat(9));
    }
    println!("{header}\n{rule}");
    for (label, value) in rows {
        let mut line = format!("| {label:<48} |");
        for (_, baton, etcd) in columns {
            let ours = value(baton);
            let reference = etcd.as_ref().and_then(value);
            let ratio = match (ours, reference) {
                (Some(ours), Some(reference)) if reference > 0.0 => {
                    format!("{:.2}", ours / reference)
                }
                _ => "-".to_owned(),
            };
            line += &format!(" {:>14} | {:>14} | {ratio:>7} |", cell(ours), cell(reference));
        }
        println!("{line}");
    }
    println!(
        "Lower is better for times, higher for changes/s. \"-\": not measured or not possible \
         (etcd cannot write with 1 of 2 members down)."
    );
}

fn cell(value: Option<f64>) -> String {
    match value {
        Some(value) if value >= 100.0 => format!("{value:.0}"),
        Some(value) => format!("{value:.2}"),
        None => "-".to_owned(),
    }
}
