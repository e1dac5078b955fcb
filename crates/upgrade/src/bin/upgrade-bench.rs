//! `cargo xtask bench upgrade`: verification-plus-write throughput of [`upgrade::install`] for
//! large payloads beside `sha256sum` of the same image file in the same run, their ratio
//! (target ≥ 0.8), and the install's peak RSS, which must not grow with the image size.
//!
//! Usage: `upgrade-bench [--sizes-mib 256,1024] [--dir DIR]`. Files are generated in a fresh
//! directory under DIR (default: the system temporary directory) and removed afterwards; both
//! sides read the image from the page cache, and the install's time includes the final fsync
//! of the slot, as on the appliance.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use upgrade::{
    BootControl, FileBootControl, InstallOptions, Manifest, RunningSystem, Slot, TrustedKeys,
    Version,
};

const MIB: u64 = 1 << 20;
const TARGET_RATIO: f64 = 0.8;
/// The hidden first argument that makes this binary the install child (see `install_child`).
const INSTALL_CHILD: &str = "--install-child";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upgrade-bench: error: {error}");
            ExitCode::FAILURE
        }
    }
}

struct Measurement {
    size_mib: u64,
    sha256sum: Duration,
    install: Duration,
    fsync_included: bool,
    peak_rss_kib: Option<u64>,
}

fn run() -> Result<(), String> {
    let mut sizes_mib = vec![256u64, 1024];
    let mut base_dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, image, public_key, boot_dir] = arguments.as_slice()
        && flag == INSTALL_CHILD
    {
        return install_child(Path::new(image), public_key, Path::new(boot_dir));
    }
    // The suite name is forwarded by xtask (`bench upgrade`); accept and skip it.
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "upgrade" => {}
            "--sizes-mib" => {
                let list = args.next().ok_or("--sizes-mib needs a value")?;
                sizes_mib = list
                    .split(',')
                    .map(|size| size.trim().parse().map_err(|_| format!("bad size {size:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--dir" => base_dir = PathBuf::from(args.next().ok_or("--dir needs a value")?),
            other => return Err(format!("unknown argument {other:?}; see the file's header")),
        }
    }
    let work_dir = base_dir.join(format!("upgrade-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)
        .map_err(|error| format!("creating {}: {error}", work_dir.display()))?;
    let result: Result<Vec<Measurement>, String> =
        sizes_mib.iter().map(|size_mib| measure(&work_dir, *size_mib)).collect();
    // Gigabytes of scratch files must not outlive the run, whatever happened.
    let _ = std::fs::remove_dir_all(&work_dir);
    let measurements = result?;

    println!();
    println!("upgrade: verify + write into the inactive slot, beside sha256sum of the same image");
    println!(
        "{:>9} {:>14} {:>16} {:>7} {:>22}",
        "payload", "sha256sum", "install", "ratio", "install peak RSS"
    );
    for m in &measurements {
        let size_bytes = m.size_mib * MIB;
        let ratio = m.sha256sum.as_secs_f64() / m.install.as_secs_f64();
        println!(
            "{:>5} MiB {:>9.0} MiB/s {:>11.0} MiB/s{} {:>6.2}{} {:>21}",
            m.size_mib,
            mib_per_s(size_bytes, m.sha256sum),
            mib_per_s(size_bytes, m.install),
            if m.fsync_included { "*" } else { " " },
            ratio,
            if ratio >= TARGET_RATIO { " " } else { "!" },
            kib_text(m.peak_rss_kib),
        );
    }
    println!("  * includes fsync of the slot; ! below the target ratio {TARGET_RATIO}");
    println!("  peak RSS: VmHWM of a process that did nothing but this one install");
    if let [first, .., last] = measurements.as_slice()
        && let (Some(small), Some(large)) = (first.peak_rss_kib, last.peak_rss_kib)
    {
        println!(
            "  peak RSS {} MiB → {} MiB: {:+} KiB for {}x the payload",
            first.size_mib,
            last.size_mib,
            i128::from(large) - i128::from(small),
            last.size_mib / first.size_mib.max(1)
        );
    }
    Ok(())
}

fn measure(work_dir: &Path, size_mib: u64) -> Result<Measurement, String> {
    let size_bytes = size_mib * MIB;
    let payload_path = work_dir.join("payload.img");
    let image_path = work_dir.join("upgrade.img");
    eprintln!("[{size_mib} MiB] generating the payload and the signed image");
    generate_payload(&payload_path, size_bytes)?;

    let key = upgrade::generate_signing_key().map_err(|error| error.to_string())?;
    let (payload_size_bytes, payload_sha256) = upgrade::digest_payload(&mut BufReader::new(
        File::open(&payload_path).map_err(|error| error.to_string())?,
    ))
    .map_err(|error| error.to_string())?;
    let manifest = Manifest {
        format_version: upgrade::FORMAT_VERSION,
        product: upgrade::PRODUCT.to_owned(),
        version: Version::new(0, 2, 0),
        architecture: std::env::consts::ARCH.to_owned(),
        payload_size_bytes,
        payload_sha256,
        min_from_version: Version::new(0, 1, 0),
        created_at_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    };
    {
        let mut out = BufWriter::new(File::create(&image_path).map_err(|error| error.to_string())?);
        let mut payload = File::open(&payload_path).map_err(|error| error.to_string())?;
        upgrade::write_image(&mut out, &manifest, &key, &mut payload)
            .map_err(|error| error.to_string())?;
        out.flush().map_err(|error| error.to_string())?;
    }
    std::fs::remove_file(&payload_path).map_err(|error| error.to_string())?;

    // Warm the page cache once so that neither side pays for the first read from disk.
    let _ = sha256sum(&image_path)?;
    eprintln!("[{size_mib} MiB] sha256sum");
    let sha256sum_took = sha256sum(&image_path)?;

    // The install runs in a child process of its own, so that its peak RSS (VmHWM at its
    // exit) covers exactly one install and nothing this process did before.
    eprintln!("[{size_mib} MiB] install");
    let boot_dir = work_dir.join("machine");
    let public_key = upgrade::public_key_to_text(&key.verifying_key());
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = Command::new(exe)
        .arg(INSTALL_CHILD)
        .arg(&image_path)
        .arg(public_key.trim())
        .arg(&boot_dir)
        .output()
        .map_err(|error| format!("starting the install child: {error}"))?;
    if !output.status.success() {
        return Err(format!("install child failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let report = String::from_utf8_lossy(&output.stdout);
    let mut words = report.split_whitespace();
    let install_took = Duration::from_nanos(
        words.next().and_then(|word| word.parse().ok()).ok_or("install child: no time")?,
    );
    let peak_rss_kib = words.next().and_then(|word| word.parse().ok());
    std::fs::remove_dir_all(&boot_dir).map_err(|error| error.to_string())?;
    std::fs::remove_file(&image_path).map_err(|error| error.to_string())?;
    Ok(Measurement {
        size_mib,
        sha256sum: sha256sum_took,
        install: install_took,
        fsync_included: true,
        peak_rss_kib,
    })
}

/// Fills `path` with `size_bytes` of xorshift output: incompressible, nothing for a file system
/// or cache to shortcut.
fn generate_payload(path: &Path, size_bytes: u64) -> Result<(), String> {
    let mut out = BufWriter::new(File::create(path).map_err(|error| error.to_string())?);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = vec![0u8; MIB as usize];
    let mut left_bytes = size_bytes;
    while left_bytes > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let take = usize::try_from(left_bytes.min(MIB)).unwrap_or(chunk.len());
        out.write_all(&chunk[..take]).map_err(|error| error.to_string())?;
        left_bytes -= take as u64;
    }
    out.flush().map_err(|error| error.to_string())
}

fn sha256sum(path: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|error| format!("running sha256sum: {error}"))?;
    let took = started.elapsed();
    if !output.status.success() {
        return Err(format!("sha256sum failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(took)
}

/// The child's side: installs IMAGE (trusting the hex public key) into a fresh file-backed
/// machine in DIR and prints the install's duration in nanoseconds and its peak RSS in KiB.
fn install_child(image: &Path, public_key: &str, boot_dir: &Path) -> Result<(), String> {
    let boot = FileBootControl::create(boot_dir, "0.1.0", b"old rootfs", u64::MAX)
        .map_err(|error| error.to_string())?;
    let running = RunningSystem {
        version: Version::new(0, 1, 0),
        architecture: std::env::consts::ARCH.to_owned(),
        active_slot: boot.active_slot().map_err(|error| error.to_string())?,
    };
    let trusted = TrustedKeys::from_text(public_key).map_err(|error| error.to_string())?;
    let mut writer = boot.inactive_slot_writer().map_err(|error| error.to_string())?;
    let mut image = File::open(image).map_err(|error| error.to_string())?;
    let started = Instant::now();
    let installed = upgrade::install(
        &mut image,
        &trusted,
        &running,
        InstallOptions::default(),
        &mut writer,
        &mut |_| {},
    )
    .map_err(|error| error.to_string())?;
    let took = started.elapsed();
    if installed.slot != Slot::B {
        return Err(format!("installed into {}, expected B", installed.slot));
    }
    let peak_rss_kib = status_kib("VmHWM").map_or_else(|| "n/a".to_owned(), |kib| kib.to_string());
    println!("{} {peak_rss_kib}", took.as_nanos());
    Ok(())
}

/// A `kB` line of /proc/self/status.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib_per_s(size_bytes: u64, took: Duration) -> f64 {
    size_bytes as f64 / MIB as f64 / took.as_secs_f64()
}

fn kib_text(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}
