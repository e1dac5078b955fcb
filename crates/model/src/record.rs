//! Configuration records: every piece of configuration is a named record of one kind.
//!
//! A record kind belongs to exactly one scope. `Shared` records replicate to every cluster peer;
//! `Local` records (addresses, host name, time, certificates, root password, …) describe this
//! box only and never leave it. The scope is a property of the kind, not of the event, so a
//! local setting cannot be replicated by mistake. A kind whose scope changed (the licence, shared
//! until each appliance carried its own) leaves its older events in the other stream, where
//! the configuration ignores them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// Whether a record kind replicates across the cluster.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Shared,
    Local,
}

/// A record's name inside `record_kinds!`: its name field, or the kind's name for a singleton.
macro_rules! record_name {
    ($record:ident, $inner:ident) => {
        $record.kind().as_str()
    };
    ($record:ident, $inner:ident, $field:ident) => {
        &$inner.$field
    };
}

macro_rules! record_kinds {
    ($( $variant:ident($ty:ty) = $name:literal, $collection:literal, $scope:ident, singleton: $single:literal
        $(, name: $name_field:ident)? $(, secrets: [$($secret:ident),*])?; )*) => {
        /// The kind of a record: decides its scope, its API collection and its event names.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum RecordKind { $($variant,)* }

        /// One configuration record, owning its value.
        #[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum Record { $($variant($ty),)* }

        impl RecordKind {
            pub const ALL: &'static [RecordKind] = &[$(RecordKind::$variant,)*];

            /// Stable snake_case name, used in event kinds and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $(RecordKind::$variant => $name,)* }
            }

            /// The admin API collection (URL segment) for this kind.
            pub fn collection(self) -> &'static str {
                match self { $(RecordKind::$variant => $collection,)* }
            }

            pub fn scope(self) -> Scope {
                match self { $(RecordKind::$variant => Scope::$scope,)* }
            }

            /// Singletons have exactly one record, named after the kind.
            pub fn is_singleton(self) -> bool {
                match self { $(RecordKind::$variant => $single,)* }
            }

            pub fn from_name(text: &str) -> Option<RecordKind> {
                match text { $($name => Some(RecordKind::$variant),)* _ => None }
            }

            pub fn from_collection(text: &str) -> Option<RecordKind> {
                match text { $($collection => Some(RecordKind::$variant),)* _ => None }
            }

            /// The field holding a named record's name (`None` for a singleton, named after
            /// its kind).
            pub fn name_field(self) -> Option<&'static str> {
                match self { $(RecordKind::$variant => None$(.or(Some(stringify!($name_field))))?,)* }
            }

            /// Fields holding secrets: redacted whenever a record is shown, kept when the
            /// redaction placeholder is sent back. A secret named `password_hash` is a password
            /// the API takes as `password` and stores only as a hash.
            pub fn secret_fields(self) -> &'static [&'static str] {
                match self { $(RecordKind::$variant => &[$($(stringify!($secret)),*)?],)* }
            }

            /// Whether the record keeps a password only as its hash (`password_hash`).
            pub fn hashes_password(self) -> bool {
                self.secret_fields().contains(&"password_hash")
            }
        }

        impl Record {
            pub fn kind(&self) -> RecordKind {
                match self { $(Record::$variant(_) => RecordKind::$variant,)* }
            }

            /// Parses the JSON body of an admin API request for a record of `kind`.
            /// Unknown fields are refused so a typo never silently does nothing.
            pub fn from_json(kind: RecordKind, value: serde_json::Value) -> Result<Record, serde_json::Error> {
                Ok(match kind { $(RecordKind::$variant => Record::$variant(serde_json::from_value(value)?),)* })
            }

            /// The record's value in postcard, the storage and wire encoding of events.
            pub fn to_postcard(&self) -> Vec<u8> {
                let bytes = match self { $(Record::$variant(inner) => postcard::to_stdvec(inner),)* };
                // Serialising plain owned data into a Vec cannot fail.
                bytes.expect("postcard encoding of a record")
            }

            /// The record's name: its name field, or its kind's name for a singleton.
            pub fn name(&self) -> &str {
                match self { $(Record::$variant(_inner) => record_name!(self, _inner $(, $name_field)?),)* }
            }

            /// A copy safe to show: secrets (passwords, hashes, private keys, SNMP community)
            /// are replaced by [`REDACTED`], or left empty when unset so the operator can tell.
            pub fn redacted(&self) -> Record {
                let mut copy = self.clone();
                match &mut copy { $(Record::$variant(_inner) => { $($(hide(&mut _inner.$secret);)*)? })* }
                copy
            }

            /// For updates through the API: a secret left as [`REDACTED`] (what a read returned)
            /// keeps the stored value, so editing other fields never requires re-typing a password.
            pub fn keep_secrets_from(&mut self, old: &Record) {
                match (self, old) {
                    $((Record::$variant(_new), Record::$variant(_old)) => { $($(keep(&mut _new.$secret, &_old.$secret);)*)? })*
                    _ => {}
                }
            }

            /// Decodes a record of `kind` encoded by [`Record::to_postcard`] at the current version.
            pub fn from_postcard(kind: RecordKind, bytes: &[u8]) -> Result<Record, postcard::Error> {
                Ok(match kind { $(RecordKind::$variant => Record::$variant(postcard::from_bytes(bytes)?),)* })
            }

        }

        impl RecordKind {
            /// JSON Schema of the record's fields, for the API description.
            /// Nested types are inlined, so the schema stands alone wherever it is embedded.
            pub fn json_schema(self) -> serde_json::Value {
                let generator = || {
                    schemars::generate::SchemaSettings::draft2020_12()
                        .with(|settings| settings.inline_subschemas = true)
                        .into_generator()
                };
                let schema = match self { $(RecordKind::$variant => generator().into_root_schema_for::<$ty>(),)* };
                let mut value = serde_json::to_value(schema).unwrap_or_default();
                if let Some(map) = value.as_object_mut() {
                    map.remove("$schema");
                }
                value
            }
        }

        impl Record {
            /// The record's fields as JSON, without the `kind` tag.
            pub fn to_json(&self) -> serde_json::Value {
                let value = match self { $(Record::$variant(inner) => serde_json::to_value(inner),)* };
                value.unwrap_or(serde_json::Value::Null)
            }
        }
    };
}

record_kinds! {
    Administrator(Administrator) = "administrator", "administrators", Shared, singleton: false, name: name, secrets: [password_hash];
    Bridge(Bridge) = "bridge", "bridges", Shared, singleton: false, name: name, secrets: [password];
    BridgePool(BridgePool) = "bridge_pool", "bridge-pools", Shared, singleton: false, name: name;
    ServicePreference(ServicePreference) = "service_preference", "service-preferences", Shared, singleton: false, name: name;
    ConferenceTemplate(ConferenceTemplate) = "conference_template", "conference-templates", Shared, singleton: false, name: name;
    ConferenceAlias(ConferenceAlias) = "conference_alias", "conference-aliases", Shared, singleton: false, name: name;
    Location(Location) = "location", "locations", Shared, singleton: false, name: name;
    Conference(Conference) = "conference", "conferences", Shared, singleton: false, name: name;
    PolicyService(PolicyService) = "policy_service", "policy-service", Shared, singleton: true, secrets: [password_hash];
    // Peer-local since each appliance carries its own keys; shared before (see `eventlog::StoredEvent::in_its_stream`).
    Licence(Licence) = "licence", "licence", Local, singleton: true;
    Ethernet(Ethernet) = "ethernet", "ethernet", Local, singleton: true;
    Ipv4(Ipv4) = "ipv4", "ipv4", Local, singleton: true;
    SystemName(SystemName) = "system_name", "system-name", Local, singleton: true;
    Dns(Dns) = "dns", "dns", Local, singleton: true;
    Ntp(Ntp) = "ntp", "ntp", Local, singleton: true;
    TimeZone(TimeZone) = "time_zone", "time-zone", Local, singleton: true;
    Snmp(Snmp) = "snmp", "snmp", Local, singleton: true, secrets: [community];
    Syslog(Syslog) = "syslog", "syslog", Local, singleton: true;
    Certificates(Certificates) = "certificates", "certificates", Local, singleton: true, secrets: [server_private_key_pem];
    AdministrationAccess(AdministrationAccess) = "administration_access", "administration-access", Local, singleton: true;
    RootPassword(RootPassword) = "root_password", "root-password", Local, singleton: true, secrets: [password_hash];
    LocationAddresses(LocationAddresses) = "location_addresses", "location-addresses", Local, singleton: false, name: location;
    Cluster(Cluster) = "cluster", "cluster", Local, singleton: true, secrets: [pre_shared_key];
    Maintenance(Maintenance) = "maintenance", "maintenance", Local, singleton: true;
    BackupSchedule(BackupSchedule) = "backup_schedule", "backup-schedule", Local, singleton: true, secrets: [password];
}

/// Identifies one record: its kind and name (singletons are named after their kind).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RecordKey {
    pub kind: RecordKind,
    pub name: String,
}

/// A record key seen as its kind and name, whether it owns the name or borrows it: the state
/// is searched by a borrowed name through it ([`crate::State::get_named`]) instead of through
/// a `RecordKey` built for each lookup, an allocation the policy path made several times per
/// call. Ordered as `RecordKey` is (kind, then name).
pub trait KeyParts {
    fn parts(&self) -> (RecordKind, &str);
}

impl KeyParts for RecordKey {
    fn parts(&self) -> (RecordKind, &str) {
        (self.kind, &self.name)
    }
}

impl KeyParts for (RecordKind, &str) {
    fn parts(&self) -> (RecordKind, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for RecordKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl PartialOrd for dyn KeyParts + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyParts + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// Each kind's singleton key (its name is the kind's), indexed by the kind's place in
/// [`RecordKind::ALL`]: made once, as the policy path looks singletons up on every call.
static SINGLETON_KEYS: std::sync::LazyLock<Vec<RecordKey>> = std::sync::LazyLock::new(|| {
    RecordKind::ALL.iter().map(|&kind| RecordKey { kind, name: kind.as_str().to_owned() }).collect()
});

impl RecordKey {
    /// The key of `kind`'s singleton record, without allocating.
    pub fn singleton(kind: RecordKind) -> &'static RecordKey {
        // `ALL` lists the kinds in declaration order, so the discriminant is the index.
        &SINGLETON_KEYS[kind as usize]
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.kind.as_str(), self.name)
    }
}

/// Text that replaces a secret when a record is shown to anyone.
pub const REDACTED: &str = "********";

fn hide(secret: &mut String) {
    if !secret.is_empty() {
        *secret = REDACTED.to_owned();
    }
}

fn keep(new: &mut String, old: &str) {
    if new == REDACTED {
        *new = old.to_owned();
    }
}

impl Record {
    pub fn key(&self) -> RecordKey {
        RecordKey { kind: self.kind(), name: self.name().to_owned() }
    }

    /// Names of other records this one refers to; they must exist when it is saved, and
    /// they cannot be removed while it refers to them.
    pub fn references(&self) -> Vec<RecordKey> {
        fn keys(kind: RecordKind, names: &[String]) -> Vec<RecordKey> {
            names.iter().map(|name| RecordKey { kind, name: name.clone() }).collect()
        }
        match self {
            Record::BridgePool(r) => keys(RecordKind::Bridge, &r.bridges),
            Record::ServicePreference(r) => keys(RecordKind::BridgePool, &r.pools),
            Record::ConferenceTemplate(r) => {
                keys(RecordKind::ServicePreference, std::slice::from_ref(&r.service_preference))
            }
            Record::ConferenceAlias(r) => {
                keys(RecordKind::ConferenceTemplate, std::slice::from_ref(&r.template))
            }
            Record::LocationAddresses(r) => {
                keys(RecordKind::Location, std::slice::from_ref(&r.location))
            }
            Record::Conference(r) => {
                let mut references = keys(RecordKind::Bridge, std::slice::from_ref(&r.bridge));
                references.extend(keys(
                    RecordKind::ConferenceTemplate,
                    std::slice::from_ref(&r.template),
                ));
                references
            }
            _ => Vec::new(),
        }
    }
}

// ---- shared records -------------------------------------------------------------------------

/// An administrator account. The password is stored only as an argon2id PHC hash.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Administrator {
    pub name: String,
    pub password_hash: String,
    /// Set on the factory default account: nothing else is allowed until it is changed.
    #[serde(default)]
    pub must_change_password: bool,
    /// What the account may do; a full administrator unless said otherwise.
    #[serde(default)]
    pub role: AdminRole,
}

/// What an administrator account may do.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Sees and changes everything.
    #[default]
    Full,
    /// Sees every page and every read of the API, changes nothing (auditors, monitoring).
    ReadOnly,
}

impl AdminRole {
    /// The name the API and `batonctl` use.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Full => "full",
            AdminRole::ReadOnly => "read_only",
        }
    }
}

#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BridgeType {
    TelepresenceServer,
    Mcu,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    #[default]
    Https,
}

/// A conference bridge Baton drives through its XML-RPC API.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    pub bridge_type: BridgeType,
    /// Host name or IP address, optionally with `:port`.
    pub address: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub username: String,
    /// Kept in clear because the bridge API takes it in every call; never shown.
    #[serde(default)]
    pub password: String,
    /// Participants (ports or screen licences) this bridge can host at once.
    pub capacity_ports: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// For `https`: the SHA-256 fingerprint (`AB:CD:…`, 32 hex pairs) of the one certificate
    /// the bridge may present. Set, it replaces CA and name checks (bridges ship self-signed
    /// certificates); `None`: the bridge is verified against the trusted CAs. (Never
    /// `skip_serializing_if`: postcard, the events' encoding, is not self-describing.)
    #[serde(default)]
    pub pinned_sha256: Option<String>,
}

fn yes() -> bool {
    true
}

/// Bridges of one type that conferences may be placed on, chosen by free capacity.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgePool {
    pub name: String,
    pub bridge_type: BridgeType,
    #[serde(default)]
    pub bridges: Vec<String>,
}

/// An ordered list of pools: the first with capacity hosts the conference.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePreference {
    pub name: String,
    pub bridge_type: BridgeType,
    pub pools: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConferenceType {
    /// Everyone is an equal participant.
    Meeting,
    /// Chairs (hosts) are seen by everyone; guests see the chairs.
    Lecture,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConferenceTemplate {
    pub name: String,
    pub conference_type: ConferenceType,
    pub service_preference: String,
    /// `None`: limited only by bridge capacity.
    #[serde(default)]
    pub max_participants: Option<u32>,
    /// PIN chairs (or, in a meeting, everyone) must enter.
    #[serde(default)]
    pub chair_pin: Option<String>,
    /// PIN for guests; lectures only.
    #[serde(default)]
    pub guest_pin: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Chair,
    Guest,
}

/// Matches dialled aliases to conferences: `pattern` is a regex over the whole alias and
/// `conference_name` a replace string (`$1`, `${name}`) that names the conference.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConferenceAlias {
    pub name: String,
    pub pattern: String,
    pub conference_name: String,
    #[serde(default)]
    pub role: Role,
    pub template: String,
    /// Lower numbers are tried first; ties are broken by alias name.
    pub priority: u32,
}

/// A Location groups calls by where they come from; its addresses are per peer
/// (see [`LocationAddresses`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// A conference the policy service created on a bridge: which bridge hosts it. Shared, so
/// every peer routes later participants to the same bridge, even after a fail-over.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conference {
    pub name: String,
    pub bridge: String,
    /// The bridge's own identifier: the name on an MCU, the `conferenceID` on a TelePresence
    /// Server.
    pub bridge_conference_id: String,
    pub template: String,
    /// The peer (id in hex) that created it, and that ends it on the bridge once it is empty.
    #[serde(default)]
    pub created_by: String,
}

/// Maintenance mode of this peer: it tells the VCS it cannot serve (status path answers 503)
/// so calls move to another peer, while the operator works on it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    pub enabled: bool,
}

/// Credentials the VCS presents when it calls Baton's policy service.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyService {
    pub username: String,
    pub password_hash: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Edition {
    /// Up to three clustered peers.
    Full,
    /// Up to two clustered peers.
    Select,
    /// No release key: a single peer, no clustering.
    #[default]
    Essentials,
}

impl Edition {
    pub fn max_peers(self) -> usize {
        match self {
            Edition::Full => 3,
            Edition::Select => 2,
            Edition::Essentials => 1,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Licence {
    pub release_key: String,
    pub edition: Edition,
    #[serde(default)]
    pub option_keys: Vec<String>,
}

// ---- peer-local records ---------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EthernetSpeed {
    #[default]
    Auto,
    #[serde(rename = "1000_full")]
    Full1000,
    #[serde(rename = "100_full")]
    Full100,
    #[serde(rename = "100_half")]
    Half100,
    #[serde(rename = "10_full")]
    Full10,
    #[serde(rename = "10_half")]
    Half10,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ethernet {
    pub speed: EthernetSpeed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Interface {
    pub address: Ipv4Addr,
    pub prefix_length: u8,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ipv4 {
    pub address: Ipv4Addr,
    pub prefix_length: u8,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub additional_addresses: Vec<Ipv4Interface>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemName {
    pub host_name: String,
    #[serde(default)]
    pub domain: String,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ntp {
    pub servers: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeZone {
    /// An IANA zone name such as `Europe/Oslo`, or `UTC`.
    pub name: String,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Snmp {
    pub enabled: bool,
    #[serde(default)]
    pub community: String,
    #[serde(default)]
    pub contact: String,
    #[serde(default)]
    pub location: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogServer {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub transport: SyslogTransport,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Syslog {
    pub servers: Vec<SyslogServer>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    #[serde(default)]
    pub trusted_ca_pem: String,
    #[serde(default)]
    pub server_certificate_pem: String,
    #[serde(default)]
    pub server_private_key_pem: String,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdministrationAccess {
    pub ssh_enabled: bool,
    pub lcd_panel_enabled: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RootPassword {
    pub password_hash: String,
}

/// This peer's ad hoc and rendezvous addresses for one Location.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationAddresses {
    pub location: String,
    pub ad_hoc_address: Ipv4Addr,
    pub rendezvous_address: Ipv4Addr,
}

/// This peer's view of its cluster, set on each peer (never replicated): the pre-shared key
/// and the primary addresses of every peer, this one included. Both empty is standalone mode.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(default)]
    pub pre_shared_key: String,
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
}

impl Cluster {
    pub fn is_clustered(&self) -> bool {
        !self.peers.is_empty()
    }
}

/// Scheduled backups of this peer to a folder on its own disk, keeping the newest
/// `keep_count` (set on each peer, never replicated).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    #[serde(default)]
    pub enabled: bool,
    /// Hours between two backups.
    pub interval_hours: u32,
    /// Backups of this machine kept in the folder; older ones are deleted.
    pub keep_count: u32,
    /// Absolute path of the folder on this peer.
    pub folder: String,
    /// Encrypts the backups when set. Kept in clear (each backup needs it), never shown.
    #[serde(default)]
    pub password: String,
}

#[cfg(test)]
mod singleton_key_tests {
    use super::*;

    // Goal: the key found for a kind's singleton is that kind's, named after it (the lookup
    // indexes by discriminant, which must follow `ALL`'s order).
    #[test]
    fn each_kind_finds_its_own_singleton_key() {
        for &kind in RecordKind::ALL {
            let key = RecordKey::singleton(kind);
            assert_eq!((key.kind, key.name.as_str()), (kind, kind.as_str()));
        }
    }
}
