//! Tests across real processes: crash safety of `batond` and the CLI against a live daemon.
#![allow(clippy::unwrap_used)]

mod cli;
mod cluster;
mod crash;
mod policy;
mod vm;
