//! Three appliances in VMs, one cluster: the seed's story on booted images (slow: only with
//! `BATON_SLOW_TESTS=1`, like `vm.rs`; the two never run at once, see [`exclusive_vms`]).
//! Everything after boot is done as an operator would, through each appliance's admin API:
//!
//! 1. `cargo xtask vm --peers 3 --fresh`: three appliances with their own serials. Each is
//!    checked to talk to no server it was not given (no fallback NTP, no name server), then
//!    configured (factory password changed, IPv4 on the cluster NIC, host name, DNS and NTP at
//!    `cargo xtask vm`'s private-network services, licence): its management NIC still answers,
//!    the cluster NIC has the address, time is synchronised and the peers' names resolve,
//!    inside the guest. Peers 2 and 3 join through peer 1 with the one-flow join, the member's
//!    certificate confirmed against its own file; every peer shows "This system" for itself
//!    and "Active as …" for the others;
//! 2. a bridge simulator on the host (reached from the guests through `--forward-to-host`) and
//!    a VCS emulator with Server 1–3 = the three VMs: calls are routed (each CPL checked), the
//!    conference made once;
//! 3. VM 1 killed (qemu SIGKILL): the VCS fails over to VM 2, whose answers are those VM 1
//!    gave, and no conference is made twice; VM 1 boots again (`cargo xtask vm --only 1`),
//!    links up, learns of the conference made without it, and answers as before;
//! 4. `batonctl cluster upgrade` with a signed image of the next version (the VMs' slot A
//!    trusts a throwaway key, as in `vm.rs`): all three end on slot B at the new version,
//!    clustered, and the VCS's calls are answered throughout, each routed as before;
//! 5. a backup taken on VM 2 restores on VM 2 and is refused on VM 3 (another hardware
//!    serial), changing nothing there. A clustered peer refuses any restore, so both are first
//!    placed in standalone mode, as the seed's "Removing a peer" does.
//!
//! Prints the time of each step.

use crate::policy::{VCS_PASSWORD, VCS_USER, names_on};
use crate::vm_platform::Agent;
use anyhow::{Context, bail, ensure};
use baton_tests::vcs::Vcs;
use baton_tests::{
    FACTORY_PASSWORD, FACTORY_USER, SIM_BRIDGE_PASSWORD, SIM_BRIDGE_USER, SimBridge,
};
use serde_json::{Value, json};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PEERS: u8 = 3;
const PASSWORD: &str = "cluster vm password 7";
const KEY: &str = "a long pre-shared key for the VM cluster";
/// `cargo xtask vm`'s private-network services (NTP, DNS) and the peers' zone there.
const SERVICES: &str = "10.44.0.1";
const ZONE: &str = "baton.test";
/// Where a guest reaches the host's forwarded ports (`cargo xtask vm --forward-to-host`).
pub(crate) const HOST_FROM_GUEST: &str = "10.0.2.100";
/// Three TCG boots at once on two shared cores.
const BOOT_TIMEOUT_S: u64 = 1200;
/// From a saved setting to its effect in the guest, or to a peer's line turning active.
const SETTLE_TIMEOUT_S: u64 = 300;
const ADMIN_PORT: u16 = 8443;
/// One API request's limit: a join answers once every link is active, and a loaded TCG guest
/// is slow.
const REQUEST_TIMEOUT_S: u64 = 300;
/// How long the emulated VCS waits for one policy server before it asks the next, as a real
/// one does. qemu's port forward accepts the connection at once even when the guest's network
/// is not up (a reboot) and then answers nothing (still nothing after 40 s, tried with no
/// guest at all): with the admin client's 300 s limit, each of a round's three status polls
/// and one call could wait that long.
const VCS_ATTEMPT_TIMEOUT_S: u64 = 30;

/// Holds the VM tests apart: each boots VMs at the same forwarded addresses and files under
/// `<target>/vm`. An exclusive lock on a file there, released when the test ends.
pub(crate) fn exclusive_vms(target: &Path) -> anyhow::Result<File> {
    let dir = target.join("vm");
    std::fs::create_dir_all(&dir)?;
    let lock = File::create(dir.join("test.lock"))?;
    lock.lock().context("locking the VMs for this test")?;
    Ok(lock)
}

/// What a VM test starts from: the workspace, its target directory, cargo, and the VMs' lock
/// held. Without `BATON_SLOW_TESTS` it fails rather than passing untried: the default test run
/// leaves the VM tests out (`.config/nextest.toml`), so only a VM test asked for by name gets
/// here, and it should say how to run it.
pub(crate) fn vm_test() -> anyhow::Result<(PathBuf, PathBuf, std::ffi::OsString, File)> {
    anyhow::ensure!(
        std::env::var_os("BATON_SLOW_TESTS").is_some(),
        "the VM tests run with BATON_SLOW_TESTS=1 (cargo xtask test --slow)"
    );
    let (workspace, target, cargo) = workspace()?;
    let lock = exclusive_vms(&target)?;
    Ok((workspace, target, cargo, lock))
}

/// The workspace, its target directory and cargo, as the VM tests run them.
pub(crate) fn workspace() -> anyhow::Result<(PathBuf, PathBuf, std::ffi::OsString)> {
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_owned();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    Ok((workspace, target, std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())))
}

fn host_offset() -> u8 {
    std::env::var("BATON_VM_HOST_OFFSET")
        .ok()
        .and_then(|text| text.parse::<u8>().ok())
        .filter(|offset| (1..=250).contains(offset))
        .unwrap_or(1)
}

/// A client that reaches the appliance at `admin` as `localhost` (a name its certificate
/// holds) and trusts only `ca`; without it (before its CA is read from the guest: the first
/// connections, health and password) any certificate.
fn client(
    admin: SocketAddr,
    ca: Option<&[u8]>,
    timeout_s: u64,
) -> anyhow::Result<reqwest::blocking::Client> {
    let mut builder = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .resolve("localhost", admin)
        .timeout(Duration::from_secs(timeout_s));
    match ca {
        Some(ca) => {
            builder = builder.tls_built_in_root_certs(false);
            for certificate in reqwest::Certificate::from_pem_bundle(ca)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        None => builder = builder.danger_accept_invalid_certs(true),
    }
    Ok(builder.build()?)
}

/// One appliance as its operator reaches it: the forwarded admin port, the guest agent.
struct Appliance {
    n: u8,
    admin: SocketAddr,
    /// Trusts nothing but this appliance's CA once it is known, and reaches the appliance as
    /// `localhost`, a name its certificate holds.
    http: reqwest::blocking::Client,
    /// The same, waiting as a VCS does for a policy server ([`VCS_ATTEMPT_TIMEOUT_S`]).
    vcs_http: reqwest::blocking::Client,
    agent_socket: PathBuf,
}

impl Appliance {
    fn new(n: u8, target: &Path) -> anyhow::Result<Appliance> {
        let admin = SocketAddr::from(([127, 0, 0, n + host_offset()], ADMIN_PORT));
        let http = client(admin, None, REQUEST_TIMEOUT_S)?;
        let vcs_http = client(admin, None, VCS_ATTEMPT_TIMEOUT_S)?;
        let agent_socket = target.join(format!("vm/peer-{n}.qga"));
        Ok(Appliance { n, admin, http, vcs_http, agent_socket })
    }

    fn url(&self) -> String {
        format!("https://localhost:{ADMIN_PORT}")
    }

    fn cluster_address(&self) -> String {
        format!("10.44.0.{}", self.n + 1)
    }

    fn agent(&self) -> anyhow::Result<Agent> {
        Agent::connect(&self.agent_socket)
    }

    /// A request as the administrator: the status and the JSON answer (`null` if none).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call_within(method, path, body, Duration::from_secs(REQUEST_TIMEOUT_S))
    }

    /// As [`Appliance::call`], giving up after `limit`.
    fn call_within(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url()))
            .basic_auth(FACTORY_USER, Some(PASSWORD))
            .timeout(limit);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response =
            request.send().with_context(|| format!("{method} {path} on VM {}", self.n))?;
        let status = response.status().as_u16();
        Ok((status, response.json().unwrap_or(Value::Null)))
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.get_within(path, Duration::from_secs(REQUEST_TIMEOUT_S))
    }

    /// As [`Appliance::get`], giving up after `limit`.
    fn get_within(&self, path: &str, limit: Duration) -> anyhow::Result<Value> {
        let (status, answer) = self.call_within(reqwest::Method::GET, path, None, limit)?;
        ensure!(status == 200, "GET {path} on VM {}: {status} {answer}", self.n);
        Ok(answer)
    }

    fn put(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let (status, answer) = self.call(reqwest::Method::PUT, path, Some(&body))?;
        ensure!(status == 200 || status == 201, "PUT {path} on VM {}: {status} {answer}", self.n);
        Ok(())
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, answer) = self.call(reqwest::Method::POST, path, Some(&body))?;
        ensure!(status == 200 || status == 201, "POST {path} on VM {}: {status} {answer}", self.n);
        Ok(answer)
    }

    /// Downloads an unencrypted backup of this appliance.
    fn backup(&self) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .post(format!("{}/api/v1/backups", self.url()))
            .basic_auth(FACTORY_USER, Some(PASSWORD))
            .send()
            .with_context(|| format!("backup of VM {}", self.n))?;
        ensure!(response.status() == 200, "backup of VM {}: {}", self.n, response.status());
        Ok(response.bytes()?.to_vec())
    }

    /// Uploads `archive` for restore: the status and the answer, refusals included.
    fn restore(&self, archive: &[u8]) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/api/v1/restore", self.url()))
            .basic_auth(FACTORY_USER, Some(PASSWORD))
            .header("content-type", "application/octet-stream")
            .body(archive.to_vec())
            .send()
            .with_context(|| format!("restore on VM {}", self.n))?;
        let status = response.status().as_u16();
        Ok((status, response.json().unwrap_or(Value::Null)))
    }

    /// The seed's first task of removing a live peer: no key, no peers; standalone at once.
    fn standalone(&self) -> anyhow::Result<()> {
        self.put("/api/v1/cluster", json!({"pre_shared_key": "", "peers": []}))?;
        eventually(&format!("VM {} standalone", self.n), SETTLE_TIMEOUT_S, || {
            let status = self.get("/api/v1/cluster/status")?;
            ensure!(status["mode"] == json!("standalone"), "{status}");
            Ok(())
        })
    }

    /// Waits for the admin API, then changes the factory password as the first login demands.
    fn first_login(&self) -> anyhow::Result<()> {
        eventually(&format!("VM {}'s admin API", self.n), BOOT_TIMEOUT_S, || {
            let response = self.http.get(format!("{}/api/v1/health", self.url())).send();
            match response {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => bail!("{}", response.status()),
                Err(error) => bail!("{error}"),
            }
        })?;
        let login: Value = self
            .http
            .post(format!("{}/api/v1/sessions", self.url()))
            .json(&json!({"username": FACTORY_USER, "password": FACTORY_PASSWORD}))
            .send()?
            .error_for_status()?
            .json()?;
        ensure!(login["must_change_password"] == json!(true), "factory password: {login}");
        self.http
            .post(format!("{}/api/v1/password", self.url()))
            .bearer_auth(login["token"].as_str().context("no token")?)
            .json(&json!({"current_password": FACTORY_PASSWORD, "new_password": PASSWORD}))
            .send()?
            .error_for_status()
            .context("changing the factory password")?;
        Ok(())
    }

    /// From now on only this appliance's own CA is trusted (read from its data partition,
    /// as an operator would download it from the Status page).
    fn trust_own_ca(&mut self, agent: &mut Agent) -> anyhow::Result<()> {
        let ca = agent.exec("cat /var/lib/baton/tls/ca.pem", None)?.stdout.into_bytes();
        self.http = client(self.admin, Some(&ca), REQUEST_TIMEOUT_S)?;
        self.vcs_http = client(self.admin, Some(&ca), VCS_ATTEMPT_TIMEOUT_S)?;
        Ok(())
    }

    /// The status line this appliance shows for the peer at `address`.
    fn status_line(&self, address: &str) -> anyhow::Result<String> {
        let status = self.get("/api/v1/cluster/status")?;
        let lines = status["peers"].as_array().cloned().unwrap_or_default();
        Ok(lines
            .iter()
            .find(|line| line["address"] == json!(address))
            .and_then(|line| line["text"].as_str())
            .map_or_else(|| format!("(not listed: {status})"), str::to_owned))
    }
}

/// Each step's time, printed as it ends (a failure later keeps the earlier ones). On stdout:
/// a failing test's stderr is mostly the image build's, and CI shows only its ends.
struct Laps {
    started: Instant,
    step: Instant,
}

impl Laps {
    fn new() -> Laps {
        Laps { started: Instant::now(), step: Instant::now() }
    }

    fn lap(&mut self, what: &str) {
        println!("vm cluster test: {what}: {:.1}s", self.step.elapsed().as_secs_f64());
        self.step = Instant::now();
    }

    fn total(&self) {
        println!("vm cluster test: total {:.1}s", self.started.elapsed().as_secs_f64());
    }
}

/// Retries `check` every second until it passes or `timeout_s` ran out (then its last error).
fn eventually<T>(
    what: &str,
    timeout_s: u64,
    mut check: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!("{what}: not within {timeout_s} s")));
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// The running `cargo xtask vm --peers 3`; quits every qemu through QMP on drop.
struct Vms {
    children: Vec<Child>,
    /// Where `cargo xtask vm` runs, and the cargo that runs it.
    workspace: PathBuf,
    cargo: std::ffi::OsString,
    target: PathBuf,
    /// The disk the VMs' overlays are made on.
    base: PathBuf,
}

impl Vms {
    /// Boots the VMs on fresh overlays of `base` (a qcow2 disk).
    fn start(
        workspace: &Path,
        target: &Path,
        cargo: &std::ffi::OsStr,
        base: &Path,
        bridge_port: u16,
    ) -> anyhow::Result<Vms> {
        let child = Command::new(cargo)
            .args(["xtask", "vm", "--fresh", "--peers", &PEERS.to_string(), "--base"])
            .arg(base)
            .args(["--forward-to-host", &bridge_port.to_string()])
            .current_dir(workspace)
            .stdin(Stdio::null())
            .spawn()
            .context("running cargo xtask vm")?;
        Ok(Vms {
            children: vec![child],
            workspace: workspace.to_owned(),
            cargo: cargo.to_owned(),
            target: target.to_owned(),
            base: base.to_owned(),
        })
    }

    /// Boots VM `n` again on its own disk, on the running VMs' private network.
    fn restart(&mut self, n: u8, bridge_port: u16) -> anyhow::Result<()> {
        let child = Command::new(&self.cargo)
            .args(["xtask", "vm", "--only", &n.to_string(), "--base"])
            .arg(&self.base)
            .args(["--forward-to-host", &bridge_port.to_string()])
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .spawn()
            .context("running cargo xtask vm --only")?;
        self.children.push(child);
        Ok(())
    }

    /// Pulls the plug on VM `n`: SIGKILL to its qemu.
    fn kill(&self, n: u8) -> anyhow::Result<()> {
        crate::vm::Qemu::of_peer(&self.target, n).kill()
    }
}

impl Drop for Vms {
    fn drop(&mut self) {
        let qemus: Vec<crate::vm::Qemu> =
            (1..=PEERS).map(|n| crate::vm::Qemu::of_peer(&self.target, n)).collect();
        crate::vm::quit_or_kill(&mut self.children, &qemus);
    }
}

#[test]
fn three_appliances_cluster_route_calls_survive_losing_one_and_upgrade() -> anyhow::Result<()> {
    let (workspace, target, cargo, _lock) = vm_test()?;
    let outcome = three_appliances(&workspace, &target, &cargo);
    if let Err(error) = &outcome {
        // Beside the laps on stdout (see [`Laps`]), and last on stderr, whose end a CI log
        // that keeps only the output's two ends still shows.
        println!("vm cluster test: failed: {error:#}");
        eprintln!("vm cluster test: failed: {error:#}");
    }
    outcome
}

/// Lines of each VM's serial console and batond's journal printed when the test fails.
const DIAGNOSTIC_LINES: usize = 40;
/// The diagnostics' wait for the guest agent and for the admin API (a guest command has its
/// own 30 s): they only describe a failure, and a VM that does not answer is the finding.
const DIAGNOSTIC_TIMEOUT_S: u64 = 15;

/// What each VM shows when a step fails, on stdout (the VMs still run): whether qemu runs the
/// guest (a paused guest, an I/O error), its serial console, its failed units and batond's
/// journal through the guest agent, its cluster status; and the host's free space.
fn print_diagnostics(appliances: &[Appliance], target: &Path) {
    let limit = Duration::from_secs(DIAGNOSTIC_TIMEOUT_S);
    for appliance in appliances {
        let n = appliance.n;
        match crate::vm::qmp_answer(&crate::vm::Qemu::of_peer(target, n).qmp, "query-status") {
            Ok(answer) => println!("--- VM {n}: qemu's status: {answer}"),
            Err(error) => println!("--- VM {n}: qemu's status: {error:#}"),
        }
        let serial = std::fs::read_to_string(target.join(format!("vm/peer-{n}-serial.log")))
            .unwrap_or_else(|error| format!("(unreadable: {error})"));
        let lines: Vec<&str> = serial.lines().collect();
        let tail = lines[lines.len().saturating_sub(DIAGNOSTIC_LINES)..].join("\n");
        println!("--- VM {n}: serial console (last {DIAGNOSTIC_LINES} lines)\n{tail}");
        let script = format!(
            "systemctl --failed --no-legend --no-pager; \
             journalctl -b -u batond -n {DIAGNOSTIC_LINES} --no-pager -o short-monotonic"
        );
        let agent = Agent::connect_within(&appliance.agent_socket, limit);
        match agent.and_then(|mut agent| agent.exec(&script, None)) {
            Ok(exec) => println!("--- VM {n}: failed units, batond's journal\n{}", exec.stdout),
            Err(error) => println!("--- VM {n}: guest agent: {error:#}"),
        }
        match appliance.get_within("/api/v1/cluster/status", limit) {
            Ok(status) => println!("--- VM {n}: cluster status\n{status}"),
            Err(error) => println!("--- VM {n}: cluster status: {error:#}"),
        }
    }
    match Command::new("df").arg("-h").arg(target).output() {
        Ok(output) => println!("--- host: {}", String::from_utf8_lossy(&output.stdout)),
        Err(error) => println!("--- host: df: {error}"),
    }
}

fn three_appliances(
    workspace: &Path,
    target: &Path,
    cargo: &std::ffi::OsStr,
) -> anyhow::Result<()> {
    let mut laps = Laps::new();
    let status = Command::new(cargo).args(["xtask", "image"]).current_dir(workspace).status()?;
    ensure!(status.success(), "cargo xtask image failed ({status})");
    laps.lap("image");
    let dir = target.join("vm-cluster-test");
    let disk = crate::vm::trusting_disk(target, &dir)?;
    let base = dir.join("base.qcow2");
    crate::vm::tool(
        Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&disk.disk).arg(&base),
    )?;
    std::fs::remove_file(&disk.disk)?;
    let running: upgrade::Version =
        env!("CARGO_PKG_VERSION").parse().map_err(anyhow::Error::msg)?;
    let next = upgrade::Version::new(running.major, running.minor, running.patch + 1);
    let image = dir.join(format!("baton-{next}.upgrade"));
    crate::vm::upgrade_image(cargo, workspace, &disk.private_key, &disk.root, &next, &image)?;
    laps.lap("a disk trusting a test key, an upgrade image");

    let sim = SimBridge::start("mcu", &[])?;
    let mut vms = Vms::start(workspace, target, cargo, &base, sim.address.port())?;
    let mut appliances =
        (1..=PEERS).map(|n| Appliance::new(n, target)).collect::<anyhow::Result<Vec<_>>>()?;
    let outcome = the_story(&mut appliances, &mut vms, &mut laps, &sim, &image, &next);
    if outcome.is_err() {
        print_diagnostics(&appliances, target);
    }
    drop(vms);
    outcome?;
    laps.total();
    Ok(())
}

/// Steps 1 to 5 on the booted VMs.
fn the_story(
    appliances: &mut [Appliance],
    vms: &mut Vms,
    laps: &mut Laps,
    sim: &SimBridge,
    image: &Path,
    next: &upgrade::Version,
) -> anyhow::Result<()> {
    for appliance in appliances.iter_mut() {
        prepare(appliance)?;
    }
    laps.lap("1. three appliances booted and configured");
    cluster(appliances)?;
    laps.lap("1. clustered");

    configure_policy(&appliances[0], sim)?;
    let mut vcs = vcs_for(appliances);
    let rooms = ["room1", "room2", "room1"];
    let before = route_calls(&mut vcs, sim, &[true, true, true], Some(0), &rooms)?;
    laps.lap("2. policy configured, calls routed by VM 1");

    vms.kill(1)?;
    let after = route_calls(&mut vcs, sim, &[false, true, true], Some(1), &rooms)?;
    ensure!(before == after, "VM 2 answers otherwise than VM 1 did: {before:?} then {after:?}");
    // A conference made while VM 1 is down, which it must learn of when it is back.
    route_calls(&mut vcs, sim, &[false, true, true], Some(1), &["room3"])?;
    laps.lap("3. VM 1 killed, calls routed by VM 2");
    vms.restart(1, sim.address.port())?;
    caught_up(appliances)?;
    let again = route_calls(&mut vcs, sim, &[true, true, true], Some(0), &rooms)?;
    ensure!(again == before, "VM 1 answers otherwise after its restart: {again:?}");
    laps.lap("3. VM 1 back, caught up, routing");
    rolling_upgrade(appliances, &mut vcs, image, next, &before)?;
    laps.lap("4. cluster upgraded, calls answered throughout");
    all_active(appliances)?;
    let upgraded = route_calls(&mut vcs, sim, &[true, true, true], Some(0), &rooms)?;
    ensure!(upgraded == before, "the upgraded cluster answers otherwise: {upgraded:?}");
    backup_restores_only_where_taken(&appliances[1], &appliances[2])?;
    laps.lap("5. VM 2's backup restored on VM 2, refused on VM 3");
    Ok(())
}

/// Step 1 on one appliance: first login, the image's quiet defaults checked in the guest, the
/// seed's Task 1 prerequisites set through the API and checked in the guest. Its CA.
fn prepare(appliance: &mut Appliance) -> anyhow::Result<()> {
    let n = appliance.n;
    appliance.first_login()?;
    let mut agent = appliance.agent()?;
    appliance.trust_own_ca(&mut agent)?;
    let fallback =
        agent.exec("timedatectl show-timesync --property=FallbackNTPServers --value", None)?;
    // Loopback only (systemd 252 keeps Debian's pool for an empty list; see rootfs/).
    ensure!(fallback.stdout.trim() == "127.0.0.1", "VM {n} has fallback NTP servers: {fallback:?}");
    let resolv = agent.exec("cat /etc/resolv.conf", None)?;
    ensure!(!resolv.stdout.contains("nameserver"), "VM {n} has a name server: {resolv:?}");

    let address = appliance.cluster_address();
    appliance.put(
        "/api/v1/ipv4",
        json!({"address": address, "prefix_length": 24, "gateway": SERVICES}),
    )?;
    appliance
        .put("/api/v1/system-name", json!({"host_name": format!("peer{n}"), "domain": ZONE}))?;
    appliance.put("/api/v1/dns", json!({"servers": [SERVICES]}))?;
    appliance.put("/api/v1/ntp", json!({"servers": [SERVICES]}))?;
    appliance
        .put("/api/v1/licence", json!({"release_key": "ABCD-1234-EFGH", "edition": "full"}))?;

    // The operator's address went to the cluster NIC; the management NIC keeps answering.
    agent.eventually("the cluster address", "ip -4 -o address show", |e| {
        e.stdout.contains(&format!("inet {address}/24")) && e.stdout.contains("inet 10.0.2.15/24")
    })?;
    ensure!(appliance.get("/api/v1/status")?["product"] == json!("Baton"), "management NIC lost");
    agent.eventually(
        "NTP synchronised",
        "timedatectl show --property=NTPSynchronized --value",
        |e| e.stdout.trim() == "yes",
    )?;
    let other = n % PEERS + 1;
    agent.eventually("DNS", &format!("getent hosts peer{other}.{ZONE}"), |e| {
        e.stdout.starts_with(&format!("10.44.0.{} ", other + 1))
    })?;
    Ok(())
}

/// Step 1's cluster: peers 2 and 3 join through peer 1, the operator having checked the
/// certificate peer 1 presents on the private network against peer 1's own.
fn cluster(appliances: &[Appliance]) -> anyhow::Result<()> {
    let member = &appliances[0];
    let member_url = format!("https://{}:{ADMIN_PORT}", member.cluster_address());
    let pem = member.agent()?.exec("cat /var/lib/baton/tls/server.pem", None)?.stdout;
    let der: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())?;
    let fingerprint = baton_tests::sha256_fingerprint(&der);
    for (index, joining) in appliances.iter().enumerate().skip(1) {
        let seen = joining.get(&format!("/api/v1/cluster/member-certificate?url={member_url}"))?;
        ensure!(
            seen["sha256"] == json!(fingerprint),
            "VM {} sees another certificate: {seen}",
            joining.n
        );
        let body = json!({"member_url": member_url, "password": PASSWORD, "pre_shared_key": KEY,
                          "member_certificate_sha256": fingerprint});
        let (status, answer) =
            joining.call(reqwest::Method::POST, "/api/v1/cluster/join", Some(&body))?;
        // On a loaded machine the join may answer before every link is up (its 20 s): the
        // settings are kept, and the operator watches the status lines, as below.
        let timed_out = status == 504 && answer["error"]["code"] == json!("join_timeout");
        ensure!(
            timed_out || (status == 200 && answer["founded"] == json!(index == 1)),
            "VM {} joining: {status} {answer}",
            joining.n
        );
        all_active(&appliances[..=index])?;
    }
    Ok(())
}

/// Every appliance shows itself as "This system" and each other one as "Active as …".
fn all_active(appliances: &[Appliance]) -> anyhow::Result<()> {
    for appliance in appliances {
        for other in appliances {
            let want = if other.n == appliance.n { "This system" } else { "Active as" };
            let what = format!("VM {} shows VM {} as {want:?}", appliance.n, other.n);
            eventually(&what, SETTLE_TIMEOUT_S, || {
                let line = appliance.status_line(&other.cluster_address())?;
                ensure!(line.starts_with(want), "{line}");
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Step 2's configuration, on peer 1 only (it is shared): the VCS's account, the simulated
/// bridge as the guests reach it, and `room<n>@example.com` routed to it.
fn configure_policy(appliance: &Appliance, sim: &SimBridge) -> anyhow::Result<()> {
    appliance
        .put("/api/v1/policy-service", json!({"username": VCS_USER, "password": VCS_PASSWORD}))?;
    let address = format!("{HOST_FROM_GUEST}:{}", sim.address.port());
    appliance.post(
        "/api/v1/bridges",
        json!({"name": "mcu1", "bridge_type": "mcu", "address": address, "protocol": "http",
               "username": SIM_BRIDGE_USER, "password": SIM_BRIDGE_PASSWORD, "capacity_ports": 100}),
    )?;
    appliance.post(
        "/api/v1/bridge-pools",
        json!({"name": "p", "bridge_type": "mcu", "bridges": ["mcu1"]}),
    )?;
    appliance.post(
        "/api/v1/service-preferences",
        json!({"name": "s", "bridge_type": "mcu", "pools": ["p"]}),
    )?;
    appliance.post(
        "/api/v1/conference-templates",
        json!({"name": "t", "conference_type": "meeting", "service_preference": "s", "max_participants": 5}),
    )?;
    appliance.post(
        "/api/v1/conference-aliases",
        json!({"name": "a", "pattern": r"room(?P<n>[0-9]+)@example\.com",
               "conference_name": "room${n}", "template": "t", "priority": 1}),
    )?;
    Ok(())
}

fn vcs_for(appliances: &[Appliance]) -> Vcs {
    let servers =
        appliances.iter().map(|appliance| (appliance.url(), appliance.vcs_http.clone())).collect();
    Vcs::through(servers, VCS_USER, VCS_PASSWORD)
}

/// The VCS's status poll must show `active`; then each call to `rooms` is answered by Server
/// `answered_by` (0-based) with a route to the bridge, and each conference exists once on it.
/// The routes, per call.
fn route_calls(
    vcs: &mut Vcs,
    sim: &SimBridge,
    active: &[bool],
    answered_by: Option<usize>,
    rooms: &[&str],
) -> anyhow::Result<Vec<String>> {
    eventually("the VCS's status poll", SETTLE_TIMEOUT_S, || {
        let polled = vcs.poll_status();
        ensure!(polled == active, "{polled:?}");
        Ok(())
    })?;
    let mut routes = Vec::new();
    for room in rooms {
        // The shared configuration reaches every peer within the settle time.
        let (server, urls) = eventually(&format!("{room} routed"), SETTLE_TIMEOUT_S, || {
            let answer = vcs.call(&format!("{room}@example.com"));
            match answer.outcome {
                policy::cpl::Outcome::Route { urls } => Ok((answer.server, urls)),
                other => bail!("{other:?}"),
            }
        })?;
        ensure!(server == answered_by, "{room} answered by {server:?}");
        ensure!(urls == [format!("{room}@{HOST_FROM_GUEST}")], "{room} routed to {urls:?}");
        routes.extend(urls);
    }
    // Each conference made once, whichever peer asked for it.
    let names = names_on(sim, bridges::BridgeKind::Mcu);
    let mut once = names.clone();
    once.dedup();
    ensure!(names == once, "a conference made twice: {names:?}");
    ensure!(rooms.iter().all(|room| names.iter().any(|name| name == room)), "{names:?}");
    Ok(routes)
}

/// VM 1, booted again, links up with the others and learns of the conference made without it.
fn caught_up(appliances: &[Appliance]) -> anyhow::Result<()> {
    let first = &appliances[0];
    eventually("VM 1's admin API back", BOOT_TIMEOUT_S, || first.get("/api/v1/health"))?;
    for other in &appliances[1..] {
        let what = format!("VM 1 back, showing VM {} as active", other.n);
        eventually(&what, SETTLE_TIMEOUT_S, || {
            let line = first.status_line(&other.cluster_address())?;
            ensure!(line.starts_with("Active as"), "{line}");
            Ok(())
        })?;
    }
    eventually("VM 1 knows room3", SETTLE_TIMEOUT_S, || first.get("/api/v1/conferences/room3"))?;
    Ok(())
}

/// How often the VCS places a call while the cluster upgrades.
const CALL_INTERVAL_MS: u64 = 2_000;
/// The whole rolling upgrade: three uploads into TCG guests and three reboots.
/// Locally about 250 s; the test and its diagnostics must end well within nextest's backstop
/// (`.config/nextest.toml`).
const UPGRADE_TIMEOUT_S: u64 = 1_500;

/// Step 4: `batonctl cluster upgrade`, as an operator runs it from this machine, while the
/// VCS keeps placing calls, each of which must be answered with the route it had before.
fn rolling_upgrade(
    appliances: &[Appliance],
    vcs: &mut Vcs,
    image: &Path,
    next: &upgrade::Version,
    routes: &[String],
) -> anyhow::Result<()> {
    // Every appliance's certificate names `localhost`: each is reached through a port of
    // 127.0.0.1, and the operator's CA file holds the three CAs.
    let proxies = appliances
        .iter()
        .map(|appliance| baton_tests::Proxy::start(appliance.admin))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls: Vec<String> =
        proxies.iter().map(|proxy| format!("https://localhost:{}", proxy.address.port())).collect();
    let scratch = tempfile::tempdir()?;
    let ca_bundle = scratch.path().join("cas.pem");
    let mut cas = String::new();
    for appliance in appliances {
        cas.push_str(&appliance.agent()?.exec("cat /var/lib/baton/tls/ca.pem", None)?.stdout);
    }
    std::fs::write(&ca_bundle, cas)?;
    let batonctl = Command::new(baton_tests::binary("batonctl")?)
        .args(["--url", &urls[0], "--ca"])
        .arg(&ca_bundle)
        .args(["cluster", "upgrade"])
        .arg(image)
        .args(["--peer", &urls[1], "--peer", &urls[2], "--reboot-timeout-s", "600"])
        .env("BATON_PASSWORD", PASSWORD)
        .env("BATON_CLUSTER_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(File::create(scratch.path().join("batonctl.log"))?)
        .stderr(File::create(scratch.path().join("batonctl.err"))?)
        .spawn()
        .context("running batonctl cluster upgrade")?;
    let calls = calls_until_done(batonctl, vcs, routes, scratch.path())?;
    println!("vm cluster test: {calls} calls answered during the upgrade");
    for appliance in appliances {
        let status = appliance.get("/api/v1/status")?;
        ensure!(status["version"] == json!(next.to_string()), "VM {}: {status}", appliance.n);
        let upgrade = appliance.get("/api/v1/upgrade")?;
        ensure!(upgrade["active_slot"] == json!("B"), "VM {}: {upgrade}", appliance.n);
    }
    Ok(())
}

/// Places a call every [`CALL_INTERVAL_MS`] until `batonctl` (writing its output into
/// `scratch`) ends well; each call must be routed as `routes[0]`. The calls answered.
fn calls_until_done(
    mut batonctl: Child,
    vcs: &mut Vcs,
    routes: &[String],
    scratch: &Path,
) -> anyhow::Result<u32> {
    // What batonctl printed: which peer and which step, whenever this step fails.
    let printed = || {
        let read = |name: &str| std::fs::read_to_string(scratch.join(name)).unwrap_or_default();
        format!(
            "batonctl's output:\n{}\nbatonctl's errors:\n{}",
            read("batonctl.log"),
            read("batonctl.err")
        )
    };
    let deadline = Instant::now() + Duration::from_secs(UPGRADE_TIMEOUT_S);
    let mut calls = 0;
    let status = loop {
        if let Some(status) = batonctl.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = batonctl.kill();
            bail!("the rolling upgrade ran over {UPGRADE_TIMEOUT_S} s; {}", printed());
        }
        // The VCS's status poll and a call: some peer always serves, with the same route.
        vcs.poll_status();
        let answer = vcs.call("room1@example.com");
        match &answer.outcome {
            policy::cpl::Outcome::Route { urls } if urls[..] == routes[..1] => calls += 1,
            other => {
                let _ = batonctl.kill();
                let (call, server) = (calls + 1, answer.server);
                bail!("call {call} during the upgrade: {other:?} (by {server:?}); {}", printed());
            }
        }
        std::thread::sleep(Duration::from_millis(CALL_INTERVAL_MS));
    };
    ensure!(status.success(), "batonctl cluster upgrade failed ({status}); {}", printed());
    Ok(calls)
}

/// Step 5: a backup restores only on the appliance it was taken on.
fn backup_restores_only_where_taken(taken_on: &Appliance, other: &Appliance) -> anyhow::Result<()> {
    let archive = taken_on.backup()?;
    taken_on.standalone()?;
    other.standalone()?;
    let (status, answer) = taken_on.restore(&archive)?;
    ensure!(status == 200, "restoring VM {}'s backup on it: {status} {answer}", taken_on.n);
    let bridges = taken_on.get("/api/v1/bridges")?;
    ensure!(bridges.as_array().is_some_and(|list| !list.is_empty()), "restored: {bridges}");

    // The configuration, not the whole log: the idle conferences' ends are logged meanwhile.
    let configuration = || -> anyhow::Result<Vec<Value>> {
        ["/api/v1/bridges", "/api/v1/cluster", "/api/v1/licence", "/api/v1/system-name"]
            .iter()
            .map(|path| other.get(path))
            .collect()
    };
    let before = configuration()?;
    let (status, answer) = other.restore(&archive)?;
    ensure!(
        status == 422 && answer["error"]["code"] == json!("backup_other_machine"),
        "VM {}'s backup on VM {}: {status} {answer}",
        taken_on.n,
        other.n
    );
    let after = configuration()?;
    ensure!(before == after, "the refused restore changed VM {}: {before:?} → {after:?}", other.n);
    Ok(())
}
