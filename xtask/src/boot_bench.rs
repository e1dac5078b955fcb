//! `cargo xtask bench boot`: how long the appliance takes from qemu's start until the policy
//! service is ready, beside the same disk with Baton's units masked (a bare Debian boot of the
//! same root file system), in the same run; and the image's sizes.
//!
//! Each boot is a copy of `<target>/image/baton.raw` started with `cargo xtask vm --disk` (this
//! xtask binary, not cargo, so no build check is timed). Ready is read from the serial console:
//! Baton's health gate prints `baton-health-gate: passed` once batond answers over HTTPS on the
//! listener that serves the VCS (it probes every 0.5 s, so the figure may be up to 0.5 s late);
//! both boots are also timed to the serial console's login prompt. The times include qemu's
//! own start (and, where `/dev/kvm` opens but guests do not run, `cargo xtask vm`'s KVM trial). The bare boot masks
//! `batond`, the health gate and the console status through the kernel command line
//! (`systemd.mask=`) of its boot entry, so both boot the very same files.

use crate::image::{self, run};
use crate::target_dir;
use anyhow::{Context, bail};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a boot may take under TCG on a loaded machine before the bench gives up.
const BOOT_TIMEOUT_S: u64 = 600;
/// How often the serial log is read.
const POLL_MS: u64 = 100;
/// The ESP's offset in the disk (image/README.md): mtools edits it in place.
const ESP_OFFSET: &str = "1M";
/// The units a bare boot leaves out.
const BATON_UNITS: &[&str] =
    &["batond.service", "baton-health-gate.service", "baton-console-status.service"];
const GATE_PASSED: &str = "baton-health-gate: passed";
/// What the guest is asked to print on its serial console once Baton is ready and the boot
/// finished (through qemu-guest-agent), between two markers: where the boot's time went.
const ANALYSIS_SCRIPT: &str = "exec >/dev/ttyS0 2>&1; systemctl is-system-running --wait; \
    echo baton-bench-analysis-begin; systemd-analyze; systemd-analyze critical-chain batond.service baton-health-gate.service; \
    systemd-analyze blame | head -n 15; echo baton-bench-analysis-end";
const ANALYSIS_BEGIN: &str = "baton-bench-analysis-begin";
const ANALYSIS_END: &str = "baton-bench-analysis-end";
/// How long the analysis may take to appear (systemd-analyze is slow under TCG).
const ANALYSIS_TIMEOUT_S: u64 = 120;
const LOGIN_PROMPT: &str = " login:";

struct Boot {
    name: &'static str,
    ready_s: Option<f64>,
    login_s: f64,
    /// systemd-analyze's view from inside the guest (Baton's boot only).
    analysis: Option<String>,
}

pub(crate) fn boot() -> anyhow::Result<()> {
    image::image()?;
    let paths = image::paths();
    let dir = target_dir().join("bench-boot");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut boots = Vec::new();
    for (name, bare) in [("bare Debian (Baton's units masked)", true), ("Baton", false)] {
        let disk = dir.join(if bare { "bare.raw" } else { "baton.raw" });
        let _ = fs::remove_file(&disk);
        run(
            Command::new("cp").arg("--sparse=always").arg(&paths.raw).arg(&disk),
            "cp (disk copy)",
        )?;
        if bare {
            mask_baton(&dir, &disk)?;
        }
        println!("booting: {name}");
        boots.push(measure(name, &disk, !bare)?);
    }

    println!();
    println!(
        "{:<38} {:>22} {:>18}",
        "boot (qemu TCG, from qemu start)", "policy ready (s)", "login prompt (s)"
    );
    for boot in &boots {
        let ready = boot.ready_s.map_or("-".to_owned(), |s| format!("{s:.1}"));
        println!("{:<38} {:>22} {:>18.1}", boot.name, ready, boot.login_s);
    }
    for boot in &boots {
        if let Some(analysis) = &boot.analysis {
            println!();
            println!("where {}'s boot went (systemd-analyze in the guest):", boot.name);
            println!("{}", analysis.replace('\r', "").trim_end());
        }
    }
    if let [bare, baton] = boots.as_slice()
        && let Some(ready_s) = baton.ready_s
    {
        println!(
            "ratio: Baton policy-ready / bare Debian login prompt = {:.2}; login prompts {:.2}",
            ready_s / bare.login_s,
            baton.login_s / bare.login_s
        );
    }
    let raw = fs::metadata(&paths.raw).context("reading the raw image")?;
    let qcow2 = fs::metadata(&paths.qcow2).context("reading the qcow2 image")?;
    use std::os::unix::fs::MetadataExt;
    println!(
        "image sizes: raw {} MiB ({} MiB allocated), qcow2 {} MiB, slot payload {} MiB",
        raw.len() >> 20,
        (raw.blocks() * 512) >> 20,
        qcow2.len() >> 20,
        fs::metadata(&paths.root_fs).map(|m| m.len() >> 20).unwrap_or(0)
    );
    Ok(())
}

/// Adds `systemd.mask=` for Baton's units to slot A's boot entry on the disk's ESP.
fn mask_baton(dir: &Path, disk: &Path) -> anyhow::Result<()> {
    let esp = format!("{}@@{ESP_OFFSET}", disk.display());
    let entry = "::/loader/entries/slot-a.conf";
    let output = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &esp, entry])
        .output()
        .context("running mtype (is mtools installed?)")?;
    anyhow::ensure!(output.status.success(), "mtype {entry} failed");
    let masks: Vec<String> =
        BATON_UNITS.iter().map(|unit| format!("systemd.mask={unit}")).collect();
    let text: String = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            if line.starts_with("options") {
                format!("{line} {}\n", masks.join(" "))
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let edited = dir.join("slot-a.conf");
    fs::write(&edited, text).context("writing the edited boot entry")?;
    run(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i", &esp])
            .arg(&edited)
            .arg(entry),
        "mcopy (boot entry)",
    )
}

/// Boots `disk`, waits for the markers on the serial console, then quits qemu.
fn measure(name: &'static str, disk: &Path, expect_ready: bool) -> anyhow::Result<Boot> {
    let vm_dir = target_dir().join("vm");
    let serial = vm_dir.join("peer-1-serial.log");
    let qmp = vm_dir.join("peer-1.qmp");
    let _ = fs::remove_file(&serial);
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().context("locating xtask")?)
        .arg("vm")
        .arg("--disk")
        .arg(disk)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting cargo xtask vm")?;
    let deadline = started + Duration::from_secs(BOOT_TIMEOUT_S);
    let mut ready_s = None;
    let mut login_s = None;
    let outcome = loop {
        let text = fs::read_to_string(&serial).unwrap_or_default();
        if ready_s.is_none() && text.contains(GATE_PASSED) {
            ready_s = Some(started.elapsed().as_secs_f64());
        }
        if login_s.is_none() && text.contains(LOGIN_PROMPT) {
            login_s = Some(started.elapsed().as_secs_f64());
        }
        if let Some(login_s) = login_s
            && (ready_s.is_some() || !expect_ready)
        {
            break Ok(login_s);
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "{name}: the VM stopped ({status}) before its login prompt{}; see {}",
                if expect_ready { " and the health gate's pass" } else { "" },
                serial.display()
            ));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "{name}: no login prompt{} on the serial console within {BOOT_TIMEOUT_S} s; see {}",
                if expect_ready { " and health gate pass" } else { "" },
                serial.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    };
    let analysis = match &outcome {
        Ok(_) if expect_ready => match analyse(&vm_dir.join("peer-1.qga"), &serial) {
            Ok(text) => Some(text),
            Err(error) => Some(format!("(no analysis: {error:#})")),
        },
        _ => None,
    };
    // Either way, qemu goes: it is the vm task's child, which waits for it and exits.
    let _ = quit(&qmp);
    let _ = child.wait();
    let login_s = outcome?;
    if expect_ready && ready_s.is_none() {
        bail!("{name}: no health gate pass on the console; see {}", serial.display());
    }
    Ok(Boot { name, ready_s, login_s, analysis })
}

/// Asks the guest (through qemu-guest-agent) to print systemd-analyze's timings on its serial
/// console, and returns them.
fn analyse(agent: &Path, serial: &Path) -> anyhow::Result<String> {
    let stream = UnixStream::connect(agent).context("connecting to the guest agent")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let command = serde_json::json!({
        "execute": "guest-exec",
        "arguments": {"path": "/bin/sh", "arg": ["-c", ANALYSIS_SCRIPT]},
    });
    writeln!(writer, "{command}")?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    anyhow::ensure!(answer.contains("\"return\""), "the guest agent answered {answer:?}");
    let deadline = Instant::now() + Duration::from_secs(ANALYSIS_TIMEOUT_S);
    loop {
        let text = fs::read_to_string(serial).unwrap_or_default();
        if let Some((_, after)) = text.rsplit_once(ANALYSIS_BEGIN)
            && let Some((analysis, _)) = after.split_once(ANALYSIS_END)
        {
            return Ok(analysis.to_owned());
        }
        anyhow::ensure!(Instant::now() < deadline, "no analysis within {ANALYSIS_TIMEOUT_S} s");
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// Tells qemu to quit at once through QMP (the disks are throwaway copies).
fn quit(socket: &Path) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    for execute in ["qmp_capabilities", "quit"] {
        writeln!(writer, "{{\"execute\": \"{execute}\"}}")?;
        line.clear();
        reader.read_line(&mut line)?;
    }
    Ok(())
}
