//! The typed calls of the test besides the payments: the processors' admin API (token, delay,
//! failure, purge, summary) and the backend's summary and purge. Each successful call enters the
//! run's histogram when a recorder is given, because the score's p99 covers every request.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;

use super::client::{ensure_success, ClientError, HostClient};
use super::recorder::Recorder;

/// A window of `requestedAt`, inclusive on both ends; `None` = unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

impl Window {
    /// Every payment.
    pub const ALL: Window = Window {
        from: None,
        to: None,
    };

    /// `[now - back_from, now - back_to]`.
    pub fn before(
        now: chrono::DateTime<chrono::Utc>,
        back_from: Duration,
        back_to: Duration,
    ) -> Self {
        let delta = |d: Duration| chrono::Duration::milliseconds(d.as_millis() as i64);
        Window {
            from: Some(now - delta(back_from)),
            to: Some(now - delta(back_to)),
        }
    }

    /// The query string (`?from=..&to=..`, ISO-8601 UTC with milliseconds) or nothing.
    pub fn query(&self) -> String {
        let iso = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        match (self.from, self.to) {
            (Some(from), Some(to)) => format!("?from={}&to={}", iso(from), iso(to)),
            (Some(from), None) => format!("?from={}", iso(from)),
            (None, Some(to)) => format!("?to={}", iso(to)),
            (None, None) => String::new(),
        }
    }
}

/// A money amount read from JSON, turned into integer cents (the JSON number is a decimal with
/// at most two places in every well-formed answer, so rounding recovers it exactly).
pub fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// `GET /admin/payments-summary` of a processor.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessorSummary {
    pub total_requests: u64,
    pub total_amount: f64,
    #[serde(default)]
    pub total_fee: f64,
    pub fee_per_transaction: f64,
}

/// One side of the backend's summary.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub total_requests: u64,
    pub total_amount: f64,
}

/// `GET /payments-summary` of the backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
pub struct BackendSummary {
    pub default: Side,
    pub fallback: Side,
}

impl BackendSummary {
    pub fn total_requests(&self) -> u64 {
        self.default.total_requests + self.fallback.total_requests
    }

    /// The processors' own counts in the backend summary's shape: what the final scores.
    pub fn of_processors(default: &ProcessorSummary, fallback: &ProcessorSummary) -> Self {
        let side = |p: &ProcessorSummary| Side {
            total_requests: p.total_requests,
            total_amount: p.total_amount,
        };
        BackendSummary {
            default: side(default),
            fallback: side(fallback),
        }
    }
}

/// The token every processor starts with.
pub const INITIAL_TOKEN: &str = "123";

/// The header that carries the processors' admin token.
const TOKEN_HEADER: &str = "X-Rinha-Token";

/// The admin API of one payment processor.
pub struct Processor {
    pub client: HostClient,
    pub token: String,
}

impl Processor {
    async fn admin(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        recorder: Option<&Recorder>,
    ) -> Result<(), ClientError> {
        let token = self.token.clone();
        let result = self
            .client
            .call(
                method.clone(),
                path,
                &[(TOKEN_HEADER, &token)],
                body.map(Bytes::from),
            )
            .await
            .and_then(|a| ensure_success(method, path, a));
        note(recorder, result.as_ref().map(|a| a.elapsed));
        result.map(|_| ())
    }

    /// `PUT /admin/configurations/token`, authenticated with `current` (the official setup
    /// always presents the initial token, `123`). Expects 204.
    pub async fn set_token(
        &mut self,
        current: &str,
        token: &str,
        rec: Option<&Recorder>,
    ) -> Result<(), ClientError> {
        self.token = current.to_string();
        let body = serde_json::json!({ "token": token }).to_string();
        self.admin(Method::PUT, "/admin/configurations/token", Some(body), rec)
            .await?;
        self.token = token.to_string();
        Ok(())
    }

    /// `PUT /admin/configurations/delay`.
    pub async fn set_delay(&mut self, ms: u64, rec: Option<&Recorder>) -> Result<(), ClientError> {
        let body = serde_json::json!({ "delay": ms }).to_string();
        self.admin(Method::PUT, "/admin/configurations/delay", Some(body), rec)
            .await
    }

    /// `PUT /admin/configurations/failure`.
    pub async fn set_failure(
        &mut self,
        failing: bool,
        rec: Option<&Recorder>,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "failure": failing }).to_string();
        self.admin(
            Method::PUT,
            "/admin/configurations/failure",
            Some(body),
            rec,
        )
        .await
    }

    /// `POST /admin/purge-payments`.
    pub async fn purge(&mut self, rec: Option<&Recorder>) -> Result<(), ClientError> {
        self.admin(Method::POST, "/admin/purge-payments", None, rec)
            .await
    }

    /// `GET /admin/payments-summary`.
    pub async fn summary(
        &mut self,
        window: Window,
        rec: Option<&Recorder>,
    ) -> Result<ProcessorSummary, ClientError> {
        let path = format!("/admin/payments-summary{}", window.query());
        let token = self.token.clone();
        let result = self.client.get_json(&path, &[(TOKEN_HEADER, &token)]).await;
        note(rec, result.as_ref().map(|(_, elapsed)| *elapsed));
        result.map(|(summary, _)| summary)
    }
}

/// The three whose summaries the test reads: the backend and both processors, each through
/// its own connection (the checker, the teardown and the drain read them side by side).
pub struct Parties {
    pub backend: Backend,
    pub default: Processor,
    pub fallback: Processor,
}

/// The backend under test.
pub struct Backend {
    pub client: HostClient,
}

impl Backend {
    /// `GET /payments-summary`.
    pub async fn summary(
        &mut self,
        window: Window,
        rec: Option<&Recorder>,
    ) -> Result<BackendSummary, ClientError> {
        let path = format!("/payments-summary{}", window.query());
        let result = self.client.get_json(&path, &[]).await;
        note(rec, result.as_ref().map(|(_, elapsed)| *elapsed));
        result.map(|(summary, _)| summary)
    }

    /// `POST /purge-payments`.
    pub async fn purge(&mut self, rec: Option<&Recorder>) -> Result<(), ClientError> {
        let result = self
            .client
            .call(Method::POST, "/purge-payments", &[], None)
            .await
            .and_then(|a| ensure_success(Method::POST, "/purge-payments", a));
        note(rec, result.as_ref().map(|a| a.elapsed));
        result.map(|_| ())
    }
}

fn note(recorder: Option<&Recorder>, result: Result<Duration, &ClientError>) {
    if let Some(recorder) = recorder {
        match result {
            Ok(elapsed) => recorder.success(elapsed),
            Err(_) => recorder.failure(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_is_now_minus_15_to_now_minus_1_5() {
        let now = chrono::Utc
            .with_ymd_and_hms(2025, 7, 15, 12, 0, 30)
            .unwrap();
        let w = Window::before(now, Duration::from_secs(15), Duration::from_millis(1500));
        assert_eq!(
            w.query(),
            "?from=2025-07-15T12:00:15.000Z&to=2025-07-15T12:00:28.500Z"
        );
        assert_eq!(Window::ALL.query(), "");
    }

    #[test]
    fn cents_recover_two_decimal_amounts() {
        assert_eq!(cents(19.9), 1990);
        assert_eq!(cents(19.9 * 3.0), 5970);
        assert_eq!(cents(333_326.5), 33_332_650);
        assert_eq!(cents(0.0), 0);
    }
}
