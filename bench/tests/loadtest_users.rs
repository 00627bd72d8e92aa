//! The virtual users on their own, against raw TCP servers: a server that closes every
//! connection after one answer costs no failed request (users reconnect), a server that never
//! answers makes every POST a timeout at 1.5 s, and the run ends within one iteration of the
//! duration (k6's graceful stop).

use std::sync::Arc;
use std::time::Duration;

use rinha_bench::contest::client::Endpoint;
use rinha_bench::contest::users::{users_alone, Ramp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves each connection with `serve`, on port 0.
async fn server<F, Fut>(serve: F) -> Endpoint
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

async fn run(
    target: Endpoint,
    users: u64,
    secs: u64,
) -> (rinha_bench::contest::recorder::Snapshot, Duration) {
    let ramp = Ramp {
        max: users,
        duration: Duration::from_secs(secs),
    };
    users_alone(target, ramp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reconnect_when_the_server_closes_after_each_answer() {
    let target = server(|mut stream| async move {
        let mut buf = vec![0u8; 4096];
        // One request (small enough for one read), one answer, then close.
        if stream.read(&mut buf).await.unwrap_or(0) > 0 {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    })
    .await;
    let (snapshot, elapsed) = run(target, 20, 3).await;
    assert!(snapshot.counts.success >= 30, "{:?}", snapshot.counts);
    assert_eq!(snapshot.counts.failed(), 0, "{:?}", snapshot.counts);
    // Graceful stop: at most one iteration (request + 1 s sleep) past the duration.
    assert!(
        elapsed < Duration::from_millis(3000 + 1500 + 1000 + 300),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_every_post_out_at_1_5_s() {
    let target = server(|mut stream| async move {
        let mut buf = vec![0u8; 4096];
        while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
    })
    .await;
    let (snapshot, elapsed) = run(target, 5, 2).await;
    assert_eq!(snapshot.counts.success, 0);
    // Users 1..4 start at 0, 0.5, 1 and 1.5 s (the 5th would at the end): one POST each.
    assert_eq!(snapshot.counts.timeout, 4, "{:?}", snapshot.counts);
    assert_eq!(snapshot.counts.timeout, snapshot.counts.total());
    assert!(
        snapshot.all.is_empty(),
        "failed requests stay out of the p99"
    );
    assert!(elapsed >= Duration::from_millis(2000 + 1500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2000 + 1500 + 1000 + 500),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_2xx_answer_is_a_failed_post() {
    let target = server(|mut stream| async move {
        let mut buf = vec![0u8; 4096];
        while stream.read(&mut buf).await.unwrap_or(0) > 0 {
            let answer = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (snapshot, _) = run(target, 3, 1).await;
    assert_eq!(snapshot.counts.success, 0);
    assert!(snapshot.counts.bad_status >= 2, "{:?}", snapshot.counts);
    assert_eq!(snapshot.statuses, vec![(500, snapshot.counts.bad_status)]);
}
