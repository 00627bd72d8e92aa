//! Unknown outcomes whose lookup is hard (issue 16, item 9): a default processor that loses
//! every response to `POST /payments` (the payment stored, the answer never sent) and whose
//! `GET /payments/{id}` either fails or writes `requestedAt` as a number. Payments whose
//! outcome is unknown there must neither hold the senders (fresh payments still go out) nor
//! be looked up every 50 ms forever; a lookup's timestamp is read in any plausible form.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use uuid::Uuid;

/// How the fake processor answers `GET /payments/{id}`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookups {
    /// `503` to every lookup.
    Failing,
    /// `200` with `requestedAt` as milliseconds since the epoch (a JSON number).
    EpochMillis,
}

/// A processor that stores every payment and never answers the `POST` (a lost response).
struct LosingProcessor {
    url: String,
    /// requestedAt (µs) and amount text by correlationId.
    stored: Arc<Mutex<HashMap<String, (i64, String)>>>,
    lookups: Arc<AtomicU64>,
}

impl LosingProcessor {
    fn start(mode: Lookups) -> LosingProcessor {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stored = Arc::new(Mutex::new(HashMap::new()));
        let lookups = Arc::new(AtomicU64::new(0));
        let (s, l) = (stored.clone(), lookups.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, l) = (s.clone(), l.clone());
                std::thread::spawn(move || serve(conn, mode, &s, &l));
            }
        });
        LosingProcessor {
            url,
            stored,
            lookups,
        }
    }

    fn stored(&self) -> usize {
        self.stored.lock().unwrap().len()
    }

    fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

fn serve(
    conn: TcpStream,
    mode: Lookups,
    stored: &Mutex<HashMap<String, (i64, String)>>,
    lookups: &AtomicU64,
) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        let length = head
            .iter()
            .find_map(|h| {
                h.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = head[0].split(' ').nth(1).unwrap_or("").to_string();
        if head[0].starts_with("POST /payments ") {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let at = chrono::DateTime::parse_from_rfc3339(v["requestedAt"].as_str().unwrap())
                .unwrap()
                .timestamp_micros();
            let id = v["correlationId"].as_str().unwrap().to_string();
            let amount = v["amount"].to_string();
            stored.lock().unwrap().entry(id).or_insert((at, amount));
            // The response is lost: the connection closes without one.
            return;
        }
        let answer = match target.strip_prefix("/payments/") {
            Some(id) => {
                lookups.fetch_add(1, Ordering::Relaxed);
                match (mode, stored.lock().unwrap().get(id)) {
                    (Lookups::Failing, _) => (503, String::new()),
                    (Lookups::EpochMillis, Some((at, amount))) => (
                        200,
                        format!(
                            r#"{{"correlationId":"{id}","amount":{amount},"requestedAt":{}}}"#,
                            at / 1000
                        ),
                    ),
                    (Lookups::EpochMillis, None) => (404, String::new()),
                }
            }
            None => (404, String::new()),
        };
        let response = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            answer.0,
            answer.1.len(),
            answer.1
        );
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// One instance ("solo") whose default processor is `fake`, its calls timing out after
/// 300 ms, and whose fallback is an emulated one, with `extra` settings besides; with the
/// processors and the directory it runs in.
fn in_front_of(
    fake: &LosingProcessor,
    driver: &str,
    extra: &[(&str, &str)],
) -> (Processors, TempDir, Instance) {
    let procs = Processors::start();
    let dir = TempDir::new();
    let mut env = vec![
        ("PROCESSOR_DEFAULT_URL", fake.url.as_str()),
        ("PROCESSOR_TIMEOUT_MS", "300"),
    ];
    env.extend_from_slice(extra);
    let inst = Instance::start(&dir.0, "solo", driver, &procs, &[], &env);
    (procs, dir, inst)
}

/// The held-out run's failure: every lookup at the pinned processor fails, with more such
/// payments than senders. Fresh payments still reach the fallback, the stuck ones are looked
/// up with a back-off (not every 50 ms), and the stall is logged, at warn, rate-limited.
fn stuck_lookups_never_starve_fresh_payments(driver: &str) {
    let fake = LosingProcessor::start(Lookups::Failing);
    let (procs, _dir, inst) = in_front_of(
        &fake,
        driver,
        &[
            ("WORKERS", "1"),
            ("SENDERS", "2"),
            ("FALLBACK_AFTER_MS", "200"),
        ],
    );
    let n = 30;
    for _ in 0..n {
        assert_eq!(inst.pay(Uuid::new_v4(), "19.90"), 202);
    }
    // Every payment is either pinned at the default (its outcome unknown for good) or stored
    // by the fallback.
    let settled = || fake.stored() + procs.counts().1 as usize == n;
    assert!(
        eventually(Duration::from_secs(10), settled),
        "stuck at the default {}, at the fallback {}",
        fake.stored(),
        procs.counts().1
    );
    let stuck = fake.stored() as u64;
    assert!(
        stuck >= 2,
        "only {stuck} payments stuck: the test needs as many as senders"
    );
    // Lookups back off: over two seconds a few per stuck payment, where a 50 ms retry made
    // 40 each.
    std::thread::sleep(Duration::from_secs(2));
    let before = fake.lookups();
    std::thread::sleep(Duration::from_secs(2));
    let made = fake.lookups() - before;
    assert!(
        made <= 4 * stuck + 4,
        "{made} lookups in 2 s for {stuck} stuck payments"
    );
    let log = inst.log_text();
    let warnings = log.matches("lookup keeps failing").count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} stuck warnings: {log}"
    );
}
both_drivers!(stuck_lookups_never_starve_fresh_payments);

/// A lookup whose `requestedAt` is a number (milliseconds since the epoch) is read as one: the
/// payments are recorded once each, not looked up forever.
fn numeric_lookup_timestamps_are_read(driver: &str) {
    let fake = LosingProcessor::start(Lookups::EpochMillis);
    let (procs, _dir, inst) = in_front_of(&fake, driver, &[]);
    let n = 20;
    for _ in 0..n {
        assert_eq!(inst.pay(Uuid::new_v4(), "19.90"), 202);
    }
    let counted = || {
        let ((d, _), (f, _)) = inst.summary("");
        d as usize == fake.stored() && (d + f) as usize == n
    };
    assert!(
        eventually(Duration::from_secs(10), counted),
        "ours {:?}, stored at the default {}, at the fallback {}",
        inst.summary(""),
        fake.stored(),
        procs.counts().1
    );
}
both_drivers!(numeric_lookup_timestamps_are_read);
