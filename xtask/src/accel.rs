//! Which accelerator `cargo xtask vm` boots with. `/dev/kvm` may open, and qemu may even start
//! with `-accel kvm`, while a real guest stops at its first instruction ("KVM internal error.
//! Suberror: 1 … emulation failure"): qemu then pauses instead of exiting. So KVM is judged by
//! the guest actually running (QMP `query-status` throughout a short trial), and TCG is used
//! otherwise. `BATON_VM_ACCEL=tcg|kvm` forces a choice.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Forces the accelerator: `tcg` or `kvm` (no trial fallback when forced).
pub(crate) const ACCEL_ENV: &str = "BATON_VM_ACCEL";
/// How long a VM started with KVM must keep running to count KVM as working.
const KVM_TRIAL: Duration = Duration::from_secs(3);
/// How often the trial asks qemu for the guest's status.
const TRIAL_POLL: Duration = Duration::from_millis(250);
/// How long qemu may take to open its QMP socket and answer one command.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub(crate) fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    pub(crate) fn cpu(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

/// What the VMs start with, and whether a failed KVM trial may fall back to TCG.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Choice {
    pub(crate) accel: Accel,
    pub(crate) forced: bool,
}

/// `BATON_VM_ACCEL` if set, else KVM when qemu can open it, else TCG.
pub(crate) fn choose() -> anyhow::Result<Choice> {
    match std::env::var(ACCEL_ENV).ok().as_deref() {
        Some("tcg") => Ok(Choice { accel: Accel::Tcg, forced: true }),
        Some("kvm") => Ok(Choice { accel: Accel::Kvm, forced: true }),
        Some("") | None => {
            let accel = if kvm_opens() { Accel::Kvm } else { Accel::Tcg };
            Ok(Choice { accel, forced: false })
        }
        Some(other) => bail!("{ACCEL_ENV}={other:?}: expected \"tcg\" or \"kvm\""),
    }
}

/// Whether qemu can open KVM at all: `/dev/kvm` may exist and still refuse (no nesting).
fn kvm_opens() -> bool {
    let Ok(mut child) = Command::new("qemu-system-x86_64")
        .args(["-machine", "none", "-accel", "kvm", "-display", "none"])
        .args(["-monitor", "stdio", "-nodefaults"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    child.wait().is_ok_and(|status| status.success())
}

/// The verdict on a guest started with KVM.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Trial {
    Running,
    /// qemu exited, or the guest is not running (the QMP status says which).
    Failed(String),
}

/// Watches a freshly started KVM guest for `KVM_TRIAL`: it passes only if qemu stays alive and
/// every QMP `query-status` says `running`.
pub(crate) fn trial(child: &mut Child, qmp: &Path) -> anyhow::Result<Trial> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Trial::Failed(format!("qemu exited ({status})")));
        }
        // Until qemu opens its socket, look again soon: a qemu that aborts at start (KVM
        // refusing an MSR) is then seen at once, not after QMP_TIMEOUT.
        if !qmp.exists() && started.elapsed() < QMP_TIMEOUT {
            std::thread::sleep(TRIAL_POLL);
            continue;
        }
        let status = match query_status(qmp) {
            Ok(status) => status,
            // qemu may have exited between the two checks; the next round says so.
            Err(_) if child.try_wait()?.is_some() => continue,
            Err(error) => return Err(error),
        };
        if let Trial::Failed(reason) = judge(&status) {
            return Ok(Trial::Failed(reason));
        }
        if started.elapsed() >= KVM_TRIAL {
            return Ok(Trial::Running);
        }
        std::thread::sleep(TRIAL_POLL);
    }
}

/// A QMP run state (`running`, `paused`, `internal-error`, `prelaunch`, …) as a verdict.
pub(crate) fn judge(status: &str) -> Trial {
    if status == "running" {
        Trial::Running
    } else {
        Trial::Failed(format!("qemu reports the guest {status}, not running"))
    }
}

/// Asks qemu for the guest's run state over its QMP socket, waiting for the socket to open.
pub(crate) fn query_status(socket: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + QMP_TIMEOUT;
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(TRIAL_POLL),
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("no QMP socket at {} within {QMP_TIMEOUT:?}", socket.display())
                });
            }
        }
    };
    stream.set_read_timeout(Some(QMP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    read_return(&mut reader).context("reading the QMP greeting")?;
    writeln!(writer, r#"{{"execute": "qmp_capabilities"}}"#)?;
    read_return(&mut reader).context("QMP qmp_capabilities")?;
    writeln!(writer, r#"{{"execute": "query-status"}}"#)?;
    let answer = read_return(&mut reader).context("QMP query-status")?;
    answer["return"]["status"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("QMP query-status answered {answer}"))
}

/// The next QMP line that is not an asynchronous event (a `STOP` may come before an answer).
fn read_return(reader: &mut impl BufRead) -> anyhow::Result<serde_json::Value> {
    loop {
        let mut line = String::new();
        anyhow::ensure!(reader.read_line(&mut line)? > 0, "qemu closed the QMP socket");
        let message: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))?;
        if message.get("event").is_none() {
            return Ok(message);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::net::UnixListener;

    /// A qemu stand-in that answers QMP the way a stalled KVM guest's qemu does: an event, then
    /// the given run state.
    fn fake_qmp(dir: &Path, status: &'static str) -> std::path::PathBuf {
        let socket = dir.join(format!("{status}.qmp"));
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writeln!(writer, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 {
                let answer = if line.contains("query-status") {
                    writeln!(writer, r#"{{"event": "STOP", "timestamp": {{}}}}"#).unwrap();
                    format!(r#"{{"return": {{"status": "{status}", "running": false}}}}"#)
                } else {
                    r#"{"return": {}}"#.to_owned()
                };
                writeln!(writer, "{answer}").unwrap();
                line.clear();
            }
        });
        socket
    }

    #[test]
    fn a_guest_that_kvm_stopped_with_an_internal_error_fails_the_trial() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_qmp(dir.path(), "internal-error");
        let status = query_status(&socket).unwrap();
        assert_eq!(status, "internal-error");
        assert_eq!(
            judge(&status),
            Trial::Failed("qemu reports the guest internal-error, not running".into())
        );
    }

    #[test]
    fn a_stalled_guest_fails_the_trial_while_its_qemu_stays_alive() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_qmp(dir.path(), "paused");
        // A qemu process that stays alive, as a stalled one does.
        let mut alive = Command::new("sleep").arg("30").spawn().unwrap();
        let verdict = trial(&mut alive, &socket).unwrap();
        let _ = alive.kill();
        let _ = alive.wait();
        assert_eq!(verdict, Trial::Failed("qemu reports the guest paused, not running".into()));
    }

    #[test]
    fn a_qemu_that_aborts_before_opening_its_socket_fails_the_trial_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut aborting = Command::new("sh").args(["-c", "sleep 0.2; exit 134"]).spawn().unwrap();
        let started = Instant::now();
        let verdict = trial(&mut aborting, &dir.path().join("never.qmp")).unwrap();
        assert!(matches!(verdict, Trial::Failed(reason) if reason.starts_with("qemu exited")));
        // Not QMP_TIMEOUT (10 s): that was 10 s added to every boot on such a machine.
        assert!(started.elapsed() < QMP_TIMEOUT / 2, "{:?}", started.elapsed());
    }

    #[test]
    fn a_qemu_that_exits_at_start_fails_the_trial() {
        let dir = tempfile::tempdir().unwrap();
        let mut exited = Command::new("false").spawn().unwrap();
        let _ = exited.wait();
        let verdict = trial(&mut exited, &dir.path().join("absent.qmp")).unwrap();
        assert!(matches!(verdict, Trial::Failed(reason) if reason.starts_with("qemu exited")));
    }

    #[test]
    fn only_a_running_guest_passes() {
        assert_eq!(judge("running"), Trial::Running);
        assert!(matches!(judge("prelaunch"), Trial::Failed(_)));
        assert!(matches!(judge("guest-panicked"), Trial::Failed(_)));
    }
}
