//! `rinha-bench drivers` through its library entry ([`compare`]) on the real stack, kept short:
//! one round of both drivers with a 2 s contest, two small open-loop rates and a 1 s
//! saturation, and a backend forced to epoll while io_uring was asked for, which must stop
//! the comparison. Needs `rinha` and `rinha-lb` built next to `rinha-bench`
//! (`cargo build -p rinha -p rinha-lb`; the test builds them when they are missing).

mod stack_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use stack_support::{stack_bins, stack_flags};

use rinha_bench::drivers::{compare, Args, Driver, Run, MEASURED};
use rinha_bench::measure::stats::Spread;

/// Short-run flags on free ports with the given backend binary.
fn args(rinha: &Path, lb: &Path) -> Args {
    let run = [
        "--rounds",
        "1",
        "--duration",
        "2",
        "--max-requests",
        "20",
        "--rates",
        "200,400",
        "--open-secs",
        "1",
        "--open-connections",
        "4",
        "--warmup-secs",
        "0",
        "--saturation-requests",
        "3000",
        "--saturation-secs",
        "60",
        "--saturation-connections",
        "4",
        "--quiet",
    ];
    let (stack, _) = stack_flags(rinha, lb);
    Args::from_flags(run.map(String::from).into_iter().chain(stack)).expect("flags")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_drivers_run_and_the_ratios_come_from_the_measurements() {
    let (rinha, lb) = stack_bins();
    let args = args(&rinha, &lb);
    let comparison = tokio::time::timeout(Duration::from_secs(60), compare(&args))
        .await
        .expect("bounded")
        .expect("the comparison runs");
    let table = comparison.table();
    eprintln!("{table}");

    let drivers: Vec<Driver> = comparison.runs.iter().map(|r| r.driver).collect();
    assert_eq!(drivers, [Driver::Uring, Driver::Epoll]);
    for run in &comparison.runs {
        let want = format!("driver={}", run.driver.log_name());
        assert_eq!(run.confirmed.len(), 3, "{:?}", run.confirmed);
        assert!(
            run.confirmed.iter().all(|(_, got)| *got == want),
            "{:?}",
            run.confirmed
        );
        let contest = run.contest.as_ref().expect("a contest ran");
        assert!(contest.successful_posts > 0, "{contest:?}");
        assert_eq!(run.rates.len(), 2);
        assert!(run.rates.iter().all(|r| r.ok > 0), "{:?}", run.rates);
        // Every accepted payment was recorded before its window closed.
        assert!(
            run.rates.iter().all(|r| r.drained.complete),
            "{:?}",
            run.rates
        );
        let saturation = run.saturation.as_ref().expect("a saturation ran");
        // The same work for both drivers: the budget, not the clock, ended the load.
        assert_eq!(saturation.ok + saturation.failed, 3000, "{saturation:?}");
        assert!(saturation.throughput > 0.0);
        assert!(saturation.drained.complete, "{saturation:?}");
        assert!(
            saturation.cpu_secs.iter().sum::<f64>() > 0.0,
            "3000 requests cost CPU: {saturation:?}"
        );
        assert!(run.peak_rss_kib.iter().all(|&kib| kib > 0));
    }

    assert!(table.contains("| uring | epoll | uring/epoll |"), "{table}");
    for section in [
        "contest, 20 users, 2 s",
        "open loop, 200 req/s",
        "open loop, 400 req/s",
    ] {
        assert!(table.contains(section), "{section} missing:\n{table}");
    }
    // With one round the medians are the runs' own figures, and the ratios are theirs.
    let by = |driver: Driver| -> &Run {
        comparison
            .runs
            .iter()
            .find(|r| r.driver == driver)
            .expect("run")
    };
    let (u, e) = (by(Driver::Uring), by(Driver::Epoll));
    let expect: Vec<(&str, &str, f64, f64)> = vec![
        (
            "contest, 20 users, 2 s",
            "POST /payments p99",
            u.contest.as_ref().unwrap().post.p99,
            e.contest.as_ref().unwrap().post.p99,
        ),
        (
            "open loop, 400 req/s",
            "POST /payments p50",
            u.rates[1].latency.p50,
            e.rates[1].latency.p50,
        ),
        (
            "saturation, closed loop, 4 connections",
            "requests/s answered (intake)",
            u.saturation.as_ref().unwrap().throughput,
            e.saturation.as_ref().unwrap().throughput,
        ),
        (
            "peak RSS, whole run",
            MEASURED[1],
            u.peak_rss_kib[1] as f64 / 1024.0,
            e.peak_rss_kib[1] as f64 / 1024.0,
        ),
    ];
    for (section, metric, uring, epoll) in expect {
        let row = comparison
            .rows
            .iter()
            .find(|r| r.section == section && r.metric == metric)
            .unwrap_or_else(|| panic!("no row {section} / {metric}"));
        assert_eq!(
            (row.uring, row.epoll),
            (Some(uring), Some(epoll)),
            "{row:?}"
        );
        assert!(close(row.ratio.expect("a ratio"), uring / epoll), "{row:?}");
        // One run per driver: no spread, each run is its own lowest and highest.
        let point = |v: f64| {
            Some(Spread {
                min: v,
                max: v,
                runs: 1,
            })
        };
        assert_eq!(
            (row.uring_spread, row.epoll_spread),
            (point(uring), point(epoll)),
            "{row:?}"
        );
    }
    for row in &comparison.rows {
        if let (Some(u), Some(e), Some(r)) = (row.uring, row.epoll, row.ratio) {
            assert!(close(r, u / e), "{row:?}");
        }
    }
    let svg = rinha_bench::drivers::chart::svg(&comparison.rows, "smoke");
    // Two legend squares and two bars per percentile: 3 contest + 3 per rate.
    assert_eq!(svg.matches("<rect x=").count(), 2 + 2 * 9, "{svg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_on_the_wrong_driver_stops_the_comparison() {
    let (rinha, lb) = stack_bins();
    let dir = std::env::temp_dir().join(format!("drivers-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A backend that ignores the IO_DRIVER it is given.
    let forced = dir.join("rinha-forced-epoll");
    std::fs::write(
        &forced,
        format!(
            "#!/bin/sh\nIO_DRIVER=epoll exec {} \"$@\"\n",
            rinha.display()
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&forced, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let args = args(&forced, &lb);
    let err = tokio::time::timeout(Duration::from_secs(30), compare(&args))
        .await
        .expect("bounded")
        .expect_err("uring was asked for, epoll runs");
    let text = format!("{err:#}");
    assert!(text.contains("backend-1"), "{text}");
    assert!(text.contains("IO_DRIVER=uring"), "{text}");
    assert!(text.contains("driver=epoll"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
