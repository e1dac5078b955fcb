//! Field-level validation of records. Every rule reports into one list, so the operator sees
//! all problems of a form at once, each attached to the field it concerns.

use crate::record::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// One problem with one field of a record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `pools[1]` or `additional_addresses[0].address`.
    pub field: String,
    pub message: String,
}

/// Longest record name; names appear in URLs, logs and the bridge's conference lists.
pub const NAME_LENGTH_MAX: usize = 64;
/// A bridge's own conference identifier (a TelePresence Server `conferenceID`).
pub const BRIDGE_CONFERENCE_ID_BYTES_MAX: usize = 256;
pub const CREDENTIAL_LENGTH_MAX: usize = 128;
pub const DNS_SERVERS_MAX: usize = 5;
pub const NTP_SERVERS_MAX: usize = 5;
pub const SYSLOG_SERVERS_MAX: usize = 4;
pub const ADDITIONAL_ADDRESSES_MAX: usize = 16;
pub const POOLS_PER_PREFERENCE_MAX: usize = 32;
pub const BRIDGES_PER_POOL_MAX: usize = 64;
pub const CAPACITY_PORTS_MAX: u32 = 10_000;
/// A year: the longest interval between scheduled backups.
pub const BACKUP_INTERVAL_HOURS_MAX: u32 = 24 * 366;
pub const BACKUP_KEEP_COUNT_MAX: u32 = 1_000;
pub const BACKUP_FOLDER_LENGTH_MAX: usize = 1_024;
pub const PARTICIPANTS_MAX: u32 = 10_000;
pub const PIN_DIGITS_MIN: usize = 4;
pub const PIN_DIGITS_MAX: usize = 20;
/// Compiled size limit of an alias pattern: the policy service matches every call against
/// every alias, so a pathological pattern must be refused at save time.
pub const PATTERN_SIZE_BYTES_MAX: usize = 256 * 1024;
pub const PEM_LENGTH_MAX: usize = 64 * 1024;
/// Longer than any SHA-crypt or yescrypt hash with the largest parameters.
pub const CRYPT_HASH_LENGTH_MAX: usize = 256;
/// Peers in the largest cluster (the full edition).
pub const CLUSTER_PEERS_MAX: usize = 3;
pub const PRE_SHARED_KEY_LENGTH_MIN: usize = 8;

#[derive(Default)]
struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
    }

    fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.error(field, message);
        }
    }

    fn name(&mut self, field: &str, name: &str) {
        if let Err(problem) = check_name(name) {
            self.error(field, problem.to_string());
        }
    }

    fn credential(&mut self, field: &str, value: &str, required: bool) {
        if required && value.is_empty() {
            self.error(field, "must not be empty");
        } else if value.len() > CREDENTIAL_LENGTH_MAX {
            self.error(field, format!("must be at most {CREDENTIAL_LENGTH_MAX} bytes"));
        } else if value.chars().any(char::is_control) {
            self.error(field, "must not contain control characters");
        }
    }

    fn password_hash(&mut self, field: &str, hash: &str) {
        if !hash.starts_with("$argon2id$") {
            self.error(field, "must be an argon2id hash");
        }
    }

    /// The root password is checked by the OS's crypt(3), which reads SHA-crypt and yescrypt
    /// (not argon2id): `$6$`/`$5$`/`$y$` followed by salt and hash, nothing that would break
    /// an `/etc/shadow` line.
    fn crypt_hash(&mut self, field: &str, hash: &str) {
        let scheme = ["$6$", "$5$", "$y$"].iter().any(|prefix| hash.starts_with(prefix));
        let shadow_safe = hash.len() <= CRYPT_HASH_LENGTH_MAX
            && hash.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !(scheme && shadow_safe) {
            self.error(field, "must be a crypt(3) SHA-512, SHA-256 or yescrypt hash");
        }
    }

    fn pin(&mut self, field: &str, pin: &Option<String>) {
        if let Some(pin) = pin {
            let digits = pin.chars().all(|c| c.is_ascii_digit());
            if !digits || !(PIN_DIGITS_MIN..=PIN_DIGITS_MAX).contains(&pin.len()) {
                self.error(field, format!("must be {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} digits"));
            }
        }
    }

    fn names_unique(&mut self, field: &str, names: &[String]) {
        let mut seen = BTreeSet::new();
        for (index, name) in names.iter().enumerate() {
            if !seen.insert(name) {
                self.error(format!("{field}[{index}]"), format!("{name:?} is listed twice"));
            }
        }
    }

    fn host(&mut self, field: &str, host: &str) {
        if !is_host(host) {
            self.error(field, "must be an IP address or a DNS name");
        }
    }

    fn pem(&mut self, field: &str, pem: &str, label: &str) {
        if pem.is_empty() {
            return;
        }
        if pem.len() > PEM_LENGTH_MAX {
            self.error(field, format!("must be at most {PEM_LENGTH_MAX} bytes"));
        } else if !pem.contains(&format!("-----BEGIN {label}")) || !pem.contains("-----END ") {
            self.error(field, format!("must be PEM text containing a {label}"));
        }
    }
}

/// The digest a SHA-256 fingerprint names: 64 hex digits, in pairs joined by `:` (as browsers
/// and Baton show it) or not, in either case; `None` for anything else.
pub fn sha256_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let digits: String = if text.contains(':') {
        let pairs: Vec<&str> = text.split(':').collect();
        if pairs.iter().any(|pair| pair.len() != 2) {
            return None;
        }
        pairs.concat()
    } else {
        text.to_owned()
    };
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(digest)
}

/// True for an IPv4/IPv6 literal or an RFC 1123 host name.
pub fn is_host(text: &str) -> bool {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !text.is_empty() && text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// True for one RFC 1123 label: letters, digits and inner hyphens, at most 63 bytes.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// `host` or `host:port`; IPv6 literals need brackets when a port is given.
fn is_host_port(text: &str) -> bool {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, tail)) = rest.split_once(']') else { return false };
        return ip.parse::<std::net::Ipv6Addr>().is_ok()
            && (tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port));
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => is_host(host) && is_port(port),
        None => is_host(text),
    }
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok_and(|port| port != 0)
}

fn in_subnet(address: Ipv4Addr, other: Ipv4Addr, prefix_length: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_length)).unwrap_or(0);
    u32::from(address) & mask == u32::from(other) & mask
}

/// Checks one record on its own (no references to other records). Returns every problem.
/// Why `name` cannot be a record's name, if it cannot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum NameProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {NAME_LENGTH_MAX} characters")]
    TooLong,
    #[error("must not start or end with spaces")]
    SurroundingSpaces,
    #[error("must not contain control characters or '/'")]
    ForbiddenCharacter,
}

/// The rule every record name follows; also checked before a name is used elsewhere first
/// (the policy service names conferences on bridges before recording them).
pub fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        Err(NameProblem::Empty)
    } else if name.chars().count() > NAME_LENGTH_MAX {
        Err(NameProblem::TooLong)
    } else if name.trim() != name {
        Err(NameProblem::SurroundingSpaces)
    } else if name.chars().any(|c| c.is_control() || c == '/') {
        Err(NameProblem::ForbiddenCharacter)
    } else {
        Ok(())
    }
}

pub fn validate(record: &Record) -> Vec<FieldError> {
    let mut report = Report::default();
    let r = &mut report;
    match record {
        Record::Administrator(a) => {
            r.name("name", &a.name);
            r.password_hash("password_hash", &a.password_hash);
        }
        Record::Bridge(b) => {
            r.name("name", &b.name);
            r.check(
                is_host_port(&b.address),
                "address",
                "must be a host name or IP address, optionally with :port",
            );
            r.credential("username", &b.username, true);
            r.credential("password", &b.password, false);
            r.check(
                (1..=CAPACITY_PORTS_MAX).contains(&b.capacity_ports),
                "capacity_ports",
                &format!("must be between 1 and {CAPACITY_PORTS_MAX}"),
            );
            r.check(
                b.pinned_sha256.as_deref().is_none_or(|pin| sha256_fingerprint(pin).is_some()),
                "pinned_sha256",
                "must be a SHA-256 fingerprint: 32 hex pairs, as AB:CD:…",
            );
        }
        Record::BridgePool(p) => {
            r.name("name", &p.name);
            r.check(p.bridges.len() <= BRIDGES_PER_POOL_MAX, "bridges", "lists too many bridges");
            r.names_unique("bridges", &p.bridges);
        }
        Record::ServicePreference(s) => {
            r.name("name", &s.name);
            r.check(!s.pools.is_empty(), "pools", "must list at least one bridge pool");
            r.check(s.pools.len() <= POOLS_PER_PREFERENCE_MAX, "pools", "lists too many pools");
            r.names_unique("pools", &s.pools);
        }
        Record::ConferenceTemplate(t) => {
            r.name("name", &t.name);
            r.name("service_preference", &t.service_preference);
            if let Some(max) = t.max_participants {
                r.check(
                    (2..=PARTICIPANTS_MAX).contains(&max),
                    "max_participants",
                    &format!("must be between 2 and {PARTICIPANTS_MAX}"),
                );
            }
            r.pin("chair_pin", &t.chair_pin);
            r.pin("guest_pin", &t.guest_pin);
            if t.guest_pin.is_some() && t.conference_type == ConferenceType::Meeting {
                r.error("guest_pin", "only lectures have guests; use chair_pin for a meeting");
            }
            if t.guest_pin.is_some() && t.guest_pin == t.chair_pin {
                r.error("guest_pin", "must differ from chair_pin, or guests could join as chairs");
            }
        }
        Record::ConferenceAlias(a) => {
            r.name("name", &a.name);
            r.name("template", &a.template);
            validate_alias_pattern(r, &a.pattern, &a.conference_name);
        }
        Record::Location(l) => {
            r.name("name", &l.name);
            r.check(l.description.len() <= 256, "description", "must be at most 256 bytes");
        }
        Record::PolicyService(p) => {
            // The VCS stores at most 30 characters of password; the user name has no stated limit.
            r.credential("username", &p.username, true);
            r.password_hash("password_hash", &p.password_hash);
        }
        Record::Licence(l) => {
            let key_ok = !l.release_key.is_empty()
                && l.release_key.len() <= 64
                && l.release_key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            r.check(
                key_ok,
                "release_key",
                "must be letters, digits and '-', at most 64 characters",
            );
            if l.edition == Edition::Essentials {
                r.error(
                    "edition",
                    "a release key unlocks full or select; remove the licence for essentials",
                );
            }
            for (index, key) in l.option_keys.iter().enumerate() {
                let ok = !key.is_empty()
                    && key.len() <= 64
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                r.check(ok, &format!("option_keys[{index}]"), "must be letters, digits and '-'");
            }
        }
        Record::Ethernet(_) | Record::AdministrationAccess(_) | Record::Maintenance(_) => {}
        Record::Conference(c) => {
            r.name("name", &c.name);
            r.name("bridge", &c.bridge);
            r.name("template", &c.template);
            r.check(
                !c.bridge_conference_id.is_empty()
                    && c.bridge_conference_id.len() <= BRIDGE_CONFERENCE_ID_BYTES_MAX,
                "bridge_conference_id",
                &format!("must be 1 to {BRIDGE_CONFERENCE_ID_BYTES_MAX} bytes"),
            );
        }
        Record::Ipv4(ip) => {
            r.check(
                (1..=32).contains(&ip.prefix_length),
                "prefix_length",
                "must be between 1 and 32",
            );
            let usable =
                |a: Ipv4Addr| !(a.is_unspecified() || a.is_broadcast() || a.is_multicast());
            r.check(usable(ip.address), "address", "must be a unicast address");
            if (1..=32).contains(&ip.prefix_length)
                && !in_subnet(ip.address, ip.gateway, ip.prefix_length)
            {
                r.error("gateway", format!("must be inside {}/{}", ip.address, ip.prefix_length));
            }
            r.check(ip.gateway != ip.address, "gateway", "must differ from the address");
            r.check(
                ip.additional_addresses.len() <= ADDITIONAL_ADDRESSES_MAX,
                "additional_addresses",
                "lists too many addresses",
            );
            let mut seen = BTreeSet::from([ip.address]);
            for (index, extra) in ip.additional_addresses.iter().enumerate() {
                r.check(
                    (1..=32).contains(&extra.prefix_length),
                    &format!("additional_addresses[{index}].prefix_length"),
                    "must be between 1 and 32",
                );
                if !usable(extra.address) || !seen.insert(extra.address) {
                    r.error(
                        format!("additional_addresses[{index}].address"),
                        "must be a unicast address not used elsewhere on this peer",
                    );
                }
            }
        }
        Record::SystemName(s) => {
            r.check(
                is_dns_label(&s.host_name),
                "host_name",
                "must be one DNS label: letters, digits, '-'",
            );
            if !s.domain.is_empty() {
                let ok = s.domain.len() <= 253 && s.domain.split('.').all(is_dns_label);
                r.check(ok, "domain", "must be a DNS domain such as example.com");
            }
        }
        Record::Dns(d) => {
            r.check(
                d.servers.len() <= DNS_SERVERS_MAX,
                "servers",
                &format!("at most {DNS_SERVERS_MAX} servers"),
            );
            let mut seen = BTreeSet::new();
            for (index, server) in d.servers.iter().enumerate() {
                r.check(seen.insert(server), &format!("servers[{index}]"), "is listed twice");
            }
        }
        Record::Ntp(n) => {
            r.check(
                n.servers.len() <= NTP_SERVERS_MAX,
                "servers",
                &format!("at most {NTP_SERVERS_MAX} servers"),
            );
            r.names_unique("servers", &n.servers);
            for (index, server) in n.servers.iter().enumerate() {
                r.host(&format!("servers[{index}]"), server);
            }
        }
        Record::TimeZone(t) => {
            let ok = t.name == "UTC"
                || (t.name.len() <= 64
                    && t.name.split('/').count() >= 2
                    && t.name.split('/').all(|part| {
                        !part.is_empty()
                            && part
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"_-+".contains(&b))
                    }));
            r.check(ok, "name", "must be UTC or an IANA zone name such as Europe/Oslo");
        }
        Record::Snmp(s) => {
            if s.enabled && s.community.is_empty() {
                r.error("community", "is required while SNMP is enabled");
            }
            r.credential("community", &s.community, false);
            r.check(s.contact.len() <= 256, "contact", "must be at most 256 bytes");
            r.check(s.location.len() <= 256, "location", "must be at most 256 bytes");
        }
        Record::Syslog(s) => {
            r.check(
                s.servers.len() <= SYSLOG_SERVERS_MAX,
                "servers",
                &format!("at most {SYSLOG_SERVERS_MAX} servers"),
            );
            for (index, server) in s.servers.iter().enumerate() {
                r.host(&format!("servers[{index}].host"), &server.host);
                if server.port == Some(0) {
                    r.error(format!("servers[{index}].port"), "must be between 1 and 65535");
                }
            }
        }
        Record::Certificates(c) => {
            r.pem("trusted_ca_pem", &c.trusted_ca_pem, "CERTIFICATE");
            r.pem("server_certificate_pem", &c.server_certificate_pem, "CERTIFICATE");
            r.pem("server_private_key_pem", &c.server_private_key_pem, "");
            if c.server_certificate_pem.is_empty() != c.server_private_key_pem.is_empty() {
                r.error(
                    "server_private_key_pem",
                    "a server certificate and its private key go together",
                );
            }
        }
        Record::RootPassword(p) => r.crypt_hash("password_hash", &p.password_hash),
        Record::BackupSchedule(b) => {
            r.check(
                (1..=BACKUP_INTERVAL_HOURS_MAX).contains(&b.interval_hours),
                "interval_hours",
                &format!("must be between 1 and {BACKUP_INTERVAL_HOURS_MAX}"),
            );
            r.check(
                (1..=BACKUP_KEEP_COUNT_MAX).contains(&b.keep_count),
                "keep_count",
                &format!("must be between 1 and {BACKUP_KEEP_COUNT_MAX}"),
            );
            if !b.folder.starts_with('/') {
                r.error("folder", "must be an absolute path, e.g. /var/backups/baton");
            } else if b.folder.len() > BACKUP_FOLDER_LENGTH_MAX {
                r.error("folder", format!("must be at most {BACKUP_FOLDER_LENGTH_MAX} bytes"));
            } else if b.folder.chars().any(char::is_control) {
                r.error("folder", "must not contain control characters");
            } else if b.folder.split('/').any(|part| part == "..") {
                r.error("folder", "must not contain `..`");
            }
            r.credential("password", &b.password, false);
        }
        Record::Cluster(c) => {
            r.check(
                c.peers.len() <= CLUSTER_PEERS_MAX,
                "peers",
                &format!("a cluster has at most {CLUSTER_PEERS_MAX} peers"),
            );
            let mut seen = BTreeSet::new();
            for (index, address) in c.peers.iter().enumerate() {
                r.check(seen.insert(address), &format!("peers[{index}]"), "is listed twice");
            }
            // A key without peers is standalone: the seed's way out blanks the peer addresses
            // and saves, then deletes the key and saves again.
            r.check(
                c.peers.is_empty() || !c.pre_shared_key.is_empty(),
                "pre_shared_key",
                "set the cluster pre-shared key to cluster, or clear the peers for standalone mode",
            );
            if !c.pre_shared_key.is_empty() {
                if c.pre_shared_key.chars().count() < PRE_SHARED_KEY_LENGTH_MIN {
                    r.error(
                        "pre_shared_key",
                        format!("must be at least {PRE_SHARED_KEY_LENGTH_MIN} characters"),
                    );
                }
                r.credential("pre_shared_key", &c.pre_shared_key, false);
            }
        }
        Record::LocationAddresses(l) => {
            r.name("location", &l.location);
            r.check(
                l.ad_hoc_address != l.rendezvous_address,
                "rendezvous_address",
                "must differ from the ad hoc address",
            );
        }
    }
    report.errors
}

fn validate_alias_pattern(r: &mut Report, pattern: &str, replace: &str) {
    if pattern.is_empty() {
        r.error("pattern", "must not be empty");
        return;
    }
    // Patterns match the whole alias, as the VCS's own regex search rules do.
    let anchored = format!("^(?:{pattern})$");
    match regex::RegexBuilder::new(&anchored).size_limit(PATTERN_SIZE_BYTES_MAX).build() {
        Err(error) => r.error("pattern", format!("is not a valid regular expression: {error}")),
        Ok(regex) => {
            if replace.is_empty() {
                r.error("conference_name", "must not be empty");
            }
            for reference in replace_references(replace) {
                let known = match reference.parse::<usize>() {
                    Ok(index) => index < regex.captures_len(),
                    Err(_) => regex.capture_names().flatten().any(|name| name == reference),
                };
                if !known {
                    r.error(
                        "conference_name",
                        format!("refers to ${reference}, which the pattern does not capture"),
                    );
                }
            }
        }
    }
}

/// Group references in a replace string (`$1`, `${name}`), as the `regex` crate reads them.
fn replace_references(replace: &str) -> Vec<String> {
    let mut references = Vec::new();
    let mut rest = replace;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(tail) = rest.strip_prefix('$') {
            rest = tail; // "$$" is a literal dollar
        } else if let Some(tail) = rest.strip_prefix('{') {
            let end = tail.find('}').unwrap_or(tail.len());
            references.push(tail[..end].to_owned());
            rest = &tail[end.min(tail.len())..];
        } else {
            let end =
                rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if end > 0 {
                references.push(rest[..end].to_owned());
            }
            rest = &rest[end..];
        }
    }
    references
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
