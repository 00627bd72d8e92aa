//! The local stack (`rinha_bench::stack`): real processors (`rinha-bench processor` child
//! processes) on free ports, and fake backends that fail in the ways a stack start must report
//! clearly: a part that exits at once, a part that never listens, a port already taken.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rinha_bench::stack::{Stack, StackError, StackOpts};

/// A port that was free a moment ago (bound on port 0, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A temp dir of this test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stack-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An executable shell script.
fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn opts(rinha: PathBuf, lb: PathBuf) -> StackOpts {
    StackOpts {
        lb_port: free_port(),
        default_port: free_port(),
        fallback_port: free_port(),
        rinha_bin: Some(rinha),
        lb_bin: Some(lb),
        bench_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_rinha-bench"))),
        backend_env: vec!["RUST_LOG=debug".into()],
        lb_env: vec![],
        up_timeout: 3,
        no_build: true,
        journal: false,
        profile: Default::default(),
        default_fee: None,
        fallback_fee: None,
        lb_mode: Default::default(),
        instances: None,
        backend_port: 9998,
    }
}

/// Nothing answers on the port any more (the processor was stopped).
async fn closed(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_backend_that_exits_is_named_with_its_log_and_everything_stops() {
    let dir = temp_dir("exits");
    let rinha = script(
        &dir,
        "rinha",
        "echo \"no luck: LISTEN=$LISTEN PEERS=$PEERS\" >&2; exit 3",
    );
    let lb = script(&dir, "lb", "exit 1");
    let opts = opts(rinha, lb);
    let err = Stack::start(&opts).await.expect_err("the backend exits");
    let text = err.to_string();
    assert!(matches!(err, StackError::Exited { .. }), "{text}");
    assert!(text.contains("backend-1"), "{text}");
    // The tail of its output names the env the stack gave it.
    assert!(text.contains("no luck: LISTEN=unix:"), "{text}");
    assert!(text.contains("backend-1.sock PEERS=unix:"), "{text}");
    assert!(text.contains("backend-2.peer.sock"), "{text}");
    // The processors came up first, and were killed with the failed stack.
    assert!(closed(opts.default_port).await && closed(opts.fallback_port).await);
}

#[tokio::test]
async fn a_part_that_never_listens_is_reported_after_the_timeout() {
    let dir = temp_dir("silent");
    let rinha = script(
        &dir,
        "rinha",
        "echo starting but never listening >&2; exec sleep 30",
    );
    let lb = script(&dir, "lb", "exit 1");
    // Room for the processors to come up on a busy machine; the backend then uses it all.
    let opts = StackOpts {
        up_timeout: 6,
        ..opts(rinha, lb)
    };
    let began = Instant::now();
    let err = Stack::start(&opts).await.expect_err("never up");
    let text = err.to_string();
    assert!(matches!(err, StackError::NotUp { .. }), "{text}");
    assert!(
        text.contains("backend-1") && text.contains("starting but never listening"),
        "{text}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "bounded by --up-timeout"
    );
}

#[tokio::test]
async fn a_busy_port_is_refused_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut opts = opts(PathBuf::from("/bin/true"), PathBuf::from("/bin/true"));
    opts.lb_port = taken.local_addr().expect("addr").port();
    let err = Stack::start(&opts).await.expect_err("port taken");
    assert!(matches!(err, StackError::PortBusy { .. }), "{err}");
    assert!(err.to_string().contains("rinha-lb"), "{err}");
}

#[tokio::test]
async fn a_missing_binary_names_the_flag() {
    let mut opts = opts(
        PathBuf::from("/nonexistent/rinha"),
        PathBuf::from("/bin/true"),
    );
    opts.no_build = true;
    let err = Stack::start(&opts).await.expect_err("missing");
    assert!(err.to_string().contains("--rinha-bin"), "{err}");
}

#[test]
fn bad_extra_env_is_refused() {
    let mut opts = opts(PathBuf::from("/bin/true"), PathBuf::from("/bin/true"));
    opts.backend_env = vec!["NOEQUALS".into()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = runtime.block_on(Stack::start(&opts)).expect_err("bad env");
    assert!(matches!(err, StackError::BadEnv(_)), "{err}");
}

/// The whole local stack with the real `rinha` and `rinha-lb` (built by the stack itself with
/// the test profile when `CARGO` is set, as under `cargo test`), then a short contest run
/// through it: every part answers, and stopping it frees every port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_stack_comes_up_serves_a_short_run_and_stops() {
    let opts = StackOpts {
        rinha_bin: None,
        lb_bin: None,
        no_build: false,
        journal: false,
        up_timeout: 20,
        backend_env: vec![],
        ..opts(PathBuf::new(), PathBuf::new())
    };
    let stack = tokio::time::timeout(Duration::from_secs(600), Stack::start(&opts))
        .await
        .expect("bounded")
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let description = stack.describe();
    for part in [
        "default processor",
        "fallback processor",
        "backend-1",
        "backend-2",
        "rinha-lb",
    ] {
        assert!(description.contains(part), "{description}");
    }
    let args = rinha_bench::contest::Args::from_flags([
        "--target",
        &stack.lb_url(),
        "--default",
        &stack.default_url(),
        "--fallback",
        &stack.fallback_url(),
        "--duration",
        "6",
        "--max-requests",
        "30",
        "--quiet",
    ])
    .expect("flags");
    let report = rinha_bench::contest::run_test(&args).await.expect("run");
    let counts = report.snapshot.counts;
    assert!(counts.success > 50, "{counts:?}\n{}", report.table());
    assert_eq!(counts.failed(), 0, "{}", report.table());
    assert!(report.score.lag >= 0, "{}", report.table());
    assert!(report.score.gross > 0.0, "{}", report.table());
    stack.stop().await;
    for port in [opts.lb_port, opts.default_port, opts.fallback_port] {
        assert!(closed(port).await, "port {port} still answers");
    }
}

/// A run that starts the local stack itself reports what each payment cost its backends' and
/// lb's threads (and not the processors', the instrument's): CPU and wake-ups, per process
/// and thread role, counted over the run's successful POSTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_the_local_stack_reports_what_a_payment_costs() {
    let mut args = rinha_bench::contest::Args::from_flags([
        "--duration",
        "4",
        "--max-requests",
        "20",
        "--quiet",
    ])
    .expect("flags");
    args.stack = StackOpts {
        rinha_bin: None,
        lb_bin: None,
        no_build: false,
        up_timeout: 20,
        backend_env: vec![],
        ..opts(PathBuf::new(), PathBuf::new())
    };
    let report = tokio::time::timeout(
        Duration::from_secs(600),
        rinha_bench::contest::run_test(&args),
    )
    .await
    .expect("bounded")
    .expect("run");
    let cost = &report.cost;
    let names: Vec<&str> = cost.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["backend-1", "backend-2", "rinha-lb"],
        "{}",
        report.table()
    );
    assert_eq!(cost.payments, report.snapshot.counts.success);
    let total = cost.total();
    assert!(total.cpu_ns > 0 && total.runs > 0, "{total:?}");
    // The backends' work is their cores' (intake and senders).
    let cores = cost.processes[0].roles["cores (intake, senders)"];
    assert!(cores.cpu_ns > 0 && cores.runs > 0, "{cores:?}");
    assert!(
        report.table().contains("cost per payment"),
        "{}",
        report.table()
    );
    let json: serde_json::Value = serde_json::from_str(&report.json().unwrap()).unwrap();
    assert_eq!(json["bench"]["cost"]["per_payment"][0]["what"], "stack");
}
