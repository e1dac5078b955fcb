//! `cargo xtask`: the project's developer commands (run Baton locally, run every test,
//! forward to benchmarks, make release keys and signed upgrade images, build the appliance disk
//! image and boot it in VMs). See `cargo xtask --help`.

mod accel;
mod bench;
mod boot_bench;
mod fuzz;
mod image;
mod lan;
mod release;
mod run;
mod testsuite;
mod vm;
mod vm_supervisor;

#[cfg(test)]
mod deps;
#[cfg(test)]
mod fn_length;
#[cfg(test)]
mod image_defaults;
#[cfg(test)]
mod layers;
#[cfg(test)]
mod tidy;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Baton developer tasks", version)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build and run the daemon `batond` locally on embedded defaults.
    Run {
        /// Data directory of batond (event log, TLS identity, run-time files). Default: `<repo>/.baton-dev`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Address the admin API (HTTPS) listens on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Run every check and test: fmt, clippy, build, tests (tidy checks included).
    Test {
        /// Also run the slow tests (sets BATON_SLOW_TESTS=1 for the test run) and every fuzz
        /// target for a short fixed time.
        #[arg(long)]
        slow: bool,
    },
    /// Run only the repository tidy and dependency-direction checks (`cargo test -p xtask`).
    Tidy,
    /// Fuzz the parsers of outside input with cargo-fuzz (libFuzzer), each target for a fixed
    /// time from its seed corpus in `fuzz/corpus/` (installs cargo-fuzz when missing).
    Fuzz {
        /// One target (`policy_request`, `xmlrpc`, `backup_archive`, `backup_database`,
        /// `upgrade_header`, `replication_wire`, `peering_frames`); all of them when omitted.
        target: Option<String>,
        /// How long to run each target.
        #[arg(long, value_name = "N", default_value_t = fuzz::SECONDS_DEFAULT)]
        seconds: u64,
    },
    /// Run a benchmark suite: `policy` and `cluster` (tests package binaries, beside nginx/wrk
    /// and etcd), `upgrade` (the upgrade crate's `upgrade-bench`), or one of `baton-bench`
    /// (`eventlog`, `backup`, `flood`).
    Bench {
        /// Suite to run: `eventlog`, `backup`, `cluster`, `policy`, `upgrade`, `boot` (the
        /// appliance image under qemu, beside a bare Debian boot of the same disk).
        suite: String,
        /// Further arguments, passed to the benchmark binary unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the appliance's bootable A/B disk image (raw and qcow2) under `<target>/image/`.
    Image {
        /// The software version stamped into the root file system (what batond reports and
        /// upgrades compare), MAJOR.MINOR.PATCH. Default: the workspace's version.
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Boot N appliances from the built image under qemu (builds the image when missing).
    Vm {
        /// How many appliances, each with its own overlay, serial and addresses (1 to 3).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        peers: u8,
        /// Start from fresh overlays (forget what the VMs wrote on their disks).
        #[arg(long)]
        fresh: bool,
        /// Boot this raw disk file itself, writably, instead of overlays (one VM; for tests).
        #[arg(long, value_name = "FILE", conflicts_with = "peers")]
        disk: Option<PathBuf>,
        /// Back the VMs' overlays with this qcow2 disk instead of the built image (a test's
        /// variant of it); give it again with `--only`, or the overlay is made anew.
        #[arg(long, value_name = "FILE", conflicts_with = "disk")]
        base: Option<PathBuf>,
        /// Hardware serial of the VM instead of `BATON-VM-1` (one VM; for tests of what is
        /// tied to the machine, like restoring a backup).
        #[arg(long, value_name = "SERIAL", conflicts_with = "peers")]
        serial: Option<String>,
        /// A guest's TCP connection to 10.0.2.100:PORT reaches 127.0.0.1:PORT on this machine
        /// (a bridge simulator, for tests); nothing else leaves the guest. Repeatable.
        #[arg(long, value_name = "PORT")]
        forward_to_host: Vec<u16>,
        /// Boot only peer N (its overlay kept), on the private network of a `cargo xtask vm
        /// --peers` still running (whose NTP and DNS it uses): a peer restarted after a crash.
        #[arg(long, value_name = "N", conflicts_with_all = ["peers", "fresh", "disk"],
              value_parser = clap::value_parser!(u8).range(1..=3))]
        only: Option<u8>,
        /// qemu's cache mode for the disk (default qemu's own, `writeback`); `none` opens it
        /// with O_DIRECT as most hypervisor hosts do (the power-cut test uses it).
        #[arg(long, value_name = "MODE", value_parser = ["writeback", "none", "writethrough", "directsync"])]
        disk_cache: Option<String>,
    },
    /// Carry stdin and stdout to a TCP address and back: what qemu runs for each guest
    /// connection `cargo xtask vm --forward-to-host` forwards (one host connection per guest
    /// connection).
    #[command(hide = true)]
    Relay {
        /// The address on this machine, `127.0.0.1:PORT`.
        address: SocketAddr,
    },
    /// Make an ed25519 release key pair for signing upgrade images (outside the repository).
    Keygen {
        /// Directory for `baton-release.key` (mode 0600) and `baton-release.pub`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Build and sign an upgrade image from a payload (a slot's root file system image).
    UpgradeImage {
        /// The private key file made by `cargo xtask keygen`.
        #[arg(long, value_name = "PRIVATE")]
        key: PathBuf,
        /// The payload: the root file system image written into the inactive slot.
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
        /// The Baton version in the payload, MAJOR.MINOR.PATCH. A root file system payload
        /// (squashfs, or ext4 as images before carried) gets it stamped into a copy
        /// (`/usr/lib/baton/version`), so batond reports the version the manifest names.
        #[arg(long, value_name = "V")]
        version: String,
        /// The architecture it runs on, as Rust names it (`x86_64`, `aarch64`).
        #[arg(long, value_name = "A")]
        arch: String,
        /// The oldest running version the image may be installed over.
        #[arg(long, value_name = "V")]
        min_from: String,
        /// Where to write the image.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Run { data_dir, listen } => run::run(data_dir, listen),
        Task::Test { slow } => testsuite::test(slow),
        Task::Tidy => testsuite::tidy(),
        Task::Fuzz { target, seconds } => fuzz::fuzz(target.as_deref(), seconds),
        Task::Bench { suite, args } => bench::bench(&suite, &args),
        Task::Image { version } => image::image_with_version(version.as_deref()),
        Task::Vm { peers, fresh, disk, base, serial, forward_to_host, only, disk_cache } => {
            let vms = match only {
                Some(peer) => vm::Vms { peers: peer..=peer, lan_services: false },
                None => vm::Vms { peers: 1..=peers, lan_services: true },
            };
            vm::vm(
                vms,
                fresh,
                disk.as_deref(),
                base.as_deref(),
                serial.as_deref(),
                &forward_to_host,
                disk_cache.as_deref(),
            )
        }
        Task::Relay { address } => vm::relay(address),
        Task::Keygen { out } => release::keygen(&out),
        Task::UpgradeImage { key, payload, version, arch, min_from, out } => {
            release::upgrade_image(&release::ImageRequest {
                key,
                payload,
                version,
                arch,
                min_from,
                out,
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // No backtrace: where xtask noticed a failure is of no interest, only what failed.
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of xtask's own manifest directory.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or_else(|| Path::new("."))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace root) or `target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The cargo that runs us (`CARGO`, set by cargo), or `cargo` from `PATH`.
pub(crate) fn cargo_program() -> OsString {
    std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(OsString::from))
        .unwrap_or_else(|| OsString::from("cargo"))
}

/// A `cargo <args>` command that runs in the workspace root.
///
/// Without the variables cargo sets for the program it runs (xtask itself, or a test calling
/// `cargo xtask`): some build scripts (ring's) rerun when `CARGO_MANIFEST_DIR` or
/// `CARGO_PKG_NAME` changes, so a release build from xtask and one by hand would rebuild each
/// other's dependencies every time.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(cargo_program());
    command.args(args).current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if set_by_cargo_run {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `command` to completion with inherited stdio; an error if it cannot start or fails.
pub(crate) fn run_checked(mut command: Command, what: &str) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("could not start {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

/// Replaces this process with `command` where the platform allows it (so Ctrl-C and the exit
/// status belong to the command alone); elsewhere runs it and exits with its status.
pub(crate) fn exec(mut command: Command, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        Err(error).with_context(|| format!("could not start {what}"))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(|| format!("could not start {what}"))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
