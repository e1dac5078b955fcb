//! `batonctl cluster upgrade` on three real peers (127.0.0.1, .2, .3) while a VCS emulator
//! places calls the whole time: every call gets a route, the run is killed in the middle and
//! the same command finishes it, and the cluster ends with every peer Active at the new
//! version with one configuration and every conference once.
//!
//! **How a reboot is played.** Each `batond` runs with file-backed boot control (under
//! `<data>/boot`) and `--reboot-command touch <data>/reboot-requested`. A harness thread sees
//! that file and does what the machine would: stops `batond` with SIGTERM (systemd's shutdown),
//! plays the firmware on the boot control (`FileBootControl::firmware_boot`: the newly
//! installed slot boots on trial and its try is counted), and starts `batond` again on the
//! same data directory and admin address, running the booted slot's version. The new release
//! is played by the same binary running as that version (`--announce-version`: the version
//! every part of the daemon reports and compares); once it answers, the harness blesses the slot as the
//! health gate would. Everything `batonctl` sees — the upload, the verification, the slot, the
//! reboot, the peer coming back with another version — is the daemon's real behaviour.

use crate::cluster::{KEY, wait_until};
use crate::policy::{VCS_PASSWORD, VCS_USER, bridge, names_on};
use baton_tests::vcs::{Answer, Vcs};
use baton_tests::{Batond, Peer, SIM_BRIDGE_PASSWORD, SimBridge, TEST_PASSWORD, free_port};
use policy::cpl::Outcome;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use upgrade::BootControl as _;

const NEW_VERSION: &str = "1.0.0";
const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// The VCS emulator polls the status path about this often, so a short drain is enough.
const DRAIN_MS: u64 = 1_500;
/// Longer than the whole test, so no conference is ended as empty during it.
const CONFERENCE_IDLE_MS: u64 = 3_600_000;
/// Capacity of the file-backed slots (only a bound for writes).
const SLOT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// The three peers, shared with the harness thread that reboots them.
struct Fleet {
    peers: Mutex<Vec<Option<Peer>>>,
    /// Reboots asked for so far, and reboots done (the peer answers again).
    requested: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
}

impl Fleet {
    /// Plays the machine of every peer that asked for a reboot, until told to stop.
    fn reboot_requested_peers(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            for index in 0..IPS.len() {
                let flag = {
                    let peers = self.peers.lock().unwrap();
                    peers[index].as_ref().map(|peer| peer.daemon.data_dir.join("reboot-requested"))
                };
                if flag.as_ref().is_some_and(|flag| std::fs::remove_file(flag).is_ok()) {
                    self.requested.fetch_add(1, Ordering::SeqCst);
                    self.reboot(index);
                    self.done.fetch_add(1, Ordering::SeqCst);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn reboot(&self, index: usize) {
        let peer = self.peers.lock().unwrap()[index].take().unwrap();
        let Peer { daemon, ip, args, listen } = peer;
        let data = daemon.data_dir.clone();
        daemon.stop().unwrap();
        let mut boot = upgrade::FileBootControl::open(&data.join("boot"), SLOT_CAPACITY_BYTES);
        let slot = boot.firmware_boot().unwrap();
        let version = boot.entries().unwrap().into_iter().find(|e| e.slot == slot).unwrap().label;
        // The booted release: its version first (`--reboot-command` takes the rest).
        let mut booted = vec!["--announce-version".to_owned(), version];
        booted.extend(without_version(&args));
        let daemon = Batond::start_listening(&data, &listen, &booted, &[]).unwrap();
        let peer = Peer { daemon, ip, args: booted, listen };
        wait_until("the rebooted peer answers", || {
            peer.get("/api/v1/status").map(|_| ()).map_err(|error| format!("{error:#}"))
        });
        boot.mark_good().unwrap();
        self.peers.lock().unwrap()[index] = Some(peer);
    }
}

/// Stops the harness and kills every peer when the test ends, also when it fails: the
/// harness thread holds the fleet, so the peers would otherwise outlive the test.
struct Shutdown(Arc<Fleet>);

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        let peers: Vec<Option<Peer>> =
            self.0.peers.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        drop(peers);
    }
}

fn without_version(args: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
        } else if arg == "--announce-version" {
            skip = true;
        } else {
            kept.push(arg.clone());
        }
    }
    kept
}

fn batonctl(urls: &[String], ca_bundle: &Path, image: &Path, last: &str) -> std::process::Command {
    let mut command = std::process::Command::new(baton_tests::binary("batonctl").unwrap());
    command
        .args(["--url", &urls[0], "--ca"])
        .arg(ca_bundle)
        .args(["cluster", "upgrade"])
        .arg(image)
        .args(["--peer", &urls[1], "--peer", &urls[2], "--last", last, "--reboot-timeout-s", "60"])
        .env("BATON_PASSWORD", TEST_PASSWORD)
        .env("BATON_CLUSTER_KEY", KEY)
        .stdin(std::process::Stdio::null());
    command
}

#[test]
fn a_rolling_upgrade_keeps_the_vcs_served_and_resumes_after_an_interruption() {
    use bridges::BridgeKind::Mcu;
    let dir = tempfile::tempdir().unwrap();
    let release = upgrade::generate_signing_key().unwrap();
    let keys = dir.path().join("trusted.pub");
    std::fs::write(&keys, upgrade::public_key_to_text(&release.verifying_key())).unwrap();
    let image: PathBuf = dir.path().join("baton-1.0.0.img");
    std::fs::write(&image, crate::upgrade::image(&release, NEW_VERSION, &vec![5u8; 256 * 1024]))
        .unwrap();
    let (admin_port, cluster_port) = (free_port().unwrap(), free_port().unwrap());
    let peers: Vec<Peer> = IPS
        .iter()
        .map(|ip| {
            let data = dir.path().join(ip);
            std::fs::create_dir_all(&data).unwrap();
            let flags = [
                "--upgrade-trusted-keys-file".to_owned(),
                keys.display().to_string(),
                "--maintenance-drain-ms".to_owned(),
                DRAIN_MS.to_string(),
                "--reboot-command".to_owned(),
                "touch".to_owned(),
                data.join("reboot-requested").display().to_string(),
                // The simulated bridges hold no participants: at the default idle time, a room
                // called early would be ended as empty while a slow run is still upgrading, and
                // the final check is that every room called exists once.
                "--conference-idle-ms".to_owned(),
                CONFERENCE_IDLE_MS.to_string(),
            ];
            Peer::start_on(&data, &format!("{ip}:{admin_port}"), cluster_port, &flags).unwrap()
        })
        .collect();
    let [a, b, c] = [&peers[0], &peers[1], &peers[2]];
    a.save_cluster(KEY, &[a]).unwrap();
    for peer in [a, b, c] {
        peer.save_cluster(KEY, &[a, b, c]).unwrap();
    }
    for (x, y) in [(a, b), (a, c), (b, c), (c, a)] {
        crate::cluster::expect_line(x, &y.ip, "Active as");
    }
    // The VCS's configuration: two MCUs in one pool, so a conference unknown to a peer could
    // be made a second time on the other bridge.
    let mcus = [SimBridge::start("mcu", &[]).unwrap(), SimBridge::start("mcu", &[]).unwrap()];
    a.save("/api/v1/policy-service", json!({"username": VCS_USER, "password": VCS_PASSWORD}))
        .unwrap();
    for (name, sim) in ["mcu-1", "mcu-2"].iter().zip(&mcus) {
        let mut record = bridge(name, sim, "mcu", SIM_BRIDGE_PASSWORD);
        record["capacity_ports"] = json!(10_000);
        a.create("bridges", record).unwrap();
    }
    a.create(
        "bridge-pools",
        json!({"name": "mcus", "bridge_type": "mcu", "bridges": ["mcu-1", "mcu-2"]}),
    )
    .unwrap();
    a.create(
        "service-preferences",
        json!({"name": "mcu", "bridge_type": "mcu", "pools": ["mcus"]}),
    )
    .unwrap();
    a.create(
        "conference-templates",
        json!({"name": "meeting", "conference_type": "meeting",
        "service_preference": "mcu", "max_participants": 2}),
    )
    .unwrap();
    a.create(
        "conference-aliases",
        json!({"name": "meet", "pattern": r"meet\.(?P<room>[a-z0-9]+)@example\.com",
        "conference_name": "${room}", "template": "meeting", "priority": 1}),
    )
    .unwrap();
    let urls: Vec<String> = peers.iter().map(|peer| peer.daemon.url.clone()).collect();
    let mut cas = Vec::new();
    for peer in &peers {
        cas.extend(std::fs::read(peer.daemon.data_dir.join("tls/ca.pem")).unwrap());
    }
    let ca_bundle = dir.path().join("cas.pem");
    std::fs::write(&ca_bundle, &cas).unwrap();
    let mut vcs = Vcs::new(urls.clone(), VCS_USER, VCS_PASSWORD, &cas).unwrap();
    wait_until("every peer serves the VCS", || match vcs.poll_status() {
        active if active == [true, true, true] => Ok(()),
        active => Err(format!("{active:?}")),
    });

    let fleet = Arc::new(Fleet {
        peers: Mutex::new(peers.into_iter().map(Some).collect()),
        requested: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let _shutdown = Shutdown(fleet.clone());
    let calling = Arc::new(AtomicBool::new(true));
    let harness = {
        let fleet = fleet.clone();
        std::thread::spawn(move || fleet.reboot_requested_peers())
    };
    // The VCS: polls the status path, then places a call: to a new conference every third
    // call, otherwise to one made earlier (later participants must reach the same one).
    let caller = {
        let calling = calling.clone();
        std::thread::spawn(move || {
            let mut answers: Vec<(String, Answer)> = Vec::new();
            let mut polls: Vec<(Vec<bool>, Vec<Option<String>>)> = Vec::new();
            let mut rooms = 0;
            while calling.load(Ordering::SeqCst) {
                polls.push((vcs.poll_status(), vcs.poll_failures().to_vec()));
                let count = answers.len();
                let room = if count.is_multiple_of(3) {
                    rooms += 1;
                    rooms
                } else {
                    1 + count % rooms
                };
                let room = format!("room{room}");
                let answer = vcs.call(&format!("meet.{room}@example.com"));
                answers.push((room, answer));
                std::thread::sleep(Duration::from_millis(50));
            }
            (answers, polls)
        })
    };

    // First run, with the last peer chosen: killed once a peer has asked to reboot.
    let log = dir.path().join("first-run.log");
    let mut first = batonctl(&urls, &ca_bundle, &image, "127.0.0.2")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("a peer reboots into the new version", || {
        if let Some(status) = first.try_wait().unwrap() {
            panic!("batonctl ended early ({status}):\n{}", std::fs::read_to_string(&log).unwrap());
        }
        match fleet.requested.load(Ordering::SeqCst) {
            0 => Err("no reboot yet".to_owned()),
            _ => Ok(()),
        }
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let before = std::fs::read_to_string(&log).unwrap();
    assert!(before.contains("Task 3: 127.0.0.1: upgrade to 1.0.0"), "{before}");

    // The same command again: it continues from what the peers show.
    let second = batonctl(&urls, &ca_bundle, &image, "127.0.0.2").output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "first run:\n{before}\nsecond run:\n{stderr}");
    assert!(stdout.contains("every peer runs 1.0.0 in one cluster"), "{stdout}");
    assert!(!stderr.contains("Task 3: 127.0.0.1"), "127.0.0.1 was upgraded once:\n{stderr}");
    assert!(stderr.contains("Task 6: 127.0.0.2: upgrade to 1.0.0"), "{stderr}");
    assert_eq!(fleet.done.load(Ordering::SeqCst), 3, "one reboot per peer");

    // A few more calls on the upgraded cluster, then the VCS stops.
    std::thread::sleep(Duration::from_millis(1_000));
    calling.store(false, Ordering::SeqCst);
    let (answers, polls) = caller.join().unwrap();
    fleet.stop.store(true, Ordering::SeqCst);
    harness.join().unwrap();
    assert!(answers.len() > 50, "only {} calls placed", answers.len());
    for (index, ((room, answer), (active, failures))) in answers.iter().zip(&polls).enumerate() {
        let expected = format!("{room}@127.0.0.1");
        assert!(
            matches!(&answer.outcome, Outcome::Route { urls } if urls == &[expected]),
            "call {index} of {} to {room}, servers active {active:?} ({failures:?}): {answer:?}",
            answers.len()
        );
    }
    let served_by: std::collections::BTreeSet<Option<usize>> =
        answers.iter().map(|(_, answer)| answer.server).collect();
    assert!(served_by.len() >= 2, "the calls moved between peers: {served_by:?}");

    // Every peer: the new version, from slot B, Active with both others, one configuration.
    let guard = fleet.peers.lock().unwrap();
    let peers: Vec<&Peer> = guard.iter().map(|peer| peer.as_ref().unwrap()).collect();
    for peer in &peers {
        assert_eq!(peer.get("/api/v1/status").unwrap()["version"], NEW_VERSION);
        assert_eq!(peer.get("/api/v1/upgrade").unwrap()["active_slot"], "B");
        for other in IPS.iter().filter(|ip| **ip != peer.ip) {
            assert!(peer.status_line(other).unwrap().starts_with("Active as"), "{}", peer.ip);
        }
    }
    crate::cluster::converged(&peers);

    // Every conference called exists once: on one bridge, recorded there on every peer.
    let on_bridges = [names_on(&mcus[0], Mcu), names_on(&mcus[1], Mcu)];
    let rooms: std::collections::BTreeSet<&String> = answers.iter().map(|(room, _)| room).collect();
    for room in rooms {
        let hosts: Vec<usize> = (0..2).filter(|i| on_bridges[*i].contains(room)).collect();
        let calls: Vec<(usize, Option<usize>)> = answers
            .iter()
            .enumerate()
            .filter(|(_, (called, _))| called == room)
            .map(|(index, (_, answer))| (index, answer.server))
            .collect();
        assert_eq!(hosts.len(), 1, "{room} is on {hosts:?}; its calls (index, server): {calls:?}");
        let expected = ["mcu-1", "mcu-2"][hosts[0]];
        for peer in &peers {
            let record = peer.get(&format!("/api/v1/conferences/{room}")).unwrap();
            assert_eq!(record["bridge"], expected, "{room} on {}", peer.ip);
        }
    }
}

/// A check that fails stops the upgrade before anything changes, and says why: an image the
/// peers do not trust is refused at its first upload, while every peer is still clustered and
/// serving.
#[test]
fn an_image_the_peers_refuse_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = upgrade::generate_signing_key().unwrap();
    let stranger = upgrade::generate_signing_key().unwrap();
    let keys = dir.path().join("trusted.pub");
    std::fs::write(&keys, upgrade::public_key_to_text(&trusted.verifying_key())).unwrap();
    let image = dir.path().join("foreign.img");
    std::fs::write(&image, crate::upgrade::image(&stranger, NEW_VERSION, &[3u8; 4096])).unwrap();
    let cluster_port = free_port().unwrap();
    let flags = ["--upgrade-trusted-keys-file".to_owned(), keys.display().to_string()];
    let peers: Vec<Peer> = IPS[..2]
        .iter()
        .map(|ip| {
            let data = dir.path().join(ip);
            std::fs::create_dir_all(&data).unwrap();
            Peer::start(&data, ip, cluster_port, &flags).unwrap()
        })
        .collect();
    let [a, b] = [&peers[0], &peers[1]];
    a.save_cluster(KEY, &[a]).unwrap();
    for peer in [a, b] {
        peer.save_cluster(KEY, &[a, b]).unwrap();
    }
    crate::cluster::expect_line(a, &b.ip, "Active as");
    // The joined peer accepts logins once the cluster's accounts have arrived.
    crate::cluster::expect_line(b, &a.ip, "Active as");
    let mut cas = std::fs::read(a.daemon.data_dir.join("tls/ca.pem")).unwrap();
    cas.extend(std::fs::read(b.daemon.data_dir.join("tls/ca.pem")).unwrap());
    let ca_bundle = dir.path().join("cas.pem");
    std::fs::write(&ca_bundle, &cas).unwrap();

    let run = std::process::Command::new(baton_tests::binary("batonctl").unwrap())
        .args(["--url", &a.daemon.url, "--ca"])
        .arg(&ca_bundle)
        .args(["cluster", "upgrade"])
        .arg(&image)
        .args(["--peer", &b.daemon.url])
        .env("BATON_PASSWORD", TEST_PASSWORD)
        .env("BATON_CLUSTER_KEY", KEY)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("127.0.0.2 refused the image; nothing was changed on it"), "{stderr}");
    for (peer, other) in [(a, b), (b, a)] {
        assert!(peer.status_line(&other.ip).unwrap().starts_with("Active as"), "{}", peer.ip);
        let (status, _) = peer.call(reqwest::Method::GET, "/api/v1/maintenance", None).unwrap();
        assert_eq!(status, 404, "{} was put in maintenance mode", peer.ip);
        assert_eq!(peer.get("/api/v1/upgrade").unwrap()["active_slot"], "A");
    }
}
