//! The processor's limits and faults through real HTTP: the health endpoint's fixed window,
//! the concurrency limiter (small and at the official 800 + 500), chaos drops and resets,
//! and the CLI binary with its environment variables and signals.

mod processor_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use processor_support::{call, new_id, payment, post_payment, Client, AT, TOKEN};
use rinha_emulator::{spawn, Chaos, Config, Limits};

#[tokio::test]
async fn health_answers_one_call_per_window_queues_two_and_refuses_the_rest() {
    let mut config = Config::for_tests(5);
    config.health_window = Duration::from_secs(1);
    let processor = spawn(config).unwrap();
    let started = Instant::now();
    processor.set_delay(123);
    let first = call(processor.addr, "GET", "/payments/service-health", &[], "").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.json(),
        serde_json::json!({"failing": false, "minResponseTime": 123})
    );
    assert!(started.elapsed() < Duration::from_millis(300));

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let addr = processor.addr;
            tokio::spawn(async move {
                let response = call(addr, "GET", "/payments/service-health", &[], "").await;
                (response, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Waiting callers see the settings of the moment they are answered.
    processor.set_failure(true);
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers.sort_by_key(|(_, elapsed)| *elapsed);
    let (refused, at) = &answers[0];
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(*at < Duration::from_millis(300), "{at:?}");
    // One queued caller per window: the first at the next window, the second one later.
    for ((response, at), window) in answers[1..].iter().zip([1, 2]) {
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["failing"], true);
        let window = Duration::from_secs(window);
        assert!(*at >= window - Duration::from_millis(50), "{at:?}");
        assert!(*at < window + Duration::from_millis(700), "{at:?}");
    }
}

#[tokio::test]
async fn a_health_caller_that_hangs_up_leaves_the_line() {
    let mut config = Config::for_tests(5);
    config.health_window = Duration::from_secs(1);
    let processor = spawn(config).unwrap();
    let started = Instant::now();
    let addr = processor.addr;
    assert_eq!(
        call(addr, "GET", "/payments/service-health", &[], "")
            .await
            .status,
        200
    );
    let mut leaving = Client::connect(addr).await;
    leaving
        .send("GET", "/payments/service-health", &[], "")
        .await;
    let waiting = tokio::spawn(async move {
        let response = call(addr, "GET", "/payments/service-health", &[], "").await;
        (response.status, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(leaving);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The line holds one caller again, so this one fits in it instead of getting 429.
    let response = call(addr, "GET", "/payments/service-health", &[], "").await;
    assert_eq!(response.status, 200);
    let answered = started.elapsed();
    let (status, first_answered) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        first_answered < Duration::from_millis(1700),
        "{first_answered:?}"
    );
    assert!(answered >= Duration::from_millis(1950), "{answered:?}");
}

/// Posts `count` payments at once, each on its own connection; returns the status and
/// when the answer came, measured from `since`.
async fn post_many(
    addr: SocketAddr,
    count: usize,
    since: Instant,
) -> Vec<tokio::task::JoinHandle<(u16, Duration)>> {
    (0..count)
        .map(|_| {
            tokio::spawn(async move {
                let response = post_payment(addr, &new_id()).await;
                (response.status, since.elapsed())
            })
        })
        .collect()
}

#[tokio::test]
async fn the_limiter_runs_some_queues_some_and_refuses_the_rest() {
    let mut config = Config::for_tests(5);
    config.limits = Limits {
        running: 2,
        queued: 1,
    };
    let processor = spawn(config).unwrap();
    processor.set_delay(400);
    let admitted = post_many(processor.addr, 3, Instant::now()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let refused = post_payment(processor.addr, &new_id()).await;
    assert_eq!(refused.status, 429);
    assert!(started.elapsed() < Duration::from_millis(200));
    let mut latencies = Vec::new();
    for task in admitted {
        let (status, latency) = task.await.unwrap();
        assert_eq!(status, 200);
        latencies.push(latency);
    }
    latencies.sort();
    // Two ran at once; the queued one started when a slot freed, one delay later.
    assert!(latencies[1] < Duration::from_millis(700), "{latencies:?}");
    assert!(latencies[2] >= Duration::from_millis(790), "{latencies:?}");
    assert_eq!(processor.stored(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_limits_are_800_running_and_500_queued() {
    // 1,310 connections, both ends in this process: more than a default soft limit of 1,024.
    raise_open_files_limit(4_096);
    let processor = spawn(Config::for_tests(5)).unwrap();
    processor.set_delay(2000);
    let started = Instant::now();
    let admitted = post_many(processor.addr, 1300, started).await;
    // Let every one of the 1,300 reach the limiter.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let refused = post_many(processor.addr, 10, started).await;
    for task in refused {
        let (status, answered_at) = task.await.unwrap();
        assert_eq!(status, 429);
        assert!(answered_at < Duration::from_millis(1500), "{answered_at:?}");
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut slow = 0;
    for task in admitted {
        let (status, answered_at) = task.await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        // No slot frees before the first delay ends, so the queued end after two delays.
        if answered_at >= Duration::from_millis(4000) {
            slow += 1;
        }
    }
    assert_eq!(statuses, [(200, 1300)].into_iter().collect());
    // 800 ran in the first delay, the 500 queued ones in the second.
    assert_eq!(slow, 500);
    assert_eq!(processor.stored(), 1300);
}

/// Raises this process's soft limit of open files to at least `wanted` (within the hard one).
fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass, which outlives the call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted as libc::rlim_t {
            limit.rlim_cur = limit.rlim_max.min(wanted as libc::rlim_t);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= wanted as libc::rlim_t,
        "this test needs {wanted} open files; the hard limit is {}",
        limit.rlim_max
    );
}

#[tokio::test]
async fn chaos_drops_the_response_after_storing_every_nth_payment() {
    let mut config = Config::for_tests(5);
    config.chaos = Chaos {
        drop_every: 2,
        reset_every: 0,
    };
    let processor = spawn(config).unwrap();
    let mut client = Client::connect(processor.addr).await;
    let first = new_id();
    let response = client
        .call("POST", "/payments", &[], &payment(&first, "1", AT))
        .await;
    assert_eq!(response.status, 200);
    let second = new_id();
    client
        .send("POST", "/payments", &[], &payment(&second, "1", AT))
        .await;
    assert!(
        client.recv().await.is_err(),
        "the second response must be lost"
    );
    assert!(processor.payment(second.parse().unwrap()).is_some());
    // Failures and duplicates store nothing, so they do not count.
    assert_eq!(post_payment(processor.addr, &first).await.status, 422);
    assert_eq!(post_payment(processor.addr, &new_id()).await.status, 200);
    let mut client = Client::connect(processor.addr).await;
    client
        .send("POST", "/payments", &[], &payment(&new_id(), "1", AT))
        .await;
    assert!(client.recv().await.is_err());
    assert_eq!(processor.stored(), 4);
}

#[tokio::test]
async fn chaos_resets_every_nth_post_before_processing_it() {
    let mut config = Config::for_tests(5);
    config.chaos = Chaos {
        drop_every: 0,
        reset_every: 2,
    };
    let processor = spawn(config).unwrap();
    assert_eq!(post_payment(processor.addr, &new_id()).await.status, 200);
    // Other endpoints do not count.
    let health = call(processor.addr, "GET", "/payments/service-health", &[], "").await;
    assert_eq!(health.status, 200);
    let mut client = Client::connect(processor.addr).await;
    let reset = new_id();
    client
        .send("POST", "/payments", &[], &payment(&reset, "1", AT))
        .await;
    let error = client
        .recv()
        .await
        .expect_err("the connection must be reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(processor.payment(reset.parse().unwrap()).is_none());
    assert_eq!(post_payment(processor.addr, &new_id()).await.status, 200);
    assert_eq!(processor.stored(), 2);
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_cli_reads_its_environment_announces_its_address_and_stops_on_sigterm() {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rinha-bench"))
        .args(["processor", "--listen", "127.0.0.1:0"])
        .env("PROCESSOR_FEE", "0.15")
        .env("PROCESSOR_TOKEN", "abc")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rinha-bench processor");
    let mut child = Child(child);
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let line = lines
        .find(|line| line.contains("processor listening on "))
        .expect("the listening line");
    // Keep reading, so the child never writes into a closed pipe.
    let drain = std::thread::spawn(move || lines.collect::<Vec<_>>());
    let addr: SocketAddr = line
        .split("processor listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    let summary = call(
        addr,
        "GET",
        "/admin/payments-summary",
        &[("X-Rinha-Token", "abc")],
        "",
    )
    .await;
    assert_eq!(summary.status, 200);
    assert_eq!(summary.json()["feePerTransaction"].to_string(), "0.15");
    assert_eq!(
        call(addr, "GET", "/admin/payments-summary", &[TOKEN], "")
            .await
            .status,
        401
    );

    let pid = i32::try_from(child.0.id()).unwrap();
    // SAFETY: sending a signal to our own child process, whose id we just read.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    let rest = drain.join().unwrap();
    assert!(rest.iter().any(|line| line.contains("stopped")), "{rest:?}");
}
