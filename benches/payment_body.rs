//! serde_json vs sonic-rs on the exact `POST /payments` body, both zero-copy and both
//! yielding the amount as its exact decimal text (serde_json `RawValue`, sonic-rs
//! `LazyValue`), followed by the same UUID parse and decimal -> cents.
//!
//! Run: `cargo bench -p rinha --bench payment_body`
//! (sonic-rs uses SIMD only when built with `RUSTFLAGS="-C target-feature=+avx2,+pclmulqdq"`;
//! the figures below say which build they are from). Results: in `src/payment.rs`.

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
