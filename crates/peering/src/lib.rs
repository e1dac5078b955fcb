//! How two Baton peers talk: an encrypted, mutually authenticated channel keyed by the
//! cluster's pre-shared key ([`channel`]), the greeting each side sends first and the rules
//! that decide whether the two may exchange configuration ([`hello`]).
//!
//! The channel is the Noise protocol (`Noise_NNpsk0_25519_ChaChaPoly_SHA256`, via `snow`):
//! fresh ephemeral keys on both sides give forward secrecy, the pre-shared key mixed into the
//! first message authenticates both peers, and per-direction nonces refuse replayed, dropped or
//! reordered frames. A peer with the wrong key cannot read the greeting, so it learns nothing
//! about the cluster. Owns no replication logic and no configuration: callers pass the key and
//! the greeting in; must not depend on the event log or the daemon.

pub mod channel;
pub mod hello;
pub mod key;
pub mod links;
#[cfg(test)]
mod links_sim;

pub use channel::{Channel, ChannelError, Receiver, Sender};
pub use hello::{AdminEndpoint, Frame, Hello, Refusal, Verdict, check};
pub use key::ClusterKey;
