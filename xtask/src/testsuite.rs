//! `cargo xtask test`: the one command that runs every check and test, step by step, stopping
//! at the first failure; `--slow` adds the slow tests and a short run of every fuzz target. `cargo xtask tidy` runs only xtask's own tests (the tidy checks).

use crate::{cargo, cargo_program, run_checked, workspace_root};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Step {
    name: &'static str,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
}

impl Step {
    fn new(name: &'static str, args: &[&'static str]) -> Self {
        Step { name, args: args.to_vec(), env: Vec::new() }
    }

    fn command_line(&self) -> String {
        let env: String = self.env.iter().map(|(key, value)| format!("{key}={value} ")).collect();
        format!("{env}cargo {}", self.args.join(" "))
    }
}

pub(crate) fn test(slow: bool) -> anyhow::Result<()> {
    let mut tests = if nextest_installed() {
        Step::new("test (cargo-nextest)", &["nextest", "run", "--workspace"])
    } else {
        Step::new("test (cargo test; cargo-nextest not installed)", &["test", "--workspace"])
    };
    if slow {
        tests.env.push(("BATON_SLOW_TESTS", "1"));
    }
    // The build step below has just built them: the multi-process tests need not (see
    // `baton_tests::SKIP_BUILD_ENV`).
    tests.env.push(("BATON_TESTS_BINARIES_BUILT", "1"));
    let steps = [
        Step::new("fmt", &["fmt", "--all", "--", "--check"]),
        Step::new("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        // The multi-process tests start target/debug/batond and target/debug/batonctl.
        Step::new("build", &["build", "--workspace", "--bins"]),
        tests,
    ];

    let total = steps.len();
    let started = Instant::now();
    let mut timings = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        println!("==> [{}/{total}] {}: {}", index + 1, step.name, step.command_line());
        let step_started = Instant::now();
        let mut command = cargo(&step.args);
        command.envs(step.env.iter().copied());
        let status = command.status();
        let took = step_started.elapsed();
        match status {
            Ok(status) if status.success() => {
                println!("<== [{}/{total}] {}: ok in {}", index + 1, step.name, seconds(took));
                timings.push((step.name, took));
            }
            Ok(status) => anyhow::bail!(
                "step {}/{total} `{}` failed after {} ({status}): `{}`",
                index + 1,
                step.name,
                seconds(took),
                step.command_line()
            ),
            Err(error) => anyhow::bail!(
                "step {}/{total} `{}` could not start `{}`: {error}",
                index + 1,
                step.name,
                step.command_line()
            ),
        }
    }

    if slow {
        // CI's slow run: every fuzz target for a short, fixed time.
        let fuzz_started = Instant::now();
        let seconds_each = crate::fuzz::SLOW_TEST_SECONDS;
        println!("==> fuzz: every target for {seconds_each}s (cargo xtask fuzz)");
        crate::fuzz::fuzz(None, seconds_each)?;
        timings.push(("fuzz", fuzz_started.elapsed()));
    }

    println!();
    println!("All {} steps passed in {}:", timings.len(), seconds(started.elapsed()));
    for (name, took) in timings {
        println!("  {:>8}  {name}", seconds(took));
    }
    Ok(())
}

pub(crate) fn tidy() -> anyhow::Result<()> {
    run_checked(cargo(&["test", "-p", "xtask"]), "`cargo test -p xtask` (tidy checks)")
}

fn nextest_installed() -> bool {
    Command::new(cargo_program())
        .args(["nextest", "--version"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
