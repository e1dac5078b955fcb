//! The services of `cargo xtask vm`'s private network, so that the seed's prerequisites (a
//! working NTP server and DNS server) are met without anything leaving this machine: a host
//! on the network at [`SERVICES_ADDRESS`] that answers ARP, NTP (from this machine's clock)
//! and DNS (the peers' names in [`ZONE`]). It speaks raw Ethernet frames on qemu's socket
//! multicast network, the way the VMs' NICs do, so it needs no privileges and no tap device.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// The services' address on the private network (the VMs are `.2`, `.3`, `.4`).
pub(crate) const SERVICES_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 44, 0, 1);
/// The services' MAC address (the VMs' cluster NICs are `52:54:00:44:00:<n+1>`).
const SERVICES_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x44, 0x00, 0x01];
/// The DNS zone answered: `peer<n>.baton.test` is `10.44.0.<n+1>`, `ntp.baton.test` the services.
pub(crate) const ZONE: &str = "baton.test";
/// Peers named in the zone.
const ZONE_PEERS_MAX: u8 = 3;
/// A frame's largest size on this network (Ethernet without jumbo frames, with a VLAN tag).
const FRAME_BYTES_MAX: usize = 1522;
/// Labels in a DNS name, at most (RFC 1035 limits a name to 255 bytes anyway).
const DNS_LABELS_MAX: usize = 16;
/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
const TTL_S: u32 = 60;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const IP_PROTOCOL_UDP: u8 = 17;
const PORT_DNS: u16 = 53;
const PORT_NTP: u16 = 123;

/// Joins the private network's multicast group and answers on it for as long as the process
/// lives (a detached thread).
pub(crate) fn spawn(group: SocketAddrV4) -> anyhow::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // qemu binds the same group and port with SO_REUSEADDR; so must we, to share it.
    socket.set_reuse_address(true)?;
    socket.bind(&group.into())?;
    socket.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)?;
    socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
    socket.set_multicast_loop_v4(true)?;
    // TTL 0: our frames reach the VMs through loopback and never a wire.
    socket.set_multicast_ttl_v4(0)?;
    let socket: UdpSocket = socket.into();
    std::thread::spawn(move || {
        let mut buffer = [0u8; FRAME_BYTES_MAX];
        loop {
            let Ok(size) = socket.recv(&mut buffer) else { continue };
            if let Some(reply) = answer(&buffer[..size], SystemTime::now()) {
                let _ = socket.send_to(&reply, group);
            }
        }
    });
    Ok(())
}

/// The frame to send in reply to `frame`, if it is addressed to the services.
pub(crate) fn answer(frame: &[u8], now: SystemTime) -> Option<Vec<u8>> {
    if frame.len() < 14 || frame[6..12] == SERVICES_MAC {
        return None;
    }
    let source_mac: [u8; 6] = frame[6..12].try_into().ok()?;
    let payload = &frame[14..];
    let reply = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_ARP => (ETHERTYPE_ARP, arp(payload)?),
        ETHERTYPE_IPV4 => (ETHERTYPE_IPV4, ipv4(payload, now)?),
        _ => return None,
    };
    let mut out = Vec::with_capacity(14 + reply.1.len());
    out.extend_from_slice(&source_mac);
    out.extend_from_slice(&SERVICES_MAC);
    out.extend_from_slice(&reply.0.to_be_bytes());
    out.extend_from_slice(&reply.1);
    Some(out)
}

/// An ARP reply to a request for the services' address.
fn arp(request: &[u8]) -> Option<Vec<u8>> {
    // Ethernet + IPv4, request; the target protocol address is ours.
    if request.len() < 28 || request[..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    if request[24..28] != SERVICES_ADDRESS.octets() {
        return None;
    }
    let mut reply = vec![0, 1, 8, 0, 6, 4, 0, 2];
    reply.extend_from_slice(&SERVICES_MAC);
    reply.extend_from_slice(&SERVICES_ADDRESS.octets());
    reply.extend_from_slice(&request[8..18]); // the asker's MAC and address
    Some(reply)
}

/// The IPv4 packet answering a UDP datagram to the services' NTP or DNS port.
fn ipv4(packet: &[u8], now: SystemTime) -> Option<Vec<u8>> {
    let header_bytes = usize::from(*packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4 || header_bytes < 20 || packet.len() < header_bytes + 8 {
        return None;
    }
    if packet[9] != IP_PROTOCOL_UDP || packet[16..20] != SERVICES_ADDRESS.octets() {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let udp = packet.get(header_bytes..total)?;
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let (source_port, port) =
        (u16::from_be_bytes([udp[0], udp[1]]), u16::from_be_bytes([udp[2], udp[3]]));
    let body = udp.get(8..)?;
    let reply = match port {
        PORT_NTP => ntp(body, now)?,
        PORT_DNS => dns(body)?,
        _ => return None,
    };
    Some(udp_packet(source, port, source_port, &reply))
}

/// An IPv4 header and a UDP datagram from the services to `to` (UDP checksum 0: none, which
/// IPv4 allows).
fn udp_packet(to: Ipv4Addr, from_port: u16, to_port: u16, body: &[u8]) -> Vec<u8> {
    let udp_bytes = u16::try_from(8 + body.len()).unwrap_or(u16::MAX);
    let total_bytes = udp_bytes.saturating_add(20);
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total_bytes.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, IP_PROTOCOL_UDP, 0, 0]);
    packet.extend_from_slice(&SERVICES_ADDRESS.octets());
    packet.extend_from_slice(&to.octets());
    let checksum = internet_checksum(&packet);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.extend_from_slice(&from_port.to_be_bytes());
    packet.extend_from_slice(&to_port.to_be_bytes());
    packet.extend_from_slice(&udp_bytes.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(body);
    packet
}

/// RFC 1071's one's complement sum, of an IPv4 header.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// An NTP server's answer (mode 4, stratum 1, this machine's clock) to a client's request.
fn ntp(request: &[u8], now: SystemTime) -> Option<Vec<u8>> {
    const CLIENT_MODE: u8 = 3;
    if request.len() < 48 || request[0] & 0x07 != CLIENT_MODE {
        return None;
    }
    let version = (request[0] >> 3) & 0x07;
    let since_epoch = now.duration_since(UNIX_EPOCH).ok()?;
    let seconds = since_epoch.as_secs() + NTP_UNIX_OFFSET_S;
    let fraction = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    let timestamp = ((seconds & 0xffff_ffff) << 32) | fraction;
    let mut reply = vec![0u8; 48];
    reply[0] = (version << 3) | 4; // leap indicator 0: in sync; mode 4: server
    reply[1] = 1; // stratum 1: a reference clock (this machine's)
    reply[2] = request[2]; // poll interval, as asked
    reply[3] = 0xec; // precision 2^-20 s
    reply[12..16].copy_from_slice(b"LOCL");
    reply[16..24].copy_from_slice(&timestamp.to_be_bytes()); // reference
    reply[24..32].copy_from_slice(&request[40..48]); // origin: the client's transmit time
    reply[32..40].copy_from_slice(&timestamp.to_be_bytes()); // receive
    reply[40..48].copy_from_slice(&timestamp.to_be_bytes()); // transmit
    Some(reply)
}

/// The address of a name in the zone, `None` for a name outside it.
fn lookup(name: &str) -> Option<Option<Ipv4Addr>> {
    let host = name.strip_suffix(ZONE)?.strip_suffix('.').unwrap_or_default();
    if host.is_empty() {
        return Some(None);
    }
    if host == "ntp" {
        return Some(Some(SERVICES_ADDRESS));
    }
    let peer = host.strip_prefix("peer").and_then(|n| n.parse::<u8>().ok());
    Some(peer.filter(|n| (1..=ZONE_PEERS_MAX).contains(n)).map(|n| Ipv4Addr::new(10, 44, 0, n + 1)))
}

/// A DNS answer to a standard query: an A record for a name in the zone, "no such name" for
/// another name in it, "refused" for anything outside it (no recursion: nothing is forwarded).
fn dns(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let (name, end) = question_name(query)?;
    let question = query.get(12..end + 4)?;
    let record_type = u16::from_be_bytes([query[end], query[end + 1]]);
    const TYPE_A: u16 = 1;
    const RCODE_NXDOMAIN: u8 = 3;
    const RCODE_REFUSED: u8 = 5;
    let (rcode, address) = match lookup(&name.to_ascii_lowercase()) {
        None => (RCODE_REFUSED, None),
        Some(None) if name.len() > ZONE.len() => (RCODE_NXDOMAIN, None),
        Some(found) => (0, found.filter(|_| record_type == TYPE_A)),
    };
    let mut reply = query[..2].to_vec();
    // Response, authoritative, recursion desired copied, no recursion available.
    reply.extend_from_slice(&[0x84 | (query[2] & 0x01), rcode]);
    reply.extend_from_slice(&[0, 1, 0, u8::from(address.is_some()), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let Some(address) = address {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // the question's name, A, IN
        reply.extend_from_slice(&TTL_S.to_be_bytes());
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

/// The question's name (dotted) and where its type starts.
fn question_name(query: &[u8]) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut at = 12;
    for _ in 0..DNS_LABELS_MAX {
        let length = usize::from(*query.get(at)?);
        if length == 0 {
            return Some((labels.join("."), at + 1));
        }
        // A compressed name (0xc0) never appears in a question of a standard query.
        if length > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + length)?).into_owned());
        at += 1 + length;
    }
    None
}

#[cfg(test)]
mod tests;
