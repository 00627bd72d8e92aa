//! The processors' fees, which routing weighs against their delays ([`crate::route`]): read
//! from each processor's admin summary (`feePerTransaction`, with `PROCESSOR_TOKEN`) by one
//! task per core ([`reader`]), or set by the operator (`PROCESSOR_FEES`, [`Fees`]), in which
//! case nothing is read. A fee that cannot be read is loud: a warning at the first failure and
//! again at most every [`WARN_EVERY`] while reads keep failing (a wrong token's 401, an
//! unreachable processor), and the read is retried every [`RETRY`]. Until a fee is known,
//! routing assumes [`crate::core_state::FEE_PRIOR`] (docs/architecture.md, "Routing").

use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::core_state::CoreState;
use crate::processor::client::FeeRead;
use crate::processor::Processor;

/// How often each core reads the fees once it knows them (fees do not change during a run;
/// the refresh follows processors replaced between runs)...
pub const REFRESH: Duration = Duration::from_secs(30);
/// ...and while it does not.
pub const RETRY: Duration = Duration::from_secs(1);
/// At most one warning per processor per core per this long while reads fail.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// `PROCESSOR_FEES`: the default's and the fallback's fee, fractions of the amount
/// (`0.05,0.15`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fees(pub [f64; 2]);

/// Why `PROCESSOR_FEES` cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeesError {
    #[error("expected two fees, default then fallback, e.g. 0.05,0.15")]
    Shape,
    #[error("{0:?} is not a fee: a fraction in [0, 1), e.g. 0.05 for 5 %")]
    Fee(String),
}

impl FromStr for Fees {
    type Err = FeesError;

    fn from_str(text: &str) -> Result<Fees, FeesError> {
        let mut parts = text.split(',').map(str::trim);
        let (Some(d), Some(f), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(FeesError::Shape);
        };
        let fee = |t: &str| {
            t.parse::<f64>()
                .ok()
                .filter(|v| (0.0..1.0).contains(v))
                .ok_or_else(|| FeesError::Fee(t.to_owned()))
        };
        Ok(Fees([fee(d)?, fee(f)?]))
    }
}

/// Reads each processor's fee: every [`RETRY`] until both are known, then every
/// [`REFRESH`]; nothing when `PROCESSOR_FEES` set them.
pub async fn reader(core: Rc<CoreState>) {
    if let Some(Fees([default, fallback])) = core.config.processor_fees {
        if core.id == 0 {
            tracing::info!(
                default,
                fallback,
                "processor fees set by PROCESSOR_FEES; not read"
            );
        }
        return;
    }
    let mut warned: [Option<Instant>; 2] = [None, None];
    loop {
        for proc in [Processor::Default, Processor::Fallback] {
            let up = core.upstream(proc);
            let token = &core.config.processor_token;
            let why = match up.client.fee(token, core.config.processor_timeout).await {
                Ok(FeeRead::Fee(fee)) => {
                    if !up.fee_known.replace(true) || up.fee.get() != fee {
                        tracing::info!(processor = proc.name(), fee, "processor fee read");
                    }
                    up.fee.set(fee);
                    continue;
                }
                Ok(FeeRead::Status(401)) => {
                    String::from("401: PROCESSOR_TOKEN is not the processor's admin token")
                }
                Ok(FeeRead::Status(status)) => format!("it answered {status}"),
                Ok(FeeRead::Unreadable) => String::from("no feePerTransaction in its answer"),
                Err(e) => e.to_string(),
            };
            let now = Instant::now();
            let slot = &mut warned[proc.index()];
            if slot.is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY) {
                *slot = Some(now);
                let (fee, known) = (up.fee.get(), up.fee_known.get());
                tracing::warn!(
                    core = core.id,
                    processor = proc.name(),
                    reason = %why,
                    fee,
                    known,
                    "cannot read the processor's fee; routing assumes the fee shown (PROCESSOR_FEES sets it); retrying"
                );
            }
        }
        let known = [Processor::Default, Processor::Fallback]
            .iter()
            .all(|p| core.upstream(*p).fee_known.get());
        monoio::time::sleep(if known { REFRESH } else { RETRY }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_fees_are_two_fractions() {
        assert_eq!("0.05,0.15".parse(), Ok(Fees([0.05, 0.15])));
        assert_eq!(" 0.07 , 0.1 ".parse(), Ok(Fees([0.07, 0.1])));
        assert_eq!("0.05".parse::<Fees>(), Err(FeesError::Shape));
        assert_eq!("0.05,0.1,0.2".parse::<Fees>(), Err(FeesError::Shape));
        assert_eq!(
            "5,15".parse::<Fees>(),
            Err(FeesError::Fee(String::from("5")))
        );
        assert_eq!(
            "0.05,x".parse::<Fees>(),
            Err(FeesError::Fee(String::from("x")))
        );
    }
}
