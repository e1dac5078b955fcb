//! `baton-bench`: measured numbers printed beside a reference taken in the same run on the
//! same machine. Run through `cargo xtask bench <suite>`; never part of the test suite.
//!
//! Suite `eventlog`:
//! - durable appends, one per transaction and in batches, beside raw SQLite inserts of rows of
//!   the same size with the same pragmas (WAL, synchronous=FULL);
//! - durable commands through the store (decide + append + projections), one at a time, and
//!   through the writer from concurrent clients as the daemon serves them (group commit: the
//!   raw SQLite reference is a single-threaded loop paying one fsync per row);
//! - projection rebuild time and store start-up time (with and without a snapshot) at 10^5 and
//!   10^6 events (`--sizes` to change);
//! - resident memory of an idle `batond` beside an idle `sleep` process.
//!
//! Suite `backup` (`--events 100000,1000000` to change the sizes): backup and restore time and
//! peak memory, plain and encrypted, beside `tar czf` / `tar xzf` of the same files in the same
//! run. Each operation runs in its own process under `/usr/bin/time`, so peak resident memory
//! is measured the same way for ours and for tar. A restore here is what the daemon does:
//! stage and verify the archive, derive the projections from the restored log, then replace a
//! live store's content in one step (`Store::restore_from`).
//!
//! Suite `flood` (`flood.rs`): the policy service's latency and RSS during a login flood and a
//! connection flood, beside the same figures without a flood.

#[path = "baton-bench/flood.rs"]
mod flood;

use anyhow::{Context, bail};
use eventlog::{EventLog, NewEvent, Stream};
use model::{Command, Event, Hlc, Record, RecordKind};
use std::path::Path;
use std::time::{Duration, Instant};

/// Events per batch in batched appends and log generation.
const BATCH_EVENTS: usize = 1_000;
/// Concurrent clients sending commands to the writer, each waiting for its acknowledgement.
const COMMAND_CLIENTS: usize = 32;
/// Distinct bridges the generated history rewrites, so state size stays realistic.
const HISTORY_RECORDS: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("eventlog") => eventlog_suite(&args[1..]),
        Some("backup") => backup_suite(&args[1..]),
        Some("flood") => flood::suite(),
        Some(BACKUP_STEP) => backup_step(&args[1..]),
        _ => bail!(
            "usage: baton-bench eventlog [--single N] [--sizes 100000,1000000]\n       \
             baton-bench backup [--events 100000,1000000]\n       \
             baton-bench flood"
        ),
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn eventlog_suite(args: &[String]) -> anyhow::Result<()> {
    let single: usize = flag(args, "--single").unwrap_or(300);
    let sizes: Vec<usize> = flag::<String>(args, "--sizes")
        .unwrap_or_else(|| "100000,1000000".to_owned())
        .split(',')
        .map(|s| s.parse().context("--sizes takes numbers"))
        .collect::<anyhow::Result<_>>()?;
    let dir = tempfile::tempdir().context("temporary directory")?;
    println!("baton-bench eventlog (data in {})", dir.path().display());

    println!("\n## Durable appends ({single} single, {} batched)", 20 * BATCH_EVENTS);
    let payload_bytes = sample_event(0, 0).payload.len();
    let raw_single = raw_sqlite(&dir.path().join("raw1.db"), single, 1, payload_bytes)?;
    let raw_batched =
        raw_sqlite(&dir.path().join("raw2.db"), 20 * BATCH_EVENTS, BATCH_EVENTS, payload_bytes)?;
    let log_single = log_appends(&dir.path().join("log1.db"), single, 1)?;
    let log_batched = log_appends(&dir.path().join("log2.db"), 20 * BATCH_EVENTS, BATCH_EVENTS)?;
    let store_single = store_commands(&dir.path().join("store.db"), single)?;
    let (store_concurrent, commits) =
        writer_commands(&dir.path().join("writer.db"), 10 * single, COMMAND_CLIENTS)?;
    println!("{:<44} {:>14} {:>14} {:>8}", "", "Baton /s", "raw SQLite /s", "ratio");
    row("append, 1 event per transaction", log_single, raw_single);
    row(&format!("append, {BATCH_EVENTS} events per transaction"), log_batched, raw_batched);
    row("command (decide+append+projections), 1 per tx", store_single, raw_single);
    row(&format!("command, {COMMAND_CLIENTS} concurrent clients"), store_concurrent, raw_single);
    println!(
        "  ({} commands in {commits} group commits; the reference is a single-threaded loop, \
         one row and one fsync per transaction)",
        10 * single
    );

    for &size in &sizes {
        println!("\n## History of {size} events");
        let path = dir.path().join(format!("history-{size}.db"));
        let generated = Instant::now();
        generate_history(&path, size)?;
        println!("generated in {:.1} s", generated.elapsed().as_secs_f64());

        let mut log = EventLog::open(&path)?;
        let started = Instant::now();
        projections::catch_up(log.connection_mut())?;
        println!(
            "projection rebuild (all projections):   {:>8.2} s",
            started.elapsed().as_secs_f64()
        );
        drop(log);

        let (cold, cold_report) = timed_open(&path)?;
        let (warm, warm_report) = timed_open(&path)?;
        println!(
            "store start-up, first (no snapshot yet): {:>8.1} ms  replayed {} events",
            cold.as_secs_f64() * 1e3,
            cold_report.events_replayed
        );
        println!(
            "store start-up, with snapshot:           {:>8.1} ms  replayed {} events after position {}",
            warm.as_secs_f64() * 1e3,
            warm_report.events_replayed,
            warm_report.snapshot_position
        );
    }

    println!("\n## Resident memory when idle");
    let batond_kib = idle_rss_kib(&dir.path().join("rss"))?;
    let sleep_kib = process_rss_kib(std::process::Command::new("sleep").arg("5"))?;
    println!("{:<44} {:>10} KiB", "batond (idle, empty log)", batond_kib);
    println!("{:<44} {:>10} KiB  (reference: an idle `sleep`)", "sleep", sleep_kib);
    Ok(())
}

fn row(label: &str, ours: f64, reference: f64) {
    println!("{label:<44} {ours:>14.0} {reference:>14.0} {:>8.2}", ours / reference);
}

fn sample_record(index: usize, capacity: u32) -> Record {
    Record::Bridge(model::record::Bridge {
        name: format!("bridge-{}", index % HISTORY_RECORDS),
        bridge_type: model::record::BridgeType::Mcu,
        address: format!("mcu-{index}.example.com"),
        protocol: model::record::Protocol::Https,
        username: "api".to_owned(),
        password: "secret".to_owned(),
        capacity_ports: capacity,
        enabled: true,
        pinned_sha256: None,
    })
}

/// A capacity within the model's bounds that differs from the one the same record got
/// [`HISTORY_RECORDS`] saves before (9,999 and 1,000 are coprime), so every save is a change.
fn changed_capacity(index: usize) -> u32 {
    1 + (index % (model::validate::CAPACITY_PORTS_MAX as usize - 1)) as u32
}

fn sample_event(index: usize, wall_ms: u64) -> NewEvent {
    let encoded = Event::Saved(sample_record(index, 1 + (index % 500) as u32)).encode();
    NewEvent {
        stream: Stream::Shared,
        hlc: Hlc { wall_ms, counter: 0 },
        actor: "bench".to_owned(),
        kind: encoded.kind,
        version: encoded.version,
        payload: encoded.payload,
    }
}

/// Plain INSERTs of rows shaped like events, same pragmas as the log.
fn raw_sqlite(
    path: &Path,
    count: usize,
    per_tx: usize,
    payload_bytes: usize,
) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, origin BLOB, seq INTEGER, actor TEXT, kind TEXT,
                         payload BLOB, hash BLOB, UNIQUE(origin, seq));",
    )?;
    let payload = vec![7u8; payload_bytes];
    let started = Instant::now();
    let mut seq = 0u64;
    for _ in 0..count / per_tx {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO t (origin, seq, actor, kind, payload, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for _ in 0..per_tx {
                seq += 1;
                insert.execute(rusqlite::params![
                    [1u8; 16],
                    seq,
                    "bench",
                    "bridge.saved",
                    payload,
                    [9u8; 32]
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn log_appends(path: &Path, count: usize, per_tx: usize) -> anyhow::Result<f64> {
    let mut log = EventLog::open(path)?;
    let started = Instant::now();
    let mut index = 0;
    for _ in 0..count / per_tx {
        let batch: Vec<NewEvent> = (0..per_tx)
            .map(|_| {
                index += 1;
                sample_event(index, 1_000 + index as u64)
            })
            .collect();
        log.append(&batch)?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn store_commands(path: &Path, count: usize) -> anyhow::Result<f64> {
    let (mut store, _) = daemon::store::Store::open(path)?;
    let started = Instant::now();
    for index in 0..count {
        let command = Command::Save(sample_record(index, changed_capacity(index)));
        store.execute("bench", &command, 1_000 + index as u64)?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Commands through the writer thread from `clients` concurrent clients, each waiting for its
/// acknowledgement before sending the next. Returns commands/s and the group commits made.
fn writer_commands(path: &Path, count: usize, clients: usize) -> anyhow::Result<(f64, u64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build()?;
    let (store, _) = daemon::store::Store::open(path)?;
    let (outbound, _peers) = tokio::sync::mpsc::channel(1);
    let (writer, thread) = daemon::store::Writer::spawn(store, outbound)?;
    let commits_before = writer.group_commits();
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    for index in (client..count).step_by(clients) {
                        let command = Command::Save(sample_record(index, changed_capacity(index)));
                        writer.execute("bench", command, 1_000 + index as u64).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed();
    let commits = writer.group_commits() - commits_before;
    runtime.block_on(writer.stop());
    drop(writer);
    let _ = thread.join();
    Ok((count as f64 / elapsed.as_secs_f64(), commits))
}

fn generate_history(path: &Path, size: usize) -> anyhow::Result<()> {
    let mut log = EventLog::open(path)?;
    let mut index = 0;
    while index < size {
        let batch: Vec<NewEvent> = (index..(index + BATCH_EVENTS).min(size))
            .map(|i| sample_event(i, 1_000 + i as u64))
            .collect();
        index += batch.len();
        log.append(&batch)?;
    }
    Ok(())
}

fn timed_open(path: &Path) -> anyhow::Result<(Duration, daemon::store::OpenReport)> {
    let started = Instant::now();
    let (store, report) = daemon::store::Store::open(path)?;
    let elapsed = started.elapsed();
    assert!(store.state().list(RecordKind::Bridge).count() > 0);
    Ok((elapsed, report))
}

fn idle_rss_kib(data_dir: &Path) -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let batond = exe.with_file_name("batond");
    if !batond.exists() {
        bail!("{} not found: build it with `cargo build --release -p daemon`", batond.display());
    }
    let mut command = std::process::Command::new(batond);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    process_rss_kib(&mut command)
}

/// Starts a process, lets it settle for two seconds, reads its VmRSS and kills it.
fn process_rss_kib(command: &mut std::process::Command) -> anyhow::Result<u64> {
    let mut child = command.spawn().context("starting the process")?;
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let _ = child.kill();
    let _ = child.wait();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS missing")
}

/// The hidden subcommand that runs one measured backup or restore in a child process.
const BACKUP_STEP: &str = "backup-step";
const BENCH_SERIAL: &str = "BENCH-SERIAL";
const BENCH_PASSWORD: &str = "bench backup password";
/// Stand-ins for the TLS files a real backup carries.
const BENCH_EXTRA_FILES: [(&str, usize); 3] =
    [("tls/ca.pem", 600), ("tls/server.pem", 700), ("tls/server-key.pem", 250)];

fn backup_suite(args: &[String]) -> anyhow::Result<()> {
    let sizes: Vec<usize> = flag::<String>(args, "--events")
        .unwrap_or_else(|| "100000,1000000".to_owned())
        .split(',')
        .map(|s| s.parse().context("--events takes numbers"))
        .collect::<anyhow::Result<_>>()?;
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        bail!("/usr/bin/time (GNU time) is needed to measure peak memory of each step");
    }
    let dir = tempfile::tempdir().context("temporary directory")?;
    println!("baton-bench backup (data in {})", dir.path().display());
    for &size in &sizes {
        let data = dir.path().join(format!("data-{size}"));
        let database = data.join("baton.db");
        let generated = Instant::now();
        generate_data_dir(&data, size)?;
        let database_bytes = std::fs::metadata(&database)?.len();
        println!(
            "\n## {size} events ({:.1} MiB database, generated in {:.1} s)",
            database_bytes as f64 / 1048576.0,
            generated.elapsed().as_secs_f64()
        );
        println!(
            "{:<28} {:>9} {:>11} {:>9} {:>11} {:>8} {:>8}",
            "", "time s", "peak MiB", "tar s", "tar MiB", "time ×", "memory ×"
        );
        compression_levels(&database)?;
        let tarball = dir.path().join(format!("tar-{size}.tar.gz"));
        let tar_create = measure(
            std::process::Command::new("tar")
                .arg("czf")
                .arg(&tarball)
                .arg("-C")
                .arg(&data)
                .args(["baton.db", "tls"]),
        )?;
        let untar_dir = dir.path().join(format!("untar-{size}"));
        std::fs::create_dir_all(&untar_dir)?;
        let tar_extract = measure(
            std::process::Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&untar_dir),
        )?;
        std::fs::remove_dir_all(&untar_dir)?;
        let archive_bytes = std::fs::metadata(&tarball)?.len();
        let tar = TarRun { create: tar_create, extract: tar_extract, archive_bytes };
        ours_rows(dir.path(), &data, size, &tar)?;
        std::fs::remove_dir_all(&data)?;
        std::fs::remove_file(&tarball)?;
    }
    Ok(())
}

/// A data directory as the backup bench reads it: `size` events in `baton.db`, checkpointed
/// (one file for tar as for the backup), and stand-ins for the TLS files.
fn generate_data_dir(data: &Path, size: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(data.join("tls"))?;
    let database = data.join("baton.db");
    generate_history(&database, size)?;
    EventLog::open(&database)?.connection().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    for (name, size_bytes) in BENCH_EXTRA_FILES {
        std::fs::write(data.join(name), vec![b'x'; size_bytes])?;
    }
    Ok(())
}

/// Deflate levels on the database beside `gzip -6` (tar's compressor), in this process: the
/// measurement behind `backup::GZIP_LEVEL`.
fn compression_levels(database: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let bytes = std::fs::read(database)?;
    let started = Instant::now();
    let gzip = std::process::Command::new("gzip").args(["-6", "-c"]).arg(database).output()?;
    let gzip_s = started.elapsed().as_secs_f64();
    if !gzip.status.success() {
        bail!("gzip -6 failed: {}", gzip.status);
    }
    let gzip_bytes = gzip.stdout.len() as f64;
    for level in [1, 2, 3, 6] {
        let started = Instant::now();
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(&bytes)?;
        let compressed = encoder.finish()?.len() as f64;
        let seconds = started.elapsed().as_secs_f64();
        let chosen = if level == backup::GZIP_LEVEL { " (chosen)" } else { "" };
        println!(
            "{:<28} {seconds:>9.2} s {:>7.1} MiB   gzip -6: {gzip_s:.2} s {:.1} MiB   time × {:.2}  size × {:.2}",
            format!("deflate level {level}{chosen}"),
            compressed / 1048576.0,
            gzip_bytes / 1048576.0,
            seconds / gzip_s,
            compressed / gzip_bytes
        );
    }
    Ok(())
}

/// What `tar` took for the same data: the yardstick of each row.
struct TarRun {
    create: (f64, u64),
    extract: (f64, u64),
    archive_bytes: u64,
}

/// Our backup and restore of `data`, plain and encrypted, each beside `tar`.
fn ours_rows(dir: &Path, data: &Path, size: usize, tar: &TarRun) -> anyhow::Result<()> {
    for encrypted in [false, true] {
        let label = if encrypted { "encrypted" } else { "plain" };
        let archive = dir.join(format!("backup-{size}-{label}"));
        let exe = std::env::current_exe()?;
        let mut backup = std::process::Command::new(&exe);
        backup.args([BACKUP_STEP, "backup"]).arg(data).arg(&archive);
        let mut restore = std::process::Command::new(&exe);
        let target = dir.join(format!("restore-{size}-{label}"));
        restore.args([BACKUP_STEP, "restore"]).arg(&target).arg(&archive);
        if encrypted {
            backup.arg("--encrypt");
            restore.arg("--encrypt");
        }
        let ours_backup = measure(&mut backup)?;
        let ours_restore = measure(&mut restore)?;
        std::fs::remove_dir_all(&target)?;
        let ours_bytes = std::fs::metadata(&archive)?.len();
        std::fs::remove_file(&archive)?;
        measured_row(&format!("backup, {label}"), ours_backup, tar.create);
        measured_row(&format!("restore, {label}"), ours_restore, tar.extract);
        println!(
            "{:<28} {:>9.1} MiB archive  (tar.gz: {:.1} MiB)",
            format!("size, {label}"),
            ours_bytes as f64 / 1048576.0,
            tar.archive_bytes as f64 / 1048576.0
        );
    }
    Ok(())
}

/// (wall seconds, peak resident KiB) of a command run under GNU time.
fn measure(command: &mut std::process::Command) -> anyhow::Result<(f64, u64)> {
    let report = tempfile::NamedTempFile::new()?;
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed.args(["-f", "%M", "-o"]).arg(report.path()).arg(command.get_program());
    timed.args(command.get_args());
    let started = Instant::now();
    let status = timed.status().context("running the measured step")?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{:?} failed: {status}", command);
    }
    let text = std::fs::read_to_string(report.path())?;
    let peak_kib = text.trim().lines().last().and_then(|line| line.trim().parse().ok());
    Ok((seconds, peak_kib.context("GNU time reported no peak memory")?))
}

fn measured_row(label: &str, ours: (f64, u64), tar: (f64, u64)) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{label:<28} {:>9.2} {:>11.1} {:>9.2} {:>11.1} {:>8.2} {:>8.2}",
        ours.0,
        mib(ours.1),
        tar.0,
        mib(tar.1),
        ours.0 / tar.0,
        ours.1 as f64 / tar.1 as f64
    );
}

/// `backup-step backup <data dir> <archive> [--encrypt]`,
/// `backup-step restore <target dir> <archive> [--encrypt]`, or
/// `backup-step generate <data dir> <events>` (the data of one size, to profile a step on).
fn backup_step(args: &[String]) -> anyhow::Result<()> {
    let (Some(step), Some(dir), Some(archive)) = (args.first(), args.get(1), args.get(2)) else {
        bail!(
            "usage: baton-bench {BACKUP_STEP} backup|restore DIR ARCHIVE [--encrypt]\n       \
             baton-bench {BACKUP_STEP} generate DIR EVENTS"
        );
    };
    if step == "generate" {
        return generate_data_dir(Path::new(dir), archive.parse().context("EVENTS: a number")?);
    }
    let (dir, archive) = (Path::new(dir), Path::new(archive));
    let password = args.iter().any(|a| a == "--encrypt").then_some(BENCH_PASSWORD);
    match step.as_str() {
        "backup" => {
            let conn = eventlog::open_reader(&dir.join("baton.db"))?;
            let extra_files: Vec<backup::ExtraFile> = BENCH_EXTRA_FILES
                .iter()
                .map(|(name, _)| backup::ExtraFile {
                    name: (*name).to_owned(),
                    source: dir.join(name),
                })
                .collect();
            let options = backup::BackupOptions {
                software_version: env!("CARGO_PKG_VERSION"),
                hardware_serial: BENCH_SERIAL,
                created_at_ms: 1_800_000_000_000,
                extra_files: &extra_files,
                password,
                kdf: backup::KdfParams::RECOMMENDED,
                scratch_dir: dir,
            };
            let output = std::io::BufWriter::new(std::fs::File::create(archive)?);
            backup::write_backup(&conn, &options, output, &mut |_| {})?;
        }
        "restore" => {
            // A live store to replace, as in the daemon: staged and verified, projections
            // derived from the restored log, then swapped in one transaction.
            std::fs::create_dir_all(dir)?;
            let (mut live, _) = daemon::store::Store::open(&dir.join("baton.db"))?;
            let input = std::io::BufReader::new(std::fs::File::open(archive)?);
            let staging_dir = dir.join("restore-staging");
            let target = backup::StagingTarget {
                expected_serial: BENCH_SERIAL,
                running_version: env!("CARGO_PKG_VERSION"),
                staging_dir: &staging_dir,
            };
            let staged = daemon::store::stage_restore(input, password, &target, &mut |_| {})?;
            let note = eventlog::NewJournalEntry {
                at_ms: 1_800_000_000_000,
                level: eventlog::Level::Info,
                kind: "restore.applied".to_owned(),
                actor: None,
                message: "bench".to_owned(),
            };
            // As the daemon does once its readers are paused.
            let (staged, replace) =
                (staged.staging_dir().join("baton.db"), daemon::store::Replace::Alone);
            live.restore_from(&staged, &note, 1_800_000_000_000, replace)?;
        }
        other => bail!("unknown step {other:?}"),
    }
    Ok(())
}
