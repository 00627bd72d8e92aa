//! Which I/O driver a process really runs: read from its start log line
//! (`rinha started ... driver=io_uring ...`, `rinha-lb started ... driver=epoll ...`), because
//! `IO_DRIVER` is only a request and a comparison of the wrong drivers would be worthless.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Driver;

/// How long a part gets to write its start line once it accepts connections (the listener
/// can be bound a moment before the line is logged).
const START_LINE_WAIT: Duration = Duration::from_secs(5);

/// Why a part's driver could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{part}: no `{program} started ... driver=` line in {log:?} after {secs} s")]
    NoStartLine {
        part: String,
        program: String,
        log: PathBuf,
        secs: u64,
    },
    #[error(
        "{part} was asked for IO_DRIVER={asked} but runs driver={got} (start line in {log:?}); \
         the comparison would be wrong, so it stops here"
    )]
    Wrong {
        part: String,
        asked: &'static str,
        got: String,
        log: PathBuf,
    },
}

/// The `driver=` value of `program`'s start line in `log`, if the line is there.
/// ANSI colour codes are skipped (a build before `rinha` wrote plain text to a file styled it).
pub fn driver_in_log(log: &str, program: &str) -> Option<String> {
    let needle = format!("{program} started ");
    log.lines()
        .map(strip_ansi)
        .find(|line| line.contains(&needle))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("driver="))
                .map(str::to_owned)
        })
}

/// Fails unless `log` shows `program` started with `want`.
pub fn check_log(
    part: &str,
    program: &str,
    log_path: &Path,
    log: &str,
    want: Driver,
) -> Result<String, Option<VerifyError>> {
    match driver_in_log(log, program) {
        None => Err(None),
        Some(got) if got == want.log_name() => Ok(got),
        Some(got) => Err(Some(VerifyError::Wrong {
            part: part.to_owned(),
            asked: want.env_value(),
            got,
            log: log_path.to_owned(),
        })),
    }
}

/// Waits for `program`'s start line in the log file and checks its driver; returns what the
/// line says.
pub async fn confirm(
    part: &str,
    program: &str,
    log_path: &Path,
    want: Driver,
) -> Result<String, VerifyError> {
    let deadline = Instant::now() + START_LINE_WAIT;
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        match check_log(part, program, log_path, &text, want) {
            Ok(got) => return Ok(got),
            Err(Some(wrong)) => return Err(wrong),
            Err(None) if Instant::now() >= deadline => {
                return Err(VerifyError::NoStartLine {
                    part: part.to_owned(),
                    program: program.to_owned(),
                    log: log_path.to_owned(),
                    secs: START_LINE_WAIT.as_secs(),
                })
            }
            Err(None) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the final byte of the CSI sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RINHA: &str = "\u{1b}[2m2026-11-26T00:00:00.1Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
        \u{1b}[2mrinha::runtime\u{1b}[0m\u{1b}[2m:\u{1b}[0m rinha started version=0.1.0 \
        driver=io_uring workers=2 listen=unix:/tmp/b1.sock default=http://127.0.0.1:1 \
        fallback=http://127.0.0.1:2 peers=unix:/tmp/b2.sock";
    const LB: &str = "2026-11-26T00:00:00.1Z  INFO rinha_lb: rinha-lb started version=0.1.0 \
        driver=epoll workers=1 listen=127.0.0.1:9 backends=unix:/a,unix:/b";

    #[test]
    fn reads_the_driver_through_colour_codes() {
        assert_eq!(driver_in_log(RINHA, "rinha").as_deref(), Some("io_uring"));
        assert_eq!(driver_in_log(LB, "rinha-lb").as_deref(), Some("epoll"));
        // `rinha started` is not found inside `rinha-lb started`.
        assert_eq!(driver_in_log(LB, "rinha"), None);
        assert_eq!(driver_in_log("warming up\n", "rinha"), None);
    }

    #[test]
    fn a_wrong_driver_is_an_error_naming_both() {
        let path = Path::new("/tmp/backend-1.log");
        assert!(check_log("backend-1", "rinha", path, RINHA, Driver::Uring).is_ok());
        let err = check_log("backend-1", "rinha", path, RINHA, Driver::Epoll)
            .expect_err("io_uring is not epoll")
            .expect("a start line was found");
        let text = err.to_string();
        assert!(text.contains("IO_DRIVER=epoll"), "{text}");
        assert!(text.contains("driver=io_uring"), "{text}");
        assert!(matches!(
            check_log("rinha-lb", "rinha-lb", path, "", Driver::Epoll),
            Err(None)
        ));
    }
}
