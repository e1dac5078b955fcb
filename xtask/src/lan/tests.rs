//! The private network's services answer the frames a guest sends, as a guest's stack needs.

use super::*;
use std::time::Duration;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x44, 0x00, 0x03];
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 44, 0, 3);

fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn udp_frame(port: u16, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&u16::try_from(28 + body.len()).expect("size").to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, IP_PROTOCOL_UDP, 0, 0]);
    packet.extend_from_slice(&GUEST.octets());
    packet.extend_from_slice(&SERVICES_ADDRESS.octets());
    packet.extend_from_slice(&40_000u16.to_be_bytes());
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(&u16::try_from(8 + body.len()).expect("size").to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(body);
    frame(ETHERTYPE_IPV4, &packet)
}

/// The UDP body of a reply frame, after checking it goes back to the guest from the services.
fn udp_body(reply: &[u8], port: u16) -> Vec<u8> {
    assert_eq!(reply[..6], GUEST_MAC);
    assert_eq!(reply[6..12], SERVICES_MAC);
    let ip = &reply[14..];
    assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum");
    assert_eq!(ip[12..16], SERVICES_ADDRESS.octets());
    assert_eq!(ip[16..20], GUEST.octets());
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
    assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), port);
    assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), 40_000);
    ip[28..].to_vec()
}

#[test]
fn arp_for_the_services_address_is_answered_with_their_mac() {
    let mut request = vec![0, 1, 8, 0, 6, 4, 0, 1];
    request.extend_from_slice(&GUEST_MAC);
    request.extend_from_slice(&GUEST.octets());
    request.extend_from_slice(&[0; 6]);
    request.extend_from_slice(&SERVICES_ADDRESS.octets());
    let reply = answer(&frame(ETHERTYPE_ARP, &request), SystemTime::now()).expect("a reply");
    assert_eq!(reply[..6], GUEST_MAC);
    let arp = &reply[14..];
    assert_eq!(arp[6..8], [0, 2], "an ARP reply");
    assert_eq!(arp[8..14], SERVICES_MAC);
    assert_eq!(arp[14..18], SERVICES_ADDRESS.octets());
    assert_eq!(arp[18..24], GUEST_MAC);
    assert_eq!(arp[24..28], GUEST.octets());

    request[24..28].copy_from_slice(&[10, 44, 0, 2]); // another guest's address
    assert_eq!(answer(&frame(ETHERTYPE_ARP, &request), SystemTime::now()), None);
}

#[test]
fn ntp_answers_as_a_synchronised_server_with_this_machines_time() {
    let mut request = vec![0u8; 48];
    request[0] = (4 << 3) | 3; // version 4, client
    request[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
    let reply = udp_body(&answer(&udp_frame(PORT_NTP, &request), now).expect("a reply"), PORT_NTP);
    assert_eq!(reply.len(), 48);
    assert_eq!(reply[0], (4 << 3) | 4, "leap 0 (synchronised), version 4, server");
    assert_eq!(reply[1], 1, "stratum 1");
    assert_eq!(reply[24..32], [1, 2, 3, 4, 5, 6, 7, 8], "origin = the client's transmit time");
    let seconds = u32::from_be_bytes(reply[40..44].try_into().expect("4 bytes"));
    assert_eq!(u64::from(seconds), 1_700_000_000 + NTP_UNIX_OFFSET_S);
    let fraction = u32::from_be_bytes(reply[44..48].try_into().expect("4 bytes"));
    assert_eq!(fraction, 1 << 31, "half a second");
}

fn dns_query(name: &str, record_type: u16) -> Vec<u8> {
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("label"));
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0]);
    query.extend_from_slice(&record_type.to_be_bytes());
    query.extend_from_slice(&[0, 1]);
    query
}

fn dns_reply(name: &str, record_type: u16) -> Vec<u8> {
    let frame = udp_frame(PORT_DNS, &dns_query(name, record_type));
    udp_body(&answer(&frame, SystemTime::now()).expect("a reply"), PORT_DNS)
}

#[test]
fn dns_names_the_peers_and_forwards_nothing() {
    let reply = dns_reply("Peer2.baton.test", 1);
    assert_eq!(reply[..2], [0xab, 0xcd], "same id");
    assert_eq!(reply[3] & 0x0f, 0, "no error");
    assert_eq!(reply[6..8], [0, 1], "one answer");
    assert_eq!(reply[reply.len() - 4..], [10, 44, 0, 3]);
    let ntp = dns_reply("ntp.baton.test", 1);
    assert_eq!(ntp[ntp.len() - 4..], SERVICES_ADDRESS.octets());

    let unknown = dns_reply("peer9.baton.test", 1);
    assert_eq!(unknown[3] & 0x0f, 3, "no such name");
    let aaaa = dns_reply("peer1.baton.test", 28);
    assert_eq!((aaaa[3] & 0x0f, aaaa[7]), (0, 0), "a name without an IPv6 address");
    let outside = dns_reply("example.com", 1);
    assert_eq!((outside[3] & 0x0f, outside[7]), (5, 0), "refused, not forwarded");
}

#[test]
fn frames_not_for_the_services_get_no_answer() {
    let mut request = vec![0u8; 48];
    request[0] = (4 << 3) | 3;
    assert_eq!(answer(&udp_frame(9999, &request), SystemTime::now()), None, "another port");
    let mut own = udp_frame(PORT_NTP, &request);
    own[6..12].copy_from_slice(&SERVICES_MAC);
    assert_eq!(answer(&own, SystemTime::now()), None, "our own frame, looped back");
    assert_eq!(answer(&[0u8; 10], SystemTime::now()), None, "a runt");
    let mut truncated = udp_frame(PORT_DNS, &dns_query("peer1.baton.test", 1));
    truncated.truncate(50);
    assert_eq!(answer(&truncated, SystemTime::now()), None, "a cut-off query");
}
