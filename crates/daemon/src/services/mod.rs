//! Layer 2, the services: what the appliance does, in its own terms (records, accounts and
//! sessions, history, backups, upgrades, cluster and join, policy, platform, journal). No HTTP
//! types: the adapters above turn requests into calls and answers into responses.

pub mod backups;
pub mod bridge_host;
pub mod cluster;
pub mod cluster_join;
pub mod platform;
pub mod policy;
pub mod upgrades;
