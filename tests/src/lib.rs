//! Support for tests that run real `batond` processes: start one on 127.0.0.1 port 0 in a
//! temporary directory, find its URL, talk HTTPS to it, and kill or stop it.
//!
//! The binaries are found next to the test executable's `deps` folder (`target/<profile>/`);
//! a test process builds them (once) before the first use, so `cargo test` needs no other step.

pub mod fixed_rate;
pub mod vcs;
pub mod webdriver;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a daemon gets to open its log and listen.
pub const START_TIMEOUT_MS: u64 = 30_000;
/// How long a daemon may take to stop after SIGTERM: its grace for requests in flight is a
/// few seconds.
pub const STOP_TIMEOUT_MS: u64 = 30_000;

/// The factory account's password after tests change it.
pub const TEST_PASSWORD: &str = "correct horse battery";

/// The packages whose binaries the multi-process tests run (`batond`, `batonctl`,
/// `baton-simbridge`): built on first use by a test process, so `cargo test` on a fresh checkout
/// needs no separate build and never runs a stale daemon.
const BINARY_PACKAGES: &[&str] = &["daemon", "ctl", "bridges"];

/// Set (to anything) by a caller that has just built the binaries, e.g. `cargo xtask test`:
/// each test process then skips the (no-op) build.
pub const SKIP_BUILD_ENV: &str = "BATON_TESTS_BINARIES_BUILT";

/// The path of one of our binaries (see [`BINARY_PACKAGES`]), in the profile the running test
/// was built with, building them first when running as a test.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let exe_dir = exe.parent().context("the test executable has no folder")?;
    // Tests run from `target/<profile>/deps/`, benchmark binaries from `target/<profile>/`
    // (built by `cargo xtask bench` before it runs them).
    let in_deps = exe_dir.file_name().is_some_and(|dir| dir == "deps");
    let profile_dir = if in_deps { exe_dir.parent().unwrap_or(exe_dir) } else { exe_dir };
    if in_deps && std::env::var_os(SKIP_BUILD_ENV).is_none() {
        build_binaries_once(profile_dir).map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    let path = profile_dir.join(name);
    if !path.exists() {
        bail!(
            "{name} not found in {}: build it first (`cargo build --bins`)",
            profile_dir.display()
        );
    }
    Ok(path)
}

/// Builds [`BINARY_PACKAGES`] once per process, with the cargo that runs the tests and the
/// profile the test executable lives in (`target/<profile>`); cargo's own lock on the build
/// folder serialises test processes that build at the same time.
fn build_binaries_once(profile_dir: &Path) -> Result<(), String> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_binaries(profile_dir)).clone()
}

fn build_binaries(profile_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the tests crate has no parent folder")?;
    let mut command = Command::new(&cargo);
    command.arg("build").arg("--manifest-path").arg(workspace.join("Cargo.toml")).args([
        "--profile",
        &cargo_profile(profile_dir),
        "--bins",
    ]);
    for package in BINARY_PACKAGES {
        command.args(["-p", package]);
    }
    // The build folder is the one this executable came from (`target/<profile>`'s parent).
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    // What cargo set for this test's own package must not leak into the build: build scripts
    // that watch such a variable (ring watches CARGO_MANIFEST_DIR) would rebuild each time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if PACKAGE_ENV.contains(&key.as_ref())
            || PACKAGE_ENV_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
        {
            command.env_remove(key.as_ref());
        }
    }
    let output = command
        .current_dir(workspace)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running {}: {error}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!(
            "building the binaries the tests run ({command:?}) failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Variables cargo sets for the package whose test runs (not configuration).
const PACKAGE_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];
const PACKAGE_ENV_PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_BIN_EXE_"];

/// The cargo profile whose output folder is `profile_dir` (`debug` is the `dev` profile's).
fn cargo_profile(profile_dir: &Path) -> String {
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    }
}

/// A `batond` child process.
pub struct Batond {
    pub data_dir: PathBuf,
    pub url: String,
    pub child: Child,
}

impl Batond {
    pub fn start(data_dir: &Path) -> anyhow::Result<Batond> {
        Batond::start_with(data_dir, "127.0.0.1", &[])
    }

    /// Starts a daemon whose admin API listens on `ip` (any port), with extra flags.
    pub fn start_with(data_dir: &Path, ip: &str, extra_args: &[String]) -> anyhow::Result<Batond> {
        Batond::start_with_env(data_dir, ip, extra_args, &[])
    }

    /// [`Batond::start_with`] with extra environment variables (e.g. `BATON_HARDWARE_SERIAL`).
    pub fn start_with_env(
        data_dir: &Path,
        ip: &str,
        extra_args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Batond> {
        Batond::start_listening(data_dir, &format!("{ip}:0"), extra_args, env)
    }

    /// Starts a daemon whose admin API listens on `listen` (`ip:port`; port 0 for any), e.g.
    /// to come back at the same URL after a simulated reboot.
    pub fn start_listening(
        data_dir: &Path,
        listen: &str,
        extra_args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Batond> {
        let url_file = data_dir.join("admin-url");
        let _ = std::fs::remove_file(&url_file);
        let child = Command::new(binary("batond")?)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--admin-listen", listen])
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUST_LOG", std::env::var("BATON_TEST_LOG").unwrap_or_else(|_| "error".to_owned()))
            .stdin(Stdio::null())
            .spawn()
            .context("starting batond")?;
        let mut daemon = Batond { data_dir: data_dir.to_path_buf(), url: String::new(), child };
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        loop {
            if let Ok(url) = std::fs::read_to_string(&url_file)
                && !url.is_empty()
            {
                daemon.url = url;
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!("batond exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("batond did not listen within {START_TIMEOUT_MS} ms");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Changes the factory administrator's password to [`TEST_PASSWORD`], as every daemon's
    /// first operator must before anything else is allowed.
    pub fn change_factory_password(&self) -> anyhow::Result<()> {
        let response = self
            .client()?
            .post(format!("{}/api/v1/password", self.url))
            .basic_auth(FACTORY_USER, Some(FACTORY_PASSWORD))
            .json(&json!({"current_password": FACTORY_PASSWORD, "new_password": TEST_PASSWORD}))
            .send()
            .context("changing the factory password")?;
        if response.status() != 200 {
            bail!("changing the factory password on {}: {}", self.url, response.status());
        }
        Ok(())
    }

    pub fn client(&self) -> anyhow::Result<reqwest::blocking::Client> {
        let ca =
            std::fs::read(self.data_dir.join("tls/ca.pem")).context("reading the daemon's CA")?;
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTPS client")
    }

    /// SIGKILL: no chance to flush or say goodbye, as in a power cut of the process.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing batond")?;
        self.child.wait().context("reaping batond")?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit, at most [`STOP_TIMEOUT_MS`] (then it is killed).
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .context("sending SIGTERM")?;
        let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for batond to stop")? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("batond did not stop within {STOP_TIMEOUT_MS} ms of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Batond {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process groups this process started (nginx's: its workers are not its children).
static GROUPS_STARTED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Notes a process group this process started, for [`kill_children_on_signal`].
pub fn group_started(group: u32) {
    if let Ok(group) = i32::try_from(group) {
        GROUPS_STARTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(group);
    }
}

/// From now on SIGINT, SIGTERM or SIGHUP end this process only after killing every process
/// it is the parent of and every group noted with [`group_started`]: a bench cut short
/// (Ctrl-C, a timeout) leaves no daemon, bridge simulator, load generator or nginx listening,
/// as its `Drop`s do not run then. The signals are caught by a handler, not blocked and
/// waited for: a blocked mask is inherited by every program started, across `exec`, and a
/// daemon started that way would not stop on the SIGTERM it is later sent.
pub fn kill_children_on_signal() -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill, killpg};
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("catching the stop signals")?;
    std::thread::Builder::new().name("stop-signals".to_owned()).spawn(move || {
        let Some(signal) = signals.forever().next() else { return };
        let name = Signal::try_from(signal).map_or("a stop signal", Signal::as_str);
        eprintln!("{name}: stopping the processes this run started");
        let groups = GROUPS_STARTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for group in groups.iter() {
            let _ = killpg(nix::unistd::Pid::from_raw(*group), Signal::SIGKILL);
        }
        for child in children_of(std::process::id()) {
            let _ = kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL);
        }
        std::process::exit(128 + signal);
    })?;
    Ok(())
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<i32> {
    let parent = parent.to_string();
    processes_where(|fields| fields.get(1) == Some(&parent))
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// The processes whose [`stat_after_name`] fields satisfy `matches`.
pub fn processes_where(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_after_name(*pid).is_some_and(|fields| matches(&fields)))
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (field 3, the state, first; then the
/// parent, the process group…): the name may hold spaces, so they are counted from its
/// closing ')'.
pub fn stat_after_name(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// The loopback addresses a test's peers listen on, each with the cluster port they share.
const PEER_ADDRESSES: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Ports tried by [`free_port`] before it gives up.
const FREE_PORT_ATTEMPTS: usize = 64;

/// A TCP port free on every address of [`PEER_ADDRESSES`] at once, for a port shared by every
/// peer of one test, outside the kernel's ephemeral range and never the same twice in one
/// process. Inside that range, any concurrent test's listener bound to port 0, or any
/// outgoing connection, could take it between this check and the peer's start: a peer then
/// could not listen, and the others dialled that stranger for the whole test ("unreachable:
/// connection closed"). Two slow runs failed so, one of them with a test's admin and cluster
/// ports picked this way in a row.
pub fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (low, high) = ports_outside_the_ephemeral_range();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..FREE_PORT_ATTEMPTS {
        let port = low + u16::try_from(random_u64() % u64::from(high - low)).unwrap_or(0);
        let free_everywhere = !handed_out.contains(&port)
            && PEER_ADDRESSES
                .iter()
                .all(|address| std::net::TcpListener::bind((*address, port)).is_ok());
        if free_everywhere {
            handed_out.push(port);
            return Ok(port);
        }
    }
    bail!("no port free on {PEER_ADDRESSES:?} at once after {FREE_PORT_ATTEMPTS} tries")
}

/// Lowest port [`free_port`] picks.
const FREE_PORT_LOW: u16 = 10_000;

/// The ports below the kernel's ephemeral range (from `FREE_PORT_LOW`): what no port 0 bind
/// and no outgoing connection is given.
fn ports_outside_the_ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let ephemeral_low = range
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > FREE_PORT_LOW + 1_000)
        .unwrap_or(32_768);
    (FREE_PORT_LOW, ephemeral_low)
}

/// A random number: the standard library's hasher keys are random, and differ for each
/// `RandomState`.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// A TCP forwarder that can cut its connections, to partition peers: while cut, every
/// connection through it is closed and new ones are dropped at once. Keeps a copy of the bytes
/// it carried, so a test can check what crossed the wire.
pub struct Proxy {
    pub address: std::net::SocketAddr,
    links: Arc<Mutex<ProxyLinks>>,
    pub carried: Arc<Mutex<Vec<u8>>>,
}

/// Whether the proxy is cut, and both sockets of every live connection (by connection number)
/// to cut them. One lock for both: a connection accepted just before a cut must not be
/// registered after the cut closed the others, or it would carry traffic through a partition.
#[derive(Default)]
struct ProxyLinks {
    cut: bool,
    open: std::collections::HashMap<u64, [TcpStream; 2]>,
}

/// Bytes of carried traffic kept for inspection.
const PROXY_CAPTURE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Pause after a failed accept (e.g. out of descriptors), so the proxy does not spin.
const PROXY_ACCEPT_RETRY_MS: u64 = 50;

impl Proxy {
    pub fn start(target: std::net::SocketAddr) -> anyhow::Result<Proxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let proxy = Proxy {
            address: listener.local_addr()?,
            links: Arc::default(),
            carried: Arc::new(Mutex::new(Vec::new())),
        };
        let (links, carried) = (proxy.links.clone(), proxy.carried.clone());
        std::thread::spawn(move || {
            for number in 0u64.. {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(PROXY_ACCEPT_RETRY_MS));
                        continue;
                    }
                };
                // Checked again once connected, under the lock (see `ProxyLinks`).
                if links.lock().unwrap_or_else(|e| e.into_inner()).cut {
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else { continue };
                Proxy::carry(number, [client, server], &links, &carried);
            }
        });
        Ok(proxy)
    }

    /// Forwards both directions of one connection, unless the proxy is cut.
    fn carry(
        number: u64,
        [client, server]: [TcpStream; 2],
        links: &Arc<Mutex<ProxyLinks>>,
        carried: &Arc<Mutex<Vec<u8>>>,
    ) {
        let mut guard = links.lock().unwrap_or_else(|e| e.into_inner());
        if guard.cut {
            return;
        }
        let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        guard.open.insert(number, [client_copy, server_copy]);
        drop(guard);
        // Each direction ends the connection when it ends; the last one forgets it.
        let remaining = Arc::new(std::sync::atomic::AtomicU8::new(2));
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let (carried, links, remaining) = (carried.clone(), links.clone(), remaining.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                while let Ok(read) = from.read(&mut buffer) {
                    if read == 0 || to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                    let mut carried = carried.lock().unwrap_or_else(|e| e.into_inner());
                    if carried.len() < PROXY_CAPTURE_BYTES_MAX {
                        carried.extend_from_slice(&buffer[..read]);
                    }
                }
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    links.lock().unwrap_or_else(|e| e.into_inner()).open.remove(&number);
                }
            });
        }
    }

    /// Cuts every connection and refuses new ones, until [`Proxy::heal`].
    pub fn cut(&self) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.cut = true;
        for streams in links.open.values() {
            for stream in streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn heal(&self) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).cut = false;
    }
}

/// A `baton-simbridge` child process: a simulated MCU or TelePresence Server on 127.0.0.1.
pub struct SimBridge {
    pub address: std::net::SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SimBridge {
    /// `personality` is `mcu` or `telepresence-server`; credentials are `api`/`bridge secret`.
    pub fn start(personality: &str, extra_args: &[&str]) -> anyhow::Result<SimBridge> {
        let dir = tempfile::tempdir()?;
        let address_file = dir.path().join("address");
        let child = Command::new(binary("baton-simbridge")?)
            .args(["--personality", personality, "--username", SIM_BRIDGE_USER])
            .args(["--password", SIM_BRIDGE_PASSWORD])
            .arg("--address-file")
            .arg(&address_file)
            .args(extra_args)
            .stdin(Stdio::null())
            .spawn()
            .context("starting baton-simbridge")?;
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        let mut bridge = SimBridge { address: "127.0.0.1:0".parse()?, child, _dir: dir };
        loop {
            if let Ok(text) = std::fs::read_to_string(&address_file)
                && let Ok(address) = text.trim().parse()
            {
                bridge.address = address;
                return Ok(bridge);
            }
            if let Some(status) = bridge.child.try_wait()? {
                bail!("baton-simbridge exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("baton-simbridge did not listen within {START_TIMEOUT_MS} ms");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SimBridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SIM_BRIDGE_USER: &str = "api";
pub const SIM_BRIDGE_PASSWORD: &str = "bridge secret";

/// The factory account's name and password, valid until the first password change.
pub const FACTORY_USER: &str = "admin";
pub const FACTORY_PASSWORD: &str = "TANDBERG";

/// How long a peer gets to reach an expected state (links retry within a few seconds; a
/// joined peer has no administrator until the cluster's account arrives).
pub const SETTLE_TIMEOUT_MS: u64 = 30_000;

/// What a peer list holds: a running peer, or just an address.
pub trait Address {
    fn address(&self) -> &str;
}

impl Address for Peer {
    fn address(&self) -> &str {
        &self.ip
    }
}

impl Address for &str {
    fn address(&self) -> &str {
        self
    }
}

impl Address for String {
    fn address(&self) -> &str {
        self
    }
}

/// A `batond` started as a cluster peer on its own loopback address (127.0.0.x), prepared as
/// the seed's Task 1 asks: password changed, address, host name `peer-<x>` and domain, DNS,
/// NTP and a full-edition release key. Every method returns an error instead of panicking, so
/// the benchmark binaries can use it too; tests unwrap.
pub struct Peer {
    pub daemon: Batond,
    pub ip: String,
    /// The flags it was started with, to restart it the same way.
    pub args: Vec<String>,
    /// Where its admin API listens (`ip:port`, port 0 for any).
    pub listen: String,
}

impl Peer {
    /// Starts and prepares a new peer on `ip` with cluster port `port` (common to all peers)
    /// and `extra` flags. Time synchronisation is assumed: loopback peers share one clock.
    pub fn start(dir: &Path, ip: &str, port: u16, extra: &[String]) -> anyhow::Result<Peer> {
        Peer::start_on(dir, &format!("{ip}:0"), port, extra)
    }

    /// [`Peer::start`] with the admin API on `listen` (`ip:port`): a fixed port keeps its URL
    /// across restarts.
    pub fn start_on(dir: &Path, listen: &str, port: u16, extra: &[String]) -> anyhow::Result<Peer> {
        let ip = listen.rsplit_once(':').map_or(listen, |(ip, _)| ip).to_owned();
        let mut args = vec![
            "--cluster-port".to_owned(),
            port.to_string(),
            "--assume-time-synchronised".to_owned(),
        ];
        args.extend_from_slice(extra);
        let daemon = Batond::start_listening(dir, listen, &args, &[])?;
        daemon.change_factory_password()?;
        let peer = Peer { daemon, ip: ip.clone(), args, listen: listen.to_owned() };
        let host = format!("peer-{}", ip.rsplit('.').next().unwrap_or(&ip));
        peer.save(
            "/api/v1/ipv4",
            json!({"address": ip, "prefix_length": 8, "gateway": "127.0.0.254"}),
        )?;
        peer.save("/api/v1/system-name", json!({"host_name": host, "domain": "example.test"}))?;
        peer.save("/api/v1/dns", json!({"servers": ["127.0.0.53"]}))?;
        peer.save("/api/v1/ntp", json!({"servers": ["127.0.0.123"]}))?;
        peer.save("/api/v1/licence", json!({"release_key": "ABCD-1234-EFGH", "edition": "full"}))?;
        Ok(peer)
    }

    /// SIGKILL, then starts it again on the same data with the same flags.
    pub fn restart(self) -> anyhow::Result<Peer> {
        let args = self.args.clone();
        self.restart_as(args)
    }

    /// SIGKILL, then starts it again on the same data with the flags `args`.
    pub fn restart_as(self, args: Vec<String>) -> anyhow::Result<Peer> {
        let Peer { daemon, ip, args: _, listen } = self;
        let dir = daemon.data_dir.clone();
        daemon.kill()?;
        let daemon = Batond::start_listening(&dir, &listen, &args, &[])?;
        Ok(Peer { daemon, ip, args, listen })
    }

    /// One request as the test administrator (HTTP Basic): the status and the JSON body
    /// (`null` if there is none).
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let client = self.daemon.client()?;
        let mut request = client
            .request(method.clone(), format!("{}{path}", self.daemon.url))
            .basic_auth(FACTORY_USER, Some(TEST_PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().with_context(|| format!("{method} {path} on {}", self.ip))?;
        let status = response.status().as_u16();
        Ok((status, response.json().unwrap_or(Value::Null)))
    }

    /// A GET that must succeed. A peer that has just joined has no administrator until the
    /// cluster's arrives, so a 401 is retried for [`SETTLE_TIMEOUT_MS`].
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
        loop {
            let (status, body) = self.call(reqwest::Method::GET, path, None)?;
            if status == 200 {
                return Ok(body);
            }
            if status != 401 || Instant::now() > deadline {
                bail!("GET {path} on {}: {status} {body}", self.ip);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PUT that must succeed (200 or 201).
    pub fn save(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let (status, answer) = self.call(reqwest::Method::PUT, path, Some(body))?;
        if status != 200 && status != 201 {
            bail!("PUT {path} on {}: {status} {answer}", self.ip);
        }
        Ok(())
    }

    /// A POST to a collection that must create the record (201).
    pub fn create(&self, collection: &str, body: Value) -> anyhow::Result<()> {
        let path = format!("/api/v1/{collection}");
        let (status, answer) = self.call(reqwest::Method::POST, &path, Some(body))?;
        if status != 201 {
            bail!("creating in {collection} on {}: {status} {answer}", self.ip);
        }
        Ok(())
    }

    /// Creates an MCU bridge record named `name` (at an address nothing listens on).
    pub fn create_bridge(&self, name: &str) -> anyhow::Result<()> {
        let bridge = json!({"name": name, "bridge_type": "mcu", "address": "127.0.0.9",
                            "username": "api", "password": "secret", "capacity_ports": 10});
        self.create("bridges", bridge)
    }

    /// Saves this peer's cluster settings: the pre-shared key and the peer addresses.
    pub fn save_cluster(&self, key: &str, peers: &[&dyn Address]) -> anyhow::Result<()> {
        let peers: Vec<&str> = peers.iter().map(|peer| peer.address()).collect();
        self.save("/api/v1/cluster", json!({"pre_shared_key": key, "peers": peers}))
    }

    /// Standalone mode: no key, no peers.
    pub fn standalone(&self) -> anyhow::Result<()> {
        self.save("/api/v1/cluster", json!({"pre_shared_key": "", "peers": []}))
    }

    /// A GET that must succeed, its answer read as `T` (see [`Peer::get`]).
    pub fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let answer = self.get(path)?;
        serde_json::from_value(answer.clone())
            .with_context(|| format!("GET {path} on {}: unexpected answer {answer}", self.ip))
    }

    /// `GET /api/v1/cluster/status`: mode, cluster id and a line per listed peer.
    pub fn cluster_status(&self) -> anyhow::Result<api::ClusterStatus> {
        self.get_as("/api/v1/cluster/status")
    }

    /// The status line this peer shows for the peer at `ip` ("This system", "Active as …",
    /// "Failed: …"), or a note that it is not listed.
    pub fn status_line(&self, ip: &str) -> anyhow::Result<String> {
        let status = self.cluster_status()?;
        Ok(status
            .peers
            .iter()
            .find(|line| line.address.to_string() == ip)
            .map(|line| line.text.clone())
            .unwrap_or_else(|| format!("(not listed: {status:?})")))
    }

    /// The names of its bridge records, sorted.
    pub fn bridges(&self) -> anyhow::Result<Vec<String>> {
        let listed: Vec<model::Record> = self.get_as("/api/v1/bridges")?;
        let mut names: Vec<String> = listed.iter().map(|bridge| bridge.name().to_owned()).collect();
        names.sort();
        Ok(names)
    }

    /// The whole shared configuration, as the API shows it (records of shared kinds).
    pub fn shared_config(&self) -> anyhow::Result<Vec<model::Record>> {
        let config: api::ConfigAnswer = self.get_as("/api/v1/config")?;
        Ok(config
            .records
            .into_iter()
            .filter(|record| record.kind().scope() == model::Scope::Shared)
            .collect())
    }
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by colons, as browsers (and
/// the Status page) show it.
pub fn sha256_fingerprint(certificate_der: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(certificate_der);
    digest.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_built_in_the_profile_of_the_test_executable() {
        assert_eq!(cargo_profile(Path::new("/w/target/debug")), "dev");
        assert_eq!(cargo_profile(Path::new("/w/target/release")), "release");
        assert_eq!(cargo_profile(Path::new("/w/target/ci")), "ci");
    }
}
