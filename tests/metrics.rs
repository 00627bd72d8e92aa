//! `GET /metrics` (`METRICS_LISTEN`) scraped from two real `rinha` processes peering each
//! other in front of emulated processors: the counters agree with what the test sent and
//! what the processors stored, and the public port never answers it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use uuid::Uuid;

/// Where an instance answers scrapes.
enum Scraped<'a> {
    Tcp(&'a str),
    Unix(&'a Path),
}

const SCRAPE: &str = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";

fn get(at: &Scraped, raw: &str) -> (u16, String) {
    match at {
        Scraped::Tcp(addr) => {
            let mut s = TcpStream::connect(addr).expect("connect to METRICS_LISTEN");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(raw.as_bytes()).unwrap();
            read_response(&mut s)
        }
        Scraped::Unix(path) => request(path, raw),
    }
}

fn scrape(at: &Scraped) -> String {
    let (status, body) = get(at, SCRAPE);
    assert_eq!(status, 200, "scrape: {body}");
    body
}

/// The sum of `name`'s samples whose labels contain every one of `labels` (`k="v"`).
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

fn scrape_counts_what_was_sent(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    // One instance on TCP (a port of this test's range, one per driver), one on a unix socket.
    let tcp = if driver == "uring" {
        "127.0.0.1:27101"
    } else {
        "127.0.0.1:27102"
    };
    let unix = dir.0.join("b2.metrics.sock");
    let journal = dir.0.join("journal");
    let s1 = dir.0.join("b1.sock");
    let s2 = dir.0.join("b2.sock");
    let a = Instance::start(
        &dir.0,
        "b1",
        driver,
        &procs,
        &[&s2],
        &[
            ("METRICS_LISTEN", tcp),
            ("DATA_DIR", journal.to_str().unwrap()),
        ],
    );
    let b = Instance::start(
        &dir.0,
        "b2",
        driver,
        &procs,
        &[&s1],
        &[("METRICS_LISTEN", &format!("unix:{}", unix.display()))],
    );
    let (ma, mb) = (Scraped::Tcp(tcp), Scraped::Unix(&unix));

    // Mid-run: the default answers after 400 ms, so the payments are still out when scraped.
    procs.default.set_delay(400);
    let (mut to_a, mut to_b) = (0.0, 0.0);
    for i in 0..40 {
        let (inst, n) = if i % 2 == 0 {
            (&a, &mut to_a)
        } else {
            (&b, &mut to_b)
        };
        assert_eq!(inst.pay(Uuid::new_v4(), "10.00"), 202);
        *n += 1.0;
    }
    let (during_a, during_b) = (scrape(&ma), scrape(&mb));
    assert_eq!(sum(&during_a, "rinha_payments_accepted_total", &[]), to_a);
    assert_eq!(sum(&during_b, "rinha_payments_accepted_total", &[]), to_b);
    let out = |t: &str| {
        sum(t, "rinha_processor_in_flight", &[])
            + sum(t, "rinha_queue_depth", &[])
            + sum(t, "rinha_senders_busy", &[])
            + sum(t, "rinha_payments_processed_total", &[])
    };
    assert!(
        out(&during_a) + out(&during_b) >= to_a + to_b,
        "every accepted payment is queued, in flight or processed:\n{during_a}\n{during_b}"
    );
    assert!(
        sum(
            &during_a,
            "rinha_processor_in_flight",
            &["processor=\"default\""]
        ) + sum(
            &during_b,
            "rinha_processor_in_flight",
            &["processor=\"default\""]
        ) > 0.0,
        "calls out to the slow default are in flight:\n{during_a}\n{during_b}"
    );
    // The journal of `a` committed each accepted record at least.
    assert!(sum(&during_a, "rinha_journal_commits_total", &[]) >= to_a);
    assert!(sum(&during_a, "rinha_journal_bytes_total", &[]) > 0.0);
    assert_eq!(sum(&during_b, "rinha_journal_commits_total", &[]), 0.0);

    let total = (to_a + to_b) as u64;
    assert!(
        eventually(Duration::from_secs(20), || {
            let (d, f) = procs.counts();
            d + f == total
        }),
        "not drained: {:?}",
        procs.counts()
    );
    // Settled: the processors' stores, per processor, are what both instances recorded.
    let (d, f) = procs.counts();
    let settled = eventually(Duration::from_secs(5), || {
        let (ta, tb) = (scrape(&ma), scrape(&mb));
        let processed = |p: &str| {
            let label = format!("processor=\"{p}\"");
            sum(&ta, "rinha_payments_processed_total", &[&label])
                + sum(&tb, "rinha_payments_processed_total", &[&label])
        };
        processed("default") == d as f64 && processed("fallback") == f as f64
    });
    assert!(
        settled,
        "processed per processor != the processors' ({d}, {f})"
    );
    let summaries = 3;
    for _ in 0..summaries {
        a.summary("");
    }
    let (ta, tb) = (scrape(&ma), scrape(&mb));
    for t in [&ta, &tb] {
        assert_eq!(sum(t, "rinha_queue_depth", &[]), 0.0, "{t}");
        assert_eq!(sum(t, "rinha_processor_in_flight", &[]), 0.0, "{t}");
        // Every payment was placed by the routing at least once.
        assert!(sum(t, "rinha_route_choices_total", &[]) >= 20.0, "{t}");
        assert_eq!(sum(t, "rinha_breaker_open", &[]), 0.0, "{t}");
    }
    // Public summaries at `a`, each asking `b` once: internal ones there.
    assert_eq!(sum(&ta, "rinha_summaries_total", &["kind=\"public\""]), 3.0);
    assert_eq!(
        sum(&ta, "rinha_summaries_total", &["kind=\"internal\""]),
        0.0
    );
    assert_eq!(
        sum(&tb, "rinha_summaries_total", &["kind=\"internal\""]),
        3.0
    );
    assert_eq!(sum(&tb, "rinha_summaries_total", &["kind=\"public\""]), 0.0);
    assert_eq!(
        sum(&ta, "rinha_summary_duration_seconds_count", &[]),
        summaries as f64
    );
    assert_eq!(
        sum(
            &ta,
            "rinha_summary_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        summaries as f64
    );
    assert_eq!(sum(&ta, "rinha_summaries_failed_total", &[]), 0.0);
    // One held connection shows as open.
    let held = UnixStream::connect(&a.socket).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        sum(&scrape(&ma), "rinha_connections_open", &[]) >= 1.0
    }));
    drop(held);
    // Anything else on the metrics listener is a 404, and changes nothing.
    assert_eq!(get(&ma, "GET /payments-summary HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(get(&ma, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
}
both_drivers!(scrape_counts_what_was_sent);

/// The public port does not know `/metrics`, with `METRICS_LISTEN` set or not.
fn public_port_answers_404(driver: &str) {
    let dir = TempDir::new();
    let unix = dir.0.join("m.sock");
    let listen = format!("unix:{}", unix.display());
    let solo = Solo::start(driver, &[("METRICS_LISTEN", &listen)]);
    assert_eq!(solo.inst.get("/metrics").0, 404);
    assert_eq!(solo.inst.get("/metrics?x=1").0, 404);
    // ... while the metrics socket answers it.
    assert!(scrape(&Scraped::Unix(&unix)).contains("rinha_queue_depth{core=\"0\"}"));
    let bare = Solo::start(driver, &[]);
    assert_eq!(bare.inst.get("/metrics").0, 404);
}
both_drivers!(public_port_answers_404);

/// Both processors answer 404 (a wrong URL) for a while: every such answer is counted, per
/// processor, and the payments are still stored once they heal (issue 24, item 3).
fn answers_that_prove_nothing_are_counted(driver: &str) {
    let dir = TempDir::new();
    let unix = dir.0.join("m.sock");
    let listen = format!("unix:{}", unix.display());
    let solo = Solo::start(driver, &[("METRICS_LISTEN", &listen)]);
    let at = Scraped::Unix(&unix);
    assert_eq!(
        sum(&scrape(&at), "rinha_inconclusive_answers_total", &[]),
        0.0
    );
    solo.procs.default.set_answer(Some(404));
    solo.procs.fallback.set_answer(Some(404));
    for _ in 0..20 {
        assert_eq!(solo.inst.pay(Uuid::new_v4(), "10.00"), 202);
    }
    let forced = || solo.procs.default.traffic().forced + solo.procs.fallback.traffic().forced;
    let counted = eventually(Duration::from_secs(5), || {
        forced() >= 5 && sum(&scrape(&at), "rinha_inconclusive_answers_total", &[]) >= 5.0
    });
    let text = scrape(&at);
    assert!(counted, "forced 404s: {}\n{text}", forced());
    solo.procs.default.set_answer(None);
    solo.procs.fallback.set_answer(None);
    let after = eventually(Duration::from_secs(20), || {
        let (d, f) = solo.procs.counts();
        d + f == 20
    });
    assert!(after, "not drained: {:?}", solo.procs.counts());
    // No 404 is counted twice or under the other processor.
    let text = scrape(&at);
    for (p, running) in [
        ("default", &solo.procs.default),
        ("fallback", &solo.procs.fallback),
    ] {
        let label = format!("processor=\"{p}\"");
        let n = sum(&text, "rinha_inconclusive_answers_total", &[&label]);
        assert!(n <= running.traffic().forced as f64, "{p}: {n}\n{text}");
    }
}
both_drivers!(answers_that_prove_nothing_are_counted);
