//! `rinha-bench floor`: the latency the instrument itself adds. The same ramping users as
//! `rinha-bench rinha` post to a trivial responder inside the bench (hyper, `200` at once, on
//! its own runtime thread so it does not share the users' workers), and the p99 of those
//! requests is the floor under every p99 this instrument reports.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::contest::client::Endpoint;
use crate::contest::users::{users_alone, Ramp};
use crate::measure::process::own_cpu_seconds;
use crate::measure::stats::Percentiles;

/// Command-line arguments of `rinha-bench floor`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Virtual users at the end of the ramp.
    #[arg(long, default_value_t = 550)]
    pub max_requests: u64,
    /// Length of the run in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Worker threads of the users' runtime (as `rinha --workers`).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// What the floor run measured.
#[derive(Debug, Clone)]
pub struct Floor {
    pub posts: Percentiles,
    pub failed: u64,
    pub cpu_secs: f64,
    pub run_secs: f64,
}

/// Starts the trivial responder on its own thread; returns its address.
fn start_responder() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("floor-responder".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            |_req: Request<hyper::body::Incoming>| async {
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::new(),
                                )))
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        })?;
    Ok(addr)
}

/// Runs the users against the responder and measures them.
pub async fn measure(args: &Args, addr: std::net::SocketAddr) -> Floor {
    let cpu_before = own_cpu_seconds();
    let ramp = Ramp {
        max: args.max_requests,
        duration: Duration::from_secs(args.duration),
    };
    let target = Endpoint {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let (snapshot, elapsed) = users_alone(target, ramp).await;
    Floor {
        posts: Percentiles::of(&snapshot.posts),
        failed: snapshot.counts.failed(),
        cpu_secs: own_cpu_seconds() - cpu_before,
        run_secs: elapsed.as_secs_f64(),
    }
}

/// Runs `rinha-bench floor`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = start_responder()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    eprintln!(
        "floor: {} users over {} s against a trivial responder on {addr}",
        args.max_requests, args.duration
    );
    let floor = runtime.block_on(measure(&args, addr));
    let p = floor.posts;
    println!(
        "instrument floor (POST to a responder that answers 200 at once, {} users, {} s, {} workers):",
        args.max_requests, args.duration, args.workers
    );
    println!(
        "  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n={}, failed {})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count, floor.failed
    );
    println!(
        "  FLOOR p99 = {:.3} ms: the least p99 this instrument can report",
        p.p99
    );
    println!(
        "  CPU of the whole bench process (users + responder): {:.2} s over {:.1} s",
        floor.cpu_secs, floor.run_secs
    );
    Ok(if floor.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
