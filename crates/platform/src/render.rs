//! The files the OS reads, rendered from the settings: pure functions, so what the appliance
//! gets is tested without a machine. Paths are relative to the target's root directory.

use crate::Settings;
use model::record::{EthernetSpeed, SyslogTransport};

/// Header of every file Baton writes, so an operator at the console knows edits are lost.
pub const HEADER: &str =
    "# Written by batond from this peer's settings; local edits are overwritten.\n";

pub const HOSTNAME: &str = "etc/hostname";
pub const HOSTS: &str = "etc/hosts";
/// Numbered below the factory DHCP file (90-) so it wins for the NIC it matches (the cluster
/// NIC, `nic.rs`); every other NIC keeps DHCP.
pub const NETWORK: &str = "etc/systemd/network/10-baton-ipv4.network";
pub const RESOLV_CONF: &str = "etc/resolv.conf";
pub const TIMESYNCD: &str = "etc/systemd/timesyncd.conf.d/50-baton.conf";
pub const LOCALTIME: &str = "etc/localtime";
pub const TIMEZONE: &str = "etc/timezone";
pub const ZONEINFO: &str = "usr/share/zoneinfo";
pub const SHADOW: &str = "etc/shadow";
pub const RSYSLOG: &str = "etc/rsyslog.d/50-baton-remote.conf";
pub const SNMPD: &str = "etc/snmp/snmpd.conf";
/// A drop-in for systemd's default `.link` file: a `.link` file of our own would replace it
/// whole and lose its interface naming policy.
pub const ETHERNET_LINK: &str = "etc/systemd/network/99-default.link.d/50-baton-ethernet.conf";
/// Local CA certificates that `update-ca-certificates` adds to the OS trust store.
pub const TRUSTED_CA: &str = "usr/local/share/ca-certificates/baton-trusted-ca.crt";
/// agetty prints this above the login prompt on tty1 and the serial console.
pub const ISSUE: &str = "etc/issue";

/// Default ports of remote syslog (RFC 5426 for UDP/TCP, RFC 5425 for TLS).
const SYSLOG_PORT_DEFAULT: u16 = 514;
const SYSLOG_TLS_PORT_DEFAULT: u16 = 6514;
/// Messages rsyslog keeps per server while it is unreachable, so a dead server never blocks
/// local logging.
const SYSLOG_QUEUE_MESSAGES_MAX: u32 = 10_000;

/// The fully qualified name, or the host name alone without a domain.
pub fn fqdn(settings: &Settings) -> Option<String> {
    let name = settings.system_name.as_ref()?;
    Some(if name.domain.is_empty() {
        name.host_name.clone()
    } else {
        format!("{}.{}", name.host_name, name.domain)
    })
}

pub fn hostname(settings: &Settings) -> Option<String> {
    settings.system_name.as_ref().map(|name| format!("{}\n", name.host_name))
}

/// `/etc/hosts` with its `127.0.1.1` line naming this host (Debian's convention, so `hostname
/// -f` answers the full name); every other line is kept.
pub fn hosts(settings: &Settings, current: &str) -> Option<String> {
    let name = settings.system_name.as_ref()?;
    let fqdn = fqdn(settings)?;
    let line = if fqdn == name.host_name {
        format!("127.0.1.1\t{}", name.host_name)
    } else {
        format!("127.0.1.1\t{fqdn} {}", name.host_name)
    };
    let mut lines: Vec<String> = Vec::new();
    let mut placed = false;
    for existing in current.lines() {
        if existing.split_whitespace().next() == Some("127.0.1.1") {
            if !placed {
                lines.push(line.clone());
                placed = true;
            }
        } else {
            lines.push(existing.to_owned());
        }
    }
    if !placed {
        let after_localhost = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some("127.0.0.1"))
            .map_or(0, |index| index + 1);
        lines.insert(after_localhost, line);
    }
    Some(lines.join("\n") + "\n")
}

/// The systemd-networkd file for the NIC(s) matched by `network_match` (lines of a `[Match]`
/// section, e.g. `Name=enp0s3`: the cluster NIC, `nic.rs`).
pub fn network(settings: &Settings, network_match: &str) -> Option<String> {
    let ip = settings.ipv4.as_ref()?;
    let mut text = format!("{HEADER}[Match]\n{}\n\n[Network]\n", network_match.trim_end());
    text.push_str(&format!("Address={}/{}\n", ip.address, ip.prefix_length));
    for extra in &ip.additional_addresses {
        text.push_str(&format!("Address={}/{}\n", extra.address, extra.prefix_length));
    }
    text.push_str(&format!("Gateway={}\n", ip.gateway));
    // Static addressing means no DHCP (which the factory file turns on) and no IPv4LL.
    text.push_str("DHCP=no\nLinkLocalAddressing=no\n");
    Some(text)
}

/// `/etc/resolv.conf`: the image has no systemd-resolved, so glibc reads this file directly.
pub fn resolv_conf(settings: &Settings) -> Option<String> {
    let dns = settings.dns.as_ref()?;
    let mut text = String::from(HEADER);
    if let Some(name) = settings.system_name.as_ref().filter(|name| !name.domain.is_empty()) {
        text.push_str(&format!("search {}\n", name.domain));
    }
    // glibc uses the first three name servers; the rest are listed for the operator's eyes.
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    Some(text)
}

/// timesyncd's drop-in. An empty list still gets a file: `NTP=` with no server resets the
/// list, and timesyncd falls back to the image's only fallback, loopback (`rootfs/`).
pub fn timesyncd(settings: &Settings) -> Option<String> {
    let ntp = settings.ntp.as_ref()?;
    Some(format!("{HEADER}[Time]\nNTP={}\n", ntp.servers.join(" ")))
}

pub fn timezone(settings: &Settings) -> Option<String> {
    settings.time_zone.as_ref().map(|zone| format!("{}\n", zone.name))
}

/// rsyslog forwarding rules, one action per server, each with its own disk-less queue so a
/// server that is down delays nothing else. `None` when nothing is forwarded (file removed).
pub fn rsyslog(settings: &Settings) -> Option<String> {
    let syslog = settings.syslog.as_ref().filter(|syslog| !syslog.servers.is_empty())?;
    let mut text = String::from(HEADER);
    if syslog.servers.iter().any(|server| server.transport == SyslogTransport::Tls) {
        text.push_str(
            "global(DefaultNetstreamDriverCAFile=\"/etc/ssl/certs/ca-certificates.crt\")\n",
        );
    }
    for server in &syslog.servers {
        let (protocol, tls, default_port) = match server.transport {
            SyslogTransport::Udp => ("udp", "", SYSLOG_PORT_DEFAULT),
            SyslogTransport::Tcp => ("tcp", "", SYSLOG_PORT_DEFAULT),
            SyslogTransport::Tls => (
                "tcp",
                " StreamDriver=\"gtls\" StreamDriverMode=\"1\" StreamDriverAuthMode=\"x509/name\" StreamDriverPermittedPeers=\"",
                SYSLOG_TLS_PORT_DEFAULT,
            ),
        };
        let port = server.port.unwrap_or(default_port);
        let tls = if tls.is_empty() { String::new() } else { format!("{tls}{}\"", server.host) };
        text.push_str(&format!(
            "*.* action(type=\"omfwd\" target=\"{}\" port=\"{port}\" protocol=\"{protocol}\"{tls} \
             queue.type=\"LinkedList\" queue.size=\"{SYSLOG_QUEUE_MESSAGES_MAX}\" \
             action.resumeRetryCount=\"-1\")\n",
            server.host
        ));
    }
    Some(text)
}

/// snmpd's configuration (SNMPv2c, read-only), or `None` while SNMP is off. Contact and
/// location are free text: line breaks become spaces so they stay one directive each.
pub fn snmpd(settings: &Settings) -> Option<String> {
    let snmp = settings.snmp.as_ref().filter(|snmp| snmp.enabled)?;
    let one_line = |text: &str| -> String {
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
    };
    let mut text =
        format!("{HEADER}agentAddress udp:161\nrocommunity {} default\n", snmp.community);
    if !snmp.contact.is_empty() {
        text.push_str(&format!("sysContact {}\n", one_line(&snmp.contact)));
    }
    if !snmp.location.is_empty() {
        text.push_str(&format!("sysLocation {}\n", one_line(&snmp.location)));
    }
    if let Some(fqdn) = fqdn(settings) {
        text.push_str(&format!("sysName {fqdn}\n"));
    }
    // Application services (layer 7) and end-to-end (layer 4).
    text.push_str("sysServices 72\n");
    Some(text)
}

/// The operator's trusted CAs for the OS trust store, or `None` when there are none (file
/// removed).
pub fn trusted_ca(settings: &Settings) -> Option<String> {
    let pem = settings.trusted_ca_pem.as_deref().filter(|pem| !pem.trim().is_empty())?;
    Some(if pem.ends_with('\n') { pem.to_owned() } else { format!("{pem}\n") })
}

/// The `.link` drop-in fixing speed and duplex, or `None` for auto-negotiation (file removed).
pub fn ethernet_link(settings: &Settings) -> Option<String> {
    let (bits, duplex) = match settings.ethernet.as_ref()?.speed {
        EthernetSpeed::Auto => return None,
        EthernetSpeed::Full1000 => ("1G", "full"),
        EthernetSpeed::Full100 => ("100M", "full"),
        EthernetSpeed::Half100 => ("100M", "half"),
        EthernetSpeed::Full10 => ("10M", "full"),
        EthernetSpeed::Half10 => ("10M", "half"),
    };
    Some(format!("{HEADER}[Link]\nAutoNegotiation=no\nBitsPerSecond={bits}\nDuplex={duplex}\n"))
}

/// The front panel, as agetty's issue file: product and version, host name, configured
/// addresses (and `\4`, agetty's live address of the default route's NIC), hardware serial
/// and state. With the panel off, only the login prompt's line remains.
pub fn panel(settings: &Settings) -> String {
    if !settings.panel_enabled() {
        return "\\l\n\n".to_owned();
    }
    let facts = &settings.panel;
    let name = fqdn(settings).unwrap_or_else(|| "\\n".to_owned());
    let mut addresses = Vec::new();
    match &settings.ipv4 {
        Some(ip) => {
            addresses.push(format!("{}/{}", ip.address, ip.prefix_length));
            addresses.extend(
                ip.additional_addresses
                    .iter()
                    .map(|extra| format!("{}/{}", extra.address, extra.prefix_length)),
            );
        }
        None => addresses.push("\\4 (DHCP)".to_owned()),
    }
    let state = if settings.maintenance.as_ref().is_some_and(|m| m.enabled) {
        "maintenance mode".to_owned()
    } else {
        match settings.cluster.as_ref().filter(|cluster| cluster.is_clustered()) {
            Some(cluster) => match cluster.peers.len() {
                // The last peer of a rolling upgrade lists only itself for a while.
                1 => "active, cluster of 1 peer".to_owned(),
                peers => format!("active, cluster of {peers} peers"),
            },
            None => "active, standalone".to_owned(),
        }
    };
    // agetty expands backslash escapes; a literal backslash in our text would not survive, and
    // none of these fields can hold one except the serial, which is made safe here.
    let serial = facts.hardware_serial.replace('\\', "/");
    format!(
        "Baton {version}  --  {name}\n\
         Address:  {addresses}\n\
         Serial:   {serial}\n\
         State:    {state}\n\
         Admin:    https://<address>:8443/\n\n\\l\n\n",
        version = facts.version,
        addresses = addresses.join(", "),
    )
}
