//! `rinha-bench recv`: what one received message costs on each of the kernel's receive paths,
//! with no runtime in between.
//!
//! `rinha-bench drivers` measures the whole stack on monoio's two drivers; at the contest's
//! rate its io_uring runs spend a few per cent more CPU per payment than its epoll runs. Both
//! servers read with monoio, whose io_uring driver arms one receive per message (the kernel
//! tries it, finds the socket empty, arms a poll, and finishes the receive from task work when
//! data comes). Linux 6.0 can instead keep one multishot receive armed per connection, taking
//! a provided buffer for each message, and a ring can name descriptors registered with it
//! (no lookup per operation): io_uring's own features, which monoio's ops do not offer. This
//! command puts the paths side by side on the same echo (loopback TCP, one request in flight
//! per connection, the contest's request and answer sizes) so that the lever is measured
//! before anyone builds it into a runtime:
//! - `epoll`: edge-triggered readiness, `recv(2)` until `EAGAIN`, `send(2)`;
//! - `uring`: one-shot `RECV` armed again per message, as monoio does;
//! - `multishot`: one multishot `RECV` per connection over a provided-buffer ring;
//! - `multishot-fixed`: `multishot` with the receive and the sends on registered descriptors.
//!
//! Each round runs every path once, in an order that rotates, at each rate. Reported per
//! message: the server thread's CPU, the whole process's CPU (the clients' threads are the
//! same for every path, and the sender's side of a wakeup, epoll's callback or io_uring's
//! task-work queueing, runs in them), and the latency. `--pin` binds the server thread to one
//! CPU and the clients to the others: where the scheduler wakes a client (beside the server or
//! on the other CPU) otherwise differs between paths and outweighs the path itself.
//!
//! What it found (docs/benchmarks.md, "io_uring vs epoll", the receive path alone): which path
//! is cheapest depends on the host. On the one measured last, the event path is under a tenth
//! of a message's CPU (the loopback TCP stack and the wake-up of the other CPU are the rest),
//! so every path lands within 5 % of epoll pinned, and io_uring with all its features at 0.96x
//! at best; no runtime work was built on it.

pub mod echo;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;
use rinha_sys::sched;
use rinha_sys::uring::Taskrun;

use crate::load::{self, post_payment_request, LoadSpec, Pace, Target};
use crate::measure::process::own_cpu_seconds;
use crate::measure::stats::{median, ratio, Spread};
use crate::measure::table::{cell_with_spread, ratio_cell, Table};
use echo::{Mode, Send, Setup};

/// Command-line arguments of `rinha-bench recv`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Request rates (requests/s over all connections); 0 is a closed loop (each client sends
    /// again as soon as its answer is in).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,0")]
    pub rates: Vec<u64>,
    /// Receive paths to compare (the first is the one the ratios divide by).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "epoll,uring,multishot,multishot-fixed"
    )]
    pub modes: Vec<Mode>,
    /// Client connections, one thread each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Runs per path and rate.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How the io_uring paths send their answers.
    #[arg(long, value_enum, default_value_t = Send::Ring)]
    pub send: Send,
    /// Task-work mode of the io_uring paths' ring (the lb's default).
    #[arg(long, value_enum, default_value_t = Taskrun::Defer)]
    pub taskrun: Taskrun,
    /// Provided buffers in the multishot ring (a power of two, 4 KiB each).
    #[arg(long, default_value_t = 256)]
    pub buffers: u16,
    /// Binds the server thread to the first CPU this process may use and the clients to the
    /// others (needs two or more).
    #[arg(long)]
    pub pin: bool,
    /// Also write every run and the medians as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One run of one path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub mode: Mode,
    /// Requests/s asked for; None for the closed loop.
    pub rate: Option<u64>,
    pub round: usize,
    pub messages: u64,
    pub messages_per_sec: f64,
    /// Server thread CPU per message, microseconds.
    pub server_cpu_us: f64,
    /// Process CPU (server and clients) per message, microseconds.
    pub process_cpu_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Multishot receives the kernel ended and the server armed again.
    pub rearms: u64,
}

/// The request every client sends: the contest's `POST /payments`, the same bytes each time.
fn request() -> Vec<u8> {
    post_payment_request("127.0.0.1")
}

/// Runs the echo once: `connections` clients of the load generator (one blocking thread
/// each, latency from the intended send time) against one server thread on `setup`'s path.
/// Fails if any request went unanswered or the server counted a different number of them.
pub fn measure(
    setup: Setup,
    connections: usize,
    rate: Option<u64>,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let request = request();
    let request_len = request.len();
    let cpus = sched::affinity()?;
    let placement = match (setup.pin, cpus.split_first()) {
        (false, _) => None,
        (true, Some((&server, clients))) if !clients.is_empty() => Some((server, clients)),
        (true, _) => bail!("--pin needs two CPUs or more; this process may use {cpus:?}"),
    };
    // The client threads inherit this thread's binding while they start; the server's thread
    // binds itself to its own CPU.
    if let Some((_, clients)) = placement {
        sched::pin(clients)?;
    }
    let server_cpu = placement.map(|(cpu, _)| cpu);
    let server = std::thread::Builder::new()
        .name("recv-echo".into())
        .spawn(move || {
            if let Some(cpu) = server_cpu {
                sched::pin(&[cpu])?;
            }
            echo::serve(&listener, connections, request_len, setup)
        })?;
    let pace = match rate {
        Some(rate) => Pace::Open {
            rate_per_sec: rate as f64,
            connections,
        },
        None => Pace::Closed { connections },
    };
    let cpu = own_cpu_seconds();
    let load = load::run(&LoadSpec {
        target: Target::Tcp(addr),
        request: request.into(),
        pace,
        duration,
        requests: None,
    });
    if placement.is_some() {
        sched::pin(&cpus)?;
    }
    // The load's connections are closed now. A client thread that never got a request due
    // never connected: empty connections take its place, so the server's accept ends.
    for _ in 0..connections {
        drop(TcpStream::connect(addr));
    }
    let served = server
        .join()
        .expect("the echo thread panicked")
        .with_context(|| format!("the {:?} echo", setup.mode))?;
    let process_secs = own_cpu_seconds() - cpu;
    let load = load.context("the clients")?;
    if load.non_2xx + load.errors > 0 || served.messages != load.ok {
        bail!(
            "the {:?} echo answered {} requests, the clients counted {} answered, {} failed",
            setup.mode,
            served.messages,
            load.ok,
            load.non_2xx + load.errors
        );
    }
    let per_message = |secs: f64| secs * 1e6 / load.ok.max(1) as f64;
    Ok(Sample {
        mode: setup.mode,
        rate,
        round: 0,
        messages: load.ok,
        messages_per_sec: load.throughput(),
        server_cpu_us: per_message(served.cpu_secs),
        process_cpu_us: per_message(process_secs),
        p50_us: load.quantile_us(0.50),
        p99_us: load.quantile_us(0.99),
        rearms: served.rearms,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.modes.is_empty() || args.rates.is_empty() || args.connections == 0 {
        bail!("--modes, --rates and --connections need at least one each");
    }
    if args.modes.iter().any(|mode| mode.multishot()) && !args.buffers.is_power_of_two() {
        bail!("--buffers must be a power of two (the kernel's ring of provided buffers)");
    }
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        for &rate in &args.rates {
            let rate = (rate > 0).then_some(rate);
            // Rotate the order each round so drift over the run hits every path alike.
            let mut order = args.modes.clone();
            order.rotate_left((round - 1) % args.modes.len());
            for mode in order {
                let setup = Setup {
                    mode,
                    send: args.send,
                    taskrun: args.taskrun,
                    buffers: args.buffers,
                    pin: args.pin,
                };
                let duration = Duration::from_secs(args.duration);
                let mut sample = measure(setup, args.connections, rate, duration)?;
                sample.round = round;
                tracing::info!(
                    round,
                    mode = ?mode,
                    load = %load_name(rate),
                    messages = sample.messages,
                    server_cpu_us = format!("{:.2}", sample.server_cpu_us),
                    process_cpu_us = format!("{:.2}", sample.process_cpu_us),
                    p99_us = sample.p99_us,
                    rearms = sample.rearms,
                    "measured"
                );
                samples.push(sample);
            }
        }
    }
    print!("{}", table(&args, &samples));
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "connections": args.connections,
            "duration_secs": args.duration,
            "send": args.send,
            "taskrun": format!("{:?}", args.taskrun).to_lowercase(),
            "buffers": args.buffers,
            "pin": args.pin,
            "samples": samples,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn load_name(rate: Option<u64>) -> String {
    match rate {
        Some(rate) => format!("{rate}/s"),
        None => "closed loop".to_owned(),
    }
}

/// Reads one figure from a run.
type Pick = fn(&Sample) -> f64;

/// The figures of the table: name and how to read it from a run.
const FIGURES: [(&str, Pick); 5] = [
    ("server thread CPU per message, us", |s| s.server_cpu_us),
    ("process CPU per message, us", |s| s.process_cpu_us),
    ("p50, us", |s| s.p50_us as f64),
    ("p99, us", |s| s.p99_us as f64),
    ("messages/s", |s| s.messages_per_sec),
];

/// Medians per path (lowest-highest run in parentheses) and each path's ratio to the first.
fn table(args: &Args, samples: &[Sample]) -> String {
    let base = args.modes[0];
    let head = format!(
        "rinha-bench recv: {} connections, {} s per run, medians over {} run(s) (lowest-highest \
         in parentheses); io_uring sends: {:?}, task work: {:?}{}\n\n",
        args.connections,
        args.duration,
        args.rounds,
        args.send,
        args.taskrun,
        if args.pin {
            "; server and clients on their own CPUs"
        } else {
            ""
        }
    );
    let name = |mode: Mode| {
        mode.to_possible_value()
            .map_or_else(String::new, |value| value.get_name().to_owned())
    };
    let mut columns = vec!["load".to_owned(), "figure".to_owned()];
    columns.extend(args.modes.iter().map(|&mode| name(mode)));
    columns.extend(
        args.modes[1..]
            .iter()
            .map(|&mode| format!("{}/{}", name(mode), name(base))),
    );
    let mut table = Table::new(&columns, |i| i >= 2);
    for &rate in &args.rates {
        let rate = (rate > 0).then_some(rate);
        for (figure, pick) in FIGURES {
            let values = |mode: Mode| -> Vec<f64> {
                samples
                    .iter()
                    .filter(|s| s.mode == mode && s.rate == rate)
                    .map(pick)
                    .collect()
            };
            let mut cells = vec![load_name(rate), figure.to_owned()];
            for &mode in &args.modes {
                let values = values(mode);
                cells.push(cell_with_spread(median(&values), Spread::of(&values)));
            }
            let base_median = median(&values(base));
            for &mode in &args.modes[1..] {
                cells.push(ratio_cell(ratio(median(&values(mode)), base_median)));
            }
            table.row(&cells);
        }
    }
    head + &table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(mode: Mode, send: Send, buffers: u16) -> Setup {
        Setup {
            mode,
            send,
            taskrun: Taskrun::Defer,
            buffers,
            pin: false,
        }
    }

    /// Every path answers every request exactly once (`measure` fails on a lost or an extra
    /// answer, and a request left unanswered fails its client after 10 s).
    #[test]
    fn every_path_answers_every_request_once() {
        for mode in Mode::value_variants().iter().copied() {
            for send in [Send::Ring, Send::Direct] {
                let sample = measure(setup(mode, send, 64), 4, None, Duration::from_millis(300))
                    .unwrap_or_else(|e| panic!("{mode:?} {send:?}: {e:#}"));
                assert!(sample.messages > 100, "{mode:?} {send:?}: {sample:?}");
                assert!(sample.server_cpu_us > 0.0 && sample.process_cpu_us > 0.0);
            }
        }
    }

    /// Paced, the clients keep the rate: 1000/s for 0.5 s over 5 connections is 500 requests.
    #[test]
    fn a_paced_run_sends_the_schedule() {
        let sample = measure(
            setup(Mode::Multishot, Send::Ring, 64),
            5,
            Some(1000),
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!(sample.messages, 500, "{sample:?}");
    }

    /// With two provided buffers for sixteen busy connections the kernel runs out and ends
    /// receives (`ENOBUFS`); each is armed again and no request is lost.
    #[test]
    fn a_multishot_receive_out_of_buffers_is_armed_again() {
        let sample = measure(
            setup(Mode::Multishot, Send::Ring, 2),
            16,
            None,
            Duration::from_millis(500),
        )
        .unwrap();
        assert!(sample.messages > 100, "{sample:?}");
        assert!(
            sample.rearms > 0,
            "no receive ran out of buffers: {sample:?}"
        );
    }

    /// The request is the one well-formed `POST` it claims to be, body and length agreeing.
    #[test]
    fn the_request_is_a_whole_post() {
        let bytes = request();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(&bytes).unwrap() {
            httparse::Status::Complete(head) => head,
            httparse::Status::Partial => panic!("a partial request"),
        };
        let length = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            });
        assert_eq!(length, Some(bytes.len() - head));
        assert_eq!(request.method, Some("POST"));
    }

    /// Bound apart (or refused with fewer than two CPUs), every path still answers every
    /// request, and the calling thread's binding is given back afterwards.
    #[test]
    fn a_pinned_run_answers_every_request_and_gives_the_binding_back() {
        let cpus = sched::affinity().unwrap();
        if cpus.len() < 2 {
            let err = measure(
                Setup {
                    pin: true,
                    ..setup(Mode::Epoll, Send::Ring, 64)
                },
                2,
                None,
                Duration::from_millis(50),
            )
            .unwrap_err();
            assert!(format!("{err:#}").contains("two CPUs"), "{err:#}");
            return;
        }
        for mode in [Mode::Epoll, Mode::MultishotFixed] {
            let sample = measure(
                Setup {
                    pin: true,
                    ..setup(mode, Send::Ring, 64)
                },
                4,
                None,
                Duration::from_millis(300),
            )
            .unwrap_or_else(|e| panic!("{mode:?}: {e:#}"));
            assert!(sample.messages > 100, "{mode:?}: {sample:?}");
            assert_eq!(sched::affinity().unwrap(), cpus);
        }
    }

    #[test]
    fn a_buffer_count_that_is_not_a_power_of_two_is_refused() {
        let err = measure(
            setup(Mode::Multishot, Send::Ring, 3),
            1,
            None,
            Duration::from_millis(50),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("power-of-two"), "{err:#}");
    }
}
