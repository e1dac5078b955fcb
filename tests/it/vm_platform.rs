//! Peer-local settings changed through the admin API change the guest OS: checked inside the
//! VM through qemu-guest-agent (`guest-exec` on the `<target>/vm/peer-<n>.qga` socket that
//! `cargo xtask vm` opens). Runs within the one boot of `vm.rs`'s test.

use anyhow::{Context, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long the guest agent may take to answer after the admin API does.
const AGENT_TIMEOUT_S: u64 = 120;
/// How long a setting may take to show in the guest (applied off the request, then a restart).
/// The longest is SSH's first start, which makes three host keys: RSA under TCG on a loaded
/// host took over 60 s (ssh.service still inactive).
const APPLY_TIMEOUT_S: u64 = 240;
/// One guest command's limit.
const EXEC_TIMEOUT_S: u64 = 30;

/// A session with qemu-guest-agent over its unix socket: one JSON command per line.
pub(crate) struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

/// What a guest command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Exec {
    pub(crate) code: i64,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Agent {
    /// Connects and waits until the agent inside the guest answers a `guest-sync`.
    pub(crate) fn connect(socket: &Path) -> anyhow::Result<Agent> {
        Agent::connect_within(socket, Duration::from_secs(AGENT_TIMEOUT_S))
    }

    /// As [`Agent::connect`], giving up after `limit` (a failed test's diagnostics).
    pub(crate) fn connect_within(socket: &Path, limit: Duration) -> anyhow::Result<Agent> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting the guest agent at {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut agent =
            Agent { reader: BufReader::new(stream.try_clone()?), writer: stream, next_id: 1 };
        let deadline = Instant::now() + limit;
        loop {
            match agent.sync() {
                Ok(()) => return Ok(agent),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(1)),
                Err(error) => {
                    return Err(error.context(format!(
                        "no answer from qemu-guest-agent within {} s",
                        limit.as_secs()
                    )));
                }
            }
        }
    }

    /// `guest-sync` with a fresh id, skipping any stale answers before its own.
    fn sync(&mut self) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        writeln!(self.writer, "{}", json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        for _ in 0..16 {
            let answer = self.read()?;
            if answer["return"] == json!(id) {
                return Ok(());
            }
        }
        bail!("guest-sync {id} never answered")
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        self.reader.read_line(&mut line).context("reading from the guest agent")?;
        ensure!(!line.is_empty(), "the guest agent closed the connection");
        // The agent may emit a 0xFF sync byte before an answer.
        let text = line.trim_start_matches(|c: char| c == '\u{FF}' || c.is_whitespace());
        serde_json::from_str(text).with_context(|| format!("guest agent answered {line:?}"))
    }

    fn call(&mut self, command: &str, arguments: Value) -> anyhow::Result<Value> {
        writeln!(self.writer, "{}", json!({"execute": command, "arguments": arguments}))?;
        let answer = self.read()?;
        if let Some(error) = answer.get("error") {
            bail!("guest agent refused {command}: {error}");
        }
        Ok(answer["return"].clone())
    }

    /// Runs `sh -c script` in the guest (as root), with `stdin` as its input.
    pub(crate) fn exec(&mut self, script: &str, stdin: Option<&str>) -> anyhow::Result<Exec> {
        let base64 = base64::engine::general_purpose::STANDARD;
        let mut arguments =
            json!({"path": "/bin/sh", "arg": ["-c", script], "capture-output": true});
        if let Some(input) = stdin {
            arguments["input-data"] = json!(base64.encode(input));
        }
        let pid = self.call("guest-exec", arguments)?["pid"].clone();
        let deadline = Instant::now() + Duration::from_secs(EXEC_TIMEOUT_S);
        loop {
            let status = self.call("guest-exec-status", json!({"pid": pid}))?;
            if status["exited"] == json!(true) {
                let decode = |field: &str| -> anyhow::Result<String> {
                    let data = status[field].as_str().unwrap_or_default();
                    Ok(String::from_utf8_lossy(&base64.decode(data)?).into_owned())
                };
                return Ok(Exec {
                    code: status["exitcode"].as_i64().unwrap_or(-1),
                    stdout: decode("out-data")?,
                    stderr: decode("err-data")?,
                });
            }
            ensure!(
                Instant::now() < deadline,
                "`{script}` ran over {EXEC_TIMEOUT_S} s in the guest"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `script` until its output satisfies `check`, for as long as a setting may take.
    pub(crate) fn eventually(
        &mut self,
        what: &str,
        script: &str,
        check: impl Fn(&Exec) -> bool,
    ) -> anyhow::Result<Exec> {
        let deadline = Instant::now() + Duration::from_secs(APPLY_TIMEOUT_S);
        loop {
            let exec = self.exec(script, None)?;
            if check(&exec) {
                return Ok(exec);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: after {APPLY_TIMEOUT_S} s `{script}` in the guest still exits {} \
                     with output {:?} and errors {:?}",
                    exec.code,
                    exec.stdout,
                    exec.stderr
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Changes host name, NTP servers, time zone, SSH and the root password through the API, and
/// checks each inside the guest; then that nothing failed to apply. Returns the seconds from
/// the API call to the guest showing it, per setting, for the report.
pub(crate) fn settings_reach_the_guest(
    client: &reqwest::blocking::Client,
    admin_url: &str,
    token: &str,
    agent_socket: &Path,
    serial: &str,
    syslog: std::net::TcpListener,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let mut agent = Agent::connect(agent_socket)?;
    let put = |path: &str, body: Value| -> anyhow::Result<Instant> {
        let response = client
            .put(format!("{admin_url}/api/v1/{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()?;
        let status = response.status();
        ensure!(
            status.is_success(),
            "PUT {path}: {status} {}",
            response.text().unwrap_or_default()
        );
        Ok(Instant::now())
    };
    let mut timings = Vec::new();

    // batond is a notify service that reported ready, and journald has its logs.
    let unit =
        agent.exec("systemctl show batond.service -p Type -p ActiveState -p SubState", None)?;
    for property in ["Type=notify", "ActiveState=active", "SubState=running"] {
        ensure!(unit.stdout.lines().any(|line| line == property), "batond: {unit:?}");
    }
    let journal = agent.exec("journalctl -b -u batond.service -o cat --no-pager", None)?;
    ensure!(journal.stdout.contains("admin API listening"), "batond's logs: {journal:?}");

    // Before any setting: the factory state this test changes.
    let ssh = agent.exec("systemctl is-active ssh.service", None)?;
    ensure!(ssh.stdout.trim() != "active", "SSH must be off in the factory image: {ssh:?}");

    let at = put("system-name", json!({"host_name": "vmhost1", "domain": "example.net"}))?;
    agent.eventually("host name", "hostname", |e| e.stdout.trim() == "vmhost1")?;
    timings.push(("host name", at.elapsed().as_secs_f64()));
    agent.eventually("/etc/hosts", "cat /etc/hosts", |e| {
        e.stdout.contains("127.0.1.1\tvmhost1.example.net vmhost1")
    })?;
    // The front panel on the consoles shows the new name and the DMI serial.
    agent.eventually("front panel", "cat /etc/issue", |e| {
        e.stdout.contains("vmhost1.example.net") && e.stdout.contains(serial)
    })?;

    // Loopback servers: the guest's NTP queries must not leave this machine.
    let at = put("ntp", json!({"servers": ["127.0.0.1", "127.0.0.2"]}))?;
    agent.eventually(
        "NTP servers in timesyncd",
        "timedatectl show-timesync --property=SystemNTPServers",
        |e| e.stdout.trim() == "SystemNTPServers=127.0.0.1 127.0.0.2",
    )?;
    timings.push(("NTP servers", at.elapsed().as_secs_f64()));

    let at = put("time-zone", json!({"name": "Europe/Oslo"}))?;
    agent.eventually("time zone", "timedatectl show --property=Timezone --value", |e| {
        e.stdout.trim() == "Europe/Oslo"
    })?;
    timings.push(("time zone", at.elapsed().as_secs_f64()));

    let at = put("administration-access", json!({"ssh_enabled": true, "lcd_panel_enabled": true}))?;
    agent
        .eventually("SSH on", "systemctl is-active ssh.service", |e| e.stdout.trim() == "active")?;
    timings.push(("SSH on", at.elapsed().as_secs_f64()));
    let keys = agent.exec("ls /var/lib/baton/ssh; ls /etc/ssh", None)?;
    ensure!(
        keys.stdout.contains("ssh_host_ed25519_key.pub")
            && keys.stdout.matches("ssh_host_ed25519_key").count() == 2,
        "host keys must be made on the data partition, none shipped in /etc/ssh: {keys:?}"
    );
    let at =
        put("administration-access", json!({"ssh_enabled": false, "lcd_panel_enabled": true}))?;
    agent.eventually("SSH off", "systemctl is-active ssh.service", |e| {
        e.stdout.trim() != "active"
    })?;
    timings.push(("SSH off", at.elapsed().as_secs_f64()));

    let root_password = "vm root password 9";
    let at = put("root-password", json!({"password": root_password}))?;
    agent.eventually("root password in /etc/shadow", "grep '^root:' /etc/shadow", |e| {
        e.stdout.starts_with("root:$6$rounds=")
    })?;
    timings.push(("root password", at.elapsed().as_secs_f64()));
    // PAM's own checker: the OS's crypt(3) accepts the hash for this password and no other.
    // unix_chkpwd reads a NUL-terminated password from its standard input.
    let right = agent.exec("/sbin/unix_chkpwd root nonull", Some(&format!("{root_password}\0")))?;
    ensure!(right.code == 0, "the OS refuses the root password it was given: {right:?}");
    let wrong = agent.exec("/sbin/unix_chkpwd root nonull", Some("another password\0"))?;
    ensure!(wrong.code != 0, "the OS accepts a wrong root password: {wrong:?}");

    // Both logs reach a syslog server on the host over TCP: the guest's user network is
    // restricted, and only the forwarded port at `HOST_FROM_GUEST` reaches this machine.
    let port = syslog.local_addr()?.port();
    let receiver = receive_syslog(syslog);
    let server =
        json!({"host": crate::vm_cluster::HOST_FROM_GUEST, "port": port, "transport": "tcp"});
    let at = put("syslog", json!({"servers": [server]}))?;
    let refused = client
        .get(format!("{admin_url}/api/v1/status"))
        .basic_auth("admin", Some("not the password"))
        .send()?;
    ensure!(refused.status().as_u16() == 401, "a wrong password answered {}", refused.status());
    syslog_receives_both_logs(&receiver)?;
    timings.push(("syslog: both logs on the host", at.elapsed().as_secs_f64()));

    let status: Value = client
        .get(format!("{admin_url}/api/v1/status"))
        .bearer_auth(token)
        .send()?
        .error_for_status()?
        .json()?;
    let platform = &status["platform"];
    ensure!(
        platform["applies_settings"] == json!(true),
        "batond is not applying settings: {status}"
    );
    ensure!(platform["failed"] == json!([]), "settings failed to apply in the guest: {platform}");
    Ok(timings)
}

/// Waits for an Event Log entry (the failed login) and a Configuration Log change (the syslog
/// setting itself) as RFC 5424 messages with Baton's structured data; rsyslog's own
/// forwarding of the OS's log reaches the same port and is skipped.
fn syslog_receives_both_logs(receiver: &Receiver<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(APPLY_TIMEOUT_S);
    let (mut event, mut change) = (false, false);
    while !(event && change) {
        if Instant::now() > deadline {
            bail!("syslog on the host: Event Log entry {event}, Configuration Log change {change}");
        }
        let Ok(line) = receiver.recv_timeout(Duration::from_millis(500)) else { continue };
        if !line.contains("[baton@32473 ") {
            continue;
        }
        ensure!(
            line.starts_with('<')
                && line.contains(">1 ")
                && line.contains(" vmhost1.example.net baton "),
            "not an RFC 5424 message of Baton's: {line}"
        );
        event |= line.contains(" event [baton@32473 log=\"event\"")
            && line.contains("kind=\"login.failed\"");
        change |= line.contains(" config [baton@32473 log=\"configuration\"")
            && line.contains("kind=\"syslog\"");
    }
    Ok(())
}

/// Accepts connections on `listener` and sends each message read from them, as a syslog
/// server over TCP does (RFC 6587): a message starting with a digit is octet-counted (Baton's
/// framing), one starting with `<` ends at a line feed (rsyslog's own forwarding of the OS's
/// log, sent to the same server). Both may share one connection here: qemu's `guestfwd`
/// carries every guest connection to the forwarded port over one connection to this
/// listener. The threads end with the test.
fn receive_syslog(listener: std::net::TcpListener) -> Receiver<String> {
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                while let Some(message) = read_syslog_message(&mut reader) {
                    if sender.send(message).is_err() {
                        return;
                    }
                }
            });
        }
    });
    receiver
}

/// The next message, framed either way (see [`receive_syslog`]), or `None` at the end
/// of the stream.
fn read_syslog_message(reader: &mut impl BufRead) -> Option<String> {
    let first = *reader.fill_buf().ok()?.first()?;
    let message = if first.is_ascii_digit() {
        let mut length = Vec::new();
        reader.read_until(b' ', &mut length).ok()?;
        let length: usize = std::str::from_utf8(length.strip_suffix(b" ")?).ok()?.parse().ok()?;
        let mut message = vec![0; length.min(64 * 1024)];
        reader.read_exact(&mut message).ok()?;
        message
    } else {
        // `<PRI>…` up to its line feed; anything else (out of step) is skipped the same way.
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).ok()?;
        line
    };
    Some(String::from_utf8_lossy(&message).into_owned())
}
