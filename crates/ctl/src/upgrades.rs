//! `batonctl upgrade`: the state of this peer's A/B slots and last boot, installing a signed
//! upgrade image (streamed from the file, with the bytes sent shown on a terminal), and the
//! reboot into it. The daemon checks the image (signature, product, architecture, version)
//! before it writes anything; only the file's first bytes are looked at here, so a file that
//! is plainly not an upgrade image is refused without uploading it.

use crate::cli::UpgradeCommand;
use crate::client::{self, Client};
use crate::output::Output;
use crate::render;
use anyhow::{Context, bail};
use api::{Installed, UpgradeStatus};
use reqwest::Method;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// An upload of a whole root file system may take long; this bounds only a daemon that
/// stopped answering.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How often the progress line is refreshed on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// The first bytes of every upgrade image (image/UPGRADE-FORMAT.md).
const IMAGE_MAGIC: &[u8; 8] = b"BATONUPG";

pub(crate) fn run(client: &Client, out: Output, command: UpgradeCommand) -> anyhow::Result<()> {
    match command {
        UpgradeCommand::Status => {
            let status: UpgradeStatus = client.get("/api/v1/upgrade")?;
            let text = render_status(&status)?;
            out.emit(&status, |_| text)
        }
        UpgradeCommand::Install { image, reboot, allow_downgrade } => {
            install(client, out, &image, reboot, allow_downgrade)
        }
        UpgradeCommand::Reboot => {
            let response =
                client.send_raw(client.request(Method::POST, "/api/v1/upgrade/reboot"))?;
            // 202 Accepted, without a body.
            client::answer::<()>(response)?;
            out.emit(&serde_json::json!({"rebooting": true}), |_| {
                "rebooting; the peer boots its next entry (an installed upgrade, on trial)\n"
                    .to_owned()
            })
        }
    }
}

fn install(
    client: &Client,
    out: Output,
    path: &Path,
    reboot: bool,
    allow_downgrade: bool,
) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size_bytes = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || &magic != IMAGE_MAGIC {
        bail!(
            "{} is not a Baton upgrade image (it does not start with {:?}); nothing was sent",
            path.display(),
            String::from_utf8_lossy(IMAGE_MAGIC)
        );
    }
    drop(file);
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let body = Counting::new(file, size_bytes, std::io::stderr().is_terminal());
    let query = client::query(&[
        ("allow_downgrade", allow_downgrade.then(|| "true".to_owned())),
        ("reboot", reboot.then(|| "true".to_owned())),
    ]);
    let request = client
        .request(Method::POST, &format!("/api/v1/upgrade{query}"))
        .timeout(TRANSFER_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::blocking::Body::sized(body, size_bytes));
    let started = Instant::now();
    let answer: Installed = client::answer(client.send_raw(request)?)?;
    let seconds = started.elapsed().as_secs_f64();
    out.emit(&answer, |answer| {
        let mut text = format!(
            "installed Baton {} into slot {} ({size_bytes} bytes in {seconds:.1} s); it boots next, on trial\n",
            answer.version, answer.slot,
        );
        if reboot {
            text.push_str("rebooting now\n");
        } else {
            text.push_str("reboot into it with `batonctl upgrade reboot`\n");
        }
        text
    })
}

fn render_status(status: &UpgradeStatus) -> anyhow::Result<String> {
    let mut overview = serde_json::to_value(status).context("encoding the upgrade status")?;
    if let Some(fields) = overview.as_object_mut() {
        fields.remove("installing");
        fields.remove("boot_entries");
    }
    let mut text = render::fields(&overview);
    text.push_str(&format!("boot entries (in boot order): {}\n", status.boot_entries.join(", ")));
    if let Some(progress) = &status.installing {
        text.push_str(&format!(
            "installing: {} of {} bytes\n",
            progress.done_bytes, progress.total_bytes
        ));
    }
    Ok(text)
}

/// The upload body: counts what was read and, on a terminal, shows it.
struct Counting<R> {
    inner: R,
    total_bytes: u64,
    sent_bytes: u64,
    show: bool,
    last_shown: Instant,
}

impl<R> Counting<R> {
    fn new(inner: R, total_bytes: u64, show: bool) -> Counting<R> {
        Counting { inner, total_bytes, sent_bytes: 0, show, last_shown: Instant::now() }
    }

    fn show_progress(&self) {
        let percent =
            self.sent_bytes.saturating_mul(100).checked_div(self.total_bytes).unwrap_or(0);
        eprint!(
            "\ruploading: {} of {} MiB ({percent}%)   ",
            self.sent_bytes >> 20,
            self.total_bytes >> 20
        );
        let _ = std::io::stderr().flush();
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.sent_bytes += read as u64;
        if self.show && (read == 0 || self.last_shown.elapsed() >= PROGRESS_INTERVAL) {
            self.last_shown = Instant::now();
            self.show_progress();
            if read == 0 {
                eprintln!("\nverifying and finishing the install...");
            }
        }
        Ok(read)
    }
}
