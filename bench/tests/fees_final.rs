//! The final with fees it cannot read: the local stack's backends get a wrong
//! `PROCESSOR_TOKEN`, so every fee read answers 401. Each backend must say so in its log, and
//! the final (shortened to 60 s and 300 users: ~9,000 payments, so 0.1 % is 9 of them, above
//! the handful a run leaves in flight at its end) must still store all but 0.1 % of the
//! payments by the teardown, with no inconsistency: what routing assumes without fees must
//! not make it wait for a slow default past the end.

use std::path::PathBuf;
use std::time::Duration;

use rinha_bench::contest::{run_test, Args};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The logs of this process's stacks' backends (the stack keeps them after the run).
fn backend_logs() -> Vec<(PathBuf, String)> {
    let prefix = format!("rinha-stack-{}-", std::process::id());
    let mut logs = Vec::new();
    for dir in std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
    {
        if !dir.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for n in 1..=2 {
            let path = dir.path().join(format!("backend-{n}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            logs.push((path, text));
        }
    }
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_with_a_wrong_token_warns_and_stores_all_but_a_tenth_of_a_percent() {
    let flags = [
        "--profile".to_owned(),
        "final".to_owned(),
        "--duration".to_owned(),
        "60".to_owned(),
        "--max-requests".to_owned(),
        "300".to_owned(),
        "--quiet".to_owned(),
        "--backend-env".to_owned(),
        "PROCESSOR_TOKEN=not-the-token".to_owned(),
        "--lb-port".to_owned(),
        free_port().to_string(),
        "--default-port".to_owned(),
        free_port().to_string(),
        "--fallback-port".to_owned(),
        free_port().to_string(),
        "--bench-bin".to_owned(),
        env!("CARGO_BIN_EXE_rinha-bench").to_owned(),
        "--up-timeout".to_owned(),
        "60".to_owned(),
    ];
    let args = Args::from_flags(flags).expect("flags");
    let report = tokio::time::timeout(Duration::from_secs(600), run_test(&args))
        .await
        .expect("the run is bounded")
        .expect("the run completes");
    let table = report.table();
    let logs = backend_logs();
    assert_eq!(logs.len(), 2, "one stack, two backends: {logs:?}");
    for (path, text) in &logs {
        assert!(
            text.lines().any(|l| l.contains("WARN")
                && l.contains("cannot read the processor's fee")
                && l.contains("PROCESSOR_TOKEN")),
            "{} does not warn about the fees:\n{text}",
            path.display()
        );
    }
    let successful = report.snapshot.counts.success;
    assert!(successful > 5_000, "{table}");
    assert!(report.score.lag >= 0, "{table}");
    assert!(
        report.score.lag as u64 * 1000 <= successful,
        "lag {} of {successful} is over 0.1 %\n{table}",
        report.score.lag
    );
    assert_eq!(report.score.inconsistencies, 0, "{table}");
}
