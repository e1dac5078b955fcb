//! `cargo xtask run`: Baton's main job on embedded defaults, on this machine. Builds `batond`,
//! `batonctl` and `baton-simbridge` (debug), starts a simulated TelePresence MCU and a simulated
//! TelePresence Server on loopback, then `batond` with its data in `.baton-dev`. On the first
//! start it configures a demonstration (administrator and VCS credentials, the two bridges,
//! pools, templates and aliases) through `batonctl`, as an operator would, and keeps the
//! generated passwords in `<data dir>/demo-credentials` (mode 0600). Prints how to place a
//! call as a VCS would. Ctrl-C stops everything.

use crate::{cargo, run_checked, workspace_root};
use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Plain-HTTP policy service of the development run, for a VCS (or curl) set to HTTP.
const POLICY_HTTP_LISTEN: &str = "127.0.0.1:8080";
const CREDENTIALS_FILE: &str = "demo-credentials";
const SIM_USER: &str = "api";
const SIM_PASSWORD: &str = "simulated bridge";
const START_TIMEOUT_MS: u64 = 30_000;

pub(crate) fn run(data_dir: Option<PathBuf>, listen: SocketAddr) -> anyhow::Result<()> {
    let data_dir = match data_dir {
        // Relative to where the command was typed, not to the workspace root cargo runs in.
        Some(dir) if dir.is_relative() => {
            std::env::current_dir().context("reading the current directory")?.join(dir)
        }
        Some(dir) => dir,
        None => workspace_root().join(".baton-dev"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    // Build first so the banner is not buried under compiler output.
    run_checked(
        cargo(&[
            "build",
            "-p",
            "daemon",
            "--bin",
            "batond",
            "-p",
            "ctl",
            "-p",
            "bridges",
            "--bin",
            "batonctl",
            "--bin",
            "baton-simbridge",
        ]),
        "`cargo build` of batond, batonctl and baton-simbridge",
    )?;
    let bin = workspace_root().join("target/debug");

    let mut children = Children(Vec::new());
    let mcu = children.sim_bridge(&bin, &data_dir, "mcu")?;
    let ts = children.sim_bridge(&bin, &data_dir, "telepresence-server")?;

    let fresh = !data_dir.join("baton.db").exists();
    let url_file = data_dir.join("admin-url");
    let _ = std::fs::remove_file(&url_file);
    let listen_text = listen.to_string();
    let mut batond = Command::new(bin.join("batond"));
    // A workstation has no DMI serial worth using (or cannot read it without root); the
    // development override keeps backups and restores usable.
    if std::env::var_os("BATON_HARDWARE_SERIAL").is_none() {
        batond.env("BATON_HARDWARE_SERIAL", "DEV-WORKSTATION");
    }
    let batond = batond
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--admin-listen", &listen_text, "--policy-http-listen", POLICY_HTTP_LISTEN])
        .stdin(Stdio::null())
        .spawn()
        .context("starting batond")?;
    children.0.push(batond);
    wait_for_file(&url_file, "batond")?;

    let base = format!("https://{}", reachable(listen));
    let ctl =
        Ctl { program: bin.join("batonctl"), url: base.clone(), ca: data_dir.join("tls/ca.pem") };
    let credentials = data_dir.join(CREDENTIALS_FILE);
    let (admin_password, vcs_password) = if fresh || !credentials.exists() {
        let admin_password = random_password()?;
        let vcs_password = random_password()?;
        configure(&ctl, &admin_password, &vcs_password, mcu, ts)?;
        write_private(&credentials, &format!("admin {admin_password}\nvcs {vcs_password}\n"))?;
        (admin_password, vcs_password)
    } else {
        let text = std::fs::read_to_string(&credentials).context("reading the demo credentials")?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .map(str::to_owned)
                .with_context(|| format!("{} lacks the {name} password", credentials.display()))
        };
        let (admin_password, vcs_password) = (field("admin")?, field("vcs")?);
        // The simulators listen on new ports each run.
        ctl.run(
            &admin_password,
            &["bridges", "update", "demo-mcu", "--set", &format!("address={mcu}")],
        )?;
        ctl.run(
            &admin_password,
            &["bridges", "update", "demo-ts", "--set", &format!("address={ts}")],
        )?;
        (admin_password, vcs_password)
    };
    print_banner(&data_dir, &base, &ctl, &admin_password, &vcs_password);
    std::io::stdout().flush().context("writing to stdout")?;
    children.wait_for_batond()
}

/// The demonstration configuration, made through the admin API as an operator would.
fn configure(
    ctl: &Ctl,
    admin: &str,
    vcs: &str,
    mcu: SocketAddr,
    ts: SocketAddr,
) -> anyhow::Result<()> {
    ctl.change_factory_password(admin)?;
    let bridge = |name: &str, kind: &str, address: SocketAddr| {
        vec![
            "bridges".to_owned(),
            "create".to_owned(),
            "--set".to_owned(),
            format!("name={name}"),
            "--set".to_owned(),
            format!("bridge_type={kind}"),
            "--set".to_owned(),
            format!("address={address}"),
            "--set".to_owned(),
            "protocol=http".to_owned(),
            "--set".to_owned(),
            format!("username={SIM_USER}"),
            "--set".to_owned(),
            format!("password={SIM_PASSWORD}"),
            "--set".to_owned(),
            "capacity_ports=100".to_owned(),
        ]
    };
    let steps: Vec<Vec<String>> = vec![
        words(&format!("policy-service set --set username=vcs --set password={vcs}")),
        bridge("demo-mcu", "mcu", mcu),
        bridge("demo-ts", "telepresence_server", ts),
        words("bridge-pools create --set name=mcus --set bridge_type=mcu --set bridges=demo-mcu"),
        words(
            "bridge-pools create --set name=servers --set bridge_type=telepresence_server --set bridges=demo-ts",
        ),
        words("service-preferences create --set name=mcu --set bridge_type=mcu --set pools=mcus"),
        words(
            "service-preferences create --set name=ts --set bridge_type=telepresence_server --set pools=servers",
        ),
        words(
            "conference-templates create --set name=meeting --set conference_type=meeting --set service_preference=mcu --set max_participants=10",
        ),
        words(
            "conference-templates create --set name=lecture --set conference_type=lecture --set service_preference=ts --set max_participants=20 --set chair_pin=1234 --set guest_pin=5678",
        ),
        vec![
            "conference-aliases".into(),
            "create".into(),
            "--set".into(),
            "name=meet".into(),
            "--set".into(),
            r"pattern=meet\.(?P<room>[a-z0-9]+)@example\.com".into(),
            "--set".into(),
            "conference_name=${room}".into(),
            "--set".into(),
            "template=meeting".into(),
            "--set".into(),
            "priority=10".into(),
        ],
        vec![
            "conference-aliases".into(),
            "create".into(),
            "--set".into(),
            "name=lecture-guest".into(),
            "--set".into(),
            r"pattern=lecture\.(?P<room>[a-z0-9]+)\.guest@example\.com".into(),
            "--set".into(),
            "conference_name=lecture-${room}".into(),
            "--set".into(),
            "template=lecture".into(),
            "--set".into(),
            "role=guest".into(),
            "--set".into(),
            "priority=5".into(),
        ],
        vec![
            "conference-aliases".into(),
            "create".into(),
            "--set".into(),
            "name=lecture".into(),
            "--set".into(),
            r"pattern=lecture\.(?P<room>[a-z0-9]+)@example\.com".into(),
            "--set".into(),
            "conference_name=lecture-${room}".into(),
            "--set".into(),
            "template=lecture".into(),
            "--set".into(),
            "priority=10".into(),
        ],
    ];
    for step in steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        ctl.run(admin, &args)?;
    }
    Ok(())
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

struct Ctl {
    program: PathBuf,
    url: String,
    ca: PathBuf,
}

impl Ctl {
    fn command(&self, password: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(["--url", &self.url, "--ca"])
            .arg(&self.ca)
            .env("BATON_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    fn run(&self, password: &str, args: &[&str]) -> anyhow::Result<()> {
        run_checked(
            {
                let mut command = self.command(password);
                command.args(args);
                command
            },
            &format!("batonctl {}", args.join(" ")),
        )
    }

    fn change_factory_password(&self, new: &str) -> anyhow::Result<()> {
        let mut command = self.command("TANDBERG");
        command.arg("password").env("BATON_NEW_PASSWORD", new);
        run_checked(command, "batonctl password")
    }
}

/// Child processes, killed when this run ends however it ends.
struct Children(Vec<Child>);

impl Children {
    fn sim_bridge(
        &mut self,
        bin: &Path,
        data_dir: &Path,
        personality: &str,
    ) -> anyhow::Result<SocketAddr> {
        let address_file = data_dir.join(format!("sim-{personality}.address"));
        let _ = std::fs::remove_file(&address_file);
        let child = Command::new(bin.join("baton-simbridge"))
            .args([
                "--personality",
                personality,
                "--username",
                SIM_USER,
                "--password",
                SIM_PASSWORD,
            ])
            .arg("--address-file")
            .arg(&address_file)
            .stdin(Stdio::null())
            .spawn()
            .context("starting baton-simbridge")?;
        self.0.push(child);
        wait_for_file(&address_file, "baton-simbridge")?;
        let text =
            std::fs::read_to_string(&address_file).context("reading the simulator's address")?;
        text.trim().parse().context("the simulator wrote an address that does not parse")
    }

    /// Waits for batond (the last child) to exit, e.g. after Ctrl-C.
    fn wait_for_batond(mut self) -> anyhow::Result<()> {
        let Some(mut batond) = self.0.pop() else { bail!("batond was not started") };
        let status = batond.wait().context("waiting for batond")?;
        anyhow::ensure!(status.success() || status.code().is_none(), "batond exited: {status}");
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_file(path: &Path, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
    while !std::fs::read_to_string(path).is_ok_and(|text| !text.trim().is_empty()) {
        if Instant::now() > deadline {
            bail!("{what} did not start within {START_TIMEOUT_MS} ms");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn print_banner(data_dir: &Path, base: &str, ctl: &Ctl, admin: &str, vcs: &str) {
    let ca = data_dir.join("tls/ca.pem");
    let batonctl = format!("{} --url {} --ca {}", ctl.program.display(), ctl.url, ca.display());
    println!();
    println!("Baton (development run) with a simulated MCU and TelePresence Server");
    println!("  data directory:  {}", data_dir.display());
    println!("  admin API:       {base}/api/v1/  (user admin, password {admin})");
    println!("  policy service:  {base}/baton/policy and http://{POLICY_HTTP_LISTEN}/baton/policy");
    println!("                   (status path baton/policy/status; VCS user vcs, password {vcs})");
    println!("  passwords kept in {}", data_dir.join(CREDENTIALS_FILE).display());
    println!();
    println!(
        "  Place a call as a VCS would (a meeting on the MCU, a lecture on the TelePresence Server):"
    );
    println!(
        "    curl -u vcs:{vcs} --data 'POLICY_TYPE=SEARCH&PROTOCOL=SIP&DESTINATION_ALIAS=meet.alice%40example.com' http://{POLICY_HTTP_LISTEN}/baton/policy"
    );
    println!(
        "    curl -u vcs:{vcs} --cacert {} --data 'POLICY_TYPE=SEARCH&PROTOCOL=SIP&DESTINATION_ALIAS=lecture.maths.guest%40example.com' {base}/baton/policy",
        ca.display()
    );
    println!("  See what it did:");
    println!("    BATON_PASSWORD={admin} {batonctl} conferences list");
    println!("    BATON_PASSWORD={admin} {batonctl} log config");
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
