//! `cargo xtask vm [--peers N]`: boots N appliances (N ≤ 3) from the built image under
//! qemu-system-x86_64 with OVMF. Each VM `n` (1-based) gets a qcow2 overlay on the image (its
//! own disk, kept between runs unless `--fresh`), the hardware serial `BATON-VM-<n>` through
//! SMBIOS, a management NIC on qemu's user network (`restrict=on`: the guest reaches nothing
//! beyond this machine) with its admin HTTPS port forwarded to `127.0.0.<n+1>:8443`, and a
//! second NIC, the cluster NIC, on a private network shared by all the VMs (qemu socket
//! multicast on loopback). The cluster NIC has no address until the operator sets one (System,
//! IP: e.g. `10.44.0.<n+1>/24`): the appliance gives the operator's IPv4 settings to its
//! second NIC and leaves the first on DHCP (`crates/platform/src/nic.rs`). On the private
//! network this process itself answers NTP and DNS at `10.44.0.1` (`lan.rs`), so the seed's
//! prerequisites are met with nothing leaving the machine. Serial consoles go to `<target>/vm/peer-<n>-serial.log`,
//! a QMP socket `<target>/vm/peer-<n>.qmp` accepts `system_powerdown`, qemu's process id is in
//! `<target>/vm/peer-<n>.pid` (the power-cut and cluster tests kill it), and the guest agent
//! (qemu-guest-agent in the image) answers on `<target>/vm/peer-<n>.qga` (`guest-exec`: the
//! slow VM test checks the guest OS through it). KVM is used when a guest actually runs under
//! it, TCG otherwise (`accel.rs`; `BATON_VM_ACCEL=tcg|kvm` forces one). Stops when every VM has
//! powered off; Ctrl-C stops them all.

use crate::accel::{self, Accel, Trial};
use crate::image::{self, run};
use crate::vm_supervisor::{Monitor, Session, supervise};
use crate::{lan, target_dir};
use anyhow::Context;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// UEFI firmware from Debian's `ovmf` package: code read-only, variables copied per VM.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Guest memory per VM, in MiB: batond and a minimal Debian need far less; the page cache
/// makes the boot faster.
const MEMORY_MIB: u32 = 1024;
/// Virtual CPUs per VM, as a small appliance has. qemu runs them on one host thread each even
/// under TCG, so a boot's udev, networkd and batond run side by side: policy-ready came 16 s
/// sooner than with one (39 s against 55 s on an idle 2-core machine).
const VCPUS: u32 = 2;
/// The admin API port, in the guest and on the forwarded host address.
pub(crate) const ADMIN_PORT: u16 = 8443;
/// The private network's multicast group on loopback: every VM's second NIC joins it, on a
/// port that follows [`HOST_OFFSET_ENV`] so two checkouts' VMs never share a network.
const PRIVATE_MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(230, 0, 44, 1);
const PRIVATE_MCAST_PORT_BASE: u16 = 44043;

/// Moves the forwarded addresses to `127.0.0.<n + offset>` (default offset 1), so that two
/// checkouts on one machine can boot their VMs at the same time.
pub(crate) const HOST_OFFSET_ENV: &str = "BATON_VM_HOST_OFFSET";

/// What a VM is reachable at, as printed and as the slow test uses it.
pub(crate) fn host_address(peer: u8) -> String {
    format!("127.0.0.{}", u32::from(peer) + u32::from(host_offset()))
}

fn host_offset() -> u8 {
    std::env::var(HOST_OFFSET_ENV)
        .ok()
        .and_then(|text| text.parse::<u8>().ok())
        .filter(|offset| (1..=250).contains(offset))
        .unwrap_or(1)
}

/// The private network's multicast group and port.
fn private_network() -> SocketAddrV4 {
    SocketAddrV4::new(PRIVATE_MCAST_GROUP, PRIVATE_MCAST_PORT_BASE + u16::from(host_offset()))
}

/// Which VMs to boot, and whether this process serves their private network's NTP and DNS (a
/// lone peer restarted with `--only` uses those of the VMs already running).
pub(crate) struct Vms {
    pub(crate) peers: std::ops::RangeInclusive<u8>,
    pub(crate) lan_services: bool,
}

pub(crate) fn vm(
    vms: Vms,
    fresh: bool,
    disk: Option<&Path>,
    base: Option<&Path>,
    serial: Option<&str>,
    forward_to_host: &[u16],
    disk_cache: Option<&str>,
) -> anyhow::Result<()> {
    let image = image::paths();
    if disk.is_none() && base.is_none() && !image.qcow2.exists() {
        println!("no image at {}; building it first", image.qcow2.display());
        image::image()?;
    }
    let dir = target_dir().join("vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let choice = accel::choose()?;
    let mut accel = choice.accel;
    let private = private_network();
    if vms.lan_services {
        lan::spawn(private).context("starting the private network's NTP and DNS services")?;
        println!(
            "private network {private}: NTP and DNS at {} (names peer<n>.{})",
            lan::SERVICES_ADDRESS,
            lan::ZONE
        );
    }

    let relay = std::env::current_exe().context("locating this xtask binary (the relay)")?;
    let mut children = Children(Vec::new());
    for peer in vms.peers.clone() {
        let mut disk_arg = match disk {
            Some(file) => format!("if=virtio,format=raw,file={}", file.display()),
            None => format!(
                "if=virtio,format=qcow2,file={}",
                overlay(&dir, base.unwrap_or(&image.qcow2), peer, fresh)?.display()
            ),
        };
        if let Some(mode) = disk_cache {
            disk_arg.push_str(&format!(",cache={mode}"));
        }
        let vars = dir.join(format!("peer-{peer}-vars.fd"));
        fs::copy(OVMF_VARS, &vars)
            .with_context(|| format!("copying {OVMF_VARS} (is ovmf installed?)"))?;
        let serial_log = dir.join(format!("peer-{peer}-serial.log"));
        let qmp = dir.join(format!("peer-{peer}.qmp"));
        let _ = fs::remove_file(&qmp);
        let qga = dir.join(format!("peer-{peer}.qga"));
        let _ = fs::remove_file(&qga);
        let pid_file = dir.join(format!("peer-{peer}.pid"));
        let _ = fs::remove_file(&pid_file);
        let host = host_address(peer);
        let serial = serial.map_or_else(|| format!("BATON-VM-{peer}"), str::to_owned);
        let wan = management_netdev(&host, forward_to_host, &relay)?;
        // Appended to across the power cycles of one run (`vm_supervisor`), as it was across
        // in-place resets.
        let _ = fs::remove_file(&serial_log);
        let mut monitor = Monitor::listen(&dir.join(format!("peer-{peer}-supervisor.sock")))?;
        let (serial_for_qemu, vars_file, qmp_socket, qga_socket, pid_path, smbios_serial) =
            (serial_log.clone(), vars.clone(), qmp.clone(), qga.clone(), pid_file, serial.clone());
        let command = move |accel: Accel, monitor: &Monitor| {
            let (vars, qmp, qga, pid_file, serial) =
                (&vars_file, &qmp_socket, &qga_socket, &pid_path, &smbios_serial);
            let mut command = Command::new("qemu-system-x86_64");
            // No default devices (a DVD drive the firmware tried first, VGA) and no network
            // boot ROMs: the firmware goes straight to the disk.
            command
                .args(["-name", &format!("baton-{peer}"), "-machine", "q35", "-nodefaults"])
                .args(["-accel", accel.qemu_name(), "-cpu", accel.cpu()])
                .args(["-smp", &VCPUS.to_string(), "-m", &MEMORY_MIB.to_string()])
                .args(["-drive", &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}")])
                .args(["-drive", &format!("if=pflash,format=raw,file={}", vars.display())])
                .args(["-drive", &disk_arg])
                .args([
                    "-smbios",
                    &format!(
                        "type=1,manufacturer=Baton,product=Baton appliance (VM),serial={serial}"
                    ),
                ])
                .args(["-netdev", &wan])
                .args([
                    "-device",
                    &format!(
                        "virtio-net-pci,netdev=wan,mac=52:54:00:12:34:{:02x},romfile=",
                        peer + 1
                    ),
                ])
                .args(["-netdev", &format!("socket,id=lan,mcast={private},localaddr=127.0.0.1")])
                // The second NIC in PCI order: the cluster NIC, which the operator's IPv4
                // settings configure.
                .args([
                    "-device",
                    &format!(
                        "virtio-net-pci,netdev=lan,mac=52:54:00:44:00:{:02x},romfile=",
                        peer + 1
                    ),
                ])
                .args(["-display", "none", "-monitor", "none"])
                .args([
                    "-chardev",
                    &format!("file,id=console,path={},append=on", serial_for_qemu.display()),
                ])
                .args(["-serial", "chardev:console"])
                .args(monitor.qemu_args())
                // For a test that kills one VM as a power cut would (SIGKILL).
                .arg("-pidfile")
                .arg(pid_file)
                .args(["-qmp", &format!("unix:{},server=on,wait=off", qmp.display())])
                // The guest agent's channel: a virtio serial port by the name qemu-guest-agent
                // looks for, on a unix socket here.
                .args(["-device", "virtio-serial-pci"])
                .args([
                    "-chardev",
                    &format!("socket,id=qga,path={},server=on,wait=off", qga.display()),
                ])
                .args(["-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0"])
                .stdin(Stdio::null());
            command
        };
        let mut child = command(accel, &monitor)
            .spawn()
            .context("starting qemu-system-x86_64 (is qemu-system-x86 installed?)")?;
        if accel == Accel::Kvm {
            let failure = match accel::trial(&mut child, &qmp) {
                Ok(Trial::Running) => None,
                Ok(Trial::Failed(reason)) => Some(reason),
                Err(error) => Some(format!("{error:#}")),
            };
            if let Some(reason) = failure {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::ensure!(
                    !choice.forced,
                    "peer {peer}: KVM does not run the guest ({reason}), and {}=kvm forces it; \
                     serial log: {}",
                    accel::ACCEL_ENV,
                    serial_log.display()
                );
                // Said once: every later peer starts on TCG straight away.
                println!(
                    "KVM does not run guests on this machine ({reason}): using TCG for every VM"
                );
                accel = Accel::Tcg;
                let _ = fs::remove_file(&qmp);
                // A new listener: the killed qemu's connection must not pass for this one's.
                monitor = monitor.relisten()?;
                child = command(accel, &monitor).spawn().context("starting qemu-system-x86_64")?;
            }
        }
        let session = monitor.take_over(&mut child)?;
        let restart_qmp = qmp.clone();
        let restart = move |monitor: &Monitor| {
            let _ = fs::remove_file(&restart_qmp);
            command(accel, monitor).spawn().context("starting qemu-system-x86_64")
        };
        children.0.push(Supervised { peer, child, session, monitor, restart: Box::new(restart) });
        println!("peer {peer}: booting ({}), hardware serial {serial}", accel.qemu_name());
        println!(
            "  admin (browser, batonctl): https://{host}:{ADMIN_PORT}/  user admin, password TANDBERG (must be changed)"
        );
        println!(
            "  VCS policy service:        https://{host}:{ADMIN_PORT}/baton/policy  (status: /baton/policy/status)"
        );
        println!(
            "  cluster NIC:               private network; set e.g. 10.44.0.{}/24 (System > IP)",
            u32::from(peer) + 1
        );
        println!("  serial console log:        {}", serial_log.display());
        println!("  power off:                 QMP {}", qmp.display());
        println!("  guest agent:               {}", qga.display());
    }
    println!("waiting for the VMs to power off (Ctrl-C stops them)");
    // Each supervisor owns its VM from here: one that fails kills its own qemu, and every
    // one is joined, so none is left running unsupervised.
    let supervisors: Vec<_> = std::mem::take(&mut children.0)
        .into_iter()
        .map(|vm| {
            let Supervised { peer, child, session, monitor, restart } = vm;
            (peer, std::thread::spawn(move || supervise(peer, child, session, &monitor, restart)))
        })
        .collect();
    let mut failed = Vec::new();
    for (peer, supervisor) in supervisors {
        match supervisor.join() {
            Ok(Ok(status)) => {
                println!("peer {peer}: qemu exited ({status})");
                if !status.success() {
                    failed.push(peer);
                }
            }
            Ok(Err(error)) => {
                println!("peer {peer}: {error:#}");
                failed.push(peer);
            }
            Err(_) => {
                println!("peer {peer}: its supervisor panicked");
                failed.push(peer);
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "qemu failed for peer(s) {failed:?}");
    Ok(())
}

/// The management NIC's qemu user network: the admin port forwarded from `host`, and
/// `restrict=on`, so the guest reaches nothing beyond this machine (no internet, and no DNS
/// relayed to the host's resolver); forwarded ports still work, and so does each guest
/// forward to `127.0.0.1:<port>` (at [`HOST_SERVICES_ADDRESS`]) asked for. Each guest
/// connection gets its own host connection through `relay` (this binary, run by qemu): a
/// guestfwd to a `tcp:` character device would carry every guest connection over one host
/// connection, interleaving the bytes of concurrent ones (a health poll and a conference
/// creation reached the bridge simulator as one garbled request).
pub(crate) fn management_netdev(
    host: &str,
    forward_to_host: &[u16],
    relay: &Path,
) -> anyhow::Result<String> {
    let mut netdev =
        format!("user,id=wan,restrict=on,hostfwd=tcp:{host}:{ADMIN_PORT}-:{ADMIN_PORT}");
    let relay = relay.to_str().context("the xtask binary's path is not UTF-8")?;
    anyhow::ensure!(
        !relay.contains([',', ' ']),
        "the xtask binary's path {relay:?} holds a comma or a space, which qemu's options cannot"
    );
    for port in forward_to_host {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{HOST_SERVICES_ADDRESS}:{port}-cmd:{relay} relay 127.0.0.1:{port}"
        ));
    }
    Ok(netdev)
}

/// `cargo xtask relay ADDRESS`: stdin to `address`, and what it answers to stdout, until the
/// host side closes (qemu then closes the guest's connection).
pub(crate) fn relay(address: std::net::SocketAddr) -> anyhow::Result<()> {
    let stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("connecting to {address}"))?;
    let mut to_host = stream.try_clone()?;
    // Not joined: a guest that keeps its side open must not keep the relay alive once the
    // host closed.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_host);
        let _ = to_host.shutdown(std::net::Shutdown::Write);
    });
    let mut from_host = stream;
    let mut stdout = std::io::stdout().lock();
    let mut buffer = vec![0u8; RELAY_BUFFER_BYTES];
    loop {
        let read = std::io::Read::read(&mut from_host, &mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        // Flushed at once: stdout is line-buffered, and these bytes are no lines.
        stdout.write_all(&buffer[..read])?;
        stdout.flush()?;
    }
}

/// What the relay reads from the host at a time.
const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// Where a guest reaches the ports `--forward-to-host` forwards, on its management NIC.
pub(crate) const HOST_SERVICES_ADDRESS: &str = "10.0.2.100";

/// The VM's own disk: a qcow2 overlay backed by the image, made when missing, stale (older
/// than the image) or when asked to start fresh.
fn overlay(dir: &Path, base: &Path, peer: u8, fresh: bool) -> anyhow::Result<PathBuf> {
    let overlay = dir.join(format!("peer-{peer}.qcow2"));
    let stale = match (fs::metadata(&overlay), fs::metadata(base)) {
        (Ok(overlay), Ok(base)) => overlay.modified()? < base.modified()?,
        _ => true,
    };
    if fresh || stale {
        let _ = fs::remove_file(&overlay);
        let base =
            fs::canonicalize(base).with_context(|| format!("resolving {}", base.display()))?;
        run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&base)
                .arg(&overlay),
            "qemu-img create",
        )?;
    }
    Ok(overlay)
}

/// A started VM, before its supervisor takes it over: how to start its qemu again.
struct Supervised {
    peer: u8,
    child: Child,
    session: Session,
    monitor: Monitor,
    restart: Box<Start>,
}

/// Starts a VM's qemu again, its monitor connected to the given listener.
type Start = dyn Fn(&Monitor) -> anyhow::Result<Child> + Send;

/// Kills the VMs still running when `vm` returns early (an error starting the next one).
struct Children(Vec<Supervised>);

impl Drop for Children {
    fn drop(&mut self) {
        for vm in &mut self.0 {
            let _ = vm.child.kill();
            let _ = vm.child.wait();
        }
    }
}
