//! Which NIC the operator's IPv4 settings configure: the appliance's stable rule. Ethernet
//! NICs are ordered by their device path (the PCI address, which the slot a NIC sits in
//! fixes). With one NIC, the settings configure it. With two or more, the first is the
//! management NIC and keeps its factory DHCP address whatever the operator saves, and the
//! settings configure the second, the cluster NIC; any further NIC stays on DHCP.

use std::fs;
use std::path::Path;

/// Where the kernel lists network interfaces, under the platform's root directory.
pub const SYS_CLASS_NET: &str = "sys/class/net";
/// `ARPHRD_ETHER`, an Ethernet interface's `type` in sysfs.
const ARPHRD_ETHER: &str = "1";
/// Interfaces looked at, at most: a machine with more is not an appliance we know.
const INTERFACES_MAX: usize = 64;
/// What matches when no Ethernet NIC can be found (a root without sysfs, as in tests): every
/// Ethernet NIC by its name.
pub const ANY_ETHERNET_MATCH: &str = "Name=en* eth*";

/// Which NIC(s) the IPv4 settings' networkd file matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkTarget {
    /// Fixed `[Match]` lines (batond's `--os-network-match`).
    Match(String),
    /// The cluster NIC by the rule above, looked up in sysfs each time the settings apply.
    ClusterNic,
}

/// An Ethernet NIC: its interface name and the canonical path of its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub device_path: String,
}

/// The NIC the operator's settings configure, by the rule above; `None` without any NIC.
pub fn cluster_nic(nics: &[Nic]) -> Option<&Nic> {
    let mut ordered: Vec<&Nic> = nics.iter().collect();
    ordered.sort_by(|a, b| a.device_path.cmp(&b.device_path).then(a.name.cmp(&b.name)));
    ordered.get(1).or(ordered.first()).copied()
}

/// The `[Match]` lines for `target`, reading the NICs under `root` when it is the rule's.
pub fn match_lines(target: &NetworkTarget, root: &Path) -> String {
    match target {
        NetworkTarget::Match(lines) => lines.clone(),
        NetworkTarget::ClusterNic => cluster_nic(&ethernet_nics(&root.join(SYS_CLASS_NET)))
            .map_or_else(|| ANY_ETHERNET_MATCH.to_owned(), |nic| format!("Name={}", nic.name)),
    }
}

/// The physical Ethernet NICs listed in `sys_class_net` (virtual ones have no `device`).
pub fn ethernet_nics(sys_class_net: &Path) -> Vec<Nic> {
    let Ok(entries) = fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    entries
        .take(INTERFACES_MAX)
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let kind = fs::read_to_string(path.join("type")).ok()?;
            if kind.trim() != ARPHRD_ETHER {
                return None;
            }
            let device_path = fs::canonicalize(path.join("device")).ok()?;
            Some(Nic {
                name: entry.file_name().to_string_lossy().into_owned(),
                device_path: device_path.to_string_lossy().into_owned(),
            })
        })
        .collect()
}
