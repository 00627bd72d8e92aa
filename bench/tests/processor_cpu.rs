//! What the processor costs: CPU time (user + system, from `/proc/PID/stat`) of the
//! `rinha-bench processor` binary while it stores a fixed number of payments sent over
//! keep-alive connections, as a backend's workers would send them.
//!
//! A measurement, so it is ignored by default; run it in release:
//! `cargo test --release -p rinha-bench --test processor_cpu -- --ignored --nocapture`

mod processor_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use processor_support::{call, new_id, payment, Client, AT, TOKEN};

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (utime + stime) / ticks
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
async fn cpu_per_thousand_payments() {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rinha-bench"))
        .args(["processor", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rinha-bench processor");
    let mut child = Child(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let line = lines
        .find(|line| line.contains("processor listening on "))
        .expect("the listening line");
    std::thread::spawn(move || lines.for_each(drop));
    let addr: SocketAddr = line
        .split("processor listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("address");
    let pid = child.0.id();

    // Flat out: how much CPU a payment costs when requests batch up.
    let burst = measure(addr, pid, 20_000, 50, None).await;
    // At the contest's peak rate (550 payments/s), where every request wakes the runtime.
    let paced = measure(addr, pid, 5_500, 50, Some(Duration::from_secs(10))).await;

    let summary = call(addr, "GET", "/admin/payments-summary", &[TOKEN], "").await;
    assert_eq!(summary.json()["totalRequests"], 25_500);
    // At the contest's peak (~550 payments/s) this must stay a small share of one core.
    for per_thousand_ms in [burst, paced] {
        assert!(
            per_thousand_ms < 100.0,
            "{per_thousand_ms} ms per 1,000 payments"
        );
    }
}

/// Sends `payments` over `connections` keep-alive connections, spread evenly over `pace`
/// (or as fast as they are answered); returns the processor's CPU ms per 1,000 payments.
async fn measure(
    addr: SocketAddr,
    pid: u32,
    payments: usize,
    connections: usize,
    pace: Option<Duration>,
) -> f64 {
    let per_connection = payments / connections;
    let interval = pace.map(|pace| pace / per_connection as u32);
    let before = cpu_seconds(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|n| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut ticker = interval.map(|every| {
                    // Stagger the connections so the rate is even, not 50 at once.
                    let offset = every * n as u32 / connections as u32;
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, every)
                });
                for _ in 0..per_connection {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    let body = payment(&new_id(), "19.90", AT);
                    let response = client.call("POST", "/payments", &[], &body).await;
                    assert_eq!(response.status, 200);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds(pid) - before;
    let sent = per_connection * connections;
    let per_thousand_ms = cpu * 1000.0 / (sent as f64 / 1000.0);
    println!(
        "processor: {sent} payments over {connections} keep-alive connections in {:.2} s \
         ({:.0}/s); processor CPU {cpu:.3} s = {per_thousand_ms:.1} ms per 1,000 payments",
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
    );
    per_thousand_ms
}
