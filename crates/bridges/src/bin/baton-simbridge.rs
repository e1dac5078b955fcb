//! `baton-simbridge`: a simulated TelePresence MCU or TelePresence Server (remotely managed)
//! answering XML-RPC on `POST /RPC2`, for tests and demos. See `bridges::sim` for the methods
//! and the run-time knobs (`sim.configure`, `sim.participants`).

use anyhow::Context as _;
use bridges::BridgeKind;
use bridges::sim::{self, FEEDBACK_INTERVAL_MS_DEFAULT, PAGE_SIZE_DEFAULT, SimBridge, SimConfig};
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "A simulated conference bridge speaking the XML-RPC management API")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound address (`host:port`) to this file once listening.
    #[arg(long)]
    address_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "mcu")]
    personality: Personality,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Conferences hosted at most (fault 6 beyond); no limit when absent.
    #[arg(long)]
    max_conferences: Option<u32>,
    /// Delay before each answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Entries per enumeration page.
    #[arg(long, default_value_t = PAGE_SIZE_DEFAULT)]
    page_size: usize,
    /// Serve HTTPS with this certificate (PEM, leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Interval of `flexAlive` keep-alives to feedback receivers (TelePresence Server).
    #[arg(long, default_value_t = FEEDBACK_INTERVAL_MS_DEFAULT)]
    feedback_interval_ms: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Personality {
    Mcu,
    TelepresenceServer,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kind = match args.personality {
        Personality::Mcu => BridgeKind::Mcu,
        Personality::TelepresenceServer => BridgeKind::TelepresenceServer,
    };
    let config = SimConfig {
        username: args.username,
        password: args.password,
        max_conferences: args.max_conferences,
        latency_ms: args.latency_ms,
        page_size: args.page_size,
        feedback_interval_ms: args.feedback_interval_ms,
        ..SimConfig::new(kind)
    };
    let bridge = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let identity = sim::tls_identity(&read(certificate)?, &read(key)?)
                .context("loading the TLS identity")?;
            SimBridge::start_tls(args.listen, config, identity).await
        }
        _ => SimBridge::start(args.listen, config).await,
    }
    .with_context(|| format!("listening on {}", args.listen))?;
    let address = bridge.address();
    if let Some(path) = &args.address_file {
        // Written aside and renamed, so a reader never sees a half-written address.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, address.to_string())
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("baton-simbridge ({:?}) listening on {}", args.personality, bridge.base_url());
    shutdown_signal().await?;
    drop(bridge);
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for ctrl-c")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
