//! `cargo xtask bench <suite> [args...]`: forwards to the benchmark binary of the suite, built
//! in release mode. `cluster` runs `cargo run --release -p baton-tests --bin cluster-bench`,
//! after building the release `batond` it starts; every other suite (e.g. `eventlog`) runs
//! `cargo run --release -p daemon --bin baton-bench -- <suite>`. The suites' options live in
//! those binaries, not here.

use crate::{cargo, exec, run_checked};

pub(crate) fn bench(suite: &str, args: &[String]) -> anyhow::Result<()> {
    let mut command = if suite == "cluster" {
        // The bench spawns `target/release/batond`, which `cargo run` of another package
        // would not rebuild: a stale daemon would be measured.
        run_checked(
            cargo(&["build", "--release", "-p", "daemon", "--bin", "batond"]),
            "`cargo build --release -p daemon --bin batond`",
        )?;
        cargo(&["run", "--release", "-p", "baton-tests", "--bin", "cluster-bench", "--"])
    } else {
        cargo(&["run", "--release", "-p", "daemon", "--bin", "baton-bench", "--", suite])
    };
    command.args(args);
    exec(command, &format!("the `{suite}` benchmark"))
}
