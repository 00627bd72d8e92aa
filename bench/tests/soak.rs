//! A short soak (`rinha_bench::soak`) through the real local stack, backends journaled
//! (`--journal`, as in compose): a 2 s warm-up burst, then 20 s of valid payments at 300/s,
//! sampled every second. It must pass every check the 10-minute run makes (RSS and fd count
//! flat, zero errors, summary exact), and each check must be able to fail: a sample series
//! that grows is judged a leak.

use std::path::PathBuf;
use std::time::Duration;

use rinha_bench::soak::{self, Flatness, Sample};
use rinha_bench::stack::StackOpts;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_passes_every_check() {
    let args = soak::Args {
        stack: StackOpts {
            lb_port: free_port(),
            default_port: free_port(),
            fallback_port: free_port(),
            rinha_bin: None,
            lb_bin: None,
            bench_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_rinha-bench"))),
            backend_env: vec![],
            lb_env: vec![],
            up_timeout: 20,
            no_build: false,
            journal: true,
            profile: Default::default(),
            default_fee: None,
            fallback_fee: None,
            lb_mode: Default::default(),
            instances: None,
            backend_port: 9998,
        },
        rate: 300.0,
        duration: 20,
        connections: 16,
        warmup_secs: 2,
        warmup_connections: 64,
        sample_secs: 1,
    };
    let outcome = tokio::time::timeout(Duration::from_secs(600), soak::soak(&args))
        .await
        .expect("bounded")
        .expect("the soak ran");
    let summary = format!(
        "{}ok {} non-2xx {} lost {}\ntotals {:?} {:?} {:?}\nfailures {:?}",
        outcome.table,
        outcome.ok,
        outcome.non_2xx,
        outcome.errors,
        outcome.backend_totals,
        outcome.processor_totals,
        outcome.post_totals,
        outcome.failures
    );
    assert!(outcome.failures.is_empty(), "{summary}");
    // About 20 s x 300/s went through, every one counted once everywhere.
    assert!(outcome.ok > 5_000, "{summary}");
    assert_eq!(outcome.backend_totals.0, outcome.ok, "{summary}");
    assert_eq!(
        outcome.processor_totals, outcome.backend_totals,
        "{summary}"
    );
    // Every stack process was sampled all along.
    assert_eq!(outcome.series.len(), 5, "{summary}");
    for series in &outcome.series {
        assert!(series.samples.len() >= 15, "{summary}");
        assert!(series.samples.iter().all(|s| s.rss_kib > 0 && s.fds > 0));
    }
}

#[test]
fn a_growing_series_is_judged_a_leak() {
    // 1 MiB and one descriptor more every sample, in the load balancer.
    let samples: Vec<Sample> = (0..40u32)
        .map(|i| Sample {
            at_secs: f64::from(i),
            rss_kib: 50_000 + 1024 * u64::from(i),
            fds: 10 + u64::from(i),
        })
        .collect();
    let flat = Flatness::of(&samples).expect("quarters");
    let verdict = soak::judge("rinha-lb", &flat, 0);
    assert_eq!(verdict.failures.len(), 2, "{verdict:?}");
    // The same samples, flat: nothing to say.
    let flat_samples: Vec<Sample> = samples
        .iter()
        .map(|s| Sample {
            rss_kib: 50_000 + (s.at_secs as u64 % 3) * 100,
            fds: 10,
            ..*s
        })
        .collect();
    let flat = Flatness::of(&flat_samples).expect("quarters");
    assert!(soak::judge("rinha-lb", &flat, 0).failures.is_empty());
}
