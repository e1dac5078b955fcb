//! Tests across real processes: crash safety of `batond`, backup and restore, clusters, the CLI
//! and the API contract against a live daemon.
#![allow(clippy::unwrap_used)]

mod api_contract;
mod backup;
mod browser;
mod cli;
mod cluster;
mod cluster_upgrade;
mod crash;
mod metrics;
mod policy;
mod policy_views;
mod signals;
mod syslog;
mod upgrade;
mod vm;
mod vm_cluster;
mod vm_platform;
mod vm_power_cut;
mod web_maintenance;
