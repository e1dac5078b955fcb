//! `cargo xtask test`: the one command that runs every check and test, step by step, stopping
//! at the first failure; `--slow` adds the slow tests and a short run of every fuzz target. `cargo xtask tidy` runs only xtask's own tests (the tidy checks).

use crate::{cargo, cargo_program, run_checked, workspace_root};
use anyhow::Context as _;
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

/// Host programs the default test run starts, beyond the Rust toolchain, with the Debian
/// package that has each: the upgrade tests pack and read slot payloads (squashfs) and stamp
/// ext4 images. A fresh machine lacks squashfs-tools; `.ci/run` installs the slow tests' too.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("mksquashfs", "squashfs-tools"),
    ("unsquashfs", "squashfs-tools"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
];

pub(crate) fn test(slow: bool) -> anyhow::Result<()> {
    install_missing_host_tools()?;
    let mut tests = tests_step(slow);
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

/// Installs the packages of the [`HOST_TOOLS`] not on `PATH` with apt-get, before anything is
/// built, so a fresh machine runs the suite with this one command; says what it installs and
/// why, and what to run by hand when it cannot (not root, no apt-get).
fn install_missing_host_tools() -> anyhow::Result<()> {
    let mut packages: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    let by_hand = format!("apt-get install -y {}", packages.join(" "));
    println!("==> the tests need {}, not installed: {by_hand}", packages.join(", "));
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null());
        command
    };
    let installed = run_checked(apt_get(&["update", "-q"]), "apt-get update").and_then(|()| {
        run_checked(apt_get(&[&["install", "-y", "-q"][..], &packages].concat()), "apt-get install")
    });
    installed.with_context(|| format!("installing what the tests need; as root, run `{by_hand}`"))
}

/// Whether a file named `program` is in a folder of `PATH`.
fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// The step that runs the tests: nextest's slow profile adds the VM tests, which the default
/// one leaves out and counts as skipped (`.config/nextest.toml`).
fn tests_step(slow: bool) -> Step {
    match (nextest_installed(), slow) {
        (true, true) => Step::new(
            "test (cargo-nextest, slow profile)",
            &["nextest", "run", "--workspace", "--profile", "slow"],
        ),
        (true, false) => Step::new("test (cargo-nextest)", &["nextest", "run", "--workspace"]),
        (false, true) => {
            Step::new("test (cargo test; cargo-nextest not installed)", &["test", "--workspace"])
        }
        (false, false) => Step::new(
            "test (cargo test; cargo-nextest not installed; VM tests skipped)",
            &[
                "test",
                "--workspace",
                "--",
                "--skip",
                "vm::",
                "--skip",
                "vm_cluster::",
                "--skip",
                "vm_power_cut::",
            ],
        ),
    }
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
