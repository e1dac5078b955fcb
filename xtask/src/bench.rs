//! `cargo xtask bench <suite> [args...]`, in release mode. `policy` runs the tests package's
//! `policy-bench` (it drives real processes: batond, a simulated bridge, nginx, wrk); the other
//! suites (e.g. `eventlog`) and their options live in the daemon crate's `baton-bench`.

use crate::{cargo, exec, run_checked};

pub(crate) fn bench(suite: &str, args: &[String]) -> anyhow::Result<()> {
    let mut command = match suite {
        "policy" => {
            // The benchmark starts batond and baton-simbridge from target/release.
            run_checked(
                cargo(&["build", "--release", "--bins"]),
                "`cargo build --release --bins`",
            )?;
            cargo(&["run", "--release", "-p", "baton-tests", "--bin", "policy-bench", "--"])
        }
        _ => cargo(&["run", "--release", "-p", "daemon", "--bin", "baton-bench", "--", suite]),
    };
    command.args(args);
    exec(command, &format!("the `{suite}` benchmark"))
}
