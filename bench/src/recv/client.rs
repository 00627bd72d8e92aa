//! The clients: one blocking thread per connection, each sending [`REQUEST`] and reading
//! [`RESPONSE`] back before the next. They are the same for every receive path under test,
//! so their CPU is the same too.
//!
//! Paced, the connections take turns at an even total rate (connection `i` sends the
//! requests `i`, `i + n`, `i + 2n`, ... of the schedule) and latency counts from the intended
//! send time, so a late answer is not hidden by the next request waiting for it. Unpaced,
//! each sends again as soon as its answer is in (closed loop, the most the server takes).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::echo::{REQUEST, RESPONSE};

/// How long a client waits for an answer before the run fails: the server answers in
/// microseconds, so this only catches a path that lost a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the clients did.
#[derive(Debug)]
pub struct Driven {
    /// Requests sent and answered.
    pub answered: u64,
    /// Microseconds from each request's intended send time to its whole answer.
    pub latency: Histogram<u64>,
}

/// Runs one client per stream for `duration`, at `rate` requests/s over all of them or
/// unpaced; closes every stream at the end.
pub fn drive(streams: Vec<TcpStream>, rate: Option<u64>, duration: Duration) -> io::Result<Driven> {
    let connections = streams.len() as u32;
    // Per request of the whole schedule; each connection sends every `connections`-th one.
    let gap = rate.map(|r| Duration::from_secs(1) / r.max(1) as u32);
    let start = Instant::now();
    let end = start + duration;
    let results: Vec<io::Result<Driven>> = std::thread::scope(|scope| {
        let clients: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, stream)| {
                let schedule = gap.map(|gap| (start + gap * i as u32, gap * connections));
                scope.spawn(move || client(stream, schedule, end))
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a client thread panicked"))
            .collect()
    });
    let mut total = Driven {
        answered: 0,
        latency: new_histogram(),
    };
    for result in results {
        let driven = result?;
        total.answered += driven.answered;
        total
            .latency
            .add(&driven.latency)
            .map_err(|e| io::Error::other(format!("merging latencies: {e}")))?;
    }
    Ok(total)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One connection's loop; `schedule` is its first send time and its period when paced.
fn client(
    mut stream: TcpStream,
    schedule: Option<(Instant, Duration)>,
    end: Instant,
) -> io::Result<Driven> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut driven = Driven {
        answered: 0,
        latency: new_histogram(),
    };
    let mut answer = vec![0u8; RESPONSE.len()];
    loop {
        let intended = match schedule {
            Some((first, period)) => first + period * driven.answered as u32,
            None => Instant::now(),
        };
        if intended >= end {
            break;
        }
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream.write_all(REQUEST)?;
        stream.read_exact(&mut answer).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no whole answer to request {}: {e}", driven.answered + 1),
            )
        })?;
        if answer != RESPONSE {
            return Err(io::Error::other("the answer is not the server's response"));
        }
        let micros = intended.elapsed().as_micros().max(1) as u64;
        driven.latency.saturating_record(micros);
        driven.answered += 1;
    }
    Ok(driven)
}
