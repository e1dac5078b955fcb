//! Suite `flood`: the policy service's answer latency and the daemon's resident memory during
//! a login flood (wrong passwords from 200 loopback addresses, on the API's Basic and the
//! policy service's credentials) and during a connection flood (2,000 idle connections to the
//! admin port, far beyond its limit), each beside the same figures without a flood, in the
//! same run and the same process (the daemon runs in-process, so RSS is the daemon's plus the
//! bench's clients).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PHASE_MS: u64 = 5_000;
const FLOOD_SOURCES: u8 = 200;
const IDLE_CONNECTIONS: usize = 2_000;
const POLICY_PASSWORD: &str = "policy service password";

pub(crate) fn suite() -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_kib: f64,
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = daemon::Config {
        admin_listen: "127.0.0.1:0".parse()?,
        policy_http_listen: Some(policy),
        ..daemon::Config::local(dir.path().to_path_buf())
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = daemon::start(config, shutdown.clone()).await?;
    let admin = format!("https://{}", daemon.admin_addr);
    configure(&admin).await?;

    let quiet = measure(policy).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = login_flood(&admin, policy, stop.clone());
    let logins = measure(policy).await?;
    stop.store(true, Ordering::SeqCst);
    for flooder in flooders {
        flooder.await?;
    }
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        match tokio::net::TcpStream::connect(daemon.admin_addr).await {
            Ok(connection) => idle.push(connection),
            Err(_) => break,
        }
    }
    let connections = measure(policy).await?;
    drop(idle);

    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "flood (policy answers, RSS)", "flood", "no flood", "ratio"
    );
    for (name, flooded) in [("login flood", &logins), ("connection flood", &connections)] {
        crate::row(&format!("{name}: policy p50 (us)"), flooded.p50_ms * 1e3, quiet.p50_ms * 1e3);
        crate::row(&format!("{name}: policy p99 (us)"), flooded.p99_ms * 1e3, quiet.p99_ms * 1e3);
        crate::row(&format!("{name}: peak RSS (KiB)"), flooded.peak_rss_kib, quiet.peak_rss_kib);
    }
    shutdown.cancel();
    daemon.wait().await
}

fn client(source: Option<[u8; 4]>) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().danger_accept_invalid_certs(true);
    let builder = builder.local_address(source.map(std::net::IpAddr::from));
    Ok(builder.timeout(Duration::from_secs(10)).build()?)
}

async fn configure(admin: &str) -> anyhow::Result<()> {
    let client = client(None)?;
    let new_password = "bench administrator password";
    let body = serde_json::json!({"current_password": "TANDBERG", "new_password": new_password});
    let url = format!("{admin}/api/v1/password");
    client.post(url).basic_auth("admin", Some("TANDBERG")).json(&body).send().await?;
    let body = serde_json::json!({"username": "vcs", "password": POLICY_PASSWORD});
    let url = format!("{admin}/api/v1/policy-service");
    let answer = client.put(url).basic_auth("admin", Some(new_password)).json(&body).send().await?;
    anyhow::ensure!(answer.status().is_success(), "configuring: {}", answer.status());
    Ok(())
}

/// One task per source address, each sending wrong logins until `stop`.
fn login_flood(
    admin: &str,
    policy: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..FLOOD_SOURCES)
        .filter_map(|source| client(Some([127, 0, 2, source])).ok())
        .map(|client| {
            let (admin, stop) = (admin.to_owned(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let api = client.get(format!("{admin}/api/v1/status"));
                    let _ = api.basic_auth("admin", Some("guess")).send().await;
                    let vcs = client.post(format!("http://{policy}/baton/policy"));
                    let _ = vcs
                        .basic_auth("vcs", Some("guess"))
                        .body("POLICY_TYPE=SEARCH")
                        .send()
                        .await;
                }
            })
        })
        .collect()
}

/// Policy calls one after another for a phase: latency percentiles and the peak RSS.
async fn measure(policy: SocketAddr) -> anyhow::Result<Figures> {
    let client = client(None)?;
    let body =
        "POLICY_TYPE=SEARCH&METHOD=INVITE&PROTOCOL=SIP&DESTINATION_ALIAS=nobody%40example.org";
    let (mut latencies_ms, mut peak_rss_kib) = (Vec::new(), 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(PHASE_MS) {
        let call = Instant::now();
        let request = client.post(format!("http://{policy}/baton/policy"));
        let answer = request.basic_auth("vcs", Some(POLICY_PASSWORD)).body(body).send().await?;
        anyhow::ensure!(answer.status().is_success(), "policy answered {}", answer.status());
        latencies_ms.push(call.elapsed().as_secs_f64() * 1e3);
        peak_rss_kib = peak_rss_kib.max(rss_kib());
    }
    latencies_ms.sort_by(f64::total_cmp);
    let at = |quantile: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * quantile) as usize];
    Ok(Figures { p50_ms: at(0.5), p99_ms: at(0.99), peak_rss_kib: peak_rss_kib as f64 })
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}
