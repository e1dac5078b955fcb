//! `cargo xtask bench <suite> [args...]`: forwards to a benchmark binary built in release mode.
//! Most suites (e.g. `eventlog`) live in the daemon crate's `baton-bench`:
//! `cargo run --release -p daemon --bin baton-bench -- <suite> [args...]`. The `upgrade` suite
//! lives in the upgrade crate's own `upgrade-bench`, so that measuring an install needs neither
//! the daemon nor its dependencies. The suites' options live in those binaries, not here.

use crate::{cargo, exec};

pub(crate) fn bench(suite: &str, args: &[String]) -> anyhow::Result<()> {
    let (package, binary) = match suite {
        "upgrade" => ("upgrade", "upgrade-bench"),
        _ => ("daemon", "baton-bench"),
    };
    let mut command = cargo(&["run", "--release", "-p", package, "--bin", binary, "--", suite]);
    command.args(args);
    exec(command, &format!("`cargo run --release -p {package} --bin {binary}`"))
}
