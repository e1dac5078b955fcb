//! The real platform on a temporary root directory with a scripted command runner.

#![allow(clippy::unwrap_used)]

use super::*;
use model::record::{EthernetSpeed, Ipv4Interface, SyslogServer, SyslogTransport};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Answers `systemctl is-enabled/is-active` from a unit table, fails programs on request, and
/// records every command with its standard input.
/// A command as shown, and the standard input it was given.
type Ran = (String, Option<String>);

#[derive(Clone, Debug, Default)]
struct FakeRunner {
    ran: Arc<Mutex<Vec<Ran>>>,
    units: Arc<Mutex<BTreeMap<String, (bool, bool)>>>,
    failing: Arc<Mutex<Vec<String>>>,
}

impl FakeRunner {
    /// Commands that change something (queries left out).
    fn changes(&self) -> Vec<String> {
        self.ran
            .lock()
            .unwrap()
            .iter()
            .map(|(command, _)| command.clone())
            .filter(|command| !command.contains(" is-enabled ") && !command.contains(" is-active "))
            .collect()
    }

    fn clear(&self) {
        self.ran.lock().unwrap().clear();
    }

    fn unit(&self, unit: &str, enabled: bool, active: bool) {
        self.units.lock().unwrap().insert(unit.to_owned(), (enabled, active));
    }
}

impl Runner for FakeRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, PlatformError> {
        let command = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>();
        let shown = command.join(" ");
        self.ran
            .lock()
            .unwrap()
            .push((shown.clone(), stdin.map(|bytes| String::from_utf8_lossy(bytes).into_owned())));
        if self.failing.lock().unwrap().iter().any(|failing| shown.starts_with(failing.as_str())) {
            return Ok(CommandOutput {
                success: false,
                status: "exit status 1".to_owned(),
                stdout: String::new(),
                stderr: "Job for it failed.\n".to_owned(),
            });
        }
        let mut units = self.units.lock().unwrap();
        let answer = match command.as_slice() {
            ["systemctl", "is-enabled", unit] => {
                let (enabled, _) = units.get(*unit).copied().unwrap_or_default();
                Some(if enabled { "enabled" } else { "disabled" })
            }
            ["systemctl", "is-active", unit] => {
                let (_, active) = units.get(*unit).copied().unwrap_or_default();
                Some(if active { "active" } else { "inactive" })
            }
            ["systemctl", verb @ ("enable" | "disable"), "--now", unit] => {
                let on = *verb == "enable";
                units.insert((*unit).to_owned(), (on, on));
                None
            }
            _ => None,
        };
        Ok(CommandOutput {
            success: true,
            status: "exit status 0".to_owned(),
            stdout: answer.map(|a| format!("{a}\n")).unwrap_or_default(),
            stderr: String::new(),
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    runner: FakeRunner,
    platform: SystemPlatform,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tbaton\n::1\tlocalhost\n")
        .unwrap();
    fs::write(root.join("etc/hostname"), "baton\n").unwrap();
    let runner = FakeRunner::default();
    let platform = SystemPlatform::new(
        root.clone(),
        Box::new(runner.clone()),
        NetworkTarget::Match("Name=en*".to_owned()),
    );
    Fixture { _dir: dir, root, runner, platform }
}

fn read(root: &Path, relative: &str) -> String {
    fs::read_to_string(root.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn named(host: &str, domain: &str) -> Settings {
    Settings {
        system_name: Some(SystemName { host_name: host.to_owned(), domain: domain.to_owned() }),
        ..Settings::default()
    }
}

#[test]
fn host_name_sets_the_name_once_and_names_the_host_in_hosts() {
    let f = fixture();
    let settings = named("conductor1", "example.com");
    let outcome = f.platform.apply(Concern::HostName, &settings).unwrap();
    assert_eq!(f.runner.changes(), ["hostnamectl set-hostname conductor1"]);
    assert_eq!(outcome.files, ["/etc/hostname", "/etc/hosts"]);
    assert_eq!(read(&f.root, "etc/hostname"), "conductor1\n");
    assert_eq!(
        read(&f.root, "etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tconductor1.example.com conductor1\n::1\tlocalhost\n"
    );

    f.runner.clear();
    let again = f.platform.apply(Concern::HostName, &settings).unwrap();
    assert!(again.is_unchanged(), "{again}");
    assert!(f.runner.changes().is_empty());
}

#[test]
fn a_failed_hostnamectl_leaves_the_files_so_the_next_apply_tries_again() {
    let f = fixture();
    f.runner.failing.lock().unwrap().push("hostnamectl".to_owned());
    let error = f.platform.apply(Concern::HostName, &named("conductor1", "")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`hostnamectl set-hostname conductor1` failed (exit status 1): Job for it failed."
    );
    assert_eq!(read(&f.root, "etc/hostname"), "baton\n");
    f.runner.failing.lock().unwrap().clear();
    f.platform.apply(Concern::HostName, &named("conductor1", "")).unwrap();
    assert_eq!(read(&f.root, "etc/hostname"), "conductor1\n");
}

#[test]
fn ntp_servers_go_to_a_timesyncd_drop_in_and_restart_only_timesyncd() {
    let f = fixture();
    let settings = Settings {
        ntp: Some(Ntp { servers: vec!["ntp1.example.com".into(), "192.0.2.5".into()] }),
        ..Settings::default()
    };
    f.platform.apply(Concern::Ntp, &settings).unwrap();
    assert_eq!(
        read(&f.root, render::TIMESYNCD),
        format!("{}[Time]\nNTP=ntp1.example.com 192.0.2.5\n", render::HEADER)
    );
    assert_eq!(f.runner.changes(), ["systemctl restart systemd-timesyncd.service"]);

    f.runner.clear();
    assert!(f.platform.apply(Concern::Ntp, &settings).unwrap().is_unchanged());
    assert!(f.runner.changes().is_empty(), "unchanged settings restart nothing");

    // The record removed: back to the image's servers.
    f.platform.apply(Concern::Ntp, &Settings::default()).unwrap();
    assert!(!f.root.join(render::TIMESYNCD).exists());
    assert_eq!(f.runner.changes(), ["systemctl restart systemd-timesyncd.service"]);
}

fn ipv4() -> Ipv4 {
    Ipv4 {
        address: [10, 0, 2, 15].into(),
        prefix_length: 24,
        gateway: [10, 0, 2, 2].into(),
        additional_addresses: vec![Ipv4Interface {
            address: [10, 0, 2, 16].into(),
            prefix_length: 24,
        }],
    }
}

#[test]
fn ipv4_becomes_a_networkd_file_and_a_failed_reload_puts_the_old_file_back() {
    let f = fixture();
    let settings = Settings { ipv4: Some(ipv4()), ..Settings::default() };
    f.runner.failing.lock().unwrap().push("networkctl".to_owned());
    let error = f.platform.apply(Concern::Network, &settings).unwrap_err();
    assert!(error.to_string().starts_with("`networkctl reload` failed"), "{error}");
    assert!(!f.root.join(render::NETWORK).exists(), "the file is put back as it was");

    f.runner.failing.lock().unwrap().clear();
    f.runner.clear();
    f.platform.apply(Concern::Network, &settings).unwrap();
    assert_eq!(f.runner.changes(), ["networkctl reload"]);
    assert_eq!(
        read(&f.root, render::NETWORK),
        format!(
            "{}[Match]\nName=en*\n\n[Network]\nAddress=10.0.2.15/24\nAddress=10.0.2.16/24\n\
             Gateway=10.0.2.2\nDHCP=no\nLinkLocalAddressing=no\n",
            render::HEADER
        )
    );
}

#[test]
fn dns_servers_and_the_domain_go_to_resolv_conf() {
    let f = fixture();
    let mut settings = named("conductor1", "example.com");
    settings.dns =
        Some(Dns { servers: vec!["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()] });
    f.platform.apply(Concern::Dns, &settings).unwrap();
    assert_eq!(
        read(&f.root, render::RESOLV_CONF),
        format!(
            "{}search example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
            render::HEADER
        )
    );
    assert!(f.runner.changes().is_empty(), "glibc rereads resolv.conf by itself");
}

#[test]
fn time_zone_links_localtime_and_refuses_an_unknown_zone() {
    let f = fixture();
    fs::create_dir_all(f.root.join("usr/share/zoneinfo/Europe")).unwrap();
    fs::write(f.root.join("usr/share/zoneinfo/Europe/Oslo"), "TZif").unwrap();
    let zone = |name: &str| Settings {
        time_zone: Some(TimeZone { name: name.to_owned() }),
        ..Settings::default()
    };
    let error = f.platform.apply(Concern::TimeZone, &zone("Europe/Atlantis")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "time zone \"Europe/Atlantis\" is unknown to this system (no /usr/share/zoneinfo/Europe/Atlantis)"
    );
    assert!(!f.root.join("etc/timezone").exists());

    f.platform.apply(Concern::TimeZone, &zone("Europe/Oslo")).unwrap();
    assert_eq!(
        fs::read_link(f.root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Oslo")
    );
    assert_eq!(read(&f.root, "etc/timezone"), "Europe/Oslo\n");
    // timedated, if running, rereads the zone (it caches it while it runs).
    assert_eq!(f.runner.changes(), ["systemctl try-restart systemd-timedated.service"]);
    assert!(f.platform.apply(Concern::TimeZone, &zone("Europe/Oslo")).unwrap().is_unchanged());
}

fn access(ssh: bool, panel: bool) -> Settings {
    Settings {
        access: Some(AdministrationAccess { ssh_enabled: ssh, lcd_panel_enabled: panel }),
        ..Settings::default()
    }
}

#[test]
fn ssh_is_enabled_and_disabled_only_when_it_differs() {
    let f = fixture();
    f.platform.apply(Concern::Ssh, &access(true, true)).unwrap();
    assert_eq!(f.runner.changes(), ["systemctl enable --now ssh.service"]);
    f.runner.clear();
    assert!(f.platform.apply(Concern::Ssh, &access(true, true)).unwrap().is_unchanged());
    f.platform.apply(Concern::Ssh, &access(false, true)).unwrap();
    assert_eq!(f.runner.changes(), ["systemctl disable --now ssh.service"]);
    f.runner.clear();
    assert!(f.platform.apply(Concern::Ssh, &Settings::default()).unwrap().is_unchanged());
    assert!(f.runner.changes().is_empty(), "no setting: the image's default stands");
}

#[test]
fn root_password_goes_through_chpasswd_stdin_and_never_shows() {
    let f = fixture();
    let hash = "$6$saltsalt$abcdefghijklmnop";
    let settings = Settings {
        root_password: Some(RootPassword { password_hash: hash.to_owned() }),
        ..Settings::default()
    };
    let outcome = f.platform.apply(Concern::RootPassword, &settings).unwrap();
    assert_eq!(outcome.commands, ["chpasswd --encrypted"]);
    assert!(!outcome.to_string().contains(hash));
    let ran = f.runner.ran.lock().unwrap().clone();
    assert_eq!(ran, [("chpasswd --encrypted".to_owned(), Some(format!("root:{hash}\n")))]);

    // Already in /etc/shadow: nothing to do.
    fs::write(f.root.join("etc/shadow"), format!("root:{hash}:19000:0:99999:7:::\n")).unwrap();
    assert!(f.platform.apply(Concern::RootPassword, &settings).unwrap().is_unchanged());

    let argon = Settings {
        root_password: Some(RootPassword { password_hash: "$argon2id$v=19$x".to_owned() }),
        ..Settings::default()
    };
    let error = f.platform.apply(Concern::RootPassword, &argon).unwrap_err();
    assert!(error.to_string().contains("set the root password again"), "{error}");
    assert!(!error.to_string().contains("argon2id$v"), "the hash is not shown");
}

#[test]
fn syslog_servers_become_rsyslog_actions_and_none_removes_them() {
    let f = fixture();
    let settings = Settings {
        syslog: Some(Syslog {
            servers: vec![
                SyslogServer {
                    host: "192.0.2.7".into(),
                    port: None,
                    transport: SyslogTransport::Udp,
                },
                SyslogServer {
                    host: "logs.example.com".into(),
                    port: Some(1514),
                    transport: SyslogTransport::Tls,
                },
            ],
        }),
        ..Settings::default()
    };
    f.platform.apply(Concern::Syslog, &settings).unwrap();
    let text = read(&f.root, render::RSYSLOG);
    assert!(text.contains("target=\"192.0.2.7\" port=\"514\" protocol=\"udp\""), "{text}");
    assert!(
        text.contains(
            "target=\"logs.example.com\" port=\"1514\" protocol=\"tcp\" StreamDriver=\"gtls\""
        ),
        "{text}"
    );
    assert!(text.contains("StreamDriverPermittedPeers=\"logs.example.com\""), "{text}");
    assert_eq!(f.runner.changes(), ["systemctl restart rsyslog.service"]);

    f.runner.clear();
    f.platform
        .apply(
            Concern::Syslog,
            &Settings { syslog: Some(Syslog { servers: vec![] }), ..Settings::default() },
        )
        .unwrap();
    assert!(!f.root.join(render::RSYSLOG).exists());
    assert_eq!(f.runner.changes(), ["systemctl restart rsyslog.service"]);
}

#[test]
fn snmp_writes_a_private_config_starts_the_agent_and_stops_it_when_disabled() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mut settings = named("conductor1", "example.com");
    settings.snmp = Some(Snmp {
        enabled: true,
        community: "s3cret".into(),
        contact: "noc@example.com".into(),
        location: "Rack 4\nRow 2".into(),
    });
    f.platform.apply(Concern::Snmp, &settings).unwrap();
    let text = read(&f.root, render::SNMPD);
    assert!(text.contains("rocommunity s3cret default\n"), "{text}");
    assert!(text.contains("sysLocation Rack 4 Row 2\n"), "{text}");
    assert!(text.contains("sysName conductor1.example.com\n"), "{text}");
    let mode = fs::metadata(f.root.join(render::SNMPD)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        f.runner.changes(),
        ["systemctl enable snmpd.service", "systemctl restart snmpd.service"]
    );

    f.runner.unit("snmpd.service", true, true);
    f.runner.clear();
    assert!(f.platform.apply(Concern::Snmp, &settings).unwrap().is_unchanged());

    settings.snmp.as_mut().unwrap().enabled = false;
    f.platform.apply(Concern::Snmp, &settings).unwrap();
    assert_eq!(f.runner.changes(), ["systemctl disable --now snmpd.service"]);

    settings.snmp = Some(Snmp {
        enabled: true,
        community: "two words".into(),
        contact: String::new(),
        location: String::new(),
    });
    let error = f.platform.apply(Concern::Snmp, &settings).unwrap_err();
    assert!(!error.to_string().contains("two words"), "the community is not shown: {error}");
}

#[test]
fn ethernet_speed_is_a_link_drop_in_and_auto_removes_it() {
    let f = fixture();
    let speed = |speed| Settings { ethernet: Some(Ethernet { speed }), ..Settings::default() };
    f.platform.apply(Concern::Ethernet, &speed(EthernetSpeed::Half100)).unwrap();
    assert_eq!(
        read(&f.root, render::ETHERNET_LINK),
        format!("{}[Link]\nAutoNegotiation=no\nBitsPerSecond=100M\nDuplex=half\n", render::HEADER)
    );
    assert_eq!(
        f.runner.changes(),
        ["udevadm trigger --action=add --subsystem-match=net --attr-match=type=1"]
    );
    f.platform.apply(Concern::Ethernet, &speed(EthernetSpeed::Auto)).unwrap();
    assert!(!f.root.join(render::ETHERNET_LINK).exists());
}

#[test]
fn trusted_cas_join_the_os_trust_store_and_leave_it_when_cleared() {
    let f = fixture();
    let pem = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----";
    let ca = |pem: &str| Settings { trusted_ca_pem: Some(pem.to_owned()), ..Settings::default() };
    f.platform.apply(Concern::TrustedCa, &ca(pem)).unwrap();
    assert_eq!(read(&f.root, render::TRUSTED_CA), format!("{pem}\n"));
    assert_eq!(f.runner.changes(), ["update-ca-certificates --fresh"]);
    f.runner.clear();
    assert!(f.platform.apply(Concern::TrustedCa, &ca(pem)).unwrap().is_unchanged());
    f.platform.apply(Concern::TrustedCa, &ca("")).unwrap();
    assert!(!f.root.join(render::TRUSTED_CA).exists());
    assert_eq!(f.runner.changes(), ["update-ca-certificates --fresh"]);
}

#[test]
fn the_panel_shows_the_peer_on_the_console_unless_turned_off() {
    let f = fixture();
    let mut settings = named("conductor1", "example.com");
    settings.ipv4 = Some(ipv4());
    settings.panel = PanelFacts { version: "0.1.0".into(), hardware_serial: "BATON-VM-1".into() };
    f.platform.apply(Concern::Panel, &settings).unwrap();
    let issue = read(&f.root, "etc/issue");
    assert!(issue.starts_with("Baton 0.1.0  --  conductor1.example.com\n"), "{issue}");
    assert!(issue.contains("Address:  10.0.2.15/24, 10.0.2.16/24\n"), "{issue}");
    assert!(issue.contains("Serial:   BATON-VM-1\n"), "{issue}");
    assert!(issue.contains("State:    active, standalone\n"), "{issue}");
    assert_eq!(f.runner.changes(), ["agetty --reload"]);

    for (peers, state) in [(3, "active, cluster of 3 peers"), (1, "active, cluster of 1 peer")] {
        let listed = ["10.0.2.15", "10.0.2.16", "10.0.2.17"][..peers].iter();
        let peers = listed.map(|address| address.parse().unwrap()).collect();
        settings.cluster = Some(Cluster { pre_shared_key: "key".into(), peers });
        f.platform.apply(Concern::Panel, &settings).unwrap();
        let issue = read(&f.root, "etc/issue");
        assert!(issue.contains(&format!("State:    {state}\n")), "{issue}");
    }

    settings.access = access(false, false).access;
    f.platform.apply(Concern::Panel, &settings).unwrap();
    let issue = read(&f.root, "etc/issue");
    assert!(!issue.contains("conductor1") && !issue.contains("BATON-VM-1"), "{issue}");
}

#[test]
fn settings_tell_which_concerns_a_change_touches() {
    let before = named("a", "example.com");
    let after = named("b", "example.com");
    let touched: Vec<Concern> =
        Concern::ALL.iter().copied().filter(|c| before.differs_for(&after, *c)).collect();
    assert_eq!(touched, [Concern::HostName, Concern::Snmp, Concern::Panel]);
    let other_domain = named("a", "example.org");
    assert!(before.differs_for(&other_domain, Concern::Dns));
    assert!(!before.differs_for(&other_domain, Concern::Ntp));
}

#[test]
fn the_process_runner_reports_status_output_and_takes_stdin() {
    let runner = ProcessRunner::direct();
    let output = runner.run("cat", &[], Some(b"hello")).unwrap();
    assert!(output.success);
    assert_eq!(output.stdout, "hello");
    let failed = runner.run("sh", &["-c", "echo oops >&2; exit 3"], None).unwrap();
    assert!(!failed.success);
    assert_eq!(failed.status, "exit status: 3");
    assert_eq!(failed.stderr, "oops\n");
    let missing = runner.run("baton-no-such-program", &[], None).unwrap_err();
    assert!(
        missing.to_string().starts_with("could not start `baton-no-such-program`"),
        "{missing}"
    );
}

/// A fake sysfs under `root`: each `(name, type, pci address)` an interface, a PCI address of
/// `None` a virtual one (no `device`).
fn sysfs(root: &Path, interfaces: &[(&str, &str, Option<&str>)]) {
    for (name, kind, pci) in interfaces {
        let dir = root.join(nic::SYS_CLASS_NET).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        if let Some(pci) = pci {
            let device = root.join("sys/devices/pci0000:00").join(pci).join("virtio");
            fs::create_dir_all(&device).unwrap();
            std::os::unix::fs::symlink(&device, dir.join("device")).unwrap();
        }
    }
}

fn platform_on(root: &Path) -> SystemPlatform {
    SystemPlatform::new(root.to_owned(), Box::new(FakeRunner::default()), NetworkTarget::ClusterNic)
}

fn network_match(root: &Path) -> String {
    let text = read(root, render::NETWORK);
    text.lines().filter(|line| line.starts_with("Name=")).collect::<Vec<_>>().join("\n")
}

#[test]
fn ipv4_goes_to_the_second_nic_in_pci_order_leaving_the_management_nic_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Listed out of order, and with a loopback and a virtual bridge that must not count.
    sysfs(
        dir.path(),
        &[
            ("enp0s4", "1", Some("0000:00:04.0")),
            ("lo", "772", None),
            ("br0", "1", None),
            ("enp0s2", "1", Some("0000:00:02.0")),
            ("enp0s3", "1", Some("0000:00:03.0")),
        ],
    );
    let settings = Settings { ipv4: Some(ipv4()), ..Settings::default() };
    platform_on(dir.path()).apply(Concern::Network, &settings).unwrap();
    assert_eq!(network_match(dir.path()), "Name=enp0s3");
}

#[test]
fn ipv4_goes_to_the_only_nic_of_a_one_nic_appliance() {
    let dir = tempfile::tempdir().unwrap();
    sysfs(dir.path(), &[("lo", "772", None), ("ens18", "1", Some("0000:00:12.0"))]);
    let settings = Settings { ipv4: Some(ipv4()), ..Settings::default() };
    platform_on(dir.path()).apply(Concern::Network, &settings).unwrap();
    assert_eq!(network_match(dir.path()), "Name=ens18");
}

#[test]
fn ipv4_without_a_nic_in_sight_matches_every_ethernet_nic() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { ipv4: Some(ipv4()), ..Settings::default() };
    platform_on(dir.path()).apply(Concern::Network, &settings).unwrap();
    assert_eq!(network_match(dir.path()), nic::ANY_ETHERNET_MATCH);
}
