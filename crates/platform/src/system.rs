//! The real [`Platform`]: files under a root directory (`/` on the appliance, a temporary
//! directory in tests) and commands through a [`Runner`] (the running system's `systemctl`,
//! `hostnamectl`, …; a scripted fake in tests).
//!
//! A file is replaced atomically (written aside, then renamed) and only when its content
//! differs. When the command that makes a change take effect fails, the file's previous
//! content is put back, so the next apply sees a difference and tries again.

use crate::nic::{self, NetworkTarget};
use crate::render;
use crate::{Concern, Outcome, Platform, PlatformError, Settings};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one command may take (a service restart included) before it counts as failed.
pub const COMMAND_TIMEOUT_MS: u64 = 60_000;
/// How often a running command is checked for completion.
const COMMAND_POLL_MS: u64 = 20;
/// At most this much of a failed command's output goes into the error message.
const COMMAND_DETAIL_BYTES_MAX: usize = 512;
/// Password hash schemes the OS's crypt(3) (libxcrypt) reads: yescrypt, gost-yescrypt,
/// SHA-512-crypt, SHA-256-crypt.
const CRYPT_PREFIXES: &[&str] = &["$y$", "$gy$", "$6$", "$5$"];

/// What a command printed and how it ended.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct CommandOutput {
    pub success: bool,
    /// "exit status 1", "signal 9", … for messages.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a program to completion. `stdin` is handed to the program and never shown anywhere.
pub trait Runner: Send + Sync + std::fmt::Debug {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, PlatformError>;
}

/// Runs commands as processes, each under an optional prefix. On the appliance the prefix is
/// `systemd-run --wait --pipe …`: batond's own sandbox cannot write `/etc/shadow` or restart
/// services, and a transient unit runs outside it.
#[derive(Clone, Debug)]
pub struct ProcessRunner {
    prefix: Vec<String>,
    timeout_ms: u64,
}

impl ProcessRunner {
    /// Runs each command directly.
    pub fn direct() -> ProcessRunner {
        ProcessRunner { prefix: Vec::new(), timeout_ms: COMMAND_TIMEOUT_MS }
    }

    /// Runs each command as `prefix… program args…`.
    pub fn with_prefix(prefix: Vec<String>) -> ProcessRunner {
        ProcessRunner { prefix, timeout_ms: COMMAND_TIMEOUT_MS }
    }

    /// Runs each command in a transient systemd service, outside the caller's sandbox, and
    /// waits for it; its exit status and output come back as if run directly.
    pub fn systemd_run() -> ProcessRunner {
        ProcessRunner::with_prefix(
            [
                "systemd-run",
                "--wait",
                "--pipe",
                "--quiet",
                "--collect",
                "--service-type=exec",
                "--",
            ]
            .map(str::to_owned)
            .to_vec(),
        )
    }
}

impl Runner for ProcessRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, PlatformError> {
        let shown = show(program, args);
        let mut words = self.prefix.iter().map(String::as_str).chain([program]);
        let first = words.next().unwrap_or(program);
        let mut child = Command::new(first)
            .args(words)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PlatformError::Spawn { command: shown.clone(), source })?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Dropping the pipe afterwards closes it, so the program sees the end of input.
            pipe.write_all(bytes)
                .map_err(|source| PlatformError::Spawn { command: shown.clone(), source })?;
        }
        // Read both pipes on their own threads: a program filling one would otherwise block.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = drain(child.stdout.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>));
        let stderr = drain(child.stderr.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>));
        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(COMMAND_POLL_MS))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(PlatformError::Timeout {
                        command: shown,
                        timeout_ms: self.timeout_ms,
                    });
                }
                Err(source) => return Err(PlatformError::Spawn { command: shown, source }),
            }
        };
        Ok(CommandOutput {
            success: status.success(),
            status: status.to_string(),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

fn show(program: &str, args: &[&str]) -> String {
    std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ")
}

/// The real platform. `network_target` selects the NIC(s) the IPv4 settings configure
/// (`nic.rs`: the cluster NIC by the appliance's rule, or fixed `[Match]` lines).
#[derive(Debug)]
pub struct SystemPlatform {
    root: PathBuf,
    runner: Box<dyn Runner>,
    network_target: NetworkTarget,
    /// One concern at a time: two applies racing on the same file would undo each other.
    applying: Mutex<()>,
}

/// What [`SystemPlatform::replace`] found before writing: `None` when the file did not exist.
type Previous = Option<Vec<u8>>;

impl SystemPlatform {
    pub fn new(
        root: PathBuf,
        runner: Box<dyn Runner>,
        network_target: NetworkTarget,
    ) -> SystemPlatform {
        SystemPlatform { root, runner, network_target, applying: Mutex::new(()) }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, PlatformError> {
        match fs::read(self.path(relative)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PlatformError::Read { path: shown_path(relative), source }),
        }
    }

    /// Writes `content` unless the file already holds it; `Some(previous)` when it wrote.
    fn replace(
        &self,
        outcome: &mut Outcome,
        relative: &str,
        content: &str,
        mode: u32,
    ) -> Result<Option<Previous>, PlatformError> {
        let previous = self.read(relative)?;
        let path = self.path(relative);
        let mode_now = fs::metadata(&path).ok().map(|m| m.permissions().mode() & 0o7777);
        if previous.as_deref() == Some(content.as_bytes()) && mode_now == Some(mode) {
            return Ok(None);
        }
        write_atomically(&path, content.as_bytes(), mode)
            .map_err(|source| PlatformError::Write { path: shown_path(relative), source })?;
        outcome.files.push(shown_path(relative));
        Ok(Some(previous))
    }

    /// Removes the file if it exists; `Some(previous)` when it did.
    fn remove(
        &self,
        outcome: &mut Outcome,
        relative: &str,
    ) -> Result<Option<Previous>, PlatformError> {
        let Some(previous) = self.read(relative)? else { return Ok(None) };
        fs::remove_file(self.path(relative))
            .map_err(|source| PlatformError::Write { path: shown_path(relative), source })?;
        outcome.files.push(shown_path(relative));
        Ok(Some(Some(previous)))
    }

    /// Writes `content`, or removes the file for `None`.
    fn converge(
        &self,
        outcome: &mut Outcome,
        relative: &str,
        content: Option<String>,
        mode: u32,
    ) -> Result<Option<Previous>, PlatformError> {
        match content {
            Some(content) => self.replace(outcome, relative, &content, mode),
            None => self.remove(outcome, relative),
        }
    }

    /// Puts a file back as it was before a change whose command failed (best effort: the
    /// command's error is the one reported).
    fn restore(&self, relative: &str, previous: Previous) {
        let path = self.path(relative);
        let _ = match previous {
            Some(bytes) => write_atomically(&path, &bytes, 0o644),
            None => fs::remove_file(&path),
        };
    }

    /// Runs a command that changes the system; a failure is an error naming it.
    fn change(
        &self,
        outcome: &mut Outcome,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<(), PlatformError> {
        let command = show(program, args);
        outcome.commands.push(command.clone());
        let output = self.runner.run(program, args, stdin)?;
        if output.success {
            return Ok(());
        }
        let mut detail =
            if output.stderr.trim().is_empty() { output.stdout } else { output.stderr };
        detail = detail.trim().to_owned();
        if detail.len() > COMMAND_DETAIL_BYTES_MAX {
            let mut end = COMMAND_DETAIL_BYTES_MAX;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        if detail.is_empty() {
            detail = "no output".to_owned();
        }
        Err(PlatformError::Command { command, status: output.status, detail })
    }

    /// Runs a file change's follow-up command; restores the file if the command fails.
    fn change_after(
        &self,
        outcome: &mut Outcome,
        written: Option<Previous>,
        relative: &str,
        program: &str,
        args: &[&str],
    ) -> Result<(), PlatformError> {
        let Some(previous) = written else { return Ok(()) };
        self.change(outcome, program, args, None).inspect_err(|_| self.restore(relative, previous))
    }

    /// Asks the system a question (`systemctl is-active …`): the first word it printed.
    fn query(&self, program: &str, args: &[&str]) -> Result<String, PlatformError> {
        let output = self.runner.run(program, args, None)?;
        Ok(output.stdout.split_whitespace().next().unwrap_or_default().to_owned())
    }

    /// Whether a unit is (enabled, active) right now.
    fn unit_state(&self, unit: &str) -> Result<(bool, bool), PlatformError> {
        let enabled = self.query("systemctl", &["is-enabled", unit])? == "enabled";
        let active = self.query("systemctl", &["is-active", unit])? == "active";
        Ok((enabled, active))
    }

    fn host_name(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let (Some(name), Some(hostname)) = (&settings.system_name, render::hostname(settings))
        else {
            return Ok(());
        };
        let hosts_now = self.read(render::HOSTS)?.unwrap_or_default();
        let hosts = render::hosts(settings, &String::from_utf8_lossy(&hosts_now));
        let before = self.read(render::HOSTNAME)?;
        if before.as_deref() != Some(hostname.as_bytes()) {
            // hostnamectl writes /etc/hostname itself and sets the kernel's name at once; the
            // file is then written by us too, so a root directory other than / gets it.
            self.change(outcome, "hostnamectl", &["set-hostname", &name.host_name], None)?;
            self.replace(outcome, render::HOSTNAME, &hostname, 0o644)?;
        }
        if let Some(hosts) = hosts {
            self.replace(outcome, render::HOSTS, &hosts, 0o644)?;
        }
        Ok(())
    }

    fn network(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let network_match = nic::match_lines(&self.network_target, &self.root);
        let content = render::network(settings, &network_match);
        let written = self.converge(outcome, render::NETWORK, content, 0o644)?;
        // Since systemd 245 a reload also reconfigures the links whose .network file changed.
        self.change_after(outcome, written, render::NETWORK, "networkctl", &["reload"])
    }

    fn dns(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        if let Some(content) = render::resolv_conf(settings) {
            self.replace(outcome, render::RESOLV_CONF, &content, 0o644)?;
        }
        Ok(())
    }

    fn ntp(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let written =
            self.converge(outcome, render::TIMESYNCD, render::timesyncd(settings), 0o644)?;
        self.change_after(
            outcome,
            written,
            render::TIMESYNCD,
            "systemctl",
            &["restart", "systemd-timesyncd.service"],
        )
    }

    fn time_zone(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let (Some(zone), Some(timezone)) = (&settings.time_zone, render::timezone(settings)) else {
            return Ok(());
        };
        let zone_file = format!("{}/{}", render::ZONEINFO, zone.name);
        if !self.path(&zone_file).is_file() {
            return Err(PlatformError::Unsupported(format!(
                "time zone {:?} is unknown to this system (no {})",
                zone.name,
                shown_path(&zone_file)
            )));
        }
        let target = PathBuf::from(shown_path(&zone_file));
        let link = self.path(render::LOCALTIME);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let aside = link.with_extension("baton-new");
            let _ = fs::remove_file(&aside);
            std::os::unix::fs::symlink(&target, &aside)
                .and_then(|()| fs::rename(&aside, &link))
                .map_err(|source| PlatformError::Write {
                    path: shown_path(render::LOCALTIME),
                    source,
                })?;
            outcome.files.push(shown_path(render::LOCALTIME));
        }
        self.replace(outcome, render::TIMEZONE, &timezone, 0o644)?;
        if !outcome.files.is_empty() {
            // systemd-timedated reads the zone when it starts and keeps it while it runs (and
            // anything polling `timedatectl` keeps it running): a running one must start over,
            // or `timedatectl` goes on showing the old zone.
            self.change(outcome, "systemctl", &["try-restart", "systemd-timedated.service"], None)?;
        }
        Ok(())
    }

    fn ssh(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let Some(access) = &settings.access else { return Ok(()) };
        let unit = "ssh.service";
        let (enabled, active) = self.unit_state(unit)?;
        if access.ssh_enabled && !(enabled && active) {
            self.change(outcome, "systemctl", &["enable", "--now", unit], None)?;
        } else if !access.ssh_enabled && (enabled || active) {
            self.change(outcome, "systemctl", &["disable", "--now", unit], None)?;
        }
        Ok(())
    }

    fn root_password(
        &self,
        settings: &Settings,
        outcome: &mut Outcome,
    ) -> Result<(), PlatformError> {
        let Some(password) = &settings.root_password else { return Ok(()) };
        let hash = &password.password_hash;
        let readable = CRYPT_PREFIXES.iter().any(|prefix| hash.starts_with(prefix))
            && !hash.contains([':', '\n']);
        if !readable {
            return Err(PlatformError::Unsupported(
                "the stored root password hash is not a crypt(3) hash this system reads \
                 (yescrypt or SHA-crypt); set the root password again"
                    .to_owned(),
            ));
        }
        let shadow = self.read(render::SHADOW)?.unwrap_or_default();
        let current = String::from_utf8_lossy(&shadow)
            .lines()
            .find_map(|line| {
                line.strip_prefix("root:").map(|rest| rest.split(':').next().map(str::to_owned))
            })
            .flatten();
        if current.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        // The hash goes through standard input: never on a command line others can read.
        let line = format!("root:{hash}\n");
        self.change(outcome, "chpasswd", &["--encrypted"], Some(line.as_bytes()))
    }

    fn syslog(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let written = self.converge(outcome, render::RSYSLOG, render::rsyslog(settings), 0o644)?;
        self.change_after(
            outcome,
            written,
            render::RSYSLOG,
            "systemctl",
            &["restart", "rsyslog.service"],
        )
    }

    fn snmp(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let Some(snmp) = &settings.snmp else { return Ok(()) };
        let unit = "snmpd.service";
        let (enabled, active) = self.unit_state(unit)?;
        if !snmp.enabled {
            if enabled || active {
                self.change(outcome, "systemctl", &["disable", "--now", unit], None)?;
            }
            return Ok(());
        }
        if snmp.community.chars().any(char::is_whitespace) {
            return Err(PlatformError::Unsupported(
                "the SNMP community must not contain spaces: snmpd reads it as one word".to_owned(),
            ));
        }
        let Some(content) = render::snmpd(settings) else { return Ok(()) };
        // The community is a secret: only root reads the file (snmpd reads it before it drops
        // its privileges).
        let written = self.replace(outcome, render::SNMPD, &content, 0o600)?;
        if !enabled {
            self.change(outcome, "systemctl", &["enable", unit], None)?;
        }
        if written.is_some() || !active {
            let restarted = self.change(outcome, "systemctl", &["restart", unit], None);
            if let (Err(_), Some(previous)) = (&restarted, written) {
                self.restore(render::SNMPD, previous);
            }
            restarted?;
        }
        Ok(())
    }

    fn ethernet(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        if settings.ethernet.is_none() {
            return Ok(());
        }
        let content = render::ethernet_link(settings);
        let written = self.converge(outcome, render::ETHERNET_LINK, content, 0o644)?;
        // .link files are applied by udev when a device appears: replay that for the Ethernet
        // devices (type 1), which also restores auto-negotiation when the drop-in went away.
        self.change_after(
            outcome,
            written,
            render::ETHERNET_LINK,
            "udevadm",
            &["trigger", "--action=add", "--subsystem-match=net", "--attr-match=type=1"],
        )
    }

    fn trusted_ca(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        if settings.trusted_ca_pem.is_none() {
            return Ok(());
        }
        let content = render::trusted_ca(settings);
        let written = self.converge(outcome, render::TRUSTED_CA, content, 0o644)?;
        // Rebuilds /etc/ssl/certs (and its bundle) from the packaged and the local CAs.
        self.change_after(
            outcome,
            written,
            render::TRUSTED_CA,
            "update-ca-certificates",
            &["--fresh"],
        )
    }

    fn panel(&self, settings: &Settings, outcome: &mut Outcome) -> Result<(), PlatformError> {
        let written = self.replace(outcome, render::ISSUE, &render::panel(settings), 0o644)?;
        // Every agetty (tty1, ttyS0) reprints its screen with the new text.
        self.change_after(outcome, written, render::ISSUE, "agetty", &["--reload"])
    }
}

impl Platform for SystemPlatform {
    fn apply(&self, concern: Concern, settings: &Settings) -> Result<Outcome, PlatformError> {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut outcome = Outcome::default();
        match concern {
            Concern::HostName => self.host_name(settings, &mut outcome),
            Concern::Network => self.network(settings, &mut outcome),
            Concern::Dns => self.dns(settings, &mut outcome),
            Concern::Ntp => self.ntp(settings, &mut outcome),
            Concern::TimeZone => self.time_zone(settings, &mut outcome),
            Concern::Ssh => self.ssh(settings, &mut outcome),
            Concern::RootPassword => self.root_password(settings, &mut outcome),
            Concern::Syslog => self.syslog(settings, &mut outcome),
            Concern::Snmp => self.snmp(settings, &mut outcome),
            Concern::Ethernet => self.ethernet(settings, &mut outcome),
            Concern::TrustedCa => self.trusted_ca(settings, &mut outcome),
            Concern::Panel => self.panel(settings, &mut outcome),
        }?;
        Ok(outcome)
    }
}

fn shown_path(relative: &str) -> String {
    format!("/{relative}")
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".baton-new");
    let aside = PathBuf::from(aside);
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&aside)?;
    file.write_all(bytes)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    fs::rename(&aside, path)?;
    // The rename itself survives a power cut only once the directory is synced.
    match path.parent() {
        Some(parent) => fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}
