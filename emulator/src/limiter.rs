//! The concurrency limiter in front of `POST /payments` (ASP.NET's `ConcurrencyLimiter`):
//! a fixed number of requests run at once, a fixed number wait in line (oldest first), and
//! anyone beyond is refused at once with 429.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Sizes of the limiter; the official processor uses 800 running and 500 queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub running: usize,
    pub queued: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            running: 800,
            queued: 500,
        }
    }
}

/// The request was refused: `running` are running and `queued` are already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests")]
pub struct Rejected;

/// Admits requests up to [`Limits`].
#[derive(Debug)]
pub struct Limiter {
    // tokio's semaphore is fair (FIFO), which gives the oldest-first queue order.
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
}

/// Decrements the queue count however the wait ends (admitted, or the caller went away).
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            running: Arc::new(Semaphore::new(limits.running)),
            queued: AtomicUsize::new(0),
            max_queued: limits.queued,
        }
    }

    /// Waits for a running slot, or refuses when the line is full. The permit is the slot:
    /// it is released when dropped.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Rejected> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected);
        }
        let _in_line = InLine(&self.queued);
        // The semaphore is never closed, so acquiring only fails if it were.
        self.running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Rejected)
    }

    /// How many requests are waiting for a slot.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_then_queues_then_refuses() {
        let limiter = Arc::new(Limiter::new(Limits {
            running: 2,
            queued: 1,
        }));
        let first = limiter.admit().await.unwrap();
        let _second = limiter.admit().await.unwrap();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.admit().await.map(drop) }
        });
        while limiter.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.admit().await.err(), Some(Rejected));
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(limiter.queued(), 0);
    }
}
