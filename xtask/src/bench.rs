//! `cargo xtask bench <suite> [args...]`: forwards to the `baton-bench` binary of the daemon
//! crate, built in release mode: `cargo run --release -p daemon --bin baton-bench -- <suite> [args...]`.
//! The suites (e.g. `eventlog`) and their options live in that binary, not here.

use crate::{cargo, exec};

pub(crate) fn bench(suite: &str, args: &[String]) -> anyhow::Result<()> {
    let mut command =
        cargo(&["run", "--release", "-p", "daemon", "--bin", "baton-bench", "--", suite]);
    command.args(args);
    exec(command, "`cargo run --release -p daemon --bin baton-bench`")
}
