//! `rinha --profile final`, shortened (10 s, 20 users), through the library entry point against
//! the tiny backends of the load test's own tests and real emulated processors charging the
//! final's fees (7 % / 10 %): the ten stages are applied, the checks count per processor, the
//! teardown reads only the processors (their `feePerTransaction`, their totals, the lag against
//! them), and the results file has the shape of `rinha-final.js`'s `handleSummary`.

mod loadtest_support;

use loadtest_support::{run_tiny, Mode};
use rinha_bench::contest::Report;
use rinha_bench::profile::Inconsistency;

/// Starts two processors at 7 % / 10 % and a tiny backend, runs the shortened final.
async fn run_final(mode: Mode) -> Report {
    let flags = [
        "--profile",
        "final",
        "--duration",
        "10",
        "--max-requests",
        "20",
    ];
    run_tiny(mode, (7, 10), &flags).await
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.005
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_profile_runs_rinha_final_js_shortened() {
    let (correct, forgets) = tokio::join!(
        run_final(Mode::Correct),
        run_final(Mode::ForgetsWhenBothFail)
    );
    for report in [&correct, &forgets] {
        the_run_follows_the_final(report);
        the_score_comes_from_the_processors(report);
        the_results_file_has_the_final_shape(report);
    }
    // The correct backend sends to the default only and stores every payment in the end.
    assert_eq!(correct.teardown.fallback.total_requests, 0);
    assert!(correct.snapshot.counts.success > 50, "{}", correct.table());
    // The forgetful one falls back while the default fails (5 s delay, fallback at 5 ms):
    // the fallback's 10 % is in the fees.
    let f = &forgets.teardown.fallback;
    assert!(f.total_requests > 0, "{}", forgets.table());
}

fn the_run_follows_the_final(report: &Report) {
    assert_eq!(report.max_requests, 20);
    assert_eq!(report.duration_secs, 10);
    // Ten stages, at the final's seconds scaled to 10 s, each applied without error.
    let at: Vec<u128> = report.stages.iter().map(|s| s.at.as_millis()).collect();
    assert_eq!(
        at,
        [33, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
    );
    assert_eq!(report.applied.len(), 10);
    assert!(report.applied.iter().all(|a| a.errors.is_empty()));
    // A check every 10/300 of the run, over [now-15 s, now-2 s], counted per processor.
    assert!(report.checks.len() >= 20, "{:#?}", report.checks);
    for check in &report.checks {
        let s = check.sides.expect("the final keeps each side");
        assert_eq!(
            check.inconsistencies,
            Inconsistency::PerProcessor.count(
                (s.backend_default, s.backend_fallback),
                (s.processor_default, s.processor_fallback)
            )
        );
        let (from, to) = check.window.split_once("&to=").expect("two bounds");
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("iso");
        let span = parse(to) - parse(from.trim_start_matches("?from="));
        assert_eq!(span.num_milliseconds(), 13_000, "{}", check.window);
    }
    let counted: u64 = report.checks.iter().map(|c| c.inconsistencies).sum();
    assert_eq!(report.score.inconsistencies, counted);
    // The processors were read once a second.
    assert!(report.held.len() >= 8, "{:?}", report.held);
}

fn the_score_comes_from_the_processors(report: &Report) {
    let t = &report.teardown;
    let s = &report.score;
    // The final reads no backend summary at teardown, over [now-360 s, now].
    assert!(t.backend.is_none());
    let (from, to) = t.window.split_once("&to=").expect("two bounds");
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("iso");
    let span = parse(to) - parse(from.trim_start_matches("?from="));
    assert_eq!(span.num_seconds(), 360);
    // Fees as the processors report them: 7 % and 10 %.
    assert_eq!(t.default.fee_per_transaction, 0.07);
    assert_eq!(t.fallback.fee_per_transaction, 0.1);
    assert!(
        report.notes.iter().all(|n| !n.contains("charges")),
        "{:?}",
        report.notes
    );
    let (d, f) = (t.default.total_amount, t.fallback.total_amount);
    assert!(close(s.gross, d + f), "gross {} = {d} + {f}", s.gross);
    assert!(close(s.fees, 0.07 * d + 0.10 * f), "fees {}", s.fees);
    // Every payment is 20.05.
    let stored = t.default.total_requests + t.fallback.total_requests;
    assert!(close(s.gross, 20.05 * stored as f64), "gross {}", s.gross);
    // lag = successful POSTs - what the processors stored.
    assert_eq!(
        s.lag,
        report.snapshot.counts.success as i64 - stored as i64,
        "{}",
        report.table()
    );
}

fn the_results_file_has_the_final_shape(report: &Report) {
    let json: serde_json::Value =
        serde_json::from_str(&report.json().expect("json")).expect("valid json");
    let s = &report.score;
    let t = &report.teardown;
    for field in [
        "timestamp",
        "participante",
        "total_liquido",
        "total_bruto",
        "total_taxas",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["total_liquido"], s.profit);
    assert_eq!(json["p99"]["max_requests"], 20);
    assert!(json["p99"]["valor"].as_str().unwrap().ends_with("ms"));
    assert!(json["p99"]["bonus"].as_str().unwrap().ends_with('%'));
    assert_eq!(json["multa"]["porcentagem"], s.fine);
    assert_eq!(
        json["multa"]["composicao"]["num_inconsistencias"],
        s.inconsistencies
    );
    assert_eq!(json["caixa_dois"]["detectado"], s.lag < 0);
    let stored = t.default.total_requests + t.fallback.total_requests;
    assert_eq!(json["lag"]["num_pagamentos_total"], stored);
    assert_eq!(
        json["lag"]["num_pagamentos_solicitados"],
        report.snapshot.counts.success
    );
    assert_eq!(json["lag"]["lag"], s.lag);
    assert_eq!(
        json["pagamentos_solicitados"]["qtd_sucesso"],
        report.snapshot.counts.success
    );
    assert!(json["pagamentos_solicitados"]["qtd_falha"].is_u64());
    for (side, summary, fee) in [
        ("pagamentos_realizados_default", &t.default, 0.07),
        ("pagamentos_realizados_fallback", &t.fallback, 0.10),
    ] {
        assert_eq!(json[side]["num_pagamentos"], summary.total_requests);
        let gross = json[side]["total_bruto"].as_f64().unwrap();
        assert!(close(gross, summary.total_amount), "{side}");
        let fees = json[side]["total_taxas"].as_f64().unwrap();
        assert!(close(fees, fee * summary.total_amount), "{side}: {fees}");
    }
    // Ours: the profile, and the processors' side second by second.
    assert_eq!(json["bench"]["profile"], "final");
    assert!(json["bench"]["teardown"].get("backend").is_none());
    let seconds = json["bench"]["processor_seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), report.held.len());
    let stored_per_s: u64 = seconds
        .iter()
        .map(|s| {
            s["default_stored"].as_u64().unwrap_or(0) + s["fallback_stored"].as_u64().unwrap_or(0)
        })
        .sum();
    let last = seconds.last().unwrap();
    assert_eq!(
        stored_per_s,
        last["default_held"].as_u64().unwrap() + last["fallback_held"].as_u64().unwrap()
    );
    // The chart gains the processors' panel.
    let svg = rinha_bench::contest::chart::svg(report);
    assert!(svg.contains("payments stored per second by each processor"));
    assert!(svg.trim_end().ends_with("</svg>"));
}
