//! `batond`: parses flags, installs logging, runs the daemon until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "batond",
    version,
    about = "The Baton conference orchestration daemon",
    after_help = "Development and tests only: BATON_HARDWARE_SERIAL replaces the machine's DMI \
                  serial (/sys/class/dmi/id/product_serial), which backups are tied to."
)]
struct Flags {
    /// Directory for the event log, TLS identity and run-time files.
    #[arg(long, env = "BATON_DATA_DIR", default_value = "/var/lib/baton")]
    data_dir: PathBuf,
    /// Address and port of the admin API (HTTPS).
    #[arg(long, env = "BATON_ADMIN_LISTEN", default_value = "127.0.0.1:8443")]
    admin_listen: SocketAddr,
    /// Log as JSON lines (for journald and log shippers) instead of text.
    #[arg(long, env = "BATON_LOG_JSON")]
    log_json: bool,
    /// Also serve the policy service over plain HTTP on this address (for a VCS set to HTTP).
    #[arg(long, env = "BATON_POLICY_HTTP_LISTEN")]
    policy_http_listen: Option<SocketAddr>,
    /// Base URL bridges can reach this peer's policy listener at, for their event
    /// notifications (default: http://<--policy-http-listen>).
    #[arg(long, env = "BATON_BRIDGE_FEEDBACK_URL")]
    bridge_feedback_url: Option<String>,
    /// End conferences that have been empty this long (milliseconds).
    #[arg(long, env = "BATON_CONFERENCE_IDLE_MS", default_value_t = daemon::services::policy::CONFERENCE_IDLE_MS_DEFAULT)]
    conference_idle_ms: u64,
    /// In maintenance mode, keep deciding calls that still arrive for this long (milliseconds):
    /// the VCS's status poll interval, after which it has moved its calls to another peer.
    #[arg(long, env = "BATON_MAINTENANCE_DRAIN_MS", default_value_t = daemon::services::policy::MAINTENANCE_DRAIN_MS_DEFAULT)]
    maintenance_drain_ms: u64,
    /// Trust the upgrade signing keys in this file instead of the build's. Development only.
    #[arg(long, env = "BATON_UPGRADE_TRUSTED_KEYS_FILE")]
    upgrade_trusted_keys_file: Option<PathBuf>,
    /// Where upgrades go: `file` keeps slots and boot entries as files under `<data-dir>/boot`
    /// (development and tests); `systemd-boot` is the appliance's A/B partitions and ESP.
    #[arg(long, env = "BATON_BOOT_CONTROL", value_enum, default_value_t = BootControlFlag::File)]
    boot_control: BootControlFlag,
    /// The software version stamped into the root file system by the image build; the crate's
    /// version when the file does not exist.
    #[arg(long, env = "BATON_VERSION_FILE", default_value = daemon::base::version::VERSION_FILE_DEFAULT)]
    version_file: PathBuf,
    /// Command that reboots the machine after an upgrade (program and arguments).
    #[arg(long, num_args = 1.., default_values = ["systemctl", "reboot"])]
    reboot_command: Vec<String>,
    /// Command that powers the machine off (Maintenance > Restart options > Shutdown).
    #[arg(long, num_args = 1.., default_values = ["systemctl", "poweroff"])]
    shutdown_command: Vec<String>,
    /// Command that restarts the Baton service only; it must not wait for the service to stop.
    #[arg(long, num_args = 1.., default_values = ["systemctl", "--no-block", "restart", "batond"])]
    restart_command: Vec<String>,
    /// TCP port for cluster peers, on this peer's primary address; the same on every peer.
    #[arg(long, env = "BATON_CLUSTER_PORT", default_value_t = daemon::services::cluster::CLUSTER_PORT_DEFAULT)]
    cluster_port: u16,
    /// Reach a peer through another address: PEER=HOST:PORT (NAT, or a test proxy). Repeatable.
    #[arg(long = "cluster-connect-via", value_parser = parse_via)]
    cluster_connect_via: Vec<(Ipv4Addr, SocketAddr)>,
    /// Apply this peer's local settings (host name, addresses, NTP, SSH, …) to the operating
    /// system. Only on the appliance: it rewrites files under /etc and restarts services.
    #[arg(long, env = "BATON_APPLY_OS")]
    apply_os: bool,
    /// With --apply-os: the `[Match]` lines of the systemd-networkd file the IPv4 settings
    /// configure (which NICs they apply to). Default: the cluster NIC, the second Ethernet NIC
    /// in PCI order, or the only one (the first stays the management NIC, on DHCP).
    #[arg(long, env = "BATON_OS_NETWORK_MATCH")]
    os_network_match: Option<String>,
    /// For tests only: cluster without NTP synchronisation.
    #[arg(long, hide = true)]
    assume_time_synchronised: bool,
    /// For tests only: run as this software version (announced to peers, reported and compared
    /// everywhere), to play another release in mixed-version and rolling-upgrade tests.
    #[arg(long, hide = true)]
    announce_version: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BootControlFlag {
    File,
    SystemdBoot,
}

fn parse_via(text: &str) -> Result<(Ipv4Addr, SocketAddr), String> {
    let (peer, via) = text.split_once('=').ok_or("expected PEER=HOST:PORT")?;
    let peer = peer.parse().map_err(|error| format!("peer address {peer:?}: {error}"))?;
    let via = via.parse().map_err(|error| format!("{via:?}: {error}"))?;
    Ok((peer, via))
}

fn main() -> anyhow::Result<()> {
    // Before any thread starts, as each inherits the mask of the thread that creates it.
    unblock_signals()?;
    let flags = Flags::parse();
    if let Some(version) = &flags.announce_version {
        daemon::base::version::play(version).map_err(anyhow::Error::msg)?;
    }
    let version = daemon::base::version::load(&flags.version_file).map_err(anyhow::Error::msg)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if flags.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = wait_for_signal().await {
                tracing::error!(%error, "cannot listen for signals; stopping");
            }
            signals.cancel();
        });
        let mut upgrade = daemon::services::upgrades::UpgradeConfig::for_data_dir(&flags.data_dir);
        upgrade.trusted_keys_file = flags.upgrade_trusted_keys_file;
        upgrade.reboot_command = flags.reboot_command;
        upgrade.shutdown_command = flags.shutdown_command;
        upgrade.restart_command = flags.restart_command;
        if let BootControlFlag::SystemdBoot = flags.boot_control {
            upgrade.boot_control = daemon::services::upgrades::BootControlKind::SystemdBoot(
                upgrade::SystemdBootPaths::appliance(),
            );
        }
        tracing::info!(version, "Baton starting");
        let config = daemon::Config {
            upgrade,
            data_dir: flags.data_dir,
            admin_listen: flags.admin_listen,
            policy_http_listen: flags.policy_http_listen,
            conference_idle_ms: flags.conference_idle_ms,
            maintenance_drain_ms: flags.maintenance_drain_ms,
            bridge_feedback_url: flags.bridge_feedback_url,
            cluster: daemon::services::cluster::Network {
                port: flags.cluster_port,
                connect_via: flags.cluster_connect_via.into_iter().collect(),
                assume_time_synchronised: flags.assume_time_synchronised,
            },
            platform: flags.apply_os.then(|| {
                // Commands run as transient units: batond's own sandbox cannot restart
                // services or write /etc/shadow (systemd/batond.service).
                Arc::new(platform::SystemPlatform::new(
                    PathBuf::from("/"),
                    Box::new(platform::ProcessRunner::systemd_run()),
                    flags.os_network_match.map_or(platform::NetworkTarget::ClusterNic, |lines| {
                        platform::NetworkTarget::Match(lines.replace("\\n", "\n"))
                    }),
                )) as Arc<dyn platform::Platform>
            }),
            admin_limits: daemon::adapters::listener::Limits::ADMIN,
            policy_limits: daemon::adapters::listener::Limits::POLICY,
        };
        daemon::run(config, shutdown).await
    })
}

/// Clears the signal mask inherited from whoever started us: a parent that blocked SIGTERM
/// (a supervisor waiting for signals with `sigwait`, say) would otherwise leave the daemon
/// deaf to the stop it is sent, as the mask survives `exec`.
fn unblock_signals() -> anyhow::Result<()> {
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .context("clearing the inherited signal mask")
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
