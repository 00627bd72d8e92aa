//! The load balancers under comparison: how each is configured, started, found and measured.
//!
//! Configs live in `bench/lbs/` with `{{NAME}}` placeholders filled at run time (listen
//! address, backend sockets). Every contender runs as one process with one thread or worker,
//! so `/proc/PID/stat` and `VmHWM` of that one pid are its whole cost.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::Target;

const HAPROXY_TCP: &str = include_str!("../../lbs/haproxy-tcp.cfg");
const HAPROXY_HTTP: &str = include_str!("../../lbs/haproxy-http.cfg");
const NGINX_STREAM: &str = include_str!("../../lbs/nginx-stream.conf");
/// Where Debian's `libnginx-mod-stream` puts the dynamic stream module.
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// Debian packages that provide the other contenders.
pub const APT_PACKAGES: &[&str] = &["haproxy", "nginx", "libnginx-mod-stream"];

/// One contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RinhaLb,
    /// rinha-lb with `LB_MODE=handoff`: each client's socket passed to a backend.
    RinhaLbHandoff,
    HaproxyTcp,
    HaproxyHttp,
    NginxStream,
    /// No load balancer: the load goes straight to backend 1 (the baseline).
    Direct,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::RinhaLb,
        Kind::RinhaLbHandoff,
        Kind::HaproxyTcp,
        Kind::HaproxyHttp,
        Kind::NginxStream,
        Kind::Direct,
    ];

    /// The program this contender needs, if any besides rinha-lb.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Kind::HaproxyTcp | Kind::HaproxyHttp => Some("haproxy"),
            Kind::NginxStream => Some("nginx"),
            Kind::RinhaLb | Kind::RinhaLbHandoff | Kind::Direct => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::RinhaLb => "rinha-lb",
            Kind::RinhaLbHandoff => "rinha-lb-handoff",
            Kind::HaproxyTcp => "haproxy-tcp",
            Kind::HaproxyHttp => "haproxy-http",
            Kind::NginxStream => "nginx-stream",
            Kind::Direct => "direct",
        })
    }
}

/// A contender to start: its kind, the name it is reported under, and extra environment
/// (rinha-lb variants, e.g. `IO_DRIVER=epoll`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    pub label: String,
    pub env: Vec<(String, String)>,
}

impl Entry {
    pub fn plain(kind: Kind) -> Entry {
        Entry {
            kind,
            label: kind.to_string(),
            env: Vec::new(),
        }
    }

    /// Parses `LABEL:KEY=VALUE[,KEY=VALUE...]` into a rinha-lb variant named `rinha-lb[LABEL]`.
    pub fn variant(text: &str) -> anyhow::Result<Entry> {
        let (label, settings) = text
            .split_once(':')
            .context("a variant is LABEL:KEY=VALUE[,KEY=VALUE...]")?;
        let env = settings
            .split(',')
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .with_context(|| format!("`{pair}` is not KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Entry {
            kind: Kind::RinhaLb,
            label: format!("rinha-lb[{label}]"),
            env,
        })
    }
}

/// A started contender: where to send load and which process to measure.
pub struct Contender {
    pub kind: Kind,
    pub label: String,
    pub target: Target,
    process: Option<Child>,
}

impl Contender {
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Fails if the contender's process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.process.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited: {status}", self.label);
            }
        }
        Ok(())
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if let Some(child) = self.process.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What every contender is started with.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub backends: [&'a Path; 2],
    pub rinha_lb: &'a Path,
    pub rinha_lb_driver: &'a str,
}

/// Starts `entry` listening on `port` and waits until it accepts connections.
pub fn start(entry: &Entry, port: u16, setup: &Setup<'_>) -> anyhow::Result<Contender> {
    let kind = entry.kind;
    let label = entry.label.clone();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let [backend1, backend2] = setup.backends;
    let mut command = match kind {
        Kind::Direct => {
            return Ok(Contender {
                kind,
                label,
                target: Target::Unix(backend1.to_owned()),
                process: None,
            })
        }
        Kind::RinhaLb | Kind::RinhaLbHandoff => {
            let mut command = Command::new(setup.rinha_lb);
            if kind == Kind::RinhaLbHandoff {
                // HANDOFF_BACKENDS unset: the backends' `.handoff.sock`, as FixedBackend binds.
                command.env("LB_MODE", "handoff");
            }
            command
                .env("LISTEN", listen.to_string())
                .env(
                    "BACKENDS",
                    format!("unix:{},unix:{}", backend1.display(), backend2.display()),
                )
                .env("WORKERS", "1")
                .env("IO_DRIVER", setup.rinha_lb_driver)
                .env("RUST_LOG", "warn")
                .envs(entry.env.iter().map(|(k, v)| (k, v)));
            command
        }
        Kind::HaproxyTcp | Kind::HaproxyHttp => {
            let template = if kind == Kind::HaproxyTcp {
                HAPROXY_TCP
            } else {
                HAPROXY_HTTP
            };
            let config = setup.dir.join(format!("{kind}.cfg"));
            std::fs::write(&config, render(template, listen, setup, ""))?;
            let mut command = Command::new(find_program("haproxy").context("haproxy")?);
            command.arg("-db").arg("-f").arg(&config);
            command
        }
        Kind::NginxStream => {
            let module = if Path::new(NGINX_STREAM_MODULE).exists() {
                format!("load_module {NGINX_STREAM_MODULE};")
            } else {
                String::new()
            };
            let config = setup.dir.join("nginx-stream.conf");
            std::fs::write(&config, render(NGINX_STREAM, listen, setup, &module))?;
            let mut command = Command::new(find_program("nginx").context("nginx")?);
            command
                .arg("-e")
                .arg("stderr")
                .arg("-p")
                .arg(setup.dir)
                .arg("-c")
                .arg(&config);
            command
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = command
        .spawn()
        .with_context(|| format!("starting {label}"))?;
    let mut contender = Contender {
        kind,
        label,
        target: Target::Tcp(listen),
        process: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        contender.check_alive()?;
        if Instant::now() >= deadline {
            bail!("{} did not accept on {listen} within 10 s", contender.label);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(contender)
}

fn render(template: &str, listen: SocketAddr, setup: &Setup<'_>, stream_module: &str) -> String {
    template
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{BACKEND_1}}", &setup.backends[0].display().to_string())
        .replace("{{BACKEND_2}}", &setup.backends[1].display().to_string())
        .replace("{{STREAM_MODULE}}", stream_module)
        .replace(
            "{{PID_FILE}}",
            &setup.dir.join("nginx.pid").display().to_string(),
        )
}

/// Finds `name` on `PATH` or in the sbin directories Debian installs daemons into.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Installs the Debian packages of the missing contenders (`apt-get`, refreshing the package
/// lists only if the first attempt fails).
pub fn apt_install() -> anyhow::Result<()> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(APT_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if install()?.success() {
        return Ok(());
    }
    let updated = Command::new("apt-get").arg("update").status()?;
    if !updated.success() || !install()?.success() {
        bail!("apt-get install {} failed", APT_PACKAGES.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled() {
        let setup = Setup {
            dir: Path::new("/tmp/x"),
            backends: [Path::new("/tmp/x/b1.sock"), Path::new("/tmp/x/b2.sock")],
            rinha_lb: Path::new("rinha-lb"),
            rinha_lb_driver: "auto",
        };
        let listen: SocketAddr = "127.0.0.1:21000".parse().unwrap();
        for template in [HAPROXY_TCP, HAPROXY_HTTP, NGINX_STREAM] {
            let text = render(template, listen, &setup, "load_module m.so;");
            assert!(!text.contains("{{"), "{text}");
            assert!(text.contains("127.0.0.1:21000"));
            assert!(text.contains("/tmp/x/b2.sock"));
        }
    }
}
