//! The appliance image booted under qemu (slow: only with `BATON_SLOW_TESTS=1`, which
//! `cargo xtask test --slow` and `.ci/run` set). Builds the image with `cargo xtask image` (the
//! rootfs is cached), copies the raw disk, puts slot A on trial as an upgrade would (its entry
//! renamed `slot-a+3.conf`), boots it with `cargo xtask vm --disk`, and checks: the admin API
//! answers over the forwarded port, the factory admin logs in and must change the password,
//! the policy status path answers, the DMI serial is the one qemu gave, the health gate ran and
//! the entry was blessed (serial console, and the ESP read back after power-off), and that
//! peer-local settings changed through the API change the guest OS (`vm_platform.rs`).

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The VM's forwarded admin API: `cargo xtask vm` puts peer 1 at 127.0.0.2, or at
/// 127.0.0.<1 + BATON_VM_HOST_OFFSET> when two checkouts boot VMs on one machine.
fn admin_url() -> String {
    let offset = std::env::var("BATON_VM_HOST_OFFSET")
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|offset| (1..=250).contains(offset))
        .unwrap_or(1);
    format!("https://127.0.0.{}:8443", 1 + offset)
}
const SERIAL: &str = "BATON-VM-1";
/// The ESP's offset in the disk (image/README.md): mtools reads it in place.
const ESP_OFFSET: &str = "1M";
const API_TIMEOUT_S: u64 = 180;
const STATUS_TIMEOUT_S: u64 = 180;
const POWER_OFF_TIMEOUT_S: u64 = 90;

#[test]
fn appliance_boots_answers_and_blesses_its_slot() -> anyhow::Result<()> {
    if std::env::var_os("BATON_SLOW_TESTS").is_none() {
        eprintln!("skipped: the VM test runs with BATON_SLOW_TESTS=1 (cargo xtask test --slow)");
        return Ok(());
    }
    let started = Instant::now();
    let admin_url = admin_url();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let status = Command::new(&cargo)
        .args(["xtask", "image"])
        .current_dir(workspace)
        .status()
        .context("running cargo xtask image")?;
    ensure!(status.success(), "cargo xtask image failed ({status})");
    let image_s = started.elapsed().as_secs_f64();

    let dir = target.join("vm-test");
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.raw");
    let _ = std::fs::remove_file(&disk);
    tool(Command::new("cp").arg("--sparse=always").arg(target.join("image/baton.raw")).arg(&disk))?;
    // As an upgrade leaves a new slot: on trial with three tries.
    mtools(&disk, "mren", &["::/loader/entries/slot-a.conf", "::/loader/entries/slot-a+3.conf"])?;

    let serial_log = target.join("vm/peer-1-serial.log");
    let _ = std::fs::remove_file(&serial_log);
    let boot = Instant::now();
    let child = Command::new(&cargo)
        .args(["xtask", "vm", "--disk"])
        .arg(&disk)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .spawn()
        .context("running cargo xtask vm")?;
    let mut vm = Vm { child: Some(child), qmp: target.join("vm/peer-1.qmp") };

    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        // The appliance's CA is made inside the guest on first start; the test cannot know it.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(API_TIMEOUT_S);
    loop {
        match client.get(format!("{admin_url}/api/v1/openapi.json")).send() {
            Ok(response) if response.status().is_success() => break,
            _ if Instant::now() > deadline => {
                bail!("no admin API within {API_TIMEOUT_S} s; see {}", serial_log.display())
            }
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    }
    let api_ready_s = boot.elapsed().as_secs_f64();

    let login: Value = client
        .post(format!("{admin_url}/api/v1/sessions"))
        .json(&json!({"username": "admin", "password": "TANDBERG"}))
        .send()?
        .error_for_status()
        .context("logging in with the factory password")?
        .json()?;
    ensure!(login["must_change_password"] == json!(true), "factory password not flagged: {login}");
    let token = login["token"].as_str().context("no token")?.to_owned();
    client
        .post(format!("{admin_url}/api/v1/password"))
        .bearer_auth(&token)
        .json(&json!({"current_password": "TANDBERG", "new_password": "vm test password 7"}))
        .send()?
        .error_for_status()
        .context("changing the factory password")?;
    let login: Value = client
        .post(format!("{admin_url}/api/v1/sessions"))
        .json(&json!({"username": "admin", "password": "vm test password 7"}))
        .send()?
        .error_for_status()?
        .json()?;
    let token = login["token"].as_str().context("no token")?.to_owned();
    let status: Value = client
        .get(format!("{admin_url}/api/v1/status"))
        .bearer_auth(&token)
        .send()?
        .error_for_status()?
        .json()?;
    ensure!(status["product"] == json!("Baton"), "unexpected status: {status}");
    if let Some(serial) = status.get("hardware_serial") {
        ensure!(serial == &json!(SERIAL), "API hardware serial {serial}, want {SERIAL}");
    }
    // 200 when configured, 503 with the reason when not: either way the path answers.
    let policy = client.get(format!("{admin_url}/baton/policy/status")).send()?;
    ensure!(
        policy.status().as_u16() == 200 || policy.status().as_u16() == 503,
        "policy status answered {}",
        policy.status()
    );

    // The console status line comes after the gate and after systemd-bless-boot.
    let deadline = Instant::now() + Duration::from_secs(STATUS_TIMEOUT_S);
    let line = loop {
        let text = std::fs::read_to_string(&serial_log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains("baton-status: host=")) {
            ensure!(
                text.contains("baton-health-gate: passed"),
                "the health gate's marker is missing from {}",
                serial_log.display()
            );
            break line.to_owned();
        }
        if Instant::now() > deadline {
            bail!("no console status within {STATUS_TIMEOUT_S} s; see {}", serial_log.display());
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let settled_s = boot.elapsed().as_secs_f64();
    ensure!(line.contains(&format!("serial={SERIAL}")), "DMI serial wrong: {line}");
    ensure!(line.contains("slot=a"), "not booted from slot A: {line}");
    ensure!(line.contains("gate=active"), "health gate not active: {line}");
    ensure!(line.contains("entries=[slot-a.conf slot-b.conf]"), "slot A not blessed: {line}");

    // Peer-local settings through the API, checked inside the guest (same boot).
    let applied = crate::vm_platform::settings_reach_the_guest(
        &client,
        &admin_url,
        &token,
        &target.join("vm/peer-1.qga"),
        SERIAL,
    )?;
    eprintln!("vm test: settings seen in the guest after (s): {applied:.1?}");

    vm.power_off()?;
    let listing = mtools_output(&disk, "mdir", &["-b", "::/loader/entries"])?;
    ensure!(
        listing.contains("slot-a.conf") && !listing.contains("slot-a+"),
        "the ESP after power-off does not hold a blessed slot-a.conf: {listing}"
    );
    eprintln!(
        "vm test: image {image_s:.1}s, boot to admin API {api_ready_s:.1}s, to blessed and settled {settled_s:.1}s, total {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The running `cargo xtask vm`; powers the guest off through QMP, or quits qemu on drop.
struct Vm {
    child: Option<Child>,
    qmp: PathBuf,
}

impl Vm {
    fn power_off(&mut self) -> anyhow::Result<()> {
        qmp(&self.qmp, "system_powerdown")?;
        let deadline = Instant::now() + Duration::from_secs(POWER_OFF_TIMEOUT_S);
        let child = self.child.as_mut().context("already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "cargo xtask vm ended with {status}");
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the VM did not power off within {POWER_OFF_TIMEOUT_S} s");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // qemu is cargo's grandchild: killing cargo would leave it running.
            let _ = qmp(&self.qmp, "quit");
            let _ = child.wait();
        }
    }
}

/// Sends one QMP command (after the capabilities handshake) and reads its answer.
fn qmp(socket: &Path, command: &str) -> anyhow::Result<()> {
    let stream =
        UnixStream::connect(socket).with_context(|| format!("connecting {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    for execute in ["qmp_capabilities", command] {
        writeln!(writer, "{}", json!({ "execute": execute }))?;
        line.clear();
        reader.read_line(&mut line)?;
    }
    Ok(())
}

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

fn tool(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}
