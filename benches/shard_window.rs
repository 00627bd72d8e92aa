//! The cost of a summary's window over one shard's records (10,000 and 40,000 of them, over
//! 36 s, the window over the middle 13.5 s); and of the `requestedAt` stamp every attempt
//! takes, with the shard's memory of answers full.
//!
//! Run: `cargo bench -p rinha --bench shard_window`. Results: docs/benchmarks.md, "Micro-benchmarks".

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rinha::processor::Processor;
use rinha::store::Shard;
use rinha::summary::Window;

fn bench(c: &mut Criterion) {
    // 10,000 records: a core's last minute at ~170 payments a second; 40,000: at ~670.
    for records in [10_000i64, 40_000] {
        let shard = Shard::new();
        let base = 1_752_582_896_000_000i64;
        let every_us = 36_000_000 / records; // the records span 36 s
        for i in 0..records {
            let at = base + i * every_us / 1_000 * 1_000; // stamps are whole milliseconds
            let p = if i % 10 == 0 {
                Processor::Fallback
            } else {
                Processor::Default
            };
            let a = shard.begin_attempt(at, p);
            shard.record(a, at, 1990, p);
        }
        let window = Window {
            from_us: Some(base + 10_000_000),
            to_us: Some(base + 23_500_000),
        };
        c.bench_function(&format!("shard window, {}k records", records / 1000), |b| {
            b.iter(|| shard.window(black_box(window)))
        });
    }
}

fn stamp(c: &mut Criterion) {
    let shard = Shard::new();
    let start = std::time::Instant::now();
    for i in 0..4096u64 {
        let sent = start + std::time::Duration::from_micros(i * 3_600);
        shard.timing.observe_response(
            Processor::Default,
            sent,
            std::time::Duration::from_millis(2),
        );
    }
    c.bench_function("attempt stamp, answers remembered in full", |b| {
        b.iter(|| shard.timing.stamp_us(black_box(Processor::Default)))
    });
}

criterion_group!(benches, bench, stamp);
criterion_main!(benches);
