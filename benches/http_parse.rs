//! Our httparse-based framing on the exact requests the contest sends: one
//! `POST /payments` as k6 sends it, and ten pipelined in one buffer.
//!
//! Run: `cargo bench -p rinha --bench http_parse`. Results: docs/benchmarks.md, "Micro-benchmarks".

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rinha::http::request::{parse, Parsed};

/// What k6 sends (headers as captured from its default HTTP client).
pub const K6_POST: &[u8] = b"POST /payments HTTP/1.1\r\nHost: localhost:9999\r\nUser-Agent: k6/0.49.0 (https://k6.io/)\r\nContent-Length: 70\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n{\"correlationId\":\"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3\",\"amount\":19.9}";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rinha httparse framing, one POST", |b| {
        b.iter(|| match parse(black_box(K6_POST)) {
            Parsed::Complete(r, n) => (r.body.len(), n),
            _ => unreachable!(),
        })
    });
    let ten: Vec<u8> = K6_POST.repeat(10);
    g.throughput(Throughput::Elements(10));
    g.bench_function("rinha httparse framing, ten pipelined", |b| {
        b.iter(|| {
            let mut at = 0;
            let buf = black_box(&ten[..]);
            while let Parsed::Complete(_, n) = parse(&buf[at..]) {
                at += n;
            }
            at
        })
    });
    #[cfg(feature = "bench-monoio-http")]
    monoio_http_codec(&mut g);
    g.finish();
}

/// monoio-http's server-side head decoder plus the body split its fixed-length decoder does
/// (`FixedBodyDecoder` is `split_to(len)`; its length field is private), on the same bytes.
#[cfg(feature = "bench-monoio-http")]
fn monoio_http_codec(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use bytes::BytesMut;
    use monoio_codec::{Decoded, Decoder};
    use monoio_http::h1::codec::decoder::RequestHeadDecoder;

    fn one(src: &mut BytesMut) -> usize {
        let head = match RequestHeadDecoder.decode(src) {
            Ok(Decoded::Some(h)) => h,
            _ => unreachable!(),
        };
        let len: usize = head
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        src.split_to(len).freeze().len()
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("monoio-http codec, one POST", |b| {
        b.iter_batched(
            || BytesMut::from(K6_POST),
            |mut src| one(&mut src),
            criterion::BatchSize::SmallInput,
        )
    });
    let ten = K6_POST.repeat(10);
    g.throughput(Throughput::Elements(10));
    g.bench_function("monoio-http codec, ten pipelined", |b| {
        b.iter_batched(
            || BytesMut::from(&ten[..]),
            |mut src| {
                let mut n = 0;
                while !src.is_empty() {
                    n += one(&mut src);
                }
                n
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
