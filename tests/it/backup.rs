//! Backup and restore through the admin API of real `batond` processes, each given its
//! hardware serial by `BATON_HARDWARE_SERIAL`: round trips (plain and encrypted) while the
//! daemon keeps serving, every refusal leaving configuration, log position and data-directory
//! files unchanged, the refusal while clustered, a crash at each step of a restore, and the
//! restore of a committed archive holding an old (`bridge.saved` v1) event.

use baton_tests::{Batond, TEST_PASSWORD};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const SERIAL: &str = "VM-SERIAL-0001";
const OTHER_SERIAL: &str = "VM-SERIAL-0002";
const BACKUP_PASSWORD: &str = "backup passphrase";
/// The archive committed as test data; see [`write_upcast_fixture`] for how it was made.
const UPCAST_FIXTURE: &str = "data/backup-bridge-v1.tar.gz";
const FIXTURE_SERIAL: &str = "FIXTURE-SERIAL";

struct Peer {
    daemon: Batond,
    serial: String,
}

impl Peer {
    fn start(dir: &Path, serial: &str) -> Peer {
        Peer::start_env(dir, serial, &[], true)
    }

    /// Starts a daemon; `fresh` changes the factory password first.
    fn start_env(dir: &Path, serial: &str, env: &[(&str, &str)], fresh: bool) -> Peer {
        let mut all = vec![("BATON_HARDWARE_SERIAL", serial)];
        all.extend_from_slice(env);
        let daemon = Batond::start_with_env(dir, "127.0.0.1", &[], &all).unwrap();
        if fresh {
            daemon.change_factory_password().unwrap();
        }
        Peer { daemon, serial: serial.to_owned() }
    }

    fn restart(self, env: &[(&str, &str)]) -> Peer {
        let dir = self.daemon.data_dir.clone();
        let serial = self.serial.clone();
        drop(self);
        Peer::start_env(&dir, &serial, env, false)
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .daemon
            .client()
            .unwrap()
            .request(method, format!("{}{path}", self.daemon.url))
            .basic_auth("admin", Some(TEST_PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn put(&self, path: &str, body: Value) {
        let (status, answer) = self.call(reqwest::Method::PUT, path, Some(body));
        assert_eq!(status, 200, "PUT {path}: {answer}");
    }

    fn post(&self, path: &str, body: Value) {
        let (status, answer) = self.call(reqwest::Method::POST, path, Some(body));
        assert_eq!(status, 201, "POST {path}: {answer}");
    }

    fn get(&self, path: &str) -> Value {
        let (status, answer) = self.call(reqwest::Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {answer}");
        answer
    }

    /// What the VCS's status poll gets (with the policy-service account `vcs`/`vcs secret`).
    fn policy_status(&self) -> u16 {
        let url = format!("{}/baton/policy/status", self.daemon.url);
        let request = self.daemon.client().unwrap().get(url).basic_auth("vcs", Some("vcs secret"));
        request.send().unwrap().status().as_u16()
    }

    fn records(&self) -> Value {
        self.get("/api/v1/config")["records"].clone()
    }

    fn log_position(&self) -> u64 {
        self.get("/api/v1/status")["log_position"].as_u64().unwrap()
    }

    fn bridge(&self, name: &str, capacity_ports: u32) {
        self.post(
            "/api/v1/bridges",
            json!({"name": name, "bridge_type": "mcu", "address": "192.0.2.5",
                   "username": "api", "password": "secret", "capacity_ports": capacity_ports}),
        );
    }

    /// Downloads a backup; returns the archive and the file name the daemon gave it.
    fn backup(&self, password: Option<&str>) -> (Vec<u8>, String) {
        let mut request = self
            .daemon
            .client()
            .unwrap()
            .post(format!("{}/api/v1/backups", self.daemon.url))
            .basic_auth("admin", Some(TEST_PASSWORD));
        if let Some(password) = password {
            request = request.json(&json!({"password": password}));
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
        let name = disposition.split('"').nth(1).unwrap().to_owned();
        (response.bytes().unwrap().to_vec(), name)
    }

    fn restore(&self, archive: Vec<u8>, password: Option<&str>) -> (u16, Value) {
        let mut request = self
            .daemon
            .client()
            .unwrap()
            .post(format!("{}/api/v1/restore", self.daemon.url))
            .basic_auth("admin", Some(TEST_PASSWORD))
            .header("content-type", "application/octet-stream")
            .body(archive);
        if let Some(password) = password {
            request = request.header("x-baton-backup-password", password);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The Event Log's kinds, newest first, without the bridges' health changes: the health
    /// poll logs them whenever a poll ends, so they may land between any two requests.
    fn event_log_kinds(&self) -> Vec<String> {
        self.get("/api/v1/logs/events?limit=500")["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["kind"].as_str().unwrap().to_owned())
            .filter(|kind| kind != "bridge.down" && kind != "bridge.up")
            .collect()
    }
}

/// The data directory's file names (not contents: the database takes Event Log entries) plus
/// the contents of the TLS files.
fn data_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walk(dir) {
        let name = entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if name.ends_with("-wal") || name.ends_with("-shm") {
            continue;
        }
        let contents =
            if name.starts_with("tls/") { std::fs::read(&entry).unwrap() } else { Vec::new() };
        files.insert(name, contents);
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            paths.extend(walk(&path));
        } else {
            paths.push(path);
        }
    }
    paths
}

/// A first configuration, different from what each test changes it to later.
fn configure(peer: &Peer) {
    peer.bridge("mcu1", 40);
    peer.bridge("mcu2", 80);
    peer.put("/api/v1/ntp", json!({"servers": ["192.0.2.123"]}));
}

fn change(peer: &Peer) {
    let (status, _) = peer.call(reqwest::Method::DELETE, "/api/v1/bridges/mcu1", None);
    assert_eq!(status, 204);
    peer.bridge("mcu3", 10);
    peer.put("/api/v1/ntp", json!({"servers": ["192.0.2.124"]}));
}

#[test]
fn round_trip_plain_and_encrypted_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), SERIAL);
    assert_eq!(peer.get("/api/v1/status")["hardware_serial"], SERIAL);
    configure(&peer);
    let backed_up = peer.records();

    // Readers hammer the API while the backups run; every request must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (stop, served) = (stop.clone(), served.clone());
        let client = peer.daemon.client().unwrap();
        let url = format!("{}/api/v1/bridges", peer.daemon.url);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let response =
                    client.get(&url).basic_auth("admin", Some(TEST_PASSWORD)).send().unwrap();
                assert_eq!(response.status(), 200);
                served.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = served.load(Ordering::SeqCst);
    let (plain, plain_name) = peer.backup(None);
    let (encrypted, encrypted_name) = peer.backup(Some(BACKUP_PASSWORD));
    let during = served.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    hammer.join().unwrap();
    assert!(during > 0, "no request was served during the backups");
    assert!(plain_name.starts_with(&format!("0.1.0_{SERIAL}_")), "{plain_name}");
    assert!(plain_name.ends_with("_backup.tar.gz"), "{plain_name}");
    assert!(encrypted_name.ends_with("_backup.tar.gz.enc"), "{encrypted_name}");
    assert_eq!(&plain[..2], &[0x1f, 0x8b]);
    let progress = peer.get("/api/v1/backups/progress")["operation"].clone();
    assert_eq!(progress["operation"], "backup");
    assert_eq!(progress["outcome"], "ok");
    assert_eq!(progress["done_bytes"], progress["total_bytes"]);

    change(&peer);
    assert_ne!(peer.records(), backed_up);
    let events_before = peer.event_log_kinds();
    let inode =
        |path: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
    let database_inode = inode(&dir.path().join("baton.db"));
    let (status, answer) = peer.restore(plain, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(peer.records(), backed_up);
    // The seed: log files are not part of a backup. This peer's Event Log is kept whole (the
    // second backup's entry, made after the archive, included), plus the restore itself.
    let events_after = peer.event_log_kinds();
    assert_eq!(events_after.first().map(String::as_str), Some("restore.applied"));
    assert!(events_after.ends_with(&events_before), "{events_before:?} -> {events_after:?}");
    let safety = answer["safety_database"].as_str().unwrap();
    // Nothing was copied: the previous database file is kept as it was, by a second name.
    assert_eq!(inode(Path::new(safety)), database_inode, "{safety}");

    change(&peer);
    let (status, answer) = peer.restore(encrypted, Some(BACKUP_PASSWORD));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(peer.records(), backed_up);
    // The restored daemon keeps working: writes, and a restart.
    peer.bridge("after-restore", 5);
    let peer = peer.restart(&[]);
    assert_eq!(peer.get("/api/v1/bridges/after-restore")["capacity_ports"], 5);
}

/// The policy service decides on the in-memory state, not the API's tables: a restore must
/// reach it at once, also when nothing had changed since the daemon started.
#[test]
fn restore_reaches_the_policy_service_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), SERIAL);
    peer.put("/api/v1/policy-service", json!({"username": "vcs", "password": "vcs secret"}));
    assert_eq!(peer.policy_status(), 200);
    let (archive, _) = peer.backup(None);
    let (status, _) = peer.call(reqwest::Method::DELETE, "/api/v1/policy-service", None);
    assert_eq!(status, 204);
    assert_eq!(peer.policy_status(), 503);

    let peer = peer.restart(&[]);
    let (status, answer) = peer.restore(archive, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(peer.policy_status(), 200, "the restored policy account is not in use");
}

/// Restores `archive` and expects the refusal `code`, with nothing changed.
fn assert_refused(peer: &Peer, archive: Vec<u8>, password: Option<&str>, status: u16, code: &str) {
    let (records, position) = (peer.records(), peer.log_position());
    let files = data_files(&peer.daemon.data_dir);
    let (answer_status, answer) = peer.restore(archive, password);
    assert_eq!((answer_status, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
    assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(peer.records(), records, "{code}: configuration changed");
    assert_eq!(peer.log_position(), position, "{code}: log position changed");
    assert_eq!(data_files(&peer.daemon.data_dir), files, "{code}: data files changed");
}

#[test]
fn every_refusal_changes_nothing() {
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = Peer::start(dir.path(), SERIAL);
    configure(&peer);
    let (plain, _) = peer.backup(None);
    let (encrypted, _) = peer.backup(Some(BACKUP_PASSWORD));
    change(&peer);

    // Another machine.
    let other = Peer::start(other_dir.path(), OTHER_SERIAL);
    assert_refused(&other, plain.clone(), None, 422, "backup_other_machine");

    // Newer software: an archive crafted with the crate from this peer's own database.
    let newer = {
        let conn = eventlog::open_reader(&dir.path().join("baton.db")).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let options = backup::BackupOptions {
            software_version: "99.0.0",
            hardware_serial: SERIAL,
            created_at_ms: 1_800_000_000_000,
            extra_files: &[],
            password: None,
            kdf: backup::KdfParams::RECOMMENDED,
            scratch_dir: scratch.path(),
        };
        backup::write_backup(&conn, &options, Vec::new(), &mut |_| {}).unwrap().1
    };
    assert_refused(&peer, newer, None, 422, "backup_newer_software");

    assert_refused(&peer, encrypted.clone(), Some("wrong password"), 422, "backup_wrong_password");
    assert_refused(&peer, encrypted.clone(), None, 422, "backup_password_required");
    for (label, archive) in [("plain", &plain), ("encrypted", &encrypted)] {
        let password = (label == "encrypted").then_some(BACKUP_PASSWORD);
        let mut flipped = archive.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let (status, answer) = peer.restore(flipped.clone(), password);
        assert_eq!(status, 422, "{label} flipped: {answer}");
        let code = answer["error"]["code"].as_str().unwrap().to_owned();
        assert!(
            ["backup_corrupt", "backup_wrong_password", "backup_truncated"]
                .contains(&code.as_str()),
            "{label} flipped: {answer}"
        );
        assert_refused(&peer, flipped, password, 422, &code);
        let truncated = archive[..archive.len() * 2 / 3].to_vec();
        let (_, answer) = peer.restore(truncated.clone(), password);
        let code = answer["error"]["code"].as_str().unwrap_or_default().to_owned();
        // An archive shorter than one encryption chunk fails like a wrong key.
        assert!(
            ["backup_truncated", "backup_corrupt", "backup_wrong_password"]
                .contains(&code.as_str()),
            "{answer}"
        );
        assert_refused(&peer, truncated, password, 422, &code);
    }
    assert_refused(
        &peer,
        b"not a backup at all, just text".to_vec(),
        None,
        422,
        "backup_unknown_format",
    );
    assert_refused(&peer, Vec::new(), None, 422, "backup_unknown_format");
    let kinds = peer.event_log_kinds();
    assert!(kinds.contains(&"restore.refused".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"restore.applied".to_owned()), "{kinds:?}");
}

/// A data directory where a restored file cannot go (its place taken by a folder) is found
/// before anything moves: a 422, not a swap that fails half-way and a recovery that loops.
#[test]
fn a_blocked_target_is_refused_before_anything_moves() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), SERIAL);
    configure(&peer);
    let (plain, _) = peer.backup(None);
    change(&peer);
    let certificate = peer.daemon.data_dir.join("tls/server.pem");
    std::fs::remove_file(&certificate).unwrap();
    std::fs::create_dir(&certificate).unwrap();
    std::fs::write(certificate.join("in-the-way"), "an operator's file").unwrap();
    assert_refused(&peer, plain, None, 422, "backup_unsafe_member");
}

#[test]
fn restore_is_refused_while_clustered() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), SERIAL);
    configure(&peer);
    let (plain, _) = peer.backup(None);
    peer.put(
        "/api/v1/ipv4",
        json!({"address": "127.0.0.1", "prefix_length": 8, "gateway": "127.0.0.254"}),
    );
    peer.put("/api/v1/system-name", json!({"host_name": "peer-1", "domain": "example.test"}));
    peer.put("/api/v1/dns", json!({"servers": ["127.0.0.53"]}));
    peer.put("/api/v1/licence", json!({"release_key": "ABCD-1234-EFGH", "edition": "full"}));
    peer.put(
        "/api/v1/cluster",
        json!({"pre_shared_key": "a long pre-shared key for the test", "peers": ["127.0.0.1"]}),
    );
    assert_refused(&peer, plain.clone(), None, 409, "restore_clustered");
    let (_, answer) = peer.restore(plain.clone(), None);
    assert!(answer["error"]["message"].as_str().unwrap().contains("standalone"), "{answer}");
    let (clustered, _) = peer.backup(None);
    // Standalone again, the same archive restores.
    peer.put("/api/v1/cluster", json!({"pre_shared_key": "", "peers": []}));
    let (status, answer) = peer.restore(plain, None);
    assert_eq!(status, 200, "{answer}");
    // A backup taken in a cluster restores as a standalone peer.
    let (status, answer) = peer.restore(clustered, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(peer.get("/api/v1/cluster")["peers"], json!([]));
    assert_eq!(peer.get("/api/v1/licence")["edition"], "full");
    assert!(peer.get("/api/v1/status")["cluster"].is_object());
}

/// A crash at each step of applying a restore leaves the old or the new configuration, whole,
/// after a restart; and a SIGKILL during the upload leaves the old one.
#[test]
fn crash_during_restore_leaves_old_or_new_state() {
    // (crash point, whether the restore must have taken effect)
    for (point, applied) in
        [("staged", false), ("pending", false), ("database", true), ("files", true)]
    {
        let dir = tempfile::tempdir().unwrap();
        let peer = Peer::start_env(dir.path(), SERIAL, &[("BATON_TEST_CRASH_AT", point)], true);
        configure(&peer);
        let new_state = peer.records();
        let (archive, _) = peer.backup(None);
        change(&peer);
        let old_state = peer.records();
        let old_position = peer.log_position();
        let tls_before: BTreeMap<_, _> = data_files(dir.path())
            .into_iter()
            .filter(|(name, _)| name.starts_with("tls/"))
            .collect();
        let client = peer.daemon.client().unwrap();
        let answer = client
            .post(format!("{}/api/v1/restore", peer.daemon.url))
            .basic_auth("admin", Some(TEST_PASSWORD))
            .body(archive)
            .send();
        assert!(answer.is_err(), "{point}: the daemon should have died: {answer:?}");
        let peer = peer.restart(&[]);
        let records = peer.records();
        if applied {
            assert_eq!(records, new_state, "{point}");
            assert!(peer.event_log_kinds().contains(&"restore.recovered".to_owned()));
        } else {
            assert_eq!(records, old_state, "{point}");
            assert_eq!(peer.log_position(), old_position, "{point}");
        }
        let files = data_files(dir.path());
        assert!(!files.keys().any(|name| name.starts_with("restore-")), "{point}: {files:?}");
        let tls_after: BTreeMap<_, _> =
            files.into_iter().filter(|(name, _)| name.starts_with("tls/")).collect();
        assert_eq!(tls_after, tls_before, "{point}: TLS files");
        // It works on: another restore of the same state goes through.
        let (archive, _) = peer.backup(None);
        let (status, answer) = peer.restore(archive, None);
        assert_eq!(status, 200, "{point}: {answer}");
    }

    // SIGKILL while the archive is still being uploaded.
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), SERIAL);
    configure(&peer);
    let (archive, _) = peer.backup(None);
    change(&peer);
    let old_state = peer.records();
    let upload = {
        let client = peer.daemon.client().unwrap();
        let url = format!("{}/api/v1/restore", peer.daemon.url);
        std::thread::spawn(move || {
            let slow = SlowReader { data: archive, offset: 0 };
            let _ = client
                .post(url)
                .basic_auth("admin", Some(TEST_PASSWORD))
                .body(reqwest::blocking::Body::new(slow))
                .send();
        })
    };
    let staging = dir.path().join("restore-staging");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !staging.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(staging.exists(), "the upload never started staging");
    let peer = peer.restart(&[]);
    upload.join().unwrap();
    assert_eq!(peer.records(), old_state);
    assert!(!staging.exists());
}

/// Sends the archive 1 KiB at a time, slowly, so the daemon can be killed mid-upload.
struct SlowReader {
    data: Vec<u8>,
    offset: usize,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let length = buf.len().min(1024).min(self.data.len() - self.offset);
        buf[..length].copy_from_slice(&self.data[self.offset..length + self.offset]);
        self.offset += length;
        Ok(length)
    }
}

/// A backup made by an older build, whose log holds a `bridge.saved` event of payload
/// version 1 (before bridges had a protocol), restores and shows the upcast bridge.
#[test]
fn restores_an_archive_with_old_event_versions() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(UPCAST_FIXTURE);
    if std::env::var_os("BATON_WRITE_FIXTURES").is_some() {
        write_upcast_fixture(&fixture);
    }
    let archive = std::fs::read(&fixture).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), FIXTURE_SERIAL);
    let (status, answer) = peer.restore(archive, None);
    assert_eq!(status, 200, "{answer}");
    let bridge = peer.get("/api/v1/bridges/old-mcu");
    assert_eq!(bridge["protocol"], "https", "{bridge}");
    assert_eq!(bridge["capacity_ports"], 30, "{bridge}");
    assert_eq!(bridge["pinned_sha256"], Value::Null, "{bridge}");
}

/// An archive whose log chains correctly but holds an event no version of this software can
/// read (a crafted one: the chain's hashes are anyone's to compute) is refused as corrupt
/// while it is staged, naming the event's position, and nothing changes.
#[test]
fn an_archive_with_an_event_that_does_not_decode_is_refused_and_changes_nothing() {
    let archive = old_archive("bridge.saved", 2, b"\xff\xff\xff not postcard".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), FIXTURE_SERIAL);
    let (_, answer) = peer.restore(archive.clone(), None);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot be read") && message.contains("position"), "{answer}");
    assert_refused(&peer, archive, None, 422, "backup_corrupt");
}

/// How the fixture was made (run with `BATON_WRITE_FIXTURES=1` to make it again): a daemon
/// with serial `FIXTURE-SERIAL` gets its password set and is stopped; a `bridge.saved` event
/// with the frozen version-1 payload (`model::event::BridgeV1`) is appended to its log as the
/// old build wrote it; the log is archived by the backup crate as version 0.1.0, unencrypted,
/// without extra files (so restoring it keeps the test daemon's TLS identity).
fn write_upcast_fixture(path: &Path) {
    let v1 = model::event::BridgeV1 {
        name: "old-mcu".to_owned(),
        bridge_type: model::record::BridgeType::Mcu,
        address: "192.0.2.9".to_owned(),
        username: "api".to_owned(),
        password: "secret".to_owned(),
        capacity_ports: 30,
        enabled: true,
    };
    let archive = old_archive("bridge.saved", 1, postcard::to_stdvec(&v1).unwrap());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, archive).unwrap();
}

/// An archive of a fresh daemon's log (serial `FIXTURE-SERIAL`) with one more event in the
/// shared stream, as an older build wrote it, archived as version 0.1.0, unencrypted,
/// without extra files.
fn old_archive(kind: &str, version: u16, payload: Vec<u8>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), FIXTURE_SERIAL);
    peer.daemon.stop().unwrap();
    let database = dir.path().join("baton.db");
    let mut log = eventlog::EventLog::open(&database).unwrap();
    let wall_ms = log.max_hlc().unwrap().wall_ms + 1;
    log.append(&[eventlog::NewEvent {
        stream: eventlog::Stream::Shared,
        hlc: model::Hlc { wall_ms, counter: 0 },
        actor: "admin".to_owned(),
        kind: kind.to_owned(),
        version,
        payload,
    }])
    .unwrap();
    drop(log);
    let conn = eventlog::open_reader(&database).unwrap();
    let options = backup::BackupOptions {
        software_version: "0.1.0",
        hardware_serial: FIXTURE_SERIAL,
        created_at_ms: wall_ms,
        extra_files: &[],
        password: None,
        kdf: backup::KdfParams::RECOMMENDED,
        scratch_dir: dir.path(),
    };
    backup::write_backup(&conn, &options, Vec::new(), &mut |_| {}).unwrap().1
}

/// A backup from the releases that replicated the licence holds it in the shared stream:
/// `backup inspect` shows it and the restored peer keeps it, as its own.
#[test]
fn an_old_backups_shared_licence_is_restored_as_this_peers_own() {
    let licence = model::record::Licence {
        release_key: "OLD-RELEASE-KEY".to_owned(),
        edition: model::record::Edition::Select,
        option_keys: Vec::new(),
    };
    let archive = old_archive("licence.saved", 1, postcard::to_stdvec(&licence).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("old.tar.gz"), &archive).unwrap();
    let peer = Peer::start(dir.path(), FIXTURE_SERIAL);
    let (ok, stdout, stderr) =
        batonctl(&peer, work.path(), &["backup", "inspect", "old.tar.gz"], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("+ licence licence"), "{stdout}");
    let (status, answer) = peer.restore(archive, None);
    assert_eq!(status, 200, "{answer}");
    let restored = peer.get("/api/v1/licence");
    assert_eq!(
        (restored["release_key"].as_str(), restored["edition"].as_str()),
        (Some("OLD-RELEASE-KEY"), Some("select"))
    );
    let restarted = peer.restart(&[]);
    assert_eq!(restarted.get("/api/v1/licence")["release_key"], "OLD-RELEASE-KEY");
}

/// Runs `batonctl` against `peer` in `cwd`; returns (success, stdout, stderr).
fn batonctl(
    peer: &Peer,
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let output = std::process::Command::new(baton_tests::binary("batonctl").unwrap())
        .current_dir(cwd)
        .args(["--url", &peer.daemon.url, "--ca"])
        .arg(peer.daemon.data_dir.join("tls/ca.pem"))
        .args(args)
        .env("BATON_PASSWORD", TEST_PASSWORD)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The operator's path: `batonctl backup create`, `inspect` (manifest and the changes a restore
/// would make), `restore`, plain and encrypted.
#[test]
fn batonctl_creates_inspects_and_restores_backups() {
    let (dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = Peer::start(dir.path(), SERIAL);
    configure(&peer);
    let backed_up = peer.records();
    let (ok, stdout, stderr) = batonctl(&peer, work.path(), &["backup", "create"], &[]);
    assert!(ok, "{stderr}");
    let name = stdout.split_whitespace().nth(3).unwrap().to_owned();
    assert!(name.ends_with("_backup.tar.gz") && name.contains(SERIAL), "{stdout}");
    let secret = [("BATON_BACKUP_PASSWORD", BACKUP_PASSWORD)];
    let (ok, _, stderr) = batonctl(
        &peer,
        work.path(),
        &["backup", "create", "--encrypt", "--output", "secret.tar.gz.enc"],
        &secret,
    );
    assert!(ok, "{stderr}");
    // Issue 19: the unencrypted backup holds the private key; neither is readable by others,
    // whatever the umask.
    for file in [name.as_str(), "secret.tar.gz.enc"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
    change(&peer);

    let (ok, stdout, stderr) = batonctl(&peer, work.path(), &["backup", "inspect", &name], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(SERIAL), "{stdout}");
    assert!(stdout.contains("+ bridge mcu1"), "{stdout}");
    assert!(stdout.contains("- bridge mcu3"), "{stdout}");
    assert!(stdout.contains("~ ntp ntp: servers"), "{stdout}");
    let (ok, stdout, stderr) = batonctl(
        &peer,
        work.path(),
        &["--json", "backup", "inspect", "secret.tar.gz.enc"],
        &secret,
    );
    assert!(ok, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["manifest"]["hardware_serial"], SERIAL);
    assert_eq!(answer["changes"].as_array().unwrap().len(), 3, "{answer}");
    let (ok, _, stderr) =
        batonctl(&peer, work.path(), &["backup", "inspect", "secret.tar.gz.enc"], &[]);
    assert!(!ok && stderr.contains("backup password"), "{stderr}");

    let (ok, stdout, stderr) = batonctl(&peer, work.path(), &["backup", "restore", &name], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert_eq!(peer.records(), backed_up);
    change(&peer);
    let (ok, _, stderr) =
        batonctl(&peer, work.path(), &["backup", "restore", "secret.tar.gz.enc"], &secret);
    assert!(ok, "{stderr}");
    assert_eq!(peer.records(), backed_up);
    let (ok, stdout, _) = batonctl(&peer, work.path(), &["backup", "progress"], &[]);
    assert!(ok && stdout.contains("restore done"), "{stdout}");
    // A refusal is shown with its reason.
    std::fs::write(work.path().join("junk.tar.gz"), b"junk").unwrap();
    let (ok, _, stderr) = batonctl(&peer, work.path(), &["backup", "restore", "junk.tar.gz"], &[]);
    assert!(!ok && stderr.contains("not a Baton backup"), "{stderr}");
}

/// Scheduled backups: with none of this machine's backups recent enough in the folder, one is
/// written at once, restorable; the oldest beyond `keep_count` are deleted, and files that are
/// not this machine's backups are left alone.
#[test]
fn scheduled_backups_are_written_and_pruned() {
    let (dir, folder) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = Peer::start(dir.path(), SERIAL);
    configure(&peer);
    let old = |day: u32| format!("0.1.0_{SERIAL}_2020010{day}_000000_backup.tar.gz");
    for day in 1..=3 {
        let path = folder.path().join(old(day));
        std::fs::write(&path, b"an old backup").unwrap();
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(1_577_836_800 + 86_400 * u64::from(day));
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
    }
    let strangers =
        [format!("0.1.0_{OTHER_SERIAL}_20200101_000000_backup.tar.gz"), "notes.txt".to_owned()];
    for name in &strangers {
        std::fs::write(folder.path().join(name), b"not ours").unwrap();
    }
    peer.put(
        "/api/v1/backup-schedule",
        json!({"enabled": true, "interval_hours": 24, "keep_count": 2,
               "folder": folder.path(), "password": BACKUP_PASSWORD}),
    );
    assert_eq!(peer.get("/api/v1/backup-schedule")["password"], "********");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let new = loop {
        let names: Vec<String> = std::fs::read_dir(folder.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if let Some(new) = names.iter().find(|name| name.ends_with(".enc")) {
            let mut names = names.clone();
            names.sort();
            let mut expected =
                vec![old(3), new.clone(), strangers[0].clone(), strangers[1].clone()];
            expected.sort();
            if names == expected {
                break new.clone();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled backup: {names:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(peer.event_log_kinds().contains(&"backup.scheduled".to_owned()));
    let archive = std::fs::read(folder.path().join(&new)).unwrap();
    change(&peer);
    let (status, answer) = peer.restore(archive, Some(BACKUP_PASSWORD));
    assert_eq!(status, 200, "{answer}");
    // The restored configuration is the one backed up (with the schedule, saved before).
    assert!(peer.get("/api/v1/bridges/mcu1")["name"] == "mcu1");
}
