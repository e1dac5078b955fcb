//! Conference bridges through their XML-RPC management API: a client ([`BridgeClient`]) that
//! creates, lists and destroys conferences and polls health on Cisco TelePresence MCUs (API
//! 2.x) and TelePresence Servers in remotely managed ("flex") mode, and a simulated bridge
//! ([`sim`], binary `baton-simbridge`) that speaks the same wire format with capacity and
//! fault knobs, so a real bridge can replace it by configuration alone.
//!
//! Every call is an HTTP POST of a `<methodCall>` to `/RPC2` with one struct parameter that
//! carries the credentials (`authenticationUser`, `authenticationPassword`); the bridge answers
//! 200 with a struct or a `<fault>`. [`BridgeError`] keeps the bridge's refusals (faults: a
//! business answer, the bridge is fine) apart from transport failures (the bridge is down or
//! not a bridge), which is what pool selection needs to know. Owns no configuration and no
//! state of Baton's: callers pass a [`BridgeTarget`] per call. May depend on `model` only
//! among our crates.

mod client;
mod error;
pub mod sim;
mod tls;
pub mod xmlrpc;

pub use client::{
    BridgeClient, BridgeClientOptions, BridgeConference, BridgeKind, BridgeParticipant,
    BridgeStatus, BridgeTarget, ConferenceSpec, ENUMERATION_PAGES_MAX, EventNotification,
    OPERATION_RESPONSE_BYTES_MAX, PARTICIPANTS_LISTED_MAX, RESPONSE_BYTES_MAX, SECURE_TARGETS_MAX,
    parse_event_notification,
};
pub use error::{BridgeError, TlsProblem, fault};
pub use tls::fingerprint;
