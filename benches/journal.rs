//! Cost of journaling one payment: `accepted` + `attempt` + `confirmed` appended, then one
//! group commit per batch of 1, 16 or 128 payments, with `JOURNAL_SYNC` none and batch.
//!
//! Each reported time is per payment (the batch time divided by the batch size). The file
//! is recreated, untimed, every ~100k payments so the run does not fill the disk. It lives
//! in `JOURNAL_BENCH_DIR` (default: the system temp dir); use a real disk, not tmpfs, or
//! `batch` measures nothing.
//!
//! Run: `cargo bench -p rinha --bench journal`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rinha::journal::record::{self, Event};
use rinha::journal::{Confirmed, Journal, Processor, SyncMode};
use uuid::Uuid;

/// Payments written to one file before it is recreated.
const PAYMENTS_PER_FILE: u64 = 100_000;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("JOURNAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temp dir for the bench journal")
}

fn per_payment(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_per_payment");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, sync) in [("none", SyncMode::None), ("batch", SyncMode::Batch)] {
        for batch in [1u64, 16, 128] {
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, &batch| {
                let dir = bench_dir();
                let mut next_id = 0u128;
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let batches = (iters - done).min((PAYMENTS_PER_FILE / batch).max(1));
                        let (mut journal, _) =
                            Journal::open(dir.path(), 0, sync).expect("open bench journal");
                        let start = Instant::now();
                        for _ in 0..batches {
                            for _ in 0..batch {
                                next_id += 1;
                                let id = black_box(Uuid::from_u128(next_id));
                                journal.accepted(id, 1990);
                                journal.attempt(id, Processor::Default, 1_752_582_896_000_000);
                                journal.confirmed(
                                    id,
                                    Processor::Default,
                                    1_752_582_896_000_000,
                                    1990,
                                );
                            }
                            journal.commit().expect("commit");
                        }
                        timed += start.elapsed();
                        let path = journal.path().to_owned();
                        drop(journal);
                        std::fs::remove_file(path).expect("remove bench journal");
                        done += batches;
                    }
                    timed / batch as u32
                });
            });
        }
    }
    group.finish();
}

/// The CPU part alone: encoding and checksumming the three records into the buffer, with
/// no syscall. The difference to `journal_per_payment/none` is the copy into the mapped
/// file and its growth (a `fallocate` and an `mmap` per doubling).
fn encode_only(c: &mut Criterion) {
    let mut buf = Vec::with_capacity(128 * 3 * record::MAX_RECORD_LEN);
    let mut next_id = 0u128;
    c.bench_function("journal_encode_per_payment", |b| {
        b.iter(|| {
            // Clear as a commit would, every 128 payments.
            if buf.len() >= 128 * 106 {
                buf.clear();
            }
            next_id += 1;
            let id = black_box(Uuid::from_u128(next_id));
            let at = 1_752_582_896_000_000;
            record::encode(&mut buf, &Event::Accepted { id, cents: 1990 });
            let processor = Processor::Default;
            record::encode(
                &mut buf,
                &Event::Attempt {
                    id,
                    processor,
                    requested_at_us: at,
                },
            );
            record::encode(
                &mut buf,
                &Event::Confirmed(Confirmed {
                    id,
                    processor,
                    requested_at_us: at,
                    cents: 1990,
                }),
            );
        });
    });
}

criterion_group!(benches, per_payment, encode_only);
criterion_main!(benches);
