//! Each VM's qemu runs under a supervisor that turns a guest's reboot into a power cycle: qemu
//! is told to exit when the guest resets (`-action reboot=shutdown`), and a new qemu boots the
//! same disk and firmware variables. Why: under TCG with two vCPUs, a guest reset inside one
//! qemu once left the second vCPU's timer dead, and the rebooted guest hung in its kernel
//! ("rcu_preempt kthread timer wakeup didn't happen … Possible timer handling issue on
//! cpu=1"), failing a rolling upgrade. A fresh process starts every boot from the state that
//! first boots start from.
//!
//! Why qemu exited is read from a QMP monitor of the supervisor's own (the operator's and the
//! tests' QMP socket stays free): the last `SHUTDOWN` event's reason is `guest-reset` for a
//! reboot, `guest-shutdown` for a power-off, `host-qmp-quit` or `host-signal` when told to
//! stop; a killed qemu (a power cut) sends none, and none of those is started again.

use anyhow::Context;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// How often a qemu that has not yet connected its monitor is checked for having exited.
const CONNECT_POLL: Duration = Duration::from_millis(20);

/// The `SHUTDOWN` reason qemu gives when the guest itself resets the machine.
const GUEST_RESET: &str = "guest-reset";

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

    /// qemu's arguments that connect a QMP monitor to this listener, and make a guest reset
    /// end qemu instead of resetting the machine in place.
    pub(crate) fn qemu_args(&self) -> Vec<String> {
        vec![
            "-chardev".into(),
            format!("socket,id=supervisor,path={}", self.path.display()),
            "-mon".into(),
            "chardev=supervisor,mode=control".into(),
            "-action".into(),
            "reboot=shutdown".into(),
        ]
    }

    /// The reason of the last `SHUTDOWN` event of `child`, read until qemu closes its monitor;
    /// `None` when it sent none (killed, or it died before connecting).
    fn shutdown_reason(&self, child: &mut Child) -> anyhow::Result<Option<String>> {
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if child.try_wait()?.is_some() {
                        return Ok(None);
                    }
                    std::thread::sleep(CONNECT_POLL);
                }
                Err(error) => return Err(error).context("accepting qemu's monitor"),
            }
        };
        stream.set_nonblocking(false)?;
        Ok(last_shutdown_reason(stream))
    }
}

/// Reads QMP from `stream` until it closes; the last `SHUTDOWN` event's reason.
fn last_shutdown_reason(stream: UnixStream) -> Option<String> {
    let mut writer = stream.try_clone().ok()?;
    // Events flow only once capabilities are negotiated; a failed write means qemu is gone.
    writeln!(writer, "{}", serde_json::json!({ "execute": "qmp_capabilities" })).ok()?;
    let mut reason = None;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if message["event"] == "SHUTDOWN" {
            reason = message["data"]["reason"].as_str().map(str::to_owned);
        }
    }
    reason
}

/// Waits for `child`, starting a new qemu with `start` each time the guest reset; returns the
/// status of the last qemu (a power-off, a quit, a kill).
pub(crate) fn supervise(
    peer: u8,
    mut child: Child,
    monitor: &Monitor,
    start: impl Fn(&Monitor) -> anyhow::Result<Child>,
) -> anyhow::Result<ExitStatus> {
    loop {
        let reason = monitor.shutdown_reason(&mut child)?;
        let status = child.wait().context("waiting for qemu")?;
        if !(status.success() && reason.as_deref() == Some(GUEST_RESET)) {
            return Ok(status);
        }
        println!("peer {peer}: the guest rebooted: a new qemu boots it (a power cycle)");
        child = start(monitor)
            .with_context(|| format!("peer {peer}: restarting qemu after a reboot"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest that reboots, then powers off: the reboot's reason is replaced by the power-off's.
    #[test]
    fn the_last_shutdown_reason_is_the_one_that_ended_qemu() {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let qemu = std::thread::spawn(move || {
            let mut theirs = theirs;
            let events = [
                r#"{"QMP": {"version": {}, "capabilities": []}}"#,
                r#"{"return": {}}"#,
                r#"{"timestamp": {}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#,
                "not json",
                r#"{"timestamp": {}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
            ];
            for event in events {
                writeln!(theirs, "{event}").expect("qemu's side writes");
            }
            let mut asked = String::new();
            BufReader::new(theirs).read_line(&mut asked).expect("qemu's side reads");
            asked
        });
        assert_eq!(last_shutdown_reason(ours).as_deref(), Some("guest-shutdown"));
        assert!(qemu.join().expect("qemu's side").contains("qmp_capabilities"));
    }

    #[test]
    fn a_qemu_that_sent_no_shutdown_has_no_reason() {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        drop(theirs);
        assert_eq!(last_shutdown_reason(ours), None);
    }
}
