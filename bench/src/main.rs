//! `rinha-bench`: the instrument. Each subcommand lives in its own module of the library;
//! this file only parses the command line and turns errors into exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rinha_bench::experiments::recv;
use rinha_bench::{capacity, contest, drivers, floor, lbs, processor, rinha, soak, stack};

#[derive(Parser)]
#[command(name = "rinha-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a payment-processor emulator (RINHA-2025.md section 3).
    Processor(processor::Args),
    /// Run the contest's load test, second by second, and print the score sheet.
    Rinha(contest::Args),
    /// Measure the latency the instrument itself adds (a trivial responder under the same load).
    Floor(floor::Args),
    /// Start the local stack (two processors, two backends, the load balancer) until Ctrl-C.
    Stack(stack::command::Args),
    /// Compare rinha-lb with HAProxy (tcp, http) and nginx stream under the same load.
    Lbs(lbs::Args),
    /// Compare the io_uring and epoll drivers on the same stack.
    Drivers(drivers::Args),
    /// Compare the kernel's receive paths (epoll, io_uring one-shot, io_uring multishot) on an echo.
    Recv(recv::Args),
    /// Ramp an open-loop load on the stack under the compose file's CPU quotas to its capacity.
    Capacity(capacity::Args),
    /// Soak the stack at twice the contest's peak: RSS, fds, errors, exact summary.
    Soak(soak::Args),
}

/// Descriptors every subcommand may hold at once (the soak's 1,100 users, the comparisons'
/// connections, a processor's clients), reserved before any runtime starts its threads so
/// the instrument never stalls on growing its descriptor table (see `rinha_sys::fds`).
const DESCRIPTORS: u64 = 8192;

fn main() -> ExitCode {
    rinha_bench::logging::init();
    if let Err(e) = rinha_sys::fds::prepare(DESCRIPTORS) {
        tracing::warn!(error = %e, "cannot grow the descriptor table ahead: expect stalls as connections open");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Processor(args) => processor::run(args),
        Command::Rinha(args) => rinha::run(args),
        Command::Floor(args) => floor::run(args),
        Command::Stack(args) => stack::command::run(args),
        Command::Lbs(args) => lbs::run(args),
        Command::Drivers(args) => drivers::run(args),
        Command::Recv(args) => recv::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Capacity(args) => capacity::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rinha-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
