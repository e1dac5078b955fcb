//! The domain model of Baton's configuration: records, commands, versioned events,
//! validation, and the state they fold into. Pure data and pure functions: no I/O, no clock
//! reads, no SQLite, no tokio. Everything that crosses a peer boundary or the disk is defined
//! here, so the storage and wire formats have one home.
//!
//! Flow: an operator's [`Command`] is checked against the current [`State`] by
//! [`State::decide`], which returns past-tense [`Event`]s or a [`Rejection`] listing every
//! problem by field. The caller stamps each event with a [`Stamp`] and stores it; folding the
//! stored events with [`State::apply`] rebuilds the state on any peer, in any order.

pub mod clock;
pub mod event;
pub mod licence_migration;
pub mod record;
pub mod rng;
pub mod state;
pub mod validate;
pub mod version;

pub use clock::{ClusterId, Hlc, HybridClock, PeerId, Stamp};
pub use event::{DecodeError, Encoded, Event};
pub use licence_migration::LicenceMigration;
pub use record::{Record, RecordKey, RecordKind, Scope};
pub use state::{Change, Command, Rejection, SNAPSHOT_FORMAT, Slot, State};
pub use validate::{FieldError, validate};
pub use version::Version;
