//! Layer 0, the leaf: the wall clock, randomness, the software version, the admin API's TLS
//! identity, password hashing and sessions, durable file writes and the poison-tolerant lock.
//! Imports nothing else of the daemon (`xtask/src/layers.rs`).

pub mod auth;
pub mod clock;
pub mod durable;
pub mod journal;
pub mod log_limit;
pub mod passwords;
pub(crate) mod random;
pub mod sync;
pub mod tasks;
pub mod throttle;
pub mod tls;
pub mod version;
