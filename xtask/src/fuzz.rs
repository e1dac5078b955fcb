//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the libFuzzer targets of `fuzz/` (their own
//! workspace, built by cargo-fuzz) for a fixed time each, from the seed corpora committed in
//! `fuzz/corpus/<target>/`. Installs cargo-fuzz when missing. `cargo xtask test --slow` runs
//! every target for [`SLOW_TEST_SECONDS`].
//!
//! The toolchain is stable. Without a sanitizer cargo-fuzz passes no `-Z` flag, so stable
//! builds the targets as they are (AddressSanitizer would need `-Zsanitizer`, i.e. nightly or
//! `RUSTC_BOOTSTRAP=1`). None is needed: our code forbids `unsafe`, so what a fuzzer finds
//! here is panics, overflows (cargo-fuzz turns debug assertions on), runaway memory and hangs,
//! which libFuzzer reports by itself; a sanitizer would only slow each run down.

use crate::{cargo, target_dir, workspace_root};
use anyhow::Context;
use std::process::{Command, Stdio};

/// Every parser of outside input, one target each (`fuzz/fuzz_targets/<name>.rs`).
pub(crate) const TARGETS: [&str; 7] = [
    "policy_request",
    "xmlrpc",
    "backup_archive",
    "backup_database",
    "upgrade_header",
    "replication_wire",
    "peering_frames",
];
/// How long `cargo xtask fuzz` runs each target unless told.
pub(crate) const SECONDS_DEFAULT: u64 = 60;
/// How long `cargo xtask test --slow` (CI) runs each target.
pub(crate) const SLOW_TEST_SECONDS: u64 = 20;
/// libFuzzer's limits per input: an input slower or hungrier than this is a finding.
const INPUT_TIMEOUT_S: u64 = 10;
const RSS_LIMIT_MB: u64 = 2048;

pub(crate) fn fuzz(target: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => anyhow::bail!("no fuzz target {name:?}; the targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    ensure_cargo_fuzz()?;
    build(target)?;
    for target in targets {
        run_target(target, seconds)?;
    }
    Ok(())
}

/// Builds the targets first, so that a build failure is told apart from a finding.
fn build(target: Option<&str>) -> anyhow::Result<()> {
    println!("==> building the fuzz targets");
    let mut args = vec!["fuzz", "build", "--sanitizer", "none"];
    args.extend(target);
    let status = cargo(&args).status().context("could not start `cargo fuzz build`")?;
    anyhow::ensure!(status.success(), "building the fuzz targets failed ({status}); see above");
    Ok(())
}

/// `cargo fuzz run` for `seconds`: new inputs go to a working corpus under `target/`, so the
/// committed seeds change only when someone copies a finding there on purpose.
fn run_target(target: &str, seconds: u64) -> anyhow::Result<()> {
    let working_corpus = target_dir().join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&working_corpus)
        .with_context(|| format!("creating {}", working_corpus.display()))?;
    let seeds = workspace_root().join("fuzz/corpus").join(target);
    let (working, seeds) = (working_corpus.display().to_string(), seeds.display().to_string());
    let max_time = format!("-max_total_time={seconds}");
    let timeout = format!("-timeout={INPUT_TIMEOUT_S}");
    let rss = format!("-rss_limit_mb={RSS_LIMIT_MB}");
    let args = [
        "fuzz",
        "run",
        "--sanitizer",
        "none",
        target,
        &working,
        &seeds,
        "--",
        &max_time,
        &timeout,
        &rss,
    ];
    println!("==> fuzz {target} for {seconds}s");
    let status = cargo(&args).status().context("could not start `cargo fuzz run`")?;
    anyhow::ensure!(
        status.success(),
        "fuzz target {target} failed ({status}): the input that broke it is under \
         fuzz/artifacts/{target}/; replay it with `cargo fuzz run -s none {target} <file>`, fix the \
         crash, and add a regression test in the crate"
    );
    Ok(())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = cargo(&["fuzz", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    println!("==> installing cargo-fuzz");
    let mut install = Command::new(crate::cargo_program());
    install.args(["install", "cargo-fuzz", "--locked"]);
    crate::run_checked(install, "`cargo install cargo-fuzz --locked`")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every fuzz target cargo-fuzz builds is run by `cargo xtask fuzz` (and so by CI's
    // slow run), and each has a non-empty seed corpus in the repository.
    #[test]
    fn every_target_is_run_and_has_seeds() {
        let manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml"))
            .unwrap_or_else(|error| panic!("reading fuzz/Cargo.toml: {error}"));
        let mut built: Vec<&str> = manifest
            .lines()
            .filter_map(|line| line.strip_prefix("name = \""))
            .filter_map(|rest| rest.strip_suffix('"'))
            .filter(|name| *name != "baton-fuzz")
            .collect();
        built.sort_unstable();
        let mut run = TARGETS.to_vec();
        run.sort_unstable();
        assert_eq!(built, run, "fuzz/Cargo.toml's [[bin]] targets and fuzz::TARGETS differ");
        for target in TARGETS {
            let seeds = workspace_root().join("fuzz/corpus").join(target);
            let count = std::fs::read_dir(&seeds).map_or(0, |entries| entries.count());
            assert!(count > 0, "{} has no seeds", seeds.display());
        }
    }
}
