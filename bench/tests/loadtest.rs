//! The load test can fail: `rinha` runs (12 s, 60 users, through the library entry point)
//! against tiny backends with known flaws and must catch each one (and count a summary that
//! misses the client timeout as zeros, as the official script does); against a correct tiny
//! backend it must pass. Every backend forwards to real emulated processors on port 0. The
//! five runs go side by side in one test (about 18 s in all; `cargo test` would otherwise run
//! only as many tests at once as there are cores).

mod loadtest_support;

use loadtest_support::{run_tiny, Mode};
use rinha_bench::contest::Report;

/// Starts two processors and a tiny backend, runs a short test with a drain, returns the report.
async fn run_against(mode: Mode) -> Report {
    let flags = ["--duration", "12", "--max-requests", "60", "--drain", "2"];
    run_tiny(mode, (5, 15), &flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_test_passes_a_correct_backend_and_catches_each_flaw() {
    let (correct, forgets, eager, double, slow) = tokio::join!(
        run_against(Mode::Correct),
        run_against(Mode::ForgetsWhenBothFail),
        run_against(Mode::RecordsBeforeAnswer),
        run_against(Mode::CountsOnBoth),
        run_against(Mode::SlowSummaries),
    );
    a_correct_backend_passes(&correct);
    forgetting_payments_when_both_processors_fail_shows_as_lag(&forgets);
    recording_before_the_processor_answers_shows_as_inconsistency(&eager);
    counting_a_payment_on_both_processors_shows_as_negative_lag(&double);
    summaries_slower_than_the_timeout_count_as_zeros(&slow);
}

fn a_correct_backend_passes(report: &Report) {
    let s = &report.score;
    assert!(
        report.snapshot.counts.success > 300,
        "too few payments: {:?}",
        report.snapshot.counts
    );
    assert_eq!(s.inconsistencies, 0, "{:#?}", report.checks);
    assert_eq!(s.lag, 0);
    assert!(!s.disqualified);
    assert!(
        report.strict_failures().is_empty(),
        "{:?}",
        report.strict_failures()
    );
    // Default only: gross = 19.90 per successful POST, fees 5 %.
    let n = report.snapshot.counts.success as f64;
    assert!(
        (s.gross - 19.9 * n).abs() < 0.005,
        "gross {} for {n}",
        s.gross
    );
    assert!((s.fees - 0.995 * n).abs() < 0.01, "fees {}", s.fees);
    assert_eq!(s.fine, 0.0);
    assert!(s.profit > 0.0);
    // The checker ran at 0, 2, 4, 6, 8 and 10 s (and a bit), every stage was applied.
    assert_eq!(report.checks.len(), 6, "{:#?}", report.checks);
    assert_eq!(report.applied.len(), 6);
    assert!(report.applied.iter().all(|a| a.errors.is_empty()));
    // The results file carries the official fields and the chart renders.
    let json: serde_json::Value =
        serde_json::from_str(&report.json().expect("json")).expect("valid json");
    for field in [
        "total_liquido",
        "total_bruto",
        "total_taxas",
        "p99",
        "multa",
        "lag",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["lag"]["lag"], 0);
    assert_eq!(json["multa"]["composicao"]["num_inconsistencias"], 0);
    // The preview's file keeps its shape: no final-only fields, the backend's teardown summary.
    assert!(json.get("timestamp").is_none());
    assert!(json["bench"].get("profile").is_none());
    assert!(json["bench"].get("processor_seconds").is_none());
    assert!(json["bench"]["teardown"].get("backend").is_some());
    assert!(json["bench"]["checks"][0].get("sides").is_none());
    let svg = rinha_bench::contest::chart::svg(report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

fn forgetting_payments_when_both_processors_fail_shows_as_lag(report: &Report) {
    assert!(report.score.lag > 0, "lag {}", report.score.lag);
    let drain = report.drain.as_ref().expect("drain");
    assert!(
        drain.problems.iter().any(|p| p.contains("missing")),
        "{:?}",
        drain.problems
    );
    assert!(!report.strict_failures().is_empty());
}

fn recording_before_the_processor_answers_shows_as_inconsistency(report: &Report) {
    assert!(report.score.inconsistencies > 0, "{:#?}", report.checks);
    assert_eq!(report.score.fine, 0.35);
    assert!(report
        .strict_failures()
        .iter()
        .any(|w| w.contains("inconsistencies")));
}

fn counting_a_payment_on_both_processors_shows_as_negative_lag(report: &Report) {
    assert!(report.score.lag < 0, "lag {}", report.score.lag);
    assert!(report.score.disqualified);
    let failures = report.strict_failures();
    assert!(
        failures.iter().any(|w| w.contains("negative lag")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|w| w.contains("counted twice")),
        "{failures:?}"
    );
}

fn summaries_slower_than_the_timeout_count_as_zeros(report: &Report) {
    // Every check after the first payments sees the backend as 0 against the processors' count.
    assert!(report.score.inconsistencies > 0, "{:#?}", report.checks);
    assert!(report
        .checks
        .iter()
        .skip(1)
        .all(|c| c.backend == 0 && c.error.is_some()));
    // The teardown summary timed out too: zeros, so the whole run is lag.
    assert_eq!(report.teardown.counted().total_requests(), 0);
    assert_eq!(report.score.lag, report.snapshot.counts.success as i64);
    assert!(
        report.notes.iter().any(|n| n.contains("counted as zeros")),
        "{:?}",
        report.notes
    );
}
