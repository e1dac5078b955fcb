//! Clusters of real `batond` processes on 127.0.0.1, .2 and .3, driven through the admin API
//! as the seed's procedures drive the web pages: found a cluster, add peers, remove a live and
//! a dead peer, standalone mode, re-join; refusals shown with their reason; a partition (a
//! cutting proxy between peers) and a SIGKILL during writes, then convergence.

use baton_tests::{Batond, Proxy, TEST_PASSWORD, free_port};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a cluster gets to reach an expected state. Links retry within a few seconds.
pub(crate) const SETTLE_TIMEOUT_MS: u64 = 30_000;
pub(crate) const KEY: &str = "a long pre-shared key for the test cluster";

/// What a peer list holds: a running peer, or just an address.
pub(crate) trait Address {
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

pub(crate) struct Peer {
    pub(crate) daemon: Batond,
    pub(crate) ip: String,
    args: Vec<String>,
}

impl Peer {
    /// Starts a new peer on `ip` and prepares it as the seed's Task 1 asks: password, address,
    /// host name and domain, DNS, NTP, release key.
    pub(crate) fn start(dir: &Path, ip: &str, port: u16, extra: &[String]) -> Peer {
        let mut args = vec![
            "--cluster-port".to_owned(),
            port.to_string(),
            "--assume-time-synchronised".to_owned(),
        ];
        args.extend_from_slice(extra);
        let daemon = Batond::start_with(dir, ip, &args).unwrap();
        let response = daemon
            .client()
            .unwrap()
            .post(format!("{}/api/v1/password", daemon.url))
            .basic_auth("admin", Some("TANDBERG"))
            .json(&json!({"current_password": "TANDBERG", "new_password": TEST_PASSWORD}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let peer = Peer { daemon, ip: ip.to_owned(), args };
        let host = format!("peer-{}", ip.rsplit('.').next().unwrap());
        peer.put(
            "/api/v1/ipv4",
            json!({"address": ip, "prefix_length": 8, "gateway": "127.0.0.254"}),
        );
        peer.put("/api/v1/system-name", json!({"host_name": host, "domain": "example.test"}));
        peer.put("/api/v1/dns", json!({"servers": ["127.0.0.53"]}));
        peer.put("/api/v1/ntp", json!({"servers": ["127.0.0.123"]}));
        peer.put("/api/v1/licence", json!({"release_key": "ABCD-1234-EFGH", "edition": "full"}));
        peer
    }

    pub(crate) fn restart(self) -> Peer {
        let Peer { daemon, ip, args } = self;
        let dir = daemon.data_dir.clone();
        daemon.kill().unwrap();
        let daemon = Batond::start_with(&dir, &ip, &args).unwrap();
        Peer { daemon, ip, args }
    }

    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = self.daemon.client().unwrap();
        let mut request = client
            .request(method, format!("{}{path}", self.daemon.url))
            .basic_auth("admin", Some(TEST_PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        // A peer that has just joined has no administrator until the cluster's arrives.
        let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
        loop {
            let (status, body) = self.call(reqwest::Method::GET, path, None);
            if status == 200 {
                return body;
            }
            assert!(status == 401 && Instant::now() < deadline, "GET {path}: {status} {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn put(&self, path: &str, body: Value) {
        let (status, answer) = self.call(reqwest::Method::PUT, path, Some(body));
        assert!(status == 200 || status == 201, "PUT {path} on {}: {status} {answer}", self.ip);
    }

    pub(crate) fn create_bridge(&self, name: &str) {
        let bridge = json!({"name": name, "bridge_type": "mcu", "address": "127.0.0.9",
                            "username": "api", "password": "secret", "capacity_ports": 10});
        let (status, answer) = self.call(reqwest::Method::POST, "/api/v1/bridges", Some(bridge));
        assert_eq!(status, 201, "creating bridge {name} on {}: {answer}", self.ip);
    }

    pub(crate) fn cluster(&self, key: &str, peers: &[&dyn Address]) {
        let peers: Vec<&str> = peers.iter().map(|peer| peer.address()).collect();
        self.put("/api/v1/cluster", json!({"pre_shared_key": key, "peers": peers}));
    }

    pub(crate) fn standalone(&self) {
        self.put("/api/v1/cluster", json!({"pre_shared_key": "", "peers": []}));
    }

    pub(crate) fn status(&self) -> Value {
        self.get("/api/v1/cluster/status")
    }

    /// The status line this peer shows for `other`.
    pub(crate) fn line(&self, ip: &str) -> String {
        let status = self.status();
        status["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|line| line["address"] == ip))
            .map(|line| line["text"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| format!("(not listed: {status})"))
    }

    pub(crate) fn bridges(&self) -> Vec<String> {
        let listed = self.get("/api/v1/bridges");
        let mut names: Vec<String> = listed
            .as_array()
            .unwrap_or_else(|| panic!("bridges: {listed}"))
            .iter()
            .map(|bridge| bridge["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The whole shared configuration, as the API shows it (records of shared kinds).
    pub(crate) fn shared_config(&self) -> Vec<Value> {
        const LOCAL_KINDS: &[&str] = &[
            "ethernet",
            "ipv4",
            "system_name",
            "dns",
            "ntp",
            "time_zone",
            "snmp",
            "syslog",
            "certificates",
            "administration_access",
            "root_password",
            "location_addresses",
            "cluster",
        ];
        let config = self.get("/api/v1/config");
        let records = config["records"].as_array().unwrap_or_else(|| panic!("config: {config}"));
        records
            .iter()
            .filter(|record| !LOCAL_KINDS.contains(&record["kind"].as_str().unwrap_or_default()))
            .cloned()
            .collect()
    }
}

pub(crate) fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: still {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub(crate) fn expect_line(peer: &Peer, other: &str, starts: &str) {
    wait_until(&format!("{} shows {other} as {starts:?}", peer.ip), || {
        let line = peer.line(other);
        if line.starts_with(starts) { Ok(()) } else { Err(line) }
    });
}

pub(crate) fn expect_bridges(peer: &Peer, expected: &[&str]) {
    wait_until(&format!("{} holds bridges {expected:?}", peer.ip), || {
        let bridges = peer.bridges();
        if bridges == expected { Ok(()) } else { Err(format!("{bridges:?}")) }
    });
}

#[test]
fn the_seed_procedure_step_by_step() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]);
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]);
    let c = Peer::start(dirs[2].path(), "127.0.0.3", port, &[]);
    a.create_bridge("initial-config");
    b.create_bridge("b-before-joining");

    // Creating the initial peer: only its own address.
    a.cluster(KEY, &[&a]);
    expect_line(&a, &a.ip, "This system");
    let founded = a.status();
    assert_eq!(founded["mode"], "clustered");
    assert!(founded["cluster_id"].is_string(), "{founded}");

    // Adding a peer: the cluster first, then the new peer. The cluster's configuration wins;
    // the joining peer's own settings stay its own.
    a.cluster(KEY, &[&a, &b]);
    b.cluster(KEY, &[&a, &b]);
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    expect_bridges(&b, &["initial-config"]);
    assert_eq!(b.get("/api/v1/system-name")["host_name"], "peer-2");
    assert_eq!(b.status()["cluster_id"], founded["cluster_id"]);

    // Multi-master: a change on either side shows on the other.
    b.create_bridge("made-on-b");
    expect_bridges(&a, &["initial-config", "made-on-b"]);

    // Adding the third peer.
    a.cluster(KEY, &[&a, &b, &c]);
    b.cluster(KEY, &[&a, &b, &c]);
    c.cluster(KEY, &[&a, &b, &c]);
    for (x, y) in [(&a, &c), (&b, &c), (&c, &a), (&c, &b)] {
        expect_line(x, &y.ip, "Active as");
    }
    expect_bridges(&c, &["initial-config", "made-on-b"]);
    c.create_bridge("made-on-c");
    expect_bridges(&a, &["initial-config", "made-on-b", "made-on-c"]);
    expect_bridges(&b, &["initial-config", "made-on-b", "made-on-c"]);

    // Removing a live peer: standalone first (it keeps its data), then the others' lists.
    c.standalone();
    assert_eq!(c.status()["mode"], "standalone");
    a.cluster(KEY, &[&a, &b]);
    b.cluster(KEY, &[&a, &b]);
    expect_line(&a, &b.ip, "Active as peer-2");
    c.create_bridge("c-alone");
    a.create_bridge("after-c-left");
    expect_bridges(&b, &["after-c-left", "initial-config", "made-on-b", "made-on-c"]);
    expect_bridges(&c, &["c-alone", "initial-config", "made-on-b", "made-on-c"]);

    // Removing a dead peer: it need not be reachable. The survivor keeps accepting changes.
    let b_dir = b.daemon.data_dir.clone();
    let b_args = b.args.clone();
    b.daemon.kill().unwrap();
    expect_line(&a, "127.0.0.2", "Failed: ");
    a.cluster(KEY, &[&a]);
    a.create_bridge("while-b-dead");

    // The dead peer comes back with its old list: shown as a mismatch, nothing exchanged.
    let daemon = Batond::start_with(&b_dir, "127.0.0.2", &b_args).unwrap();
    let b = Peer { daemon, ip: "127.0.0.2".to_owned(), args: b_args };
    expect_line(&b, &a.ip, "Failed: peer list mismatch");
    // Re-joining it: it catches up on what it missed.
    a.cluster(KEY, &[&a, &b]);
    expect_line(&b, &a.ip, "Active as peer-1");
    expect_bridges(
        &b,
        &["after-c-left", "initial-config", "made-on-b", "made-on-c", "while-b-dead"],
    );

    // Re-joining the standalone peer: its own changes are replaced by the cluster's.
    a.cluster(KEY, &[&a, &b, &c]);
    b.cluster(KEY, &[&a, &b, &c]);
    c.cluster(KEY, &[&a, &b, &c]);
    expect_bridges(
        &c,
        &["after-c-left", "initial-config", "made-on-b", "made-on-c", "while-b-dead"],
    );
    assert_eq!(a.shared_config(), c.shared_config());
    assert_eq!(c.get("/api/v1/system-name")["host_name"], "peer-3");
    let c = c.restart();
    expect_line(&c, &a.ip, "Active as peer-1");
    expect_bridges(
        &c,
        &["after-c-left", "initial-config", "made-on-b", "made-on-c", "while-b-dead"],
    );
}

/// Starts two prepared peers on .1 and .2 with `b_extra` flags for the second; the first
/// founds a cluster with both addresses listed.
fn founded_pair(dirs: &[tempfile::TempDir], b_extra: &[String]) -> (Peer, Peer) {
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]);
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, b_extra);
    a.create_bridge("cluster-config");
    b.create_bridge("b-own-config");
    a.cluster(KEY, &[&a]);
    a.cluster(KEY, &[&a, &b]);
    (a, b)
}

#[test]
fn incompatible_peers_are_refused_with_their_reason_and_exchange_nothing() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();

    // Wrong key: both sides see it; nothing crosses.
    let (a, b) = founded_pair(&dirs, &[]);
    b.cluster("a different key", &[&a, &b]);
    expect_line(&a, &b.ip, "Failed: authentication failed");
    expect_line(&b, &a.ip, "Failed: authentication failed");
    // Peer lists differ (the third address is never reachable here; the lists must match).
    b.cluster(KEY, &[&a, &b, &"127.0.0.3"]);
    expect_line(&a, &b.ip, "Failed: peer list mismatch");
    expect_line(&b, &a.ip, "Failed: peer list mismatch");
    // A peer that founded a cluster of its own: different history, must not merge.
    b.standalone();
    b.cluster(KEY, &[&b]);
    b.cluster(KEY, &[&a, &b]);
    expect_line(&a, &b.ip, "Failed: different cluster");
    expect_line(&b, &a.ip, "Failed: different cluster");
    assert_eq!(b.bridges(), ["b-own-config"]);
    assert_eq!(a.bridges(), ["cluster-config"]);
    // The fix the message names: standalone, then join.
    b.standalone();
    b.cluster(KEY, &[&a, &b]);
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_bridges(&b, &["cluster-config"]);
    drop((a, b));

    // Another software version: shown, not synced.
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let newer = ["--announce-version".to_owned(), "99.0.0".to_owned()];
    let (a, b) = founded_pair(&dirs, &newer);
    b.cluster(KEY, &[&a, &b]);
    expect_line(&a, &b.ip, "Failed: version mismatch: it runs Baton 99.0.0");
    expect_line(&b, &a.ip, "Failed: version mismatch");
    assert_eq!(b.bridges(), ["b-own-config"]);
}

/// Three peers whose every link runs through a proxy, so the test can cut any of them.
pub(crate) struct Meshed {
    pub(crate) peers: Vec<Peer>,
    /// `proxies[i][j]`: what peer `i` dials to reach peer `j`.
    pub(crate) proxies: Vec<Vec<Option<Proxy>>>,
}

pub(crate) fn meshed_trio(dirs: &[tempfile::TempDir]) -> Meshed {
    meshed_trio_with(dirs, &[])
}

/// As [`meshed_trio`], with extra `batond` flags for every peer.
pub(crate) fn meshed_trio_with(dirs: &[tempfile::TempDir], extra: &[String]) -> Meshed {
    let port = free_port().unwrap();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let proxies: Vec<Vec<Option<Proxy>>> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| {
                    (i != j).then(|| {
                        Proxy::start(format!("{}:{port}", ips[j]).parse().unwrap()).unwrap()
                    })
                })
                .collect()
        })
        .collect();
    let peers: Vec<Peer> = (0..3)
        .map(|i| {
            let via: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .flat_map(|j| {
                    let proxy = proxies[i][j].as_ref().unwrap();
                    ["--cluster-connect-via".to_owned(), format!("{}={}", ips[j], proxy.address)]
                })
                .chain(extra.iter().cloned())
                .collect();
            Peer::start(dirs[i].path(), ips[i], port, &via)
        })
        .collect();
    let [a, b, c] = [&peers[0], &peers[1], &peers[2]];
    a.cluster(KEY, &[a]);
    for peer in [a, b, c] {
        peer.cluster(KEY, &[a, b, c]);
    }
    for x in [a, b, c] {
        for y in [a, b, c] {
            if x.ip != y.ip {
                expect_line(x, &y.ip, "Active as");
            }
        }
    }
    Meshed { peers, proxies }
}

impl Meshed {
    /// Cuts (or heals) every link between peer `lone` and the others, both ways.
    pub(crate) fn isolate(&self, lone: usize, cut: bool) {
        for other in (0..3).filter(|other| *other != lone) {
            for proxy in [&self.proxies[lone][other], &self.proxies[other][lone]] {
                let proxy = proxy.as_ref().unwrap();
                if cut { proxy.cut() } else { proxy.heal() }
            }
        }
    }
}

pub(crate) fn converged(peers: &[Peer]) {
    wait_until("all peers hold the same shared configuration", || {
        let first = peers[0].shared_config();
        match peers[1..].iter().find(|peer| peer.shared_config() != first) {
            None => Ok(()),
            Some(peer) => Err(format!("{} differs", peer.ip)),
        }
    });
}

#[test]
fn a_partition_with_writes_on_both_sides_heals_and_converges_and_the_wire_is_encrypted() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mesh = meshed_trio(&dirs);
    let [a, b, c] = [&mesh.peers[0], &mesh.peers[1], &mesh.peers[2]];

    a.create_bridge("edited-on-both-sides");
    expect_bridges(c, &["edited-on-both-sides"]);
    mesh.isolate(0, true);
    expect_line(b, &a.ip, "Failed: ");
    // Both sides keep accepting changes, including to the same record.
    a.create_bridge("minority-side");
    b.create_bridge("majority-side");
    c.create_bridge("majority-again");
    let edit = |capacity_ports: u64| {
        json!({"name": "edited-on-both-sides", "bridge_type": "mcu", "address": "127.0.0.9",
               "username": "api", "password": "x", "capacity_ports": capacity_ports})
    };
    a.put("/api/v1/bridges/edited-on-both-sides", edit(1));
    c.put("/api/v1/bridges/edited-on-both-sides", edit(2));
    mesh.isolate(0, false);
    converged(&mesh.peers);
    let expected = ["edited-on-both-sides", "majority-again", "majority-side", "minority-side"];
    expect_bridges(a, &expected);
    // Last writer wins, the same everywhere: c wrote after a.
    for peer in [a, b, c] {
        assert_eq!(peer.get("/api/v1/bridges/edited-on-both-sides")["capacity_ports"], 2);
        // Peer-local settings stayed with their peer.
        let host = format!("peer-{}", peer.ip.rsplit('.').next().unwrap());
        assert_eq!(peer.get("/api/v1/system-name")["host_name"], host);
    }

    // Nothing readable crossed the wire: the bridge names above replicated through the
    // proxies, encrypted.
    for proxy in mesh.proxies.iter().flatten().flatten() {
        let carried = proxy.carried.lock().unwrap();
        assert!(!carried.is_empty());
        for needle in [&b"majority-side"[..], b"peer-1", b"example.test", KEY.as_bytes()] {
            assert!(!carried.windows(needle.len()).any(|window| window == needle));
        }
    }
}

#[test]
fn a_peer_killed_during_a_write_storm_catches_up_after_restart() {
    const STORM_CHANGES: usize = 80;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let Meshed { mut peers, proxies: _proxies } = meshed_trio(&dirs);
    let victim = peers.pop().unwrap();
    let victim = std::thread::scope(|scope| {
        let writer = &peers[0];
        let storm = scope.spawn(move || {
            for index in 0..STORM_CHANGES {
                writer.create_bridge(&format!("storm-{index}"));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let victim = victim.restart();
        storm.join().unwrap();
        victim
    });
    peers.push(victim);
    expect_line(&peers[2], &peers[0].ip, "Active as");
    peers[2].create_bridge("after-restart");
    converged(&peers);
    assert_eq!(peers[1].bridges().len(), STORM_CHANGES + 1);
}

/// `batonctl cluster join` does the seed's Tasks 3–5 on both peers in one step and waits for
/// the links; `cluster status` shows the result as the web page would.
#[test]
fn batonctl_joins_a_peer_in_one_step() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]);
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]);
    a.create_bridge("cluster-config");
    a.cluster(KEY, &[&a]);
    // One CA file trusted for both peers.
    let bundle = dirs[0].path().join("both-cas.pem");
    let mut cas = std::fs::read(a.daemon.data_dir.join("tls/ca.pem")).unwrap();
    cas.extend(std::fs::read(b.daemon.data_dir.join("tls/ca.pem")).unwrap());
    std::fs::write(&bundle, cas).unwrap();
    let batonctl = |args: &[&str], key: &str| {
        std::process::Command::new(baton_tests::binary("batonctl").unwrap())
            .args(["--url", &b.daemon.url, "--ca"])
            .arg(&bundle)
            .args(args)
            .env("BATON_PASSWORD", TEST_PASSWORD)
            .env("BATON_CLUSTER_KEY", key)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };

    // A wrong key cannot break the members: they keep theirs, and the join reports why.
    let refused = batonctl(&["cluster", "join", "--member", &a.daemon.url], "not the key");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Failed: authentication failed"), "{stderr}");
    assert_eq!(b.bridges(), Vec::<String>::new());

    let joined = batonctl(&["cluster", "join", "--member", &a.daemon.url], KEY);
    let stdout = String::from_utf8_lossy(&joined.stdout);
    assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    assert!(stdout.contains("This system") && stdout.contains("Active as peer-1"), "{stdout}");
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_bridges(&b, &["cluster-config"]);
    let status = batonctl(&["cluster", "status"], "");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("127.0.0.2  This system"), "{stdout}");
}

/// The join the web page and `batonctl cluster join` share (`POST /api/v1/cluster/join`):
/// the member's certificate is what the operator confirmed or nothing happens; a wrong
/// password, a wrong-looking URL or an unconfirmed certificate change nothing on either peer;
/// a standalone member founds the cluster first; a member of a cluster cannot join another.
#[test]
fn the_join_endpoint_pins_the_members_certificate_and_refusals_change_nothing() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]);
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]);
    let pem = std::fs::read(a.daemon.data_dir.join("tls/server.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let fingerprint = baton_tests::sha256_fingerprint(&der);

    let (status, answer) = b.call(
        reqwest::Method::GET,
        &format!("/api/v1/cluster/member-certificate?url={}", a.daemon.url),
        None,
    );
    assert_eq!((status, answer["sha256"].as_str()), (200, Some(fingerprint.as_str())), "{answer}");

    let join = |password: &str, url: &str, sha256: &str| {
        let body = json!({
            "member_url": url, "password": password, "pre_shared_key": KEY,
            "member_certificate_sha256": sha256,
        });
        b.call(reqwest::Method::POST, "/api/v1/cluster/join", Some(body))
    };
    // Another certificate than the one presented (an impostor, as far as b can tell).
    let other =
        fingerprint.replace(&fingerprint[..2], if &fingerprint[..2] == "00" { "01" } else { "00" });
    let refusals = [
        (TEST_PASSWORD, a.daemon.url.as_str(), other.as_str(), 409, "member_certificate_changed"),
        ("not the password", &a.daemon.url, &fingerprint, 422, "member_wrong_password"),
        (TEST_PASSWORD, "http://127.0.0.1", &fingerprint, 400, "invalid_member_url"),
    ];
    for (password, url, sha256, status, code) in refusals {
        let (got, answer) = join(password, url, sha256);
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
        for peer in [&a, &b] {
            let (status, _) = peer.call(reqwest::Method::GET, "/api/v1/cluster", None);
            assert_eq!(status, 404, "{code} changed the cluster settings of {}", peer.ip);
        }
    }

    // This peer without a DNS server (the seed's checklist): refused before the member is
    // touched, so the standalone member is not even founded.
    let (status, _) = b.call(reqwest::Method::DELETE, "/api/v1/dns", None);
    assert_eq!(status, 204);
    let (status, answer) = join(TEST_PASSWORD, &a.daemon.url, &fingerprint);
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("join_settings_refused")));
    assert!(answer["error"]["message"].as_str().unwrap().contains("DNS"), "{answer}");
    for peer in [&a, &b] {
        let (status, _) = peer.call(reqwest::Method::GET, "/api/v1/cluster", None);
        assert_eq!(status, 404, "the refused join changed {}", peer.ip);
    }
    b.put("/api/v1/dns", json!({"servers": ["127.0.0.53"]}));

    // Lower-case hex without colons is the same fingerprint.
    let plain = fingerprint.replace(':', "").to_lowercase();
    let (status, joined) = join(TEST_PASSWORD, &a.daemon.url, &plain);
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["founded"], true);
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    let (status, answer) = join(TEST_PASSWORD, &a.daemon.url, &fingerprint);
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("already_clustered")));
}
