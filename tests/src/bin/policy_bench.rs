//! `cargo xtask bench policy`: the policy service under load, beside nginx answering a fixed
//! CPL body, both driven by the same load generators in the same run: peak decisions per second
//! (wrk, over HTTP and HTTPS with keep-alive) and the CPU time each server spends per request;
//! then p50, p99 and max latency at half of Baton's peak rate held fixed
//! (`baton_tests::fixed_rate`, latency from each request's due time). Also: batond's resident
//! memory after the load (beside before it), the time Baton adds when a call must first create
//! its conference (beside the bridge's own create), and batond's memory with 10^4 live
//! conferences. Each figure is printed beside its reference with their ratio.
//!
//! Needs `nginx` and `wrk` (Debian packages `nginx-light` and `wrk`). Release build.
//!
//! `--hold`: set up batond as for the load, print its policy URL and process id, and wait for
//! a stop signal instead of measuring (a daemon to profile with `perf` under a load of one's
//! own). It needs neither nginx nor wrk; the signal stops batond and the bridge simulator, and
//! leaves the data directory it prints.

use anyhow::{Context, bail};
use baton_tests::{
    Batond, SIM_BRIDGE_PASSWORD, SIM_BRIDGE_USER, SimBridge, TEST_PASSWORD, fixed_rate,
};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VCS_USER: &str = "vcs";
const VCS_PASSWORD: &str = "policy service password";
const LOAD_DURATION_S: u32 = 10;
const LOAD_CONNECTIONS: u32 = 32;
const LOAD_THREADS: u32 = 2;
const CREATIONS: usize = 200;
const MEMORY_CONFERENCES: usize = 10_000;

fn main() -> anyhow::Result<()> {
    baton_tests::kill_children_on_signal()?;
    let hold = std::env::args().any(|arg| arg == "--hold");
    for tool in ["nginx", "wrk"].into_iter().filter(|_| !hold) {
        if which(tool).is_none() {
            bail!("{tool} not found: apt-get install -y nginx-light wrk");
        }
    }
    let dir = tempfile::tempdir()?;
    let sim = SimBridge::start("mcu", &[])?;
    let policy_port = baton_tests::free_port()?;
    let daemon_dir = dir.path().join("batond");
    std::fs::create_dir_all(&daemon_dir)?;
    let args = ["--policy-http-listen".to_owned(), format!("127.0.0.1:{policy_port}")];
    let daemon = Batond::start_with(&daemon_dir, "127.0.0.1", &args)?;
    let api = Api::new(&daemon)?;
    api.configure(&sim)?;
    let http_url = format!("http://127.0.0.1:{policy_port}/baton/policy");
    let https_url = format!("{}/baton/policy", daemon.url);
    // The conference the load calls into exists: this measures decisions, not creations.
    api.policy_call(&http_url, "meet.alice@example.com")?;
    if hold {
        return serve_until_stopped(&daemon, &http_url, dir.path());
    }
    let rss_before_load_kib = rss_kib(daemon.child.id())?;

    let nginx = Nginx::start(dir.path(), &daemon_dir.join("tls"))?;
    let script = dir.path().join("call.lua");
    std::fs::write(&script, wrk_script("meet.alice@example.com"))?;
    let servers = Servers { batond: daemon.child.id(), nginx: &nginx };
    let peak_per_s = peak_beside_nginx(&script, [&http_url, &https_url], &servers)?;
    fixed_rate_beside_nginx(peak_per_s / 2.0, policy_port, &servers)?;
    let rss_after_load_kib = rss_kib(daemon.child.id())?;
    println!();
    row(
        "batond RSS after the load (MiB), beside before it",
        rss_after_load_kib as f64 / 1024.0,
        rss_before_load_kib as f64 / 1024.0,
    );
    drop(nginx);

    // Creation: Baton's whole decision versus the bridge's own create call.
    let bridge_ms = median(&time_bridge_creates(&sim, CREATIONS)?);
    let mut decision_ms = Vec::with_capacity(CREATIONS);
    for index in 0..CREATIONS {
        let started = Instant::now();
        api.policy_call(&http_url, &format!("meet.new{index}@example.com"))?;
        decision_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let baton_ms = median(&decision_ms);
    println!(
        "first call ({CREATIONS} calls, sequential, median): added by Baton {:.2} ms over the bridge's create",
        baton_ms - bridge_ms
    );
    row("first call (ms), beside the bridge's create alone", baton_ms, bridge_ms);
    memory_with_many_conferences(&daemon, &api, &http_url)
}

/// `--hold`: keeps the set-up daemon serving until a stop signal (see the module's doc).
fn serve_until_stopped(daemon: &Batond, http_url: &str, dir: &Path) -> anyhow::Result<()> {
    let script = dir.join("call.lua");
    std::fs::write(&script, wrk_script("meet.alice@example.com"))?;
    println!("batond pid {} serves {http_url} (data in {})", daemon.child.id(), dir.display());
    println!("load: wrk -s {} {http_url}; stop with Ctrl-C", script.display());
    loop {
        std::thread::park();
    }
}

/// A figure beside its reference, and their ratio.
fn row(label: &str, ours: f64, reference: f64) {
    println!("{label:<58} {ours:>12.2} {reference:>12.2} {:>8.2}", ours / reference);
}

/// The two servers under load, for their CPU time.
struct Servers<'a> {
    batond: u32,
    nginx: &'a Nginx,
}

/// Peak decisions per second (wrk, keep-alive) over HTTP and HTTPS beside nginx; returns
/// Baton's peak over HTTP. Also the CPU time each server spent per request: on a machine
/// whose cores the load generator shares, it moves less from run to run than the rate.
fn peak_beside_nginx(script: &Path, urls: [&str; 2], servers: &Servers<'_>) -> anyhow::Result<f64> {
    println!(
        "policy decisions for an existing conference, wrk -t{LOAD_THREADS} -c{LOAD_CONNECTIONS} -d{LOAD_DURATION_S}s, keep-alive"
    );
    println!(
        "{:<8} {:>14} {:>9} {:>9} {:>9} | {:>14} {:>9} {:>9} | {:>6}",
        "", "Baton req/s", "p50 ms", "p99 ms", "max ms", "nginx req/s", "p50 ms", "p99 ms", "ratio"
    );
    let nginx = servers.nginx;
    let mut http_peak_per_s = f64::NAN;
    let mut cpu_rows = Vec::new();
    for (scheme, baton, reference) in
        [("HTTP", urls[0], nginx.http_url()), ("HTTPS", urls[1], nginx.https_url())]
    {
        let (ours, our_cpu) =
            with_cpu_per_request(&[servers.batond], || wrk(script, baton), Load::requests)?;
        let (theirs, their_cpu) =
            with_cpu_per_request(&nginx.processes(), || wrk(script, &reference), Load::requests)?;
        println!(
            "{scheme:<8} {:>14.0} {:>9.2} {:>9.2} {:>9.2} | {:>14.0} {:>9.2} {:>9.2} | {:>6.2}",
            ours.requests_per_s,
            ours.p50_ms,
            ours.p99_ms,
            ours.max_ms,
            theirs.requests_per_s,
            theirs.p50_ms,
            theirs.p99_ms,
            ours.requests_per_s / theirs.requests_per_s
        );
        cpu_rows.push((scheme, our_cpu, their_cpu));
        if scheme == "HTTP" {
            http_peak_per_s = ours.requests_per_s;
        }
    }
    println!("{:<58} {:>12} {:>12} {:>8}", "", "Baton", "nginx", "ratio");
    for (scheme, ours, theirs) in cpu_rows {
        row(&format!("server CPU per request (us), {scheme}"), ours.total_us, theirs.total_us);
        row(&format!("  of which in the kernel (us), {scheme}"), ours.system_us, theirs.system_us);
    }
    Ok(http_peak_per_s)
}

/// CPU time per request, in microseconds: all of it, and the part spent in the kernel.
struct CpuPerRequest {
    total_us: f64,
    system_us: f64,
}

/// `load`'s result and the CPU time the processes `pids` spent per request meanwhile, the
/// result telling how many `requests` there were.
fn with_cpu_per_request<T>(
    pids: &[u32],
    load: impl FnOnce() -> anyhow::Result<T>,
    requests: impl FnOnce(&T) -> f64,
) -> anyhow::Result<(T, CpuPerRequest)> {
    let before = cpu_ticks(pids)?;
    let result = load()?;
    let after = cpu_ticks(pids)?;
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100);
    let requests = requests(&result);
    let per_request_us = |ticks: u64| ticks as f64 / ticks_per_s as f64 * 1e6 / requests;
    let cpu = CpuPerRequest {
        total_us: per_request_us(
            (after.user + after.system).saturating_sub(before.user + before.system),
        ),
        system_us: per_request_us(after.system.saturating_sub(before.system)),
    };
    Ok((result, cpu))
}

/// Clock ticks the processes `pids` have spent in user space and in the kernel.
struct CpuTicks {
    user: u64,
    system: u64,
}

/// [`CpuTicks`] of the processes `pids` (`/proc/PID/stat` fields 14 and 15; every thread
/// counts).
fn cpu_ticks(pids: &[u32]) -> anyhow::Result<CpuTicks> {
    let mut ticks = CpuTicks { user: 0, system: 0 };
    for pid in pids {
        let fields =
            baton_tests::stat_after_name(*pid).with_context(|| format!("/proc/{pid}/stat"))?;
        let field = |index: usize| {
            fields.get(index).and_then(|field| field.parse::<u64>().ok()).unwrap_or(0)
        };
        ticks.user += field(11);
        ticks.system += field(12);
    }
    Ok(ticks)
}

/// p50/p99 at a fixed request rate (latency from when each request was due, so a stall is not
/// hidden), Baton beside nginx over HTTP; and the CPU each spends per request at that same
/// rate, where neither is short of CPU as at its peak.
fn fixed_rate_beside_nginx(
    rate_per_s: f64,
    baton_port: u16,
    servers: &Servers<'_>,
) -> anyhow::Result<()> {
    let rate_per_s = rate_per_s.max(1.0).round();
    let answered = |report: &fixed_rate::Report| report.answered as f64;
    let (ours, our_cpu) = with_cpu_per_request(
        &[servers.batond],
        || policy_at_fixed_rate(rate_per_s, baton_port),
        answered,
    )?;
    let (theirs, their_cpu) = with_cpu_per_request(
        &servers.nginx.processes(),
        || policy_at_fixed_rate(rate_per_s, servers.nginx.http_port),
        answered,
    )?;
    println!();
    println!(
        "at half of Baton's HTTP peak: {rate_per_s:.0} req/s for {LOAD_DURATION_S} s over {LOAD_CONNECTIONS} connections (baton_tests::fixed_rate), HTTP"
    );
    println!("{:<58} {:>12} {:>12} {:>8}", "", "Baton", "nginx", "ratio");
    row("p50 (ms)", ours.p50_ms, theirs.p50_ms);
    row("p99 (ms)", ours.p99_ms, theirs.p99_ms);
    row("max (ms)", ours.max_ms, theirs.max_ms);
    row("achieved (req/s)", ours.requests_per_s, theirs.requests_per_s);
    row("server CPU per request (us)", our_cpu.total_us, their_cpu.total_us);
    row("  of which in the kernel (us)", our_cpu.system_us, their_cpu.system_us);
    Ok(())
}

/// One fixed-rate run of the policy call against the HTTP listener on `port`.
fn policy_at_fixed_rate(rate_per_s: f64, port: u16) -> anyhow::Result<fixed_rate::Report> {
    let credentials = vcs_credentials();
    let body = call_body("meet.alice@example.com");
    let request = format!(
        "POST /baton/policy HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    fixed_rate::run(&fixed_rate::Plan {
        address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        request: request.as_bytes(),
        rate_per_s,
        duration: Duration::from_secs(LOAD_DURATION_S.into()),
        connections: LOAD_CONNECTIONS as usize,
    })
    .with_context(|| format!("the fixed-rate load on port {port}"))
}

/// batond's memory with many live conferences, and a call's time then.
fn memory_with_many_conferences(daemon: &Batond, api: &Api, url: &str) -> anyhow::Result<()> {
    let idle_kib = rss_kib(daemon.child.id())?;
    for index in 0..MEMORY_CONFERENCES {
        api.post(
            "conferences",
            json!({"name": format!("live{index}"), "bridge": "mcu",
            "bridge_conference_id": format!("live{index}"), "template": "meeting"}),
        )?;
    }
    let loaded_kib = rss_kib(daemon.child.id())?;
    let started = Instant::now();
    let calls = 1_000;
    for index in 0..calls {
        api.policy_call(url, &format!("meet.live{}@example.com", index % 10))?;
    }
    let per_call_ms = started.elapsed().as_secs_f64() * 1e3 / calls as f64;
    println!(
        "memory: batond RSS {:.1} MiB with {} conferences, {:.1} MiB with {MEMORY_CONFERENCES} more; a sequential call then takes {per_call_ms:.2} ms",
        idle_kib as f64 / 1024.0,
        CREATIONS + 1,
        loaded_kib as f64 / 1024.0
    );
    Ok(())
}

struct Api {
    url: String,
    http: reqwest::blocking::Client,
    /// A session token: Basic authentication would cost an argon2 check per request, which
    /// is what would be measured instead of Baton.
    token: String,
}

impl Api {
    fn new(daemon: &Batond) -> anyhow::Result<Api> {
        let (url, http) = (daemon.url.clone(), daemon.client()?);
        let answer = http
            .post(format!("{url}/api/v1/password"))
            .basic_auth("admin", Some("TANDBERG"))
            .json(&json!({"current_password": "TANDBERG", "new_password": TEST_PASSWORD}))
            .send()?;
        anyhow::ensure!(answer.status().is_success(), "password change: {}", answer.status());
        let session: serde_json::Value = http
            .post(format!("{url}/api/v1/sessions"))
            .json(&json!({"username": "admin", "password": TEST_PASSWORD}))
            .send()?
            .json()?;
        let token = session["token"].as_str().context("no session token")?.to_owned();
        Ok(Api { url, http, token })
    }

    fn send(
        &self,
        method: reqwest::Method,
        collection: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<()> {
        let answer = self
            .http
            .request(method, format!("{}/api/v1/{collection}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()?;
        anyhow::ensure!(
            answer.status().is_success(),
            "{collection}: {} {}",
            answer.status(),
            answer.text()?
        );
        Ok(())
    }

    fn post(&self, collection: &str, body: serde_json::Value) -> anyhow::Result<()> {
        self.send(reqwest::Method::POST, collection, body)
    }

    fn configure(&self, sim: &SimBridge) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::PUT,
            "policy-service",
            json!({"username": VCS_USER, "password": VCS_PASSWORD}),
        )?;
        self.post("bridges", json!({"name": "mcu", "bridge_type": "mcu", "address": sim.address.to_string(),
            "protocol": "http", "username": SIM_BRIDGE_USER, "password": SIM_BRIDGE_PASSWORD, "capacity_ports": 10_000}))?;
        self.post(
            "bridge-pools",
            json!({"name": "pool", "bridge_type": "mcu", "bridges": ["mcu"]}),
        )?;
        self.post(
            "service-preferences",
            json!({"name": "pref", "bridge_type": "mcu", "pools": ["pool"]}),
        )?;
        self.post("conference-templates", json!({"name": "meeting", "conference_type": "meeting", "service_preference": "pref", "max_participants": 2}))?;
        self.post(
            "conference-aliases",
            json!({"name": "meet", "pattern": r"meet\.(?P<room>[a-z0-9]+)@example\.com",
            "conference_name": "${room}", "template": "meeting", "priority": 1}),
        )
    }

    fn policy_call(&self, url: &str, alias: &str) -> anyhow::Result<()> {
        let answer = self
            .http
            .post(url)
            .basic_auth(VCS_USER, Some(VCS_PASSWORD))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(call_body(alias))
            .send()?;
        let text = answer.text()?;
        anyhow::ensure!(text.contains("<proxy/>"), "{alias} was not routed: {text}");
        Ok(())
    }
}

/// A call to `alias` as a VCS's search rule sends it: every parameter of the protocol guide's
/// sample request (`../shared/docs/vcs-policy-and-bridges.md`, 1.8), values invented. The
/// decision reads five of them, but a VCS sends them all, and every one is parsed and checked.
fn call_body(alias: &str) -> String {
    let alias = alias.replace('@', "%40");
    [
        "AUTHENTICATED=TRUE&AUTHENTICATED_SOURCE_ALIAS=bob%40example.com",
        "&CLUSTER_NAME=vcs.example.com&DESTINATION_ALIAS=",
        &alias,
        "&GLOBAL_CALL-SERIAL_NUMBER=3f6c1d2e-7a41-4b8e-9c0d-5e6f7a8b9c0d",
        "&LOCAL_CALL_SERIAL_NUMBER=9a21b3c4-d5e6-4f70-8192-a3b4c5d6e7f8",
        "&METHOD=INVITE&NETWORK_TYPE=IPV4&POLICY_TYPE=SEARCH&PROTOCOL=SIP",
        "&SOURCE_ADDRESS=10.1.1.20&SOURCE_IP=10.1.1.20&SOURCE_PORT=5061&TRAVERSAL_TYPE=TYPE_UNDEF",
        "&UNAUTHENTICATED_SOURCE_ALIAS=bob%40example.com&ZONE_NAME=DefaultZone",
        "&UTCTIME=2026-12-07+01%3A07%3A31",
    ]
    .concat()
}

/// The VCS's `Authorization: Basic` credentials, encoded.
fn vcs_credentials() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{VCS_USER}:{VCS_PASSWORD}"))
}

fn wrk_script(alias: &str) -> String {
    let credentials = vcs_credentials();
    format!(
        "wrk.method = \"POST\"\nwrk.body = \"{}\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\nwrk.headers[\"Authorization\"] = \"Basic {credentials}\"\n",
        call_body(alias)
    )
}

struct Load {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Load {
    /// How many requests a run of [`LOAD_DURATION_S`] answered.
    fn requests(&self) -> f64 {
        self.requests_per_s * f64::from(LOAD_DURATION_S)
    }
}

fn wrk(script: &Path, url: &str) -> anyhow::Result<Load> {
    let output = Command::new("wrk")
        .args(["-t", &LOAD_THREADS.to_string(), "-c", &LOAD_CONNECTIONS.to_string()])
        .args(["-d", &format!("{LOAD_DURATION_S}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw errors against {url}:\n{text}");
    let number_after = |label: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .with_context(|| format!("no {label:?} in wrk output:\n{text}"))?;
        let value = line.trim_start()[label.len()..].split_whitespace().next().unwrap_or_default();
        parse_duration_ms(value)
            .or_else(|| value.parse().ok())
            .with_context(|| format!("cannot read {value:?}"))
    };
    let max_ms = text
        .lines()
        .find(|line| line.trim_start().starts_with("Latency"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(parse_duration_ms)
        .unwrap_or(f64::NAN);
    Ok(Load {
        requests_per_s: number_after("Requests/sec:")?,
        p50_ms: number_after("50%")?,
        p99_ms: number_after("99%")?,
        max_ms,
    })
}

/// wrk prints durations as `812.00us`, `1.23ms` or `2.01s`.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(us) = text.strip_suffix("us") {
        (us, 1e-3)
    } else if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|value| value * scale)
}

fn time_bridge_creates(sim: &SimBridge, count: usize) -> anyhow::Result<Vec<f64>> {
    let target = bridges::BridgeTarget {
        kind: bridges::BridgeKind::Mcu,
        base_url: format!("http://{}", sim.address),
        username: SIM_BRIDGE_USER.to_owned(),
        password: SIM_BRIDGE_PASSWORD.to_owned(),
        pinned_sha256: None,
    };
    let client = bridges::BridgeClient::new(5_000, None)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut times_ms = Vec::with_capacity(count);
    for index in 0..count {
        let spec =
            bridges::ConferenceSpec { name: format!("direct-{index}"), ..Default::default() };
        let started = Instant::now();
        runtime.block_on(client.create_conference(&target, &spec))?;
        times_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times_ms)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .context("no VmRSS")
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([std::path::PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join(tool))
            .find(|path| path.exists())
    })
}

/// nginx answering every request with the same CPL, on HTTP and HTTPS (batond's certificate).
struct Nginx {
    child: Child,
    http_port: u16,
    https_port: u16,
}

impl Nginx {
    fn start(dir: &Path, tls: &Path) -> anyhow::Result<Nginx> {
        let (http_port, https_port) = (baton_tests::free_port()?, baton_tests::free_port()?);
        let cpl = policy::cpl::route("alice@127.0.0.1").replace('\'', "\\'");
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        // nginx closes a kept connection after 1,000 requests by default, which costs it about a
        // hundred reconnections a second under this load (over HTTPS, each with a handshake);
        // Baton never closes a busy one, so the reference keeps its connections too.
        let conf = format!(
            "worker_processes 2;\npid {pid};\nerror_log stderr error;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n keepalive_requests 4294967295;\n server {{\n  listen 127.0.0.1:{http_port};\n  listen 127.0.0.1:{https_port} ssl;\n  \
             ssl_certificate {cert};\n  ssl_certificate_key {key};\n  location / {{ default_type application/xml; return 200 '{cpl}'; }}\n }}\n}}\n",
            pid = prefix.join("nginx.pid").display(),
            cert = tls.join("server.pem").display(),
            key = tls.join("server-key.pem").display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx = which("nginx").context("nginx not found")?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            // Its own process group, so the workers go with the master (killing the master
            // alone orphans them, still listening).
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        baton_tests::group_started(child.id());
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { child, http_port, https_port })
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/baton/policy", self.http_port)
    }

    /// nginx's master and its workers: the processes of its process group (see `start`).
    fn processes(&self) -> Vec<u32> {
        let group = self.child.id().to_string();
        baton_tests::processes_where(|fields| fields.get(2) == Some(&group))
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/baton/policy", self.https_port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.child.id()) {
            let group = nix::unistd::Pid::from_raw(group);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
