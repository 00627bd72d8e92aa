//! The `wrk` client of `rinha-bench drivers --backend-alone --backend-client wrk`: one
//! `wrk -t1` thread over every connection (the shape of the independent check of issue 19),
//! a Lua script posting fresh ids, and wrk's report read back into a load report.

use std::time::Duration;

use anyhow::Context;

use crate::load::Report as LoadReport;

/// The Lua script of the `wrk` client: a fresh `correlationId` per request (a random prefix
/// per thread, a counter in the low digits), the contest's amount.
const WRK_SCRIPT: &str = r#"
local counter = 0
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local prefix = string.format("%08x-%04x-4%03x", math.random(0, 0x7fffffff), math.random(0, 0xffff), math.random(0, 0xfff))
request = function()
  counter = counter + 1
  local body = string.format('{"correlationId":"%s-8%03x-%012x","amount":19.90}', prefix, math.random(0, 0xfff), counter)
  return wrk.format("POST", "/payments", {["Content-Type"] = "application/json"}, body)
end
"#;

/// One `wrk -t1 -cN -dS --latency` run against the backend; its requests, non-2xx answers,
/// errors and latency percentiles in a [`LoadReport`].
pub async fn load(port: u16, connections: usize, secs: Duration) -> anyhow::Result<LoadReport> {
    let script = std::env::temp_dir().join(format!("rinha-bench-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, WRK_SCRIPT)?;
    let out = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", secs.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&String::from_utf8_lossy(&out.stdout), secs)
}

/// Reads wrk's report: `N requests in`, `Non-2xx or 3xx responses: N`, `Socket errors: ...`
/// and the `--latency` distribution (`50%  1.23ms`).
fn parse_wrk(text: &str, secs: Duration) -> anyhow::Result<LoadReport> {
    let mut report = LoadReport::empty()?;
    let mut total = None;
    let mut bad = 0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" requests in ") {
            total = words.first().and_then(|n| n.parse::<u64>().ok());
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            bad += n.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            report.errors += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let ["50%" | "99%", value] = words[..] {
            // wrk gives percentiles, not samples: one sample each for p50 and p99, which the
            // histogram's 0.5 and 0.99 quantiles then return (and nothing else is read).
            let us = wrk_duration_us(value).with_context(|| format!("wrk latency {value:?}"))?;
            report.latency_us.saturating_record(us.max(1));
        }
    }
    let total = total.context("no `requests in` line in wrk's output")?;
    report.ok = total.saturating_sub(bad);
    report.non_2xx = bad;
    report.elapsed = secs;
    Ok(report)
}

/// `123.45us`, `1.23ms`, `1.00s` in microseconds.
fn wrk_duration_us(text: &str) -> Option<u64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    Some((number.parse::<f64>().ok()? * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let text = "Running 8s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n\
            \x20 Latency Distribution\n     50%  451.00us\n     75%  1.00ms\n     90%  2.00ms\n\
            \x20    99%    3.20ms\n  277910 requests in 8.00s, 20.41MB read\n\
            \x20 Socket errors: connect 0, read 1, write 0, timeout 2\n\
            \x20 Non-2xx or 3xx responses: 10\nRequests/sec:  34738.75\n";
        let report = parse_wrk(text, Duration::from_secs(8)).unwrap();
        assert_eq!((report.ok, report.non_2xx, report.errors), (277_900, 10, 3));
        assert_eq!(report.quantile_us(0.5), 451);
        assert!((3190..=3210).contains(&report.quantile_us(0.99)));
        assert_eq!(wrk_duration_us("1.50s"), Some(1_500_000));
    }
}
