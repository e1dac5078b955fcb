//! The factory image talks to no server its operator did not configure (issue 17): checked on
//! the files the image build lays over a root file system, and on the VMs' user network. The
//! slow VM cluster test checks the same inside a booted guest.

use crate::image::{FACTORY_RESOLV_CONF, overlay};
use crate::vm::management_netdev;
use std::fs;
use std::path::Path;

/// The root file system as mmdebstrap leaves it, as far as these defaults go: the build host's
/// resolver in `/etc/resolv.conf`.
fn built_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary root");
    fs::create_dir_all(root.path().join("etc")).expect("etc");
    fs::write(root.path().join("etc/resolv.conf"), "nameserver 10.255.255.53\n").expect("resolv");
    overlay(root.path()).expect("the overlay applies");
    root
}

/// The value timesyncd ends up with for `key`: its drop-ins are read in name order and the last
/// assignment wins (an empty one clears the list). `None` when no drop-in sets it.
fn timesyncd_value(root: &Path, key: &str) -> Option<String> {
    let dir = root.join("etc/systemd/timesyncd.conf.d");
    let mut files: Vec<_> =
        fs::read_dir(dir).ok()?.map(|entry| entry.expect("entry").path()).collect();
    files.sort();
    let prefix = format!("{key}=");
    let mut value = None;
    for file in files {
        for line in fs::read_to_string(file).expect("drop-in").lines() {
            if let Some(rest) = line.trim().strip_prefix(&prefix) {
                value = Some(rest.trim().to_owned());
            }
        }
    }
    value
}

/// The one fallback time server the image may name: its own loopback, where nothing answers.
pub(crate) const LOOPBACK_FALLBACK: &str = "127.0.0.1";

#[test]
fn no_fallback_time_servers() {
    let root = built_root();
    // Not empty: systemd 252 takes an empty list as "not set" and keeps Debian's pool.
    assert_eq!(timesyncd_value(root.path(), "FallbackNTP").as_deref(), Some(LOOPBACK_FALLBACK));
    assert_eq!(timesyncd_value(root.path(), "NTP"), None, "no NTP server before the operator's");
}

#[test]
fn no_name_server_from_the_build_host() {
    let root = built_root();
    let resolv_conf = fs::read_to_string(root.path().join("etc/resolv.conf")).expect("resolv.conf");
    assert_eq!(resolv_conf, FACTORY_RESOLV_CONF);
    assert!(!resolv_conf.lines().any(|line| line.starts_with("nameserver")), "{resolv_conf}");
}

#[test]
fn dhcp_gives_addresses_only() {
    let root = built_root();
    let dir = root.path().join("etc/systemd/network");
    let mut checked = 0;
    for entry in fs::read_dir(dir).expect("network dir") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("network file");
        if !text.lines().any(|line| line.trim().starts_with("DHCP=") && !line.contains("=no")) {
            continue;
        }
        for setting in ["UseDNS=no", "UseNTP=no", "UseDomains=no"] {
            assert!(
                text.lines().any(|line| line.trim() == setting),
                "{}: {setting}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "the factory DHCP file is gone");
}

#[test]
fn user_network_is_restricted_but_forwards_the_admin_port() {
    let netdev = management_netdev("127.0.0.2", &[], Path::new("/x/xtask")).expect("netdev");
    let options: Vec<&str> = netdev.split(',').collect();
    assert_eq!(options[0], "user");
    assert!(options.contains(&"restrict=on"), "{netdev}");
    assert!(options.contains(&"hostfwd=tcp:127.0.0.2:8443-:8443"), "{netdev}");
    assert!(!options.iter().any(|option| option.starts_with("dns=")), "{netdev}");
    let forwarding =
        management_netdev("127.0.0.2", &[8080], Path::new("/x/xtask")).expect("netdev");
    assert!(forwarding.contains(",restrict=on,"), "{forwarding}");
    assert!(
        forwarding.ends_with(",guestfwd=tcp:10.0.2.100:8080-cmd:/x/xtask relay 127.0.0.1:8080"),
        "{forwarding}"
    );
}
