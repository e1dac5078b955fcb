//! Each VM's qemu runs under a supervisor that turns a reset into a power cycle: qemu is told
//! to exit when the machine resets (QMP `set-action reboot=shutdown`), and a new qemu boots
//! the same disk and firmware variables. Why: under TCG with two vCPUs, a guest reset inside
//! one qemu once left the second vCPU's timer dead, and the rebooted guest hung in its kernel
//! ("rcu_preempt kthread timer wakeup didn't happen … Possible timer handling issue on
//! cpu=1"), failing a rolling upgrade. A fresh process starts every boot from the state that
//! first boots start from.
//!
//! Why qemu exited is read from a QMP monitor of the supervisor's own (the operator's and the
//! tests' QMP socket stays free), taken over once qemu runs for good ([`Monitor::take_over`]).
//! The last `SHUTDOWN` event's reason is `guest-reset` or
//! `host-qmp-system-reset` for a reset, `guest-shutdown` for a power-off, `host-qmp-quit` or
//! `host-signal` when told to stop; a killed qemu (a power cut) sends none. Only resets start
//! qemu again.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often a qemu that has not yet connected its monitor is checked for having exited.
const CONNECT_POLL: Duration = Duration::from_millis(20);
/// How long a started qemu gets to connect its monitor and answer it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `SHUTDOWN` reasons of a reset, by the guest or its firmware, or asked through QMP.
const RESET_REASONS: [&str; 2] = ["guest-reset", "host-qmp-system-reset"];

/// The listening end of one qemu's supervisor monitor; qemu connects to it as a client.
pub(crate) struct Monitor {
    listener: UnixListener,
    path: PathBuf,
}

impl Monitor {
    /// Listens at `path` (a stale socket there is replaced).
    pub(crate) fn listen(path: &Path) -> anyhow::Result<Monitor> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(Monitor { listener, path: path.to_owned() })
    }

    /// A new listener at the same path: a killed qemu's connection must not pass for the next's.
    pub(crate) fn relisten(self) -> anyhow::Result<Monitor> {
        let path = self.path.clone();
        drop(self);
        Monitor::listen(&path)
    }

    /// qemu's arguments that connect a QMP monitor to this listener.
    pub(crate) fn qemu_args(&self) -> [String; 4] {
        [
            "-chardev".into(),
            format!("socket,id=supervisor,path={}", self.path.display()),
            "-mon".into(),
            "chardev=supervisor,mode=control".into(),
        ]
    }

    /// Takes `child` over: accepts and negotiates its monitor, then makes a reset end qemu.
    /// Called once qemu runs for good, after a KVM trial (`accel::trial`): a qemu that KVM
    /// aborts at start is the trial's to judge, and a reset during the trial resets in place.
    /// Nothing is missed meanwhile: qemu's connection waits in the listener's queue, and until
    /// the handshake a reset still resets in place (qemu sends no event to a monitor before
    /// it). A qemu that cannot be taken over is killed, not left running unsupervised.
    pub(crate) fn take_over(&self, child: &mut Child) -> anyhow::Result<Session> {
        let session = self.connect(child).and_then(|mut session| {
            session.exit_on_reset()?;
            Ok(session)
        });
        if session.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        session
    }

    /// Accepts `child`'s monitor and negotiates it.
    fn connect(&self, child: &mut Child) -> anyhow::Result<Session> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait()? {
                        bail!("qemu exited ({status}) before connecting its monitor");
                    }
                    if Instant::now() > deadline {
                        bail!("qemu did not connect its monitor within {CONNECT_TIMEOUT:?}");
                    }
                    std::thread::sleep(CONNECT_POLL);
                }
                Err(error) => return Err(error).context("accepting qemu's monitor"),
            }
        };
        stream.set_nonblocking(false)?;
        let mut session = Session::new(stream)?;
        session.execute(&serde_json::json!({ "execute": "qmp_capabilities" }))?;
        Ok(session)
    }
}

/// A negotiated supervisor monitor of one qemu.
pub(crate) struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The reason of the last `SHUTDOWN` event read so far.
    last_shutdown: Option<String>,
}

impl Session {
    fn new(stream: UnixStream) -> anyhow::Result<Session> {
        // Bounds the handshake; cleared by `exit_on_reset`, as qemu may run for hours.
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(Session { reader: BufReader::new(stream), writer, last_shutdown: None })
    }

    /// Makes a reset end qemu instead of resetting the machine in place: not a command-line
    /// option, so that a reset during a KVM trial does not end the qemu it judges.
    fn exit_on_reset(&mut self) -> anyhow::Result<()> {
        let command = serde_json::json!({
            "execute": "set-action", "arguments": { "reboot": "shutdown" }
        });
        self.execute(&command)?;
        self.reader.get_ref().set_read_timeout(None)?;
        Ok(())
    }

    /// Sends `command` and reads until its answer, noting the events before it.
    fn execute(&mut self, command: &serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.writer, "{command}").context("writing to qemu's monitor")?;
        loop {
            let Some(message) = self.next_message().context("reading qemu's monitor")? else {
                bail!("qemu closed its monitor before answering {command}");
            };
            if let Some(error) = message.get("error") {
                bail!("qemu refused {command}: {error}");
            }
            if message.get("return").is_some() {
                return Ok(());
            }
        }
    }

    /// The next message, its `SHUTDOWN` reason noted; `None` once qemu closed the monitor.
    fn next_message(&mut self) -> std::io::Result<Option<serde_json::Value>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if message["event"] == "SHUTDOWN" {
                self.last_shutdown = message["data"]["reason"].as_str().map(str::to_owned);
            }
            return Ok(Some(message));
        }
    }

    /// Reads until qemu closes the monitor (it exits); the last `SHUTDOWN` reason.
    fn last_shutdown_reason(mut self) -> Option<String> {
        while let Ok(Some(_)) = self.next_message() {}
        self.last_shutdown
    }
}

/// Waits for `child`, whose monitor is `session`, starting a new qemu with `start` each time
/// the machine reset; returns the status of the last qemu (a power-off, a quit, a kill). On an
/// error, the qemu it supervised is killed.
pub(crate) fn supervise(
    peer: u8,
    mut child: Child,
    mut session: Session,
    monitor: &Monitor,
    start: impl Fn(&Monitor) -> anyhow::Result<Child>,
) -> anyhow::Result<ExitStatus> {
    loop {
        let reason = session.last_shutdown_reason();
        let status = child.wait().context("waiting for qemu")?;
        let reset = reason.as_deref().is_some_and(|reason| RESET_REASONS.contains(&reason));
        if !(status.success() && reset) {
            if status.success() && reason.is_none() {
                println!("peer {peer}: qemu exited without saying why");
            }
            return Ok(status);
        }
        println!("peer {peer}: the machine reset: a new qemu boots it (a power cycle)");
        child = start(monitor).context("restarting qemu")?;
        session = monitor.take_over(&mut child).context("the restarted qemu's monitor")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Plays qemu's side of a supervisor monitor: greets, sends no event before the
    /// capabilities are negotiated (as qemu), answers every command, then sends `events`.
    fn fake_qemu(path: &Path, events: Vec<String>) -> std::thread::JoinHandle<()> {
        let stream = UnixStream::connect(path).expect("the supervisor listens");
        std::thread::spawn(move || {
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
            let mut writer = stream.try_clone().expect("a clone");
            writeln!(writer, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#)
                .expect("greet");
            let mut reader = BufReader::new(stream);
            for _ in 0..2 {
                let mut command = String::new();
                reader.read_line(&mut command).expect("a command");
                assert!(command.contains("qmp_capabilities") || command.contains("set-action"));
                writeln!(writer, r#"{{"return": {{}}}}"#).expect("an answer");
            }
            for event in events {
                writeln!(writer, "{event}").expect("an event");
            }
        })
    }

    fn shutdown(reason: &str) -> String {
        format!(
            r#"{{"timestamp": {{}}, "event": "SHUTDOWN", "data": {{"guest": true, "reason": "{reason}"}}}}"#
        )
    }

    /// A qemu process that exits with status 0, as qemu does after any `SHUTDOWN`.
    fn exiting_process() -> Child {
        Command::new("true").spawn().expect("`true` runs")
    }

    // Goal: a reset (by the guest or through QMP) starts a new qemu, each negotiated as it
    // starts; a power-off ends the supervision with qemu's status, whatever came before it.
    #[test]
    fn resets_start_a_new_qemu_and_a_power_off_ends_the_vm() {
        let dir = tempfile::tempdir().expect("a directory");
        let monitor = Monitor::listen(&dir.path().join("supervisor.sock")).expect("a listener");
        let script = [
            vec![shutdown("guest-reset")],
            vec![shutdown("host-qmp-system-reset"), "not json".to_owned()],
            vec![shutdown("guest-reset"), shutdown("guest-shutdown")],
        ];
        let fakes = std::cell::RefCell::new(vec![fake_qemu(&monitor.path, script[0].clone())]);
        let mut child = exiting_process();
        let session = monitor.take_over(&mut child).expect("negotiated, set-action answered");
        let start = |monitor: &Monitor| {
            let mut fakes = fakes.borrow_mut();
            let next = script[fakes.len()].clone();
            fakes.push(fake_qemu(&monitor.path, next));
            Ok(exiting_process())
        };
        let status = supervise(1, child, session, &monitor, start).expect("supervised");
        assert!(status.success());
        let fakes = fakes.into_inner();
        assert_eq!(fakes.len(), 3, "two resets, two new qemus; the power-off ended it");
        for fake in fakes {
            fake.join().expect("each qemu was negotiated and answered");
        }
    }

    #[test]
    fn a_qemu_that_exits_before_connecting_is_an_error() {
        let dir = tempfile::tempdir().expect("a directory");
        let monitor = Monitor::listen(&dir.path().join("supervisor.sock")).expect("a listener");
        let mut child = exiting_process();
        let error = monitor.take_over(&mut child).err().expect("no monitor");
        assert!(error.to_string().contains("before connecting"), "{error:#}");
    }
}
