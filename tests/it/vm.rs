//! The appliance image booted under qemu (slow: only with `BATON_SLOW_TESTS=1`, which
//! `cargo xtask test --slow` and `.ci/run` set). One VM, one disk, the whole life of a slot:
//!
//! 1. `cargo xtask image` (the rootfs is cached); slot A gets a throwaway upgrade key trusted
//!    through `/etc/default/batond` (`BATON_UPGRADE_TRUSTED_KEYS_FILE`), so no release build
//!    with a test key is needed, and is put on trial as an upgrade leaves it (`slot-a+3.conf`);
//! 2. boot: the admin API answers over the forwarded port, the factory admin must change the
//!    password, the policy status path answers, the DMI serial is qemu's, the health gate ran
//!    and the entry was blessed; peer-local settings changed through the API change the guest
//!    OS (`vm_platform.rs`); a bridge is configured;
//! 3. a signed upgrade image of the next version (`cargo xtask upgrade-image`, which stamps the
//!    version into the payload) is uploaded and the VM rebooted: it comes up on slot B with the
//!    new version, the same configuration, and B's entry blessed;
//! 4. an image whose batond cannot start is uploaded (into A) and the VM rebooted: the health
//!    gate marks the boot bad and reboots, systemd-boot falls back to B by itself, and
//!    `GET /api/v1/upgrade` reports the fallback; the ESP read back after power-off agrees;
//! 5. a backup made in the VM restores in it, and is refused (nothing changed) when the same
//!    disk boots as another machine (`cargo xtask vm --serial`).

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The VM's forwarded admin API: `cargo xtask vm` puts peer 1 at 127.0.0.2, or at
/// 127.0.0.<1 + BATON_VM_HOST_OFFSET> when another checkout boots VMs at the same time.
pub(crate) fn admin_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let offset = std::env::var("BATON_VM_HOST_OFFSET")
            .ok()
            .and_then(|text| text.parse::<u32>().ok())
            .filter(|offset| (1..=250).contains(offset))
            .unwrap_or(1);
        format!("https://127.0.0.{}:8443", 1 + offset)
    })
}
const SERIAL: &str = "BATON-VM-1";
/// The same disk booted as another machine, for the backup's serial check.
const OTHER_SERIAL: &str = "BATON-VM-OTHER";
/// The ESP's offset in the disk (image/README.md): mtools reads it in place.
const ESP_OFFSET: &str = "1M";
/// Slot A's partition in the disk (image/README.md): the test's root goes there.
const SLOT_A_OFFSET_MIB: u64 = 257;
/// Where the throwaway upgrade key is put in the guest's root file system.
const TEST_KEY_IN_GUEST: &str = "/etc/baton-upgrade-test.pub";
pub(crate) const PASSWORD: &str = "vm test password 7";
const API_TIMEOUT_S: u64 = 180;
const STATUS_TIMEOUT_S: u64 = 180;
/// From a reboot request to the next boot's console status line (TCG boots take ~45 s, and a
/// rejected boot adds its own boot and the gate's verdict).
const REBOOT_TIMEOUT_S: u64 = 300;
const UPLOAD_TIMEOUT_S: u64 = 900;
pub(crate) const POWER_OFF_TIMEOUT_S: u64 = 90;

#[test]
fn appliance_upgrades_to_the_other_slot_and_falls_back_from_a_broken_one() -> anyhow::Result<()> {
    // One VM test at a time (the lock): each boots peer 1 at the same forwarded address, QMP
    // socket and serial log (nextest also runs them in one group, `.config/nextest.toml`).
    let (workspace, target, cargo, _lock) = crate::vm_cluster::vm_test()?;
    let started = Instant::now();
    let workspace = workspace.as_path();
    let running: upgrade::Version =
        env!("CARGO_PKG_VERSION").parse().map_err(anyhow::Error::msg)?;
    let next = upgrade::Version::new(running.major, running.minor, running.patch + 1);
    let broken = upgrade::Version::new(running.major, running.minor, running.patch + 2);

    let status = Command::new(&cargo)
        .args(["xtask", "image"])
        .current_dir(workspace)
        .status()
        .context("running cargo xtask image")?;
    ensure!(status.success(), "cargo xtask image failed ({status})");
    let image_s = started.elapsed().as_secs_f64();

    let step = Instant::now();
    let dir = target.join("vm-test");
    let TrustingDisk { keys: _keys, private_key, root, disk } = trusting_disk(&target, &dir)?;
    let trust = trusted_keys_setting();
    // As an upgrade leaves a new slot: on trial with three tries.
    mtools(&disk, "mren", &["::/loader/entries/slot-a.conf", "::/loader/entries/slot-a+3.conf"])?;

    // The upgrade images: the next version, and one whose batond fails at start.
    let good_image = dir.join(format!("baton-{next}.upgrade"));
    upgrade_image(&cargo, workspace, &private_key, &root, &next, &good_image)?;
    let broken_root = dir.join("root-broken.squashfs");
    let broken_settings = format!("{trust}BATON_ADMIN_LISTEN=not-an-address\n");
    squashfs_with(&root, &broken_root, &[("/etc/default/batond", &broken_settings)])?;
    let broken_image = dir.join(format!("baton-{broken}-broken.upgrade"));
    upgrade_image(&cargo, workspace, &private_key, &broken_root, &broken, &broken_image)?;
    std::fs::remove_file(&broken_root)?;
    let prepare_s = step.elapsed().as_secs_f64();

    let serial_log = target.join("vm/peer-1-serial.log");
    let _ = std::fs::remove_file(&serial_log);
    // The syslog server on the host, reached from the guest through `--forward-to-host`
    // (nothing else leaves the guest), bound before the boot that forwards its port.
    let syslog = std::net::TcpListener::bind("127.0.0.1:0")?;
    let syslog_port = syslog.local_addr()?.port().to_string();
    let boot = Instant::now();
    let child = Command::new(&cargo)
        .args(["xtask", "vm", "--forward-to-host", &syslog_port, "--disk"])
        .arg(&disk)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .spawn()
        .context("running cargo xtask vm")?;
    let mut vm = Vm::new(child, &target, &serial_log);
    let serial = Serial { path: serial_log.clone() };

    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        // The appliance's CA is made inside the guest on first start; the test cannot know it.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()?;
    wait_for_api(&client, &serial)?;
    let api_ready_s = boot.elapsed().as_secs_f64();

    change_factory_password(&client)?;
    let api = Api::login(&client)?;
    let status = api.get("/api/v1/status")?;
    ensure!(status["product"] == json!("Baton"), "unexpected status: {status}");
    ensure!(status["version"] == json!(running.to_string()), "version: {status}");
    if let Some(serial) = status.get("hardware_serial") {
        ensure!(serial == &json!(SERIAL), "API hardware serial {serial}, want {SERIAL}");
    }
    // 200 when configured, 503 with the reason when not: either way the path answers.
    let policy = client.get(format!("{}/baton/policy/status", admin_url())).send()?;
    ensure!(
        policy.status().as_u16() == 200 || policy.status().as_u16() == 503,
        "policy status answered {}",
        policy.status()
    );
    // The console status line comes after the gate and after systemd-bless-boot.
    let line = serial.wait_for(0, "baton-status: host=", STATUS_TIMEOUT_S)?.1;
    let settled_s = boot.elapsed().as_secs_f64();
    ensure!(serial.text().contains("baton-health-gate: passed"), "the gate's marker is missing");
    ensure!(line.contains(&format!("serial={SERIAL}")), "DMI serial wrong: {line}");
    ensure!(line.contains("slot=a"), "not booted from slot A: {line}");
    ensure!(line.contains("gate=active"), "health gate not active: {line}");
    ensure!(line.contains("entries=[slot-a.conf slot-b.conf]"), "slot A not blessed: {line}");
    let upgrade = api.get("/api/v1/upgrade")?;
    ensure!(upgrade["boot_control"] == json!("systemd-boot"), "boot control: {upgrade}");
    ensure!(upgrade["active_slot"] == json!("A"), "{upgrade}");
    ensure!(upgrade["last_boot"] == json!("booted slot A"), "{upgrade}");

    // Peer-local settings through the API, checked inside the guest (same boot).
    let applied = crate::vm_platform::settings_reach_the_guest(
        &client,
        admin_url(),
        &api.token,
        &target.join("vm/peer-1.qga"),
        SERIAL,
        syslog,
    )
    .with_context(|| format!("settings in the guest; serial log {}", serial_log.display()))?;
    eprintln!("vm test: settings seen in the guest after (s): {applied:.1?}");

    // Configuration that must survive both slot changes.
    api.post(
        "/api/v1/bridges",
        &json!({"name": "mcu1", "bridge_type": "mcu", "address": "192.0.2.5",
                "username": "api", "password": "secret", "capacity_ports": 40}),
    )?;

    // Upgrade to the next version: slot B, on trial, then blessed.
    let upload_s = api.upload(&good_image)?;
    let upgrade = api.get("/api/v1/upgrade")?;
    ensure!(
        upgrade["boot_entries"] == json!(["slot-b+3.conf", "slot-a.conf"]),
        "after the install: {upgrade}"
    );
    let (reboot_at, reboot) = (serial.len(), Instant::now());
    api.reboot()?;
    let (_, line) = serial.wait_for(reboot_at, "baton-status: host=", REBOOT_TIMEOUT_S)?;
    let upgrade_boot_s = reboot.elapsed().as_secs_f64();
    ensure!(line.contains("slot=b"), "not booted from slot B: {line}");
    ensure!(line.contains(&format!("version={next}")), "not the new version: {line}");
    ensure!(line.contains("entries=[slot-a.conf slot-b.conf]"), "slot B not blessed: {line}");
    wait_for_api(&client, &serial)?;
    let api = Api::login(&client)?;
    let upgrade = api.get("/api/v1/upgrade")?;
    ensure!(upgrade["running_version"] == json!(next.to_string()), "{upgrade}");
    ensure!(upgrade["active_slot"] == json!("B"), "{upgrade}");
    ensure!(upgrade["last_boot_outcome"] == json!("normal"), "{upgrade}");
    ensure!(api.get("/api/v1/status")?["version"] == json!(next.to_string()), "status version");
    let bridge = api.get("/api/v1/bridges/mcu1")?;
    ensure!(bridge["capacity_ports"] == json!(40), "configuration lost in the upgrade: {bridge}");

    // A broken image (batond cannot start) goes into A; the VM falls back to B by itself.
    let broken_upload_s = api.upload(&broken_image)?;
    let (reboot_at, reboot) = (serial.len(), Instant::now());
    api.reboot()?;
    let (marked_at, _) =
        serial.wait_for(reboot_at, "baton-health-gate: boot marked bad", REBOOT_TIMEOUT_S)?;
    let rejected_s = reboot.elapsed().as_secs_f64();
    let mut from = marked_at;
    let line = loop {
        let (at, line) = serial.wait_for(from, "baton-status: host=", REBOOT_TIMEOUT_S)?;
        if line.contains("slot=b") {
            break line;
        }
        // The failed boot's own status line (slot A, gate failed) may come before the reboot.
        ensure!(line.contains("gate=failed"), "unexpected status line: {line}");
        from = at + 1;
    };
    let fallback_s = reboot.elapsed().as_secs_f64();
    ensure!(line.contains(&format!("version={next}")), "fell back to another version: {line}");
    wait_for_api(&client, &serial)?;
    let api = Api::login(&client)?;
    let upgrade = api.get("/api/v1/upgrade")?;
    ensure!(upgrade["active_slot"] == json!("B"), "{upgrade}");
    ensure!(upgrade["running_version"] == json!(next.to_string()), "{upgrade}");
    ensure!(upgrade["last_boot_outcome"] == json!("fell_back"), "{upgrade}");
    ensure!(upgrade["fell_back"] == json!({"from_slot": "A", "failed_tries": 1}), "{upgrade}");
    ensure!(
        upgrade["last_boot"] == json!("fell back from A after 1 failed try; running B"),
        "{upgrade}"
    );
    let bridge = api.get("/api/v1/bridges/mcu1")?;
    ensure!(bridge["capacity_ports"] == json!(40), "configuration lost in the fallback: {bridge}");
    let events = api.get("/api/v1/logs/events?kind=boot.fell_back")?;
    ensure!(
        events["entries"][0]["message"] == upgrade["last_boot"],
        "the Event Log does not tell of the fallback: {events}"
    );

    // A backup made in this VM restores in it (same hardware serial)...
    let step = Instant::now();
    let archive = api.backup()?;
    let (status, answer) = api.restore(&archive)?;
    ensure!(status == 200, "restoring in the same VM answered {status}: {answer}");
    ensure!(api.get("/api/v1/bridges/mcu1")?["capacity_ports"] == json!(40), "after restore");
    vm.power_off()?;
    let listing = mtools_output(&disk, "mdir", &["-b", "::/loader/entries"])?;
    ensure!(
        listing.contains("slot-b.conf") && listing.contains("slot-a+0-1.conf"),
        "the ESP after power-off: {listing}"
    );

    // ...and is refused by the same disk booted as another machine (another DMI serial).
    let boot = Instant::now();
    let child = Command::new(&cargo)
        .args(["xtask", "vm", "--serial", OTHER_SERIAL, "--disk"])
        .arg(&disk)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .spawn()
        .context("running cargo xtask vm")?;
    let mut vm = Vm::new(child, &target, &serial_log);
    wait_for_api(&client, &serial)?;
    let other_boot_s = boot.elapsed().as_secs_f64();
    let api = Api::login(&client)?;
    let status = api.get("/api/v1/status")?;
    ensure!(status["hardware_serial"] == json!(OTHER_SERIAL), "serial: {status}");
    let (status, answer) = api.restore(&archive)?;
    ensure!(
        status == 422 && answer["error"]["code"] == json!("backup_other_machine"),
        "restoring on another machine answered {status}: {answer}"
    );
    ensure!(api.get("/api/v1/bridges/mcu1")?["capacity_ports"] == json!(40), "refusal changed it");
    vm.power_off()?;
    let backup_s = step.elapsed().as_secs_f64();
    eprintln!(
        "vm test: image {image_s:.1}s, prepare (roots, two upgrade images) {prepare_s:.1}s, \
         boot to admin API {api_ready_s:.1}s, to blessed and settled {settled_s:.1}s, \
         upload {upload_s:.1}s, reboot into B to blessed {upgrade_boot_s:.1}s, \
         broken upload {broken_upload_s:.1}s, broken boot rejected after {rejected_s:.1}s, \
         back on B after {fallback_s:.1}s, backup and restores (with a boot as another \
         machine, {other_boot_s:.1}s to the API) {backup_s:.1}s, total {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The first login of a fresh appliance: the factory password must be changed (to `PASSWORD`).
pub(crate) fn change_factory_password(client: &reqwest::blocking::Client) -> anyhow::Result<()> {
    let login: Value = client
        .post(format!("{}/api/v1/sessions", admin_url()))
        .json(&json!({"username": "admin", "password": "TANDBERG"}))
        .send()?
        .error_for_status()
        .context("logging in with the factory password")?
        .json()?;
    ensure!(login["must_change_password"] == json!(true), "factory password not flagged: {login}");
    let token = login["token"].as_str().context("no token")?.to_owned();
    client
        .post(format!("{}/api/v1/password", admin_url()))
        .bearer_auth(&token)
        .json(&json!({"current_password": "TANDBERG", "new_password": PASSWORD}))
        .send()?
        .error_for_status()
        .context("changing the factory password")?;
    Ok(())
}

/// The admin API of the VM, logged in.
pub(crate) struct Api<'a> {
    client: &'a reqwest::blocking::Client,
    pub(crate) token: String,
}

impl<'a> Api<'a> {
    /// Logs in as an operator would right after a boot: a login that gets no answer in time
    /// (the guest still busy with its boot on a loaded host) is tried again, until
    /// [`API_TIMEOUT_S`]; a refusal ends it at once.
    pub(crate) fn login(client: &'a reqwest::blocking::Client) -> anyhow::Result<Api<'a>> {
        let deadline = Instant::now() + Duration::from_secs(API_TIMEOUT_S);
        let response = loop {
            let sent = client
                .post(format!("{}/api/v1/sessions", admin_url()))
                .json(&json!({"username": "admin", "password": PASSWORD}))
                .send();
            match sent {
                Ok(response) => break response,
                Err(error) if Instant::now() > deadline => {
                    return Err(anyhow::Error::new(error).context("logging in"));
                }
                Err(error) => eprintln!("vm test: login not answered ({error}); trying again"),
            }
        };
        let login: Value = response.error_for_status().context("logging in")?.json()?;
        Ok(Api { client, token: login["token"].as_str().context("no token")?.to_owned() })
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response =
            self.client.get(format!("{}{path}", admin_url())).bearer_auth(&self.token).send()?;
        answer(response, path)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", admin_url()))
            .bearer_auth(&self.token)
            .json(body)
            .send()?;
        answer(response, path)
    }

    /// Streams an upgrade image to the VM; returns the seconds it took.
    fn upload(&self, image: &Path) -> anyhow::Result<f64> {
        let file = std::fs::File::open(image)?;
        let size_bytes = file.metadata()?.len();
        let started = Instant::now();
        let response = self
            .client
            .post(format!("{}/api/v1/upgrade", admin_url()))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(UPLOAD_TIMEOUT_S))
            .body(reqwest::blocking::Body::sized(file, size_bytes))
            .send()?;
        let installed = answer(response, "/api/v1/upgrade")?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "uploaded {} ({} MiB) in {seconds:.1}s: {installed}",
            image.display(),
            size_bytes >> 20
        );
        Ok(seconds)
    }

    /// Downloads a backup of the VM.
    fn backup(&self) -> anyhow::Result<Vec<u8>> {
        let response = self
            .client
            .post(format!("{}/api/v1/backups", admin_url()))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(UPLOAD_TIMEOUT_S))
            .send()?;
        ensure!(response.status().is_success(), "backup answered {}", response.status());
        Ok(response.bytes()?.to_vec())
    }

    /// Restores a backup; the status and the answer, refusals included.
    fn restore(&self, archive: &[u8]) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .post(format!("{}/api/v1/restore", admin_url()))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .timeout(Duration::from_secs(UPLOAD_TIMEOUT_S))
            .body(archive.to_vec())
            .send()?;
        let status = response.status().as_u16();
        Ok((status, response.json().unwrap_or(Value::Null)))
    }

    fn reboot(&self) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/api/v1/upgrade/reboot", admin_url()))
            .bearer_auth(&self.token)
            .send()?;
        ensure!(response.status().as_u16() == 202, "reboot answered {}", response.status());
        Ok(())
    }
}

fn answer(response: reqwest::blocking::Response, path: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    ensure!(status.is_success(), "{path} answered {status}: {body}");
    Ok(body)
}

pub(crate) fn wait_for_api(
    client: &reqwest::blocking::Client,
    serial: &Serial,
) -> anyhow::Result<()> {
    wait_for_api_within(client, serial, API_TIMEOUT_S)
}

/// `wait_for_api` with its own limit (a test that may share a loaded machine).
pub(crate) fn wait_for_api_within(
    client: &reqwest::blocking::Client,
    serial: &Serial,
    timeout_s: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        match client.get(format!("{}/api/v1/health", admin_url())).send() {
            Ok(response) if response.status().is_success() => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("no admin API within {timeout_s} s; see {}", serial.path.display())
            }
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// The VM's serial console log, which grows across reboots (each a new qemu appending to it).
pub(crate) struct Serial {
    pub(crate) path: PathBuf,
}

impl Serial {
    fn text(&self) -> String {
        std::fs::read(&self.path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.text().len()
    }

    /// The first line holding `marker` that starts at or after byte `from`: its offset and text.
    fn wait_for(
        &self,
        from: usize,
        marker: &str,
        timeout_s: u64,
    ) -> anyhow::Result<(usize, String)> {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        loop {
            let text = self.text();
            if let Some(tail) = text.get(from..)
                && let Some(found) = tail.find(marker)
            {
                let at = from + found;
                let line = text[at..].lines().next().unwrap_or_default().to_owned();
                return Ok((at, line));
            }
            if Instant::now() > deadline {
                bail!("no {marker:?} within {timeout_s} s; see {}", self.path.display());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// `cargo xtask upgrade-image` of a root file system (it stamps the version into a copy).
pub(crate) fn upgrade_image(
    cargo: &std::ffi::OsStr,
    workspace: &Path,
    key: &Path,
    payload: &Path,
    version: &upgrade::Version,
    out: &Path,
) -> anyhow::Result<()> {
    let status = Command::new(cargo)
        .args(["xtask", "upgrade-image", "--key"])
        .arg(key)
        .arg("--payload")
        .arg(payload)
        .args(["--version", &version.to_string(), "--arch", std::env::consts::ARCH])
        .args(["--min-from", "0.0.0", "--out"])
        .arg(out)
        .current_dir(workspace)
        .status()
        .context("running cargo xtask upgrade-image")?;
    ensure!(status.success(), "cargo xtask upgrade-image failed ({status})");
    Ok(())
}

/// A throwaway release key (outside the repository), and a copy of the image's disk whose
/// slot A trusts it (through `/etc/default/batond`), so no release build with a test key is
/// needed.
pub(crate) struct TrustingDisk {
    /// Holds the private key; removed when dropped.
    pub(crate) keys: tempfile::TempDir,
    pub(crate) private_key: PathBuf,
    /// Slot A's root file system (squashfs), the payload to sign upgrades with.
    pub(crate) root: PathBuf,
    /// The raw disk.
    pub(crate) disk: PathBuf,
}

/// `/etc/default/batond`'s line that trusts the throwaway key.
pub(crate) fn trusted_keys_setting() -> String {
    format!("BATON_UPGRADE_TRUSTED_KEYS_FILE={TEST_KEY_IN_GUEST}\n")
}

/// Makes a [`TrustingDisk`] in `dir` from the built image under `target`.
pub(crate) fn trusting_disk(target: &Path, dir: &Path) -> anyhow::Result<TrustingDisk> {
    std::fs::create_dir_all(dir)?;
    let keys = tempfile::tempdir()?;
    let key = upgrade::generate_signing_key()?;
    let private_key = keys.path().join("test-release.key");
    std::fs::write(&private_key, upgrade::signing_key_to_text(&key))?;
    let public_key = upgrade::public_key_to_text(&key.verifying_key());
    let root = dir.join("root-test.squashfs");
    squashfs_with(
        &target.join("image/baton-root.squashfs"),
        &root,
        &[(TEST_KEY_IN_GUEST, &public_key), ("/etc/default/batond", &trusted_keys_setting())],
    )?;
    let disk = dir.join("disk.raw");
    let _ = std::fs::remove_file(&disk);
    tool(Command::new("cp").arg("--sparse=always").arg(target.join("image/baton.raw")).arg(&disk))?;
    tool(
        Command::new("dd")
            .arg(format!("if={}", root.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=1M",
                &format!("seek={SLOT_A_OFFSET_MIB}"),
                "conv=notrunc,sparse",
                "status=none",
            ]),
    )?;
    Ok(TrustingDisk { keys, private_key, root, disk })
}

/// A copy of the squashfs root `from` at `to` with files added or replaced: `(path in the
/// image, contents)`. Unpacked and packed again (as root, which keeps the owners); a fast
/// compression level, as only this machine reads it.
pub(crate) fn squashfs_with(from: &Path, to: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir_in(to.parent().context("no folder")?)?;
    let tree = scratch.path().join("tree");
    tool(
        Command::new("unsquashfs").args(["-no-progress", "-quiet", "-dest"]).arg(&tree).arg(from),
    )?;
    for (path, contents) in files {
        let file = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().context("no folder")?)?;
        std::fs::write(&file, contents)?;
    }
    let _ = std::fs::remove_file(to);
    tool(Command::new("mksquashfs").arg(&tree).arg(to).args([
        "-comp",
        "zstd",
        "-Xcompression-level",
        "3",
        "-noappend",
        "-quiet",
        "-no-progress",
    ]))?;
    for (path, contents) in files {
        let read = Command::new("unsquashfs").arg("-cat").arg(to).arg(path).output()?;
        ensure!(read.stdout == contents.as_bytes(), "{path} did not land in {}", to.display());
    }
    Ok(())
}

/// The running `cargo xtask vm`; powers the guest off through QMP, or quits qemu on drop.
pub(crate) struct Vm {
    child: Option<Child>,
    qemu: Qemu,
    serial_log: PathBuf,
}

impl Vm {
    pub(crate) fn new(child: Child, target: &Path, serial_log: &Path) -> Vm {
        Vm { child: Some(child), qemu: Qemu::of_peer(target, 1), serial_log: serial_log.to_owned() }
    }

    /// Pulls the plug: SIGKILL to qemu, so the guest gets no shutdown and its RAM (page cache
    /// included) is gone; what reached the disk file stays. Waits for `cargo xtask vm` to end.
    pub(crate) fn power_cut(&mut self) -> anyhow::Result<()> {
        self.qemu.kill()?;
        let mut child = self.child.take().context("already stopped")?;
        let _ = child.wait()?; // it fails: its qemu died
        Ok(())
    }

    pub(crate) fn power_off(&mut self) -> anyhow::Result<()> {
        qmp(&self.qemu.qmp, "system_powerdown")?;
        let deadline = Instant::now() + Duration::from_secs(POWER_OFF_TIMEOUT_S);
        let child = self.child.as_mut().context("already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.success(),
                    "cargo xtask vm ended with {status}; see {}",
                    self.serial_log.display()
                );
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the VM did not power off within {POWER_OFF_TIMEOUT_S} s; see {}",
                    self.serial_log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // qemu is cargo's grandchild: killing cargo would leave it running.
            quit_or_kill(&mut [child], std::slice::from_ref(&self.qemu));
        }
    }
}

/// One qemu that `cargo xtask vm` started: its QMP socket and its `-pidfile`.
pub(crate) struct Qemu {
    pub(crate) qmp: PathBuf,
    pid_file: PathBuf,
}

impl Qemu {
    /// Peer `n`'s, under `<target>/vm`.
    pub(crate) fn of_peer(target: &Path, n: u8) -> Qemu {
        let dir = target.join("vm");
        Qemu { qmp: dir.join(format!("peer-{n}.qmp")), pid_file: dir.join(format!("peer-{n}.pid")) }
    }

    /// Pulls the plug: SIGKILL, if the pid file's process still is this qemu (a pid file
    /// outlives a killed qemu, and its number may belong to another process by now).
    pub(crate) fn kill(&self) -> anyhow::Result<()> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .with_context(|| format!("reading {}", self.pid_file.display()))?
            .trim()
            .parse()
            .context("qemu's pid file")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let mut arguments = cmdline.split('\0');
        let is_qemu = arguments.next().is_some_and(|program| program.contains("qemu-system"));
        // `cargo xtask vm` may name the file by another path to the same place.
        let file_name = self.pid_file.file_name().and_then(|name| name.to_str()).unwrap_or("?");
        let named = is_qemu && arguments.any(|argument| argument.ends_with(file_name));
        ensure!(named, "process {pid} is no longer the qemu of {}", self.pid_file.display());
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
        Ok(())
    }
}

/// How long VMs told to quit get before their qemus are killed.
const QUIT_TIMEOUT_S: u64 = 30;

/// Tells `qemus` to quit (QMP) and waits for `children` (each a `cargo xtask vm`) to end;
/// never hangs: after [`QUIT_TIMEOUT_S`], the qemus are killed (one that does not answer QMP,
/// or a stale QMP socket), and the children with them.
pub(crate) fn quit_or_kill(children: &mut [Child], qemus: &[Qemu]) {
    for qemu in qemus {
        let _ = qmp(&qemu.qmp, "quit");
    }
    let deadline = Instant::now() + Duration::from_secs(QUIT_TIMEOUT_S);
    let running = |children: &mut [Child]| {
        children.iter_mut().any(|child| matches!(child.try_wait(), Ok(None)))
    };
    while running(children) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if running(children) {
        println!("the VMs did not quit within {QUIT_TIMEOUT_S} s: killed");
        for qemu in qemus {
            let _ = qemu.kill();
        }
        for child in children.iter_mut() {
            let _ = child.kill();
        }
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}

/// Sends one QMP command (after the capabilities handshake) and reads its answer.
pub(crate) fn qmp(socket: &Path, command: &str) -> anyhow::Result<()> {
    qmp_answer(socket, command).map(drop)
}

/// Runs one QMP `command` (no arguments) and returns qemu's answer line.
pub(crate) fn qmp_answer(socket: &Path, command: &str) -> anyhow::Result<String> {
    let stream =
        UnixStream::connect(socket).with_context(|| format!("connecting {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    for execute in ["qmp_capabilities", command] {
        writeln!(writer, "{}", json!({ "execute": execute }))?;
        // Events (a guest's STOP, RESET …) may come before the command's answer.
        for _ in 0..QMP_EVENTS_SKIPPED_MAX {
            line.clear();
            reader.read_line(&mut line)?;
            if !line.contains("\"event\"") {
                break;
            }
        }
    }
    Ok(line.trim_end().to_owned())
}

/// Events read past while waiting for one QMP answer.
const QMP_EVENTS_SKIPPED_MAX: usize = 16;

fn mtools(disk: &Path, tool_name: &str, args: &[&str]) -> anyhow::Result<()> {
    mtools_output(disk, tool_name, args).map(drop)
}

fn mtools_output(disk: &Path, tool_name: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(tool_name)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{ESP_OFFSET}", disk.display()))
        .args(args)
        .output()
        .with_context(|| format!("running {tool_name}"))?;
    ensure!(
        output.status.success(),
        "{tool_name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn tool(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}
