//! `cargo xtask bench <suite> [args...]`, in release mode. `policy` and `cluster` run the
//! tests package's `policy-bench` and `cluster-bench` (they drive real processes: batond,
//! simulated bridges, nginx and wrk, or etcd); the other suites (e.g. `eventlog`) and their
//! options live in the daemon crate's `baton-bench`, except `upgrade`, the upgrade crate's
//! `upgrade-bench`, and `boot` (`boot_bench.rs`), which xtask runs itself.

use crate::{cargo, exec, run_checked};

pub(crate) fn bench(suite: &str, args: &[String]) -> anyhow::Result<()> {
    let mut command = match suite {
        // The appliance under qemu: xtask itself builds the image and boots it.
        "boot" => return crate::boot_bench::boot(),
        "policy" => {
            // The benchmark starts batond and baton-simbridge from target/release.
            run_checked(
                cargo(&["build", "--release", "--bins"]),
                "`cargo build --release --bins`",
            )?;
            cargo(&["run", "--release", "-p", "baton-tests", "--bin", "policy-bench", "--"])
        }
        "cluster" => {
            // The bench spawns `target/release/batond`, which `cargo run` of another package
            // would not rebuild: a stale daemon would be measured.
            run_checked(
                cargo(&["build", "--release", "-p", "daemon", "--bin", "batond"]),
                "`cargo build --release -p daemon --bin batond`",
            )?;
            cargo(&["run", "--release", "-p", "baton-tests", "--bin", "cluster-bench", "--"])
        }
        // Measuring an install needs neither the daemon nor its dependencies.
        "upgrade" => {
            cargo(&["run", "--release", "-p", "upgrade", "--bin", "upgrade-bench", "--", suite])
        }
        _ => cargo(&["run", "--release", "-p", "daemon", "--bin", "baton-bench", "--", suite]),
    };
    command.args(args);
    exec(command, &format!("the `{suite}` benchmark"))
}
