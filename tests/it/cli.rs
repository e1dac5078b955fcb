//! `batonctl` against a live `batond`, as an operator would use it: change the factory
//! password, create and edit records, read logs and history, see errors by field.

use baton_tests::{Batond, TEST_PASSWORD, binary};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `batonctl` against one daemon, as the test administrator.
pub(crate) struct Ctl<'a> {
    pub(crate) daemon: &'a Batond,
}

impl Ctl<'_> {
    fn run_with(&self, password: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(binary("batonctl").unwrap())
            .args(["--url", &self.daemon.url, "--ca"])
            .arg(self.daemon.data_dir.join("tls/ca.pem"))
            .args(args)
            .env("BATON_PASSWORD", password)
            .env_remove("BATON_NEW_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run_with(TEST_PASSWORD, args, "");
        let (stdout, stderr) =
            (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "batonctl {args:?} failed: {stderr}");
        stdout.into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let output = self.run_with(TEST_PASSWORD, args, "");
        assert_eq!(output.status.code(), Some(1), "batonctl {args:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

#[test]
fn an_operator_configures_baton_with_batonctl() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Batond::start(dir.path()).unwrap();
    let ctl = Ctl { daemon: &daemon };

    // Nothing works until the factory password is changed; batonctl says why.
    let blocked = ctl.run_with("TANDBERG", &["bridges", "list"], "");
    assert_eq!(blocked.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&blocked.stderr)
            .contains("factory default password must be changed")
    );
    let changed = ctl.run_with("TANDBERG", &["password"], &format!("{TEST_PASSWORD}\n"));
    assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    let before = ctl.ok(&["--json", "status"]);
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();

    ctl.ok(&[
        "bridges",
        "create",
        "--set",
        "name=mcu1",
        "--set",
        "bridge_type=mcu",
        "--set",
        "address=192.0.2.5",
        "--set",
        "username=api",
        "--set",
        "password=bridge-secret",
        "--set",
        "capacity_ports=40",
    ]);
    let list = ctl.ok(&["bridges", "list"]);
    assert!(list.lines().next().unwrap().starts_with("NAME"), "{list}");
    assert!(list.contains("mcu1") && list.contains("192.0.2.5"), "{list}");
    assert!(!list.contains("bridge-secret"));

    // A partial update keeps the other fields, including the secret.
    ctl.ok(&["bridges", "update", "mcu1", "--set", "capacity_ports=80"]);
    let shown: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["--json", "bridges", "show", "mcu1"])).unwrap();
    assert_eq!(
        (shown["capacity_ports"].as_u64(), shown["address"].as_str()),
        (Some(80), Some("192.0.2.5"))
    );

    // Errors name each field.
    let error = ctl.fails(&[
        "bridges",
        "create",
        "--set",
        "name=bad",
        "--set",
        "bridge_type=mcu",
        "--set",
        "address=not a host",
        "--set",
        "username=api",
        "--set",
        "capacity_ports=0",
    ]);
    assert!(error.contains("  address: ") && error.contains("  capacity_ports: "), "{error}");
    let error = ctl.fails(&["bridges", "delete", "ghost"]);
    assert!(error.contains("does not exist"), "{error}");
    let error = ctl.fails(&["spaceships", "list"]);
    assert!(error.contains("not a collection"), "{error}");

    // Peer-local settings.
    ctl.ok(&["system-name", "set", "--set", "host_name=baton1", "--set", "domain=example.com"]);
    assert!(ctl.ok(&["system-name", "show"]).contains("baton1"));

    // Logs and history.
    let log = ctl.ok(&["log", "config", "--kind", "bridges"]);
    assert!(log.contains("capacity_ports"), "the update's changed field is listed: {log}");
    assert_eq!(log.lines().filter(|l| l.contains("mcu1")).count(), 2, "{log}");
    let history = ctl.ok(&["history", "bridges", "mcu1"]);
    assert_eq!(history.lines().count(), 3, "header and two changes: {history}");
    let events = ctl.ok(&["log", "events", "--kind", "password"]);
    assert!(events.contains("password.changed"), "{events}");

    // The configuration as it was, and what changed since.
    let then = before["started"].as_str().unwrap();
    let at = ctl.ok(&["config", "at", then]);
    assert!(!at.contains("mcu1"), "{at}");
    let now = ctl.ok(&["config", "show"]);
    assert!(now.contains("mcu1") && now.contains("system_name"), "{now}");
    let diff = ctl.ok(&["config", "diff", then]);
    assert!(diff.contains("+ bridge mcu1") && diff.contains("+ system_name system_name"), "{diff}");

    ctl.ok(&["bridges", "delete", "mcu1"]);
    assert_eq!(ctl.ok(&["bridges", "list"]), "(none)\n");
}

// Goal: `batonctl administrators list` shows each account's role, and a read-only account's
// `batonctl` reads but is refused a change with the reason.
#[test]
fn batonctl_shows_roles_and_a_read_only_account_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Batond::start(dir.path()).unwrap();
    daemon.change_factory_password().unwrap();
    let ctl = Ctl { daemon: &daemon };
    let auditor = ["--user", "auditor"];
    ctl.ok(&[
        "administrators",
        "create",
        "--set",
        "name=auditor",
        "--set",
        "password=auditor password",
        "--set",
        "role=read_only",
    ]);
    let list = ctl.ok(&["administrators", "list"]);
    let header = list.lines().next().unwrap();
    assert!(header.contains("ROLE"), "{list}");
    let row = list.lines().find(|line| line.starts_with("auditor")).unwrap();
    assert!(row.contains("read_only"), "{list}");
    assert!(list.lines().any(|line| line.starts_with("admin ") && line.contains("full")), "{list}");

    let read = ctl.run_with("auditor password", &[&auditor[..], &["bridges", "list"]].concat(), "");
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let args = [&auditor[..], &["locations", "create", "--set", "name=x"]].concat();
    let refused = ctl.run_with("auditor password", &args, "");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("read-only"), "{stderr}");
    assert_eq!(ctl.ok(&["locations", "list"]).trim(), "(none)");
}
