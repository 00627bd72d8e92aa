//! serde_json vs sonic-rs on the exact `POST /payments` body, both zero-copy and both
//! yielding the amount as its exact decimal text (serde_json `RawValue`, sonic-rs
//! `LazyValue`), followed by the same UUID parse and decimal -> cents.
//!
//! Also the cost of intake's accepted-id map per payment (`intake/`).
//!
//! Run: `cargo bench -p rinha --bench payment_body`
//! (sonic-rs uses SIMD only when built with `RUSTFLAGS="-C target-feature=+avx2,+pclmulqdq"`;
//! the figures say which build they are from). Results: docs/benchmarks.md,
//! "Micro-benchmarks".

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde::Deserialize;
use uuid::Uuid;

const BODY: &[u8] = br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.90}"#;

#[derive(Deserialize)]
struct SerdeBody<'a> {
    #[serde(rename = "correlationId", borrow)]
    correlation_id: &'a str,
    #[serde(borrow)]
    amount: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
struct SonicBody<'a> {
    #[serde(rename = "correlationId", borrow)]
    correlation_id: &'a str,
    #[serde(borrow)]
    amount: sonic_rs::LazyValue<'a>,
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("payment_body");
    g.bench_function("rinha::payment::parse (serde_json)", |b| {
        b.iter(|| rinha::payment::parse(black_box(BODY)).unwrap())
    });
    g.bench_function("serde_json RawValue", |b| {
        b.iter(|| {
            let body: SerdeBody<'_> = serde_json::from_slice(black_box(BODY)).unwrap();
            let id = Uuid::try_parse(body.correlation_id).unwrap();
            let cents = rinha::payment::decimal_to_cents(body.amount.get().as_bytes()).unwrap();
            (id, cents)
        })
    });
    g.bench_function("sonic-rs LazyValue", |b| {
        b.iter(|| {
            let body: SonicBody<'_> = sonic_rs::from_slice(black_box(BODY)).unwrap();
            let id = Uuid::try_parse(body.correlation_id).unwrap();
            let cents =
                rinha::payment::decimal_to_cents(body.amount.as_raw_str().as_bytes()).unwrap();
            (id, cents)
        })
    });
    g.finish();
    // What intake adds per payment to remember its id (src/ids.rs): a map of 40,000 ids,
    // each new one taken and given back so the map stays the same size.
    let ids = rinha::ids::AcceptedIds::with_capacity(1 << 15);
    for n in 0..40_000u128 {
        ids.take(Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)), 1990);
    }
    let mut n = 1u128 << 100;
    c.bench_function("intake/accepted id take (new id)", |b| {
        b.iter(|| {
            n += 1;
            let id = Uuid::from_u128(n);
            let seen = ids.take(black_box(id), 1990);
            ids.remove(&id);
            seen
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
