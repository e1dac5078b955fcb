//! Clusters of real `batond` processes on 127.0.0.1, .2 and .3, driven through the admin API
//! as the seed's procedures drive the web pages: found a cluster, add peers, remove a live and
//! a dead peer, standalone mode, re-join; refusals shown with their reason; a partition (a
//! cutting proxy between peers) and a SIGKILL during writes, then convergence.

pub(crate) use baton_tests::Peer;
use baton_tests::{Batond, Proxy, TEST_PASSWORD, free_port};
use serde_json::json;
use std::time::{Duration, Instant};

pub(crate) use baton_tests::SETTLE_TIMEOUT_MS;
pub(crate) const KEY: &str = "a long pre-shared key for the test cluster";

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
        // An error (e.g. 429 while a password being changed is retried) is waited out too.
        let line = peer.status_line(other).map_err(|error| format!("{error:#}"))?;
        if line.starts_with(starts) { Ok(()) } else { Err(line) }
    });
}

pub(crate) fn expect_bridges(peer: &Peer, expected: &[&str]) {
    wait_until(&format!("{} holds bridges {expected:?}", peer.ip), || {
        let bridges = peer.bridges().map_err(|error| format!("{error:#}"))?;
        if bridges == expected { Ok(()) } else { Err(format!("{bridges:?}")) }
    });
}

#[test]
fn the_seed_procedure_step_by_step() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]).unwrap();
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]).unwrap();
    let c = Peer::start(dirs[2].path(), "127.0.0.3", port, &[]).unwrap();
    a.create_bridge("initial-config").unwrap();
    b.create_bridge("b-before-joining").unwrap();

    // Creating the initial peer: only its own address.
    a.save_cluster(KEY, &[&a]).unwrap();
    expect_line(&a, &a.ip, "This system");
    let founded = a.cluster_status().unwrap();
    assert_eq!(founded.mode, api::ClusterMode::Clustered);
    assert!(founded.cluster_id.is_some(), "{founded:?}");

    // Adding a peer: the cluster first, then the new peer. The cluster's configuration wins;
    // the joining peer's own settings stay its own.
    a.save_cluster(KEY, &[&a, &b]).unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    expect_bridges(&b, &["initial-config"]);
    assert_eq!(b.get("/api/v1/system-name").unwrap()["host_name"], "peer-2");
    assert_eq!(b.cluster_status().unwrap().cluster_id, founded.cluster_id);

    // Multi-master: a change on either side shows on the other.
    b.create_bridge("made-on-b").unwrap();
    expect_bridges(&a, &["initial-config", "made-on-b"]);

    // Adding the third peer.
    a.save_cluster(KEY, &[&a, &b, &c]).unwrap();
    b.save_cluster(KEY, &[&a, &b, &c]).unwrap();
    c.save_cluster(KEY, &[&a, &b, &c]).unwrap();
    for (x, y) in [(&a, &c), (&b, &c), (&c, &a), (&c, &b)] {
        expect_line(x, &y.ip, "Active as");
    }
    expect_bridges(&c, &["initial-config", "made-on-b"]);
    c.create_bridge("made-on-c").unwrap();
    expect_bridges(&a, &["initial-config", "made-on-b", "made-on-c"]);
    expect_bridges(&b, &["initial-config", "made-on-b", "made-on-c"]);

    // The seed: "The only IP settings that can be changed when the system is part of a
    // cluster are the additional IPv4 addresses."
    let ipv4_now = || {
        let mut ipv4 = c.get("/api/v1/ipv4").unwrap();
        ipv4.as_object_mut().unwrap().remove("kind");
        ipv4
    };
    for (field, change) in [("prefix_length", json!(16)), ("gateway", json!("127.0.0.253"))] {
        let mut ipv4 = ipv4_now();
        ipv4[field] = change;
        let (status, answer) = c.call(reqwest::Method::PUT, "/api/v1/ipv4", Some(ipv4)).unwrap();
        assert_eq!((status, answer["error"]["fields"][0]["field"].as_str()), (422, Some(field)));
    }
    let mut ipv4 = ipv4_now();
    ipv4["additional_addresses"] = json!([{"address": "127.0.0.50", "prefix_length": 8}]);
    c.save("/api/v1/ipv4", ipv4).unwrap();

    // Removing a live peer, the seed's way: standalone first (it keeps its data) by blanking
    // its peer addresses (standalone at once), then deleting its key; then the others' lists.
    c.save("/api/v1/cluster", json!({"pre_shared_key": KEY, "peers": []})).unwrap();
    assert_eq!(c.cluster_status().unwrap().mode, api::ClusterMode::Standalone);
    c.standalone().unwrap();
    assert_eq!(c.cluster_status().unwrap().mode, api::ClusterMode::Standalone);
    a.save_cluster(KEY, &[&a, &b]).unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    c.create_bridge("c-alone").unwrap();
    a.create_bridge("after-c-left").unwrap();
    expect_bridges(&b, &["after-c-left", "initial-config", "made-on-b", "made-on-c"]);
    expect_bridges(&c, &["c-alone", "initial-config", "made-on-b", "made-on-c"]);

    // Removing a dead peer: it need not be reachable. The survivor keeps accepting changes.
    let b_dir = b.daemon.data_dir.clone();
    let b_args = b.args.clone();
    b.daemon.kill().unwrap();
    expect_line(&a, "127.0.0.2", "Failed: ");
    a.save_cluster(KEY, &[&a]).unwrap();
    a.create_bridge("while-b-dead").unwrap();

    // The dead peer comes back with its old list: shown as a mismatch, nothing exchanged.
    let daemon = Batond::start_with(&b_dir, "127.0.0.2", &b_args).unwrap();
    let listen = "127.0.0.2:0".to_owned();
    let b = Peer { daemon, ip: "127.0.0.2".to_owned(), args: b_args, listen };
    expect_line(&b, &a.ip, "Failed: peer list mismatch");
    // Re-joining it: it catches up on what it missed.
    a.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&b, &a.ip, "Active as peer-1");
    expect_bridges(
        &b,
        &["after-c-left", "initial-config", "made-on-b", "made-on-c", "while-b-dead"],
    );

    // Re-joining the standalone peer: its own changes are replaced by the cluster's.
    a.save_cluster(KEY, &[&a, &b, &c]).unwrap();
    b.save_cluster(KEY, &[&a, &b, &c]).unwrap();
    c.save_cluster(KEY, &[&a, &b, &c]).unwrap();
    expect_bridges(
        &c,
        &["after-c-left", "initial-config", "made-on-b", "made-on-c", "while-b-dead"],
    );
    assert_eq!(a.shared_config().unwrap(), c.shared_config().unwrap());
    assert_eq!(c.get("/api/v1/system-name").unwrap()["host_name"], "peer-3");
    let c = c.restart().unwrap();
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
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]).unwrap();
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, b_extra).unwrap();
    a.create_bridge("cluster-config").unwrap();
    b.create_bridge("b-own-config").unwrap();
    a.save_cluster(KEY, &[&a]).unwrap();
    a.save_cluster(KEY, &[&a, &b]).unwrap();
    (a, b)
}

#[test]
fn incompatible_peers_are_refused_with_their_reason_and_exchange_nothing() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();

    // Wrong key: both sides see it; nothing crosses.
    let (a, b) = founded_pair(&dirs, &[]);
    b.save_cluster("a different key", &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Failed: authentication failed");
    expect_line(&b, &a.ip, "Failed: authentication failed");
    // Peer lists differ (the third address is never reachable here; the lists must match).
    b.save_cluster(KEY, &[&a, &b, &"127.0.0.3"]).unwrap();
    expect_line(&a, &b.ip, "Failed: peer list mismatch");
    expect_line(&b, &a.ip, "Failed: peer list mismatch");
    // A peer that founded a cluster of its own: different history, must not merge.
    b.standalone().unwrap();
    b.save_cluster(KEY, &[&b]).unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Failed: different cluster");
    expect_line(&b, &a.ip, "Failed: different cluster");
    assert_eq!(b.bridges().unwrap(), ["b-own-config"]);
    assert_eq!(a.bridges().unwrap(), ["cluster-config"]);
    // The fix the message names: standalone, then join.
    b.standalone().unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_bridges(&b, &["cluster-config"]);
    drop((a, b));

    // Another software version: shown, not synced.
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let newer = ["--announce-version".to_owned(), "99.0.0".to_owned()];
    let (a, b) = founded_pair(&dirs, &newer);
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Failed: version mismatch: it runs Baton 99.0.0");
    expect_line(&b, &a.ip, "Failed: version mismatch");
    assert_eq!(b.bridges().unwrap(), ["b-own-config"]);
}

/// Each appliance has its own licence, and the peers of a cluster run one edition: a select
/// peer and a full one refuse each other on both sides ("edition mismatch", typed), the select
/// peer takes nothing; once its licence is full too it joins. Licences never replicate.
#[test]
fn peers_of_two_editions_refuse_each_other_until_one_changes() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = founded_pair(&dirs, &[]);
    let select = json!({"release_key": "SELECT-KEY-2", "edition": "select"});
    b.save("/api/v1/licence", select).unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Failed: edition mismatch: it runs the select edition");
    expect_line(&b, &a.ip, "Failed: edition mismatch: it runs the full edition");
    for (peer, other) in [(&a, &b.ip), (&b, &a.ip)] {
        let status = peer.cluster_status().unwrap();
        let line = status.peers.iter().find(|line| line.address.to_string() == *other).unwrap();
        assert_eq!(line.code, Some(api::PeerFailure::Refused));
        assert_eq!(line.refusal, Some(api::PeerRefusal::EditionMismatch));
    }
    assert_eq!(b.bridges().unwrap(), ["b-own-config"], "nothing crossed");

    let full = json!({"release_key": "FULL-KEY-2", "edition": "full"});
    b.save("/api/v1/licence", full).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    expect_bridges(&b, &["cluster-config"]);
    // Each keeps its own release key, also after a change on one of them.
    let renewed = json!({"release_key": "FULL-KEY-1-RENEWED", "edition": "full"});
    a.save("/api/v1/licence", renewed).unwrap();
    a.create_bridge("after-the-renewal").unwrap();
    expect_bridges(&b, &["after-the-renewal", "cluster-config"]);
    assert_eq!(b.get("/api/v1/licence").unwrap()["release_key"], "FULL-KEY-2");
    assert_eq!(a.get("/api/v1/licence").unwrap()["release_key"], "FULL-KEY-1-RENEWED");
}

/// The seed's Configuration Log reports this peer's activity only: by default the API and
/// `batonctl log config` show the changes made here; asked for every peer's, they add those
/// that arrived from the other peer, each row naming the peer it was made on.
#[test]
fn the_configuration_log_shows_this_peers_changes_and_on_request_the_others() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = founded_pair(&dirs, &[]);
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    b.create_bridge("made-on-b").unwrap();
    expect_bridges(&a, &["cluster-config", "made-on-b"]);
    let a_id = a.cluster_status().unwrap().peer_id;
    let b_id = b.cluster_status().unwrap().peer_id;

    let bridges_logged = |path: &str| {
        let page: api::Page<api::ConfigLogEntry> = a.get_as(path).unwrap();
        page.entries
            .into_iter()
            .filter(|entry| entry.kind == "bridge")
            .map(|entry| (entry.name, entry.origin, entry.origin_name))
            .collect::<Vec<_>>()
    };
    let own = bridges_logged("/api/v1/logs/configuration");
    let this_peer = Some("this peer".to_owned());
    assert_eq!(own, [("cluster-config".to_owned(), a_id.clone(), this_peer.clone())]);
    let all = bridges_logged("/api/v1/logs/configuration?origin=all_peers");
    assert_eq!(
        all,
        [
            ("made-on-b".to_owned(), b_id, Some("peer-2".to_owned())),
            ("cluster-config".to_owned(), a_id, this_peer)
        ]
    );
    let refused =
        a.call(reqwest::Method::GET, "/api/v1/logs/configuration?origin=elsewhere", None).unwrap();
    assert_eq!(refused.0, 400, "{refused:?}");

    let batonctl = |extra: &[&str]| {
        let output = std::process::Command::new(baton_tests::binary("batonctl").unwrap())
            .args(["--url", &a.daemon.url, "--ca"])
            .arg(a.daemon.data_dir.join("tls/ca.pem"))
            .args(["log", "config", "--kind", "bridges"])
            .args(extra)
            .env("BATON_PASSWORD", TEST_PASSWORD)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let own = batonctl(&[]);
    assert!(own.contains("cluster-config") && own.contains("this peer"), "{own}");
    assert!(!own.contains("made-on-b"), "{own}");
    let all = batonctl(&["--all-peers"]);
    let line = all.lines().find(|line| line.contains("made-on-b")).unwrap_or_default();
    assert!(line.contains("peer-2"), "{all}");
}

/// The seed's rule for an upgraded peer: it runs a different version, so until every peer
/// matches it is shown as failed with "version mismatch" on both sides and nothing is
/// replicated either way; once the versions match it is Active and catches up.
#[test]
fn a_peer_running_another_version_replicates_nothing_until_the_versions_match() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = founded_pair(&dirs, &[]);
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_bridges(&b, &["cluster-config"]);

    // b is upgraded (played by announcing a newer version after a restart).
    let newer = |peer: &Peer| {
        let mut args = peer.args.clone();
        args.extend(["--announce-version".to_owned(), "99.0.0".to_owned()]);
        args
    };
    let args = newer(&b);
    let b = b.restart_as(args).unwrap();
    assert_eq!(b.get("/api/v1/status").unwrap()["version"], "99.0.0");
    expect_line(&a, &b.ip, "Failed: version mismatch: it runs Baton 99.0.0");
    expect_line(&b, &a.ip, "Failed: version mismatch");
    a.create_bridge("made-on-the-old-version").unwrap();
    b.create_bridge("made-on-the-new-version").unwrap();
    // Several replication rounds pass: neither change crosses.
    std::thread::sleep(Duration::from_millis(3_000));
    assert_eq!(a.bridges().unwrap(), ["cluster-config", "made-on-the-old-version"]);
    assert_eq!(b.bridges().unwrap(), ["cluster-config", "made-on-the-new-version"]);
    expect_line(&a, &b.ip, "Failed: version mismatch");

    // a is upgraded too: the versions match, both are Active and both changes are everywhere.
    let args = newer(&a);
    let a = a.restart_as(args).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    let all = ["cluster-config", "made-on-the-new-version", "made-on-the-old-version"];
    expect_bridges(&a, &all);
    expect_bridges(&b, &all);
    assert_eq!(a.shared_config().unwrap(), b.shared_config().unwrap());
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
            Peer::start(dirs[i].path(), ips[i], port, &via).unwrap()
        })
        .collect();
    let [a, b, c] = [&peers[0], &peers[1], &peers[2]];
    a.save_cluster(KEY, &[a]).unwrap();
    for peer in [a, b, c] {
        peer.save_cluster(KEY, &[a, b, c]).unwrap();
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

pub(crate) fn converged<P: std::borrow::Borrow<Peer>>(peers: &[P]) {
    wait_until("all peers hold the same shared configuration", || {
        let first = peers[0].borrow().shared_config().unwrap();
        match peers[1..].iter().find(|peer| peer.borrow().shared_config().unwrap() != first) {
            None => Ok(()),
            Some(peer) => Err(format!("{} differs", peer.borrow().ip)),
        }
    });
}

#[test]
fn a_partition_with_writes_on_both_sides_heals_and_converges_and_the_wire_is_encrypted() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mesh = meshed_trio(&dirs);
    let [a, b, c] = [&mesh.peers[0], &mesh.peers[1], &mesh.peers[2]];

    a.create_bridge("edited-on-both-sides").unwrap();
    expect_bridges(c, &["edited-on-both-sides"]);
    mesh.isolate(0, true);
    expect_line(b, &a.ip, "Failed: ");
    // Both sides keep accepting changes, including to the same record.
    a.create_bridge("minority-side").unwrap();
    b.create_bridge("majority-side").unwrap();
    c.create_bridge("majority-again").unwrap();
    let edit = |capacity_ports: u64| {
        json!({"name": "edited-on-both-sides", "bridge_type": "mcu", "address": "127.0.0.9",
               "username": "api", "password": "x", "capacity_ports": capacity_ports})
    };
    a.save("/api/v1/bridges/edited-on-both-sides", edit(1)).unwrap();
    c.save("/api/v1/bridges/edited-on-both-sides", edit(2)).unwrap();
    mesh.isolate(0, false);
    converged(&mesh.peers);
    let expected = ["edited-on-both-sides", "majority-again", "majority-side", "minority-side"];
    expect_bridges(a, &expected);
    // Last writer wins, the same everywhere: c wrote after a.
    for peer in [a, b, c] {
        assert_eq!(peer.get("/api/v1/bridges/edited-on-both-sides").unwrap()["capacity_ports"], 2);
        // Peer-local settings stayed with their peer.
        let host = format!("peer-{}", peer.ip.rsplit('.').next().unwrap());
        assert_eq!(peer.get("/api/v1/system-name").unwrap()["host_name"], host);
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
                writer.create_bridge(&format!("storm-{index}")).unwrap();
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let victim = victim.restart().unwrap();
        storm.join().unwrap();
        victim
    });
    peers.push(victim);
    expect_line(&peers[2], &peers[0].ip, "Active as");
    peers[2].create_bridge("after-restart").unwrap();
    converged(&peers);
    assert_eq!(peers[1].bridges().unwrap().len(), STORM_CHANGES + 1);
}

/// `batonctl cluster join` does the seed's Tasks 3–5 on both peers in one step and waits for
/// the links; `cluster status` shows the result as the web page would.
#[test]
fn batonctl_joins_a_peer_in_one_step() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]).unwrap();
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]).unwrap();
    a.create_bridge("cluster-config").unwrap();
    a.save_cluster(KEY, &[&a]).unwrap();
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
    assert_eq!(b.bridges().unwrap(), Vec::<String>::new());

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
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]).unwrap();
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]).unwrap();
    let pem = std::fs::read(a.daemon.data_dir.join("tls/server.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let fingerprint = baton_tests::sha256_fingerprint(&der);

    let (status, answer) = b
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/cluster/member-certificate?url={}", a.daemon.url),
            None,
        )
        .unwrap();
    assert_eq!((status, answer["sha256"].as_str()), (200, Some(fingerprint.as_str())), "{answer}");

    let join = |password: &str, url: &str, sha256: &str| {
        let body = json!({
            "member_url": url, "password": password, "pre_shared_key": KEY,
            "member_certificate_sha256": sha256,
        });
        b.call(reqwest::Method::POST, "/api/v1/cluster/join", Some(body)).unwrap()
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
            let (status, _) = peer.call(reqwest::Method::GET, "/api/v1/cluster", None).unwrap();
            assert_eq!(status, 404, "{code} changed the cluster settings of {}", peer.ip);
        }
    }

    // This peer without a DNS server (the seed's checklist): refused before the member is
    // touched, so the standalone member is not even founded.
    let (status, _) = b.call(reqwest::Method::DELETE, "/api/v1/dns", None).unwrap();
    assert_eq!(status, 204);
    let (status, answer) = join(TEST_PASSWORD, &a.daemon.url, &fingerprint);
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("join_settings_refused")));
    assert!(answer["error"]["message"].as_str().unwrap().contains("DNS"), "{answer}");
    for peer in [&a, &b] {
        let (status, _) = peer.call(reqwest::Method::GET, "/api/v1/cluster", None).unwrap();
        assert_eq!(status, 404, "the refused join changed {}", peer.ip);
    }
    b.save("/api/v1/dns", json!({"servers": ["127.0.0.53"]})).unwrap();

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

/// The listed peers of `peer`, sorted (404: none, standalone).
fn listed(peer: &Peer) -> Vec<String> {
    let (status, cluster) = peer.call(reqwest::Method::GET, "/api/v1/cluster", None).unwrap();
    if status == 404 {
        return Vec::new();
    }
    let mut peers: Vec<String> = cluster["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    peers.sort();
    peers
}

/// Joining a cluster of two through one member lists the new peer on the other member too,
/// through the certificate the member learned over the cluster link: the operator confirms
/// one fingerprint and visits one page. A refused join (the other member down, a wrong
/// password) changes nothing on any of the three.
#[test]
fn a_join_through_one_member_lists_the_new_peer_on_every_member() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port().unwrap();
    let a = Peer::start(dirs[0].path(), "127.0.0.1", port, &[]).unwrap();
    let b = Peer::start(dirs[1].path(), "127.0.0.2", port, &[]).unwrap();
    let c = Peer::start(dirs[2].path(), "127.0.0.3", port, &[]).unwrap();
    a.create_bridge("cluster-config").unwrap();
    a.save_cluster(KEY, &[&a]).unwrap();
    a.save_cluster(KEY, &[&a, &b]).unwrap();
    b.save_cluster(KEY, &[&a, &b]).unwrap();
    expect_line(&a, &b.ip, "Active as peer-2");
    expect_line(&b, &a.ip, "Active as peer-1");
    let pem = std::fs::read(a.daemon.data_dir.join("tls/server.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let fingerprint = baton_tests::sha256_fingerprint(&der);
    let join = |password: &str| {
        let body = json!({
            "member_url": a.daemon.url, "password": password, "pre_shared_key": KEY,
            "member_certificate_sha256": fingerprint,
        });
        c.call(reqwest::Method::POST, "/api/v1/cluster/join", Some(body)).unwrap()
    };
    let pair = vec!["127.0.0.1".to_owned(), "127.0.0.2".to_owned()];

    // The other member is down: refused, named, and nothing changes on a or c.
    let Peer { daemon, ip, args: b_args, listen: b_listen } = b;
    let b_dir = daemon.data_dir.clone();
    daemon.kill().unwrap();
    expect_line(&a, &ip, "Failed: ");
    let (status, answer) = join(TEST_PASSWORD);
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("other_member_unavailable")));
    assert!(answer["error"]["message"].as_str().unwrap().contains("127.0.0.2"), "{answer}");
    assert_eq!((listed(&a), listed(&c)), (pair.clone(), Vec::new()));
    let daemon = Batond::start_listening(&b_dir, &b_listen, &b_args, &[]).unwrap();
    let b = Peer { daemon, ip, args: b_args, listen: b_listen };

    // a shows b's admin port and certificate, as b told it over the link.
    let b_pem = std::fs::read(b.daemon.data_dir.join("tls/server.pem")).unwrap();
    let b_der: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&b_pem).unwrap();
    let b_fingerprint = baton_tests::sha256_fingerprint(&b_der);
    let b_port: u16 = b.daemon.url.rsplit(':').next().unwrap().parse().unwrap();
    wait_until("a learns b's admin port and certificate", || {
        let status = a.cluster_status().unwrap();
        let line = status.peers.iter().find(|line| line.address.to_string() == b.ip);
        match line.map(|line| &line.state) {
            Some(api::PeerState::Active { admin_certificate_sha256, admin_port, .. })
                if admin_certificate_sha256.as_deref() == Some(b_fingerprint.as_str())
                    && *admin_port == Some(b_port) =>
            {
                Ok(())
            }
            _ => Err(format!("{line:?}")),
        }
    });

    let (status, answer) = join("not the password");
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("member_wrong_password")));
    assert_eq!((listed(&a), listed(&b), listed(&c)), (pair.clone(), pair, Vec::new()));
    expect_line(&a, &b.ip, "Active as peer-2");

    let (status, joined) = join(TEST_PASSWORD);
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["founded"], false);
    assert_eq!(joined["other_members"], json!(["127.0.0.2"]));
    let all: Vec<String> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map(str::to_owned).to_vec();
    for peer in [&a, &b, &c] {
        assert_eq!(listed(peer), all, "{}'s list", peer.ip);
        for other in [&a, &b, &c].into_iter().filter(|other| other.ip != peer.ip) {
            expect_line(peer, &other.ip, "Active as");
        }
    }
    expect_bridges(&c, &["cluster-config"]);
}
