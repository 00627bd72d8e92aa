//! The local stack of docs/architecture.md as child processes: two payment
//! processors (`rinha-bench processor`, the fees of `--profile`: 0.05 and 0.15 for the preview,
//! 0.07 and 0.10 for the final), two `rinha` backends on unix sockets in a temp dir (each
//! peering the other) or `--instances N` on TCP loopback addresses ([`instances`]), and
//! `rinha-lb` in front of them.
//!
//! [`Stack`] is what `rinha`, `drivers` and `soak` run against; dropping it kills every child.
//! [`command`] is `rinha-bench stack`, the stack alone in the foreground.

mod bins;
pub mod command;
pub mod instances;
mod part;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use part::{Addr, Part};

use crate::profile::ProfileName;
use rinha_emulator::Fee;

/// How long a port the stack needs may stay busy before the start fails (a previous
/// stack's sockets on the same ports, just stopped).
const PORT_GRACE: Duration = Duration::from_secs(5);

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot find {name} at {path:?} (build it, or pass --{flag})")]
    Missing {
        name: &'static str,
        path: PathBuf,
        flag: &'static str,
    },
    #[error("building rinha and rinha-lb failed: {0}")]
    Build(String),
    #[error("{part}: port {port} is already in use ({source}); pick another with the port flags")]
    PortBusy {
        part: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{part}: cannot start {program:?}: {source}")]
    Spawn {
        part: String,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{part} exited ({status}) before accepting connections; log {log:?} ends with:\n{tail}"
    )]
    Exited {
        part: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{part} did not accept connections on {addr} in time; log {log:?} ends with:\n{tail}")]
    NotUp {
        part: String,
        addr: String,
        log: PathBuf,
        tail: String,
    },
    #[error("bad --backend-env/--lb-env {0:?}: expected KEY=VAL")]
    BadEnv(String),
    #[error("temp dir: {0}")]
    Io(#[from] std::io::Error),
}

/// Where and how the stack runs (shared by `stack` and `rinha`).
#[derive(Debug, Clone, clap::Args)]
pub struct StackOpts {
    /// Port of the load balancer.
    #[arg(long, default_value_t = 9999)]
    pub lb_port: u16,
    /// Port of the default processor.
    #[arg(long, default_value_t = 8001)]
    pub default_port: u16,
    /// Port of the fallback processor.
    #[arg(long, default_value_t = 8002)]
    pub fallback_port: u16,
    /// The backend binary (default: `rinha` next to this executable).
    #[arg(long)]
    pub rinha_bin: Option<PathBuf>,
    /// The load-balancer binary (default: `rinha-lb` next to this executable).
    #[arg(long)]
    pub lb_bin: Option<PathBuf>,
    /// The `rinha-bench` that runs the processors (default: this executable).
    #[arg(long)]
    pub bench_bin: Option<PathBuf>,
    /// Extra environment for both backends, KEY=VAL (repeatable).
    #[arg(long = "backend-env", value_name = "KEY=VAL")]
    pub backend_env: Vec<String>,
    /// Extra environment for the load balancer, KEY=VAL (repeatable).
    #[arg(long = "lb-env", value_name = "KEY=VAL")]
    pub lb_env: Vec<String>,
    /// Give each backend a journal: `DATA_DIR=<stack dir>/backend-<n>.data` (as in
    /// docker-compose.yml; `--backend-env JOURNAL_SYNC=batch` to sync it).
    #[arg(long)]
    pub journal: bool,
    /// Seconds each part gets to accept connections.
    #[arg(long, default_value_t = 30)]
    pub up_timeout: u64,
    /// Never run `cargo build` for rinha and rinha-lb (even under `cargo run`).
    #[arg(long)]
    pub no_build: bool,
    /// The contest run to reproduce: `preview` (rinha.js) or `final` (rinha-final.js). It sets
    /// the emulated processors' fees (0.05 / 0.15 or 0.07 / 0.10); `rinha` runs its test.
    #[arg(long, value_enum, default_value_t = ProfileName::Preview)]
    pub profile: ProfileName,
    /// The default processor's fee, a decimal fraction (e.g. 0.07); wins over --profile.
    #[arg(long)]
    pub default_fee: Option<Fee>,
    /// The fallback processor's fee, a decimal fraction (e.g. 0.10); wins over --profile.
    #[arg(long)]
    pub fallback_fee: Option<Fee>,
    /// How rinha-lb reaches the backends: `handoff` (it passes each client's socket to a
    /// backend: `LB_MODE=handoff`, and each backend also listens on `backend-<n>.handoff.sock`;
    /// what docker-compose.yml ships) or `relay` (it copies every byte).
    #[arg(long, value_enum, default_value_t = LbMode::Handoff)]
    pub lb_mode: LbMode,
    /// Run N backends (1-8) on TCP, backend n on `127.0.0.<n+1>:<--backend-port>`, each with
    /// a static `PEERS` list of the others, the lb relaying (`--lb-mode` is ignored: a
    /// hand-over socket does not cross machines). Unset: the contest's two on unix sockets.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub instances: Option<u8>,
    /// The port of every backend of `--instances`.
    #[arg(long, default_value_t = 9998)]
    pub backend_port: u16,
}

/// rinha-lb's `LB_MODE` in the local stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LbMode {
    Relay,
    #[default]
    Handoff,
}

impl StackOpts {
    /// The emulated processors' fees, (default, fallback): the flags, else the profile's.
    pub fn fees(&self) -> (Fee, Fee) {
        let fees = self.profile.profile().fees;
        (
            self.default_fee.unwrap_or_else(|| fees.default_fee()),
            self.fallback_fee.unwrap_or_else(|| fees.fallback_fee()),
        )
    }
}

/// Picks `count` free loopback ports: `base..base+count`, or ephemeral ones the kernel hands out.
pub fn pick_ports(base: Option<u16>, count: usize) -> anyhow::Result<Vec<u16>> {
    if let Some(base) = base {
        return (0..count)
            .map(|n| {
                u16::try_from(usize::from(base) + n)
                    .map_err(|_| anyhow::anyhow!("port range past 65535"))
            })
            .collect();
    }
    // Held together so the kernel does not hand out the same port twice.
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// Runs `work` on a multi-threaded runtime of `workers` threads until it ends, or fails it
/// with "interrupted" on Ctrl-C or SIGTERM: dropping `work` drops any stack it started, which
/// kills every child.
pub fn run_until_interrupted<T>(
    workers: usize,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let done = runtime.block_on(async {
        tokio::select! {
            done = work => Some(done),
            _ = shutdown_signal() => None,
        }
    });
    done.unwrap_or_else(|| {
        // A load's client threads (blocking tasks) keep to their schedule and would hold a
        // dropped runtime for the rest of it: they end with the process instead.
        runtime.shutdown_background();
        anyhow::bail!("interrupted")
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The running local stack.
#[derive(Debug)]
pub struct Stack {
    pub dir: PathBuf,
    parts: Vec<Part>,
    lb_port: u16,
    default_port: u16,
    fallback_port: u16,
    /// The processors' fees, (default, fallback).
    fees: (Fee, Fee),
}

/// A new directory for one stack's sockets, logs and data. The counter: two stacks of one
/// process (parallel tests) may start in the same millisecond, and sharing a dir would mix
/// their sockets and logs.
fn fresh_dir() -> std::io::Result<PathBuf> {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "rinha-stack-{}-{n}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>, StackError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(StackError::BadEnv(pair.clone())),
        })
        .collect()
}

impl Stack {
    /// Starts processors, then backends, then the load balancer, each group waited for until it
    /// accepts connections. On any failure the parts already started are stopped.
    pub async fn start(opts: &StackOpts) -> Result<Stack, StackError> {
        let backend_env = parse_env(&opts.backend_env)?;
        let lb_env = parse_env(&opts.lb_env)?;
        let bins = bins::resolve(opts)?;
        for (name, port) in [
            ("default processor", opts.default_port),
            ("fallback processor", opts.fallback_port),
            ("rinha-lb", opts.lb_port),
        ] {
            part::wait_free(name, port, PORT_GRACE).await?;
        }
        let mut stack = Stack {
            dir: fresh_dir()?,
            parts: Vec::new(),
            lb_port: opts.lb_port,
            default_port: opts.default_port,
            fallback_port: opts.fallback_port,
            fees: opts.fees(),
        };
        let up = Duration::from_secs(opts.up_timeout);
        stack.spawn_processors(&bins.bench)?;
        stack.wait_up(up).await?;
        stack.spawn_backends(opts, &bins.rinha, &backend_env)?;
        stack.wait_up(up).await?;
        stack.spawn_lb(opts, &bins.lb, lb_env)?;
        stack.wait_up(up).await?;
        Ok(stack)
    }

    /// The two processors, `rinha-bench processor` at the stack's fees.
    fn spawn_processors(&mut self, bench: &Path) -> Result<(), StackError> {
        let (default_fee, fallback_fee) = self.fees;
        for (name, port, fee) in [
            ("default processor", self.default_port, default_fee),
            ("fallback processor", self.fallback_port, fallback_fee),
        ] {
            let args = vec![
                "processor".to_string(),
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--fee".to_string(),
                fee.to_string(),
            ];
            let log = self.dir.join(format!("{}.log", name.replace(' ', "-")));
            self.parts
                .push(Part::spawn(name, Addr::Tcp(port), bench, &args, &[], log)?);
        }
        Ok(())
    }

    /// The two backends on unix sockets, each peering the other (and listening for handed-over
    /// connections in handoff mode); `backend_env` comes last, so it wins.
    fn spawn_backends(
        &mut self,
        opts: &StackOpts,
        rinha: &Path,
        backend_env: &[(String, String)],
    ) -> Result<(), StackError> {
        let (backends, _) = instances::plan(&self.dir, opts);
        for (i, backend) in backends.iter().enumerate() {
            let mut env = vec![
                ("LISTEN".to_string(), instances::endpoint(&backend.listen)),
                ("PEERS".to_string(), instances::peers(&backends, i)),
                (
                    "PEER_LISTEN".to_string(),
                    instances::endpoint(&backend.peer),
                ),
                ("PROCESSOR_DEFAULT_URL".to_string(), self.default_url()),
                ("PROCESSOR_FALLBACK_URL".to_string(), self.fallback_url()),
            ];
            let name = &backend.name;
            if let Some(handoff) = &backend.handoff {
                let listen = instances::endpoint(handoff);
                env.push(("HANDOFF_LISTEN".to_string(), listen));
            }
            if opts.journal {
                let data = self.dir.join(format!("{name}.data"));
                env.push(("DATA_DIR".to_string(), data.display().to_string()));
            }
            env.extend(backend_env.iter().cloned());
            let log = self.dir.join(format!("{name}.log"));
            self.parts.push(Part::spawn(
                name,
                backend.listen.clone(),
                rinha,
                &[],
                &env,
                log,
            )?);
        }
        Ok(())
    }

    /// `rinha-lb` in front of both backends, relaying or handing over as `--lb-mode` says;
    /// `lb_env` comes last, so it wins.
    fn spawn_lb(
        &mut self,
        opts: &StackOpts,
        lb: &Path,
        lb_env: Vec<(String, String)>,
    ) -> Result<(), StackError> {
        let (backends, mode) = instances::plan(&self.dir, opts);
        let list = |addrs: Vec<&Addr>| -> String {
            addrs
                .into_iter()
                .map(instances::endpoint)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut env = vec![
            ("LISTEN".to_string(), format!("127.0.0.1:{}", opts.lb_port)),
            (
                "BACKENDS".to_string(),
                list(backends.iter().map(|b| &b.listen).collect()),
            ),
        ];
        if mode == LbMode::Handoff {
            env.push(("LB_MODE".to_string(), "handoff".to_string()));
            let handoffs = backends.iter().filter_map(|b| b.handoff.as_ref());
            env.push(("HANDOFF_BACKENDS".to_string(), list(handoffs.collect())));
        }
        env.extend(lb_env);
        let log = self.dir.join("rinha-lb.log");
        self.parts.push(Part::spawn(
            "rinha-lb",
            Addr::Tcp(opts.lb_port),
            lb,
            &[],
            &env,
            log,
        )?);
        Ok(())
    }

    /// The backends' process ids, backend-1 first.
    pub fn backend_pids(&self) -> Vec<u32> {
        self.parts
            .iter()
            .filter(|p| p.name.starts_with("backend"))
            .filter_map(Part::pid)
            .collect()
    }

    async fn wait_up(&mut self, up: Duration) -> Result<(), StackError> {
        let deadline = Instant::now() + up;
        for part in &mut self.parts {
            part.wait_up(deadline).await?;
        }
        Ok(())
    }

    pub fn lb_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.lb_port)
    }
    pub fn default_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.default_port)
    }
    pub fn fallback_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.fallback_port)
    }

    /// The emulated processors' fees, (default, fallback).
    pub fn fees(&self) -> (Fee, Fee) {
        self.fees
    }

    /// The running parts (name, address, log, pid), in start order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The parts, where each listens and where its log goes.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "local stack in {} (processors' fees: default {}, fallback {})\n",
            self.dir.display(),
            self.fees.0,
            self.fees.1
        );
        for part in &self.parts {
            out.push_str(&format!(
                "  {:<19} {:<45} pid {:<7} log {}\n",
                part.name,
                part.addr.to_string(),
                part.pid().map(|p| p.to_string()).unwrap_or_default(),
                part.log.display()
            ));
        }
        out
    }

    /// Resolves when a part exits, with what it said last.
    pub async fn watch(&mut self) -> String {
        loop {
            for part in &mut self.parts {
                if let Some(status) = part.exited() {
                    return format!(
                        "{} exited ({status}); log {} ends with:\n{}",
                        part.name,
                        part.log.display(),
                        part::tail(&part.log)
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every part, the load balancer first, all in parallel within each layer, then
    /// removes the backends' journals.
    pub async fn stop(mut self) {
        let parts = std::mem::take(&mut self.parts);
        let mut layers: Vec<Vec<Part>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for part in parts {
            let layer = match part.name.as_str() {
                "rinha-lb" => 0,
                n if n.starts_with("backend") => 1,
                _ => 2,
            };
            layers[layer].push(part);
        }
        for layer in layers {
            let mut stops = tokio::task::JoinSet::new();
            for part in layer {
                stops.spawn(part.stop());
            }
            while stops.join_next().await.is_some() {}
        }
        // The journals (`--journal`) can be tens of MB after a long run; the logs stay.
        for n in 1..=instances::MAX_INSTANCES {
            let data = self.dir.join(format!("backend-{n}.data"));
            if data.exists() {
                if let Err(error) = std::fs::remove_dir_all(&data) {
                    tracing::warn!(path = %data.display(), %error, "could not remove a journal dir");
                }
            }
        }
    }
}

// Dropping a `Stack` drops its `Part`s, whose children are `kill_on_drop`: an interrupted
// `rinha` run leaves nothing behind.

#[cfg(test)]
mod tests {
    use super::*;

    fn fees(flags: &[&str]) -> (String, String) {
        let opts: StackOpts = crate::parse_flags("stack", flags.iter().copied()).expect("flags");
        let (d, f) = opts.fees();
        (d.to_string(), f.to_string())
    }

    #[test]
    fn the_profile_sets_the_fees_and_the_fee_flags_win() {
        let pair = |d: &str, f: &str| (d.to_string(), f.to_string());
        assert_eq!(fees(&[]), pair("0.05", "0.15"));
        assert_eq!(fees(&["--profile", "preview"]), pair("0.05", "0.15"));
        assert_eq!(fees(&["--profile", "final"]), pair("0.07", "0.1"));
        assert_eq!(
            fees(&["--profile", "final", "--default-fee", "0.06"]),
            pair("0.06", "0.1")
        );
        assert_eq!(
            fees(&["--default-fee", "0.07", "--fallback-fee", "0.10"]),
            pair("0.07", "0.1")
        );
        let bad: Result<StackOpts, _> = crate::parse_flags("stack", ["--default-fee", "seven"]);
        assert!(bad.is_err());
        let bad: Result<StackOpts, _> = crate::parse_flags("stack", ["--profile", "semifinal"]);
        assert!(bad.is_err());
    }
}
