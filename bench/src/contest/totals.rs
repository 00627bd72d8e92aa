//! The stack's totals over all time, for runs that must end exact (`soak`, `capacity`):
//! processors set to answer at once and emptied with the backends, then (requests, cents)
//! as the backends and as the processors hold them.

use std::time::Duration;

use anyhow::Context;

use crate::contest::calls::{cents, Backend, Processor, Window, INITIAL_TOKEN};
use crate::contest::client::{Endpoint, HostClient};
use crate::stack::Stack;

/// Sets both processors to answer at once and never fail (a soak measures our stack), and
/// empties them and the backends; returns a client of the backends (through the lb, with a
/// timeout for big stores) and of each processor.
pub async fn quiet_and_purge(stack: &Stack) -> anyhow::Result<(Backend, Vec<Processor>)> {
    let mut processors = Vec::new();
    for url in [stack.default_url(), stack.fallback_url()] {
        let mut processor = Processor {
            client: HostClient::new(Endpoint::parse(&url)?),
            token: INITIAL_TOKEN.to_owned(),
        };
        processor.set_delay(0, None).await?;
        processor.set_failure(false, None).await?;
        processor.purge(None).await?;
        processors.push(processor);
    }
    let mut backend = Backend {
        client: HostClient::new(Endpoint::parse(&stack.lb_url())?)
            .with_timeout(Duration::from_secs(30)),
    };
    backend.purge(None).await.context("purging the backends")?;
    Ok((backend, processors))
}

/// (requests, cents) the backends hold over all time.
pub async fn backend_totals(backend: &mut Backend) -> anyhow::Result<(u64, i64)> {
    let summary = backend.summary(Window::ALL, None).await?;
    Ok((
        summary.total_requests(),
        cents(summary.default.total_amount) + cents(summary.fallback.total_amount),
    ))
}

/// (requests, cents) both processors hold over all time.
pub async fn processor_totals(processors: &mut [Processor]) -> anyhow::Result<(u64, i64)> {
    let mut totals = (0, 0);
    for processor in processors {
        let s = processor.summary(Window::ALL, None).await?;
        totals.0 += s.total_requests;
        totals.1 += cents(s.total_amount);
    }
    Ok(totals)
}
