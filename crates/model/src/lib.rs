//! The domain model of Baton's configuration: commands, events, validation and the state
//! they fold into. Pure data and pure functions: no I/O, no clock reads, no SQLite, no tokio.
//! Everything that crosses a peer boundary or the disk is defined here (and only here derives
//! `Serialize`), so the wire and storage formats have one home.

pub mod clock;

pub use clock::{Hlc, HybridClock, PeerId, Stamp};
