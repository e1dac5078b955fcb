//! `cargo xtask run`: builds `batond` (package `daemon`, debug profile) and runs it on embedded
//! defaults with a local data directory, after printing how to reach the admin API.

use crate::{cargo, exec, run_checked, workspace_root};
use anyhow::Context;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

pub(crate) fn run(data_dir: Option<PathBuf>, listen: SocketAddr) -> anyhow::Result<()> {
    let data_dir = match data_dir {
        // Relative to where the command was typed, not to the workspace root cargo runs in.
        Some(dir) if dir.is_relative() => {
            std::env::current_dir().context("reading the current directory")?.join(dir)
        }
        Some(dir) => dir,
        None => workspace_root().join(".baton-dev"),
    };

    // Build first so the banner is not buried under compiler output.
    run_checked(
        cargo(&["build", "-p", "daemon", "--bin", "batond"]),
        "`cargo build -p daemon --bin batond`",
    )?;

    print_banner(&data_dir, listen);
    std::io::stdout().flush().context("writing to stdout")?;

    let listen = listen.to_string();
    let mut command =
        cargo(&["run", "--quiet", "-p", "daemon", "--bin", "batond", "--", "--data-dir"]);
    command.arg(&data_dir).args(["--admin-listen", &listen]);
    // A workstation has no DMI serial worth using (or cannot read it without root); the
    // development override keeps backups and restores usable.
    if std::env::var_os("BATON_HARDWARE_SERIAL").is_none() {
        command.env("BATON_HARDWARE_SERIAL", "DEV-WORKSTATION");
    }
    exec(command, "`cargo run -p daemon --bin batond`")
}

fn print_banner(data_dir: &std::path::Path, listen: SocketAddr) {
    let base = format!("https://{}", reachable(listen));
    let ca = data_dir.join("tls/ca.pem");
    let ctl = format!("cargo run -q -p ctl --bin batonctl -- --url {base} --ca {}", ca.display());
    println!();
    println!("Baton (development run)");
    println!("  data directory: {}", data_dir.display());
    println!("  admin API:      {base}/api/v1/  (OpenAPI: {base}/api/v1/openapi.json)");
    println!("  TLS:            certificate made on first start, signed by {}", ca.display());
    println!();
    println!("  Factory login: admin / TANDBERG. Change its password first (current, then new):");
    println!("    printf 'TANDBERG\\nyour new passphrase\\n' | {ctl} password");
    println!("  Then:");
    println!("    export BATON_PASSWORD='your new passphrase'");
    println!("    {ctl} --help");
    println!(
        "    curl --cacert {} -u \"admin:$BATON_PASSWORD\" {base}/api/v1/status",
        ca.display()
    );
    println!();
    println!("  Stop with Ctrl-C.");
    println!();
}

/// The address to connect to: a wildcard listen address is reached over loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}
