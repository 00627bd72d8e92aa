//! The payments scenario: virtual users ramping linearly from 1 to `max` over the duration (k6's
//! `ramping-vus`). Each user owns one keep-alive connection and loops `POST /payments` with a
//! fresh UUID v4 and the profile's amount (19.90 in the preview, 20.05 in the final), then
//! sleeps 1 s. At the end of the duration no new iteration
//! starts, and the iterations under way run to their end (request, bounded by the client
//! timeout, then the 1 s sleep), as k6's graceful stop lets them: the teardown comes after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use tokio::task::JoinSet;

use super::client::{ClientError, Connection, Endpoint, REQUEST_TIMEOUT};
use super::recorder::{PostOutcome, Recorder, Snapshot};

/// The statuses the official script counts as a successful transaction.
pub const SUCCESS_STATUSES: [u16; 4] = [200, 201, 202, 204];

/// The pause between two iterations of a user.
const THINK_TIME: Duration = Duration::from_secs(1);

/// How often the ramp controller looks whether a user must be added.
const RAMP_TICK: Duration = Duration::from_millis(20);

/// The linear ramp of virtual users.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub max: u64,
    pub duration: Duration,
}

impl Ramp {
    /// Users that should be running `elapsed` into the run: 1 at the start, `max` at the end.
    pub fn users_at(&self, elapsed: Duration) -> u64 {
        if self.max <= 1 || self.duration.is_zero() {
            return self.max.max(1);
        }
        let fraction = (elapsed.as_secs_f64() / self.duration.as_secs_f64()).min(1.0);
        1 + ((self.max - 1) as f64 * fraction).floor() as u64
    }
}

/// The users alone against `target`, paying the preview's amount, with no checker or stages
/// beside them (what `floor` measures, what the users' own tests drive): what they recorded
/// and how long they ran, the wait for the last iteration included.
pub async fn users_alone(target: Endpoint, ramp: Ramp) -> (Snapshot, Duration) {
    let start = Instant::now();
    let recorder = Arc::new(Recorder::new(start));
    let amount = crate::profile::PREVIEW.amount;
    run_users(
        target,
        ramp,
        amount,
        recorder.clone(),
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    (recorder.snapshot(), start.elapsed())
}

/// Runs the scenario until `start + ramp.duration`, then waits for every user to finish the
/// iteration under way. Every payment is of `amount` (the JSON number's text). `active` always
/// holds the current number of users.
pub async fn run_users(
    target: Endpoint,
    ramp: Ramp,
    amount: &'static str,
    recorder: Arc<Recorder>,
    active: Arc<AtomicU64>,
) {
    let start = recorder.start();
    let end = start + ramp.duration;
    let mut users = JoinSet::new();
    let mut started = 0u64;
    let mut tick = tokio::time::interval(RAMP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        let wanted = ramp.users_at(start.elapsed());
        while started < wanted {
            started += 1;
            active.store(started, Ordering::Relaxed);
            users.spawn(user(target.clone(), end, amount, recorder.clone()));
        }
        recorder.users(started);
        tick.tick().await;
    }
    while users.join_next().await.is_some() {}
    active.store(0, Ordering::Relaxed);
}

/// One virtual user.
async fn user(target: Endpoint, end: Instant, amount: &'static str, recorder: Arc<Recorder>) {
    let mut conn: Option<Connection> = None;
    while Instant::now() < end {
        let body = Bytes::from(format!(
            r#"{{"correlationId":"{}","amount":{amount}}}"#,
            uuid::Uuid::new_v4()
        ));
        let (outcome, elapsed) = post_payment(&target, &mut conn, body).await;
        recorder.post(outcome, elapsed);
        tokio::time::sleep(THINK_TIME).await;
    }
}

/// One `POST /payments`, reconnecting first when the kept-alive connection is gone. The client
/// timeout covers connect and exchange; the measured duration is the exchange alone.
async fn post_payment(
    target: &Endpoint,
    conn: &mut Option<Connection>,
    body: Bytes,
) -> (PostOutcome, Duration) {
    let began = Instant::now();
    let exchange = async {
        let reused = matches!(conn, Some(c) if !c.is_closed());
        let c = match conn.take() {
            Some(c) if !c.is_closed() => conn.insert(c),
            _ => conn.insert(Connection::open(target).await?),
        };
        match c
            .exchange(Method::POST, "/payments", &[], Some(body.clone()))
            .await
        {
            // The server closed the idle connection: nothing was sent, resend on a fresh one.
            Err(ClientError::NotSent(_)) if reused => {
                let c = conn.insert(Connection::open(target).await?);
                c.exchange(Method::POST, "/payments", &[], Some(body)).await
            }
            other => other,
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(answer)) if SUCCESS_STATUSES.contains(&answer.status.as_u16()) => {
            (PostOutcome::Success, answer.elapsed)
        }
        Ok(Ok(answer)) => (PostOutcome::Status(answer.status.as_u16()), answer.elapsed),
        Ok(Err(_)) => {
            *conn = None;
            (PostOutcome::Error, began.elapsed())
        }
        Err(_) => {
            // The connection may still carry the late answer: never reuse it.
            *conn = None;
            (PostOutcome::Timeout, began.elapsed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_goes_from_one_to_max() {
        let ramp = Ramp {
            max: 550,
            duration: Duration::from_secs(60),
        };
        assert_eq!(ramp.users_at(Duration::ZERO), 1);
        assert_eq!(ramp.users_at(Duration::from_secs(30)), 1 + 274);
        assert_eq!(ramp.users_at(Duration::from_secs(60)), 550);
        assert_eq!(ramp.users_at(Duration::from_secs(90)), 550);
        let one = Ramp {
            max: 1,
            duration: Duration::from_secs(60),
        };
        assert_eq!(one.users_at(Duration::from_secs(30)), 1);
    }

    #[test]
    fn ramp_scales_with_the_duration() {
        let short = Ramp {
            max: 100,
            duration: Duration::from_secs(12),
        };
        assert_eq!(short.users_at(Duration::from_secs(6)), 1 + 49);
        assert_eq!(short.users_at(Duration::from_secs(12)), 100);
    }
}
