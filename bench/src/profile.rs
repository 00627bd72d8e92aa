//! The contest's two published runs as data (RINHA-2025.md sections 4, 4b and 5): the preview
//! (`rinha.js`) and the final that ranked the contest (`rinha-final.js`). One [`Profile`] per run
//! holds what differs between them; `rinha-bench rinha` reads every field, `rinha-bench stack`
//! only the processors' fees. Nothing here runs anything.

use std::time::Duration;

use rinha_emulator::Fee;

/// The run a command reproduces (`--profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// The rehearsal, `rinha.js`: 550 users over 60 s, fees 5 % / 15 %.
    #[default]
    Preview,
    /// The run that ranked the contest, `rinha-final.js`: 603 users over 300 s, fees 7 % / 10 %.
    Final,
}

impl ProfileName {
    /// The profile's table.
    pub fn profile(self) -> &'static Profile {
        match self {
            ProfileName::Preview => &PREVIEW,
            ProfileName::Final => &FINAL,
        }
    }
}

impl std::fmt::Display for ProfileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.profile().name)
    }
}

/// One row of a stage table: the processors' delay and failure from `at_secs` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRow {
    pub at_secs: u64,
    pub default_delay_ms: u64,
    pub default_failing: bool,
    pub fallback_delay_ms: u64,
    pub fallback_failing: bool,
}

const fn row(at_secs: u64, dd: u64, df: bool, fd: u64, ff: bool) -> StageRow {
    StageRow {
        at_secs,
        default_delay_ms: dd,
        default_failing: df,
        fallback_delay_ms: fd,
        fallback_failing: ff,
    }
}

/// How a consistency check turns three summaries into inconsistencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconsistency {
    /// `|(backend default - processor default) + (backend fallback - processor fallback)|`:
    /// the preview's, so a payment counted on the wrong side cancels out.
    Total,
    /// `|backend default - processor default| + |backend fallback - processor fallback|`:
    /// the final's, so every payment on the wrong side counts twice.
    PerProcessor,
}

impl Inconsistency {
    /// The inconsistencies of one check, from the `totalRequests` of the backend's
    /// (default, fallback) and of the processors' (default, fallback).
    pub fn count(self, backend: (u64, u64), processors: (u64, u64)) -> u64 {
        match self {
            Inconsistency::Total => (backend.0 + backend.1).abs_diff(processors.0 + processors.1),
            Inconsistency::PerProcessor => {
                backend.0.abs_diff(processors.0) + backend.1.abs_diff(processors.1)
            }
        }
    }
}

/// The consistency scenario: one check, then a sleep of the period, while the run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckPlan {
    /// The sleep between checks in a run of the profile's own length (it scales with it).
    pub period_secs: u64,
    /// The window asked: `[now - from_back, now - to_back]`.
    pub from_back: Duration,
    pub to_back: Duration,
    pub formula: Inconsistency,
}

/// Whose summaries the score is taken from at teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeardownSource {
    /// The backend's summary counts (gross, payment count); the processors give their fee rates.
    Backend,
    /// Only the processors' summaries are read: what they stored is what counts.
    Processors,
}

/// The teardown: the summaries over `[now - back, now]` right after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeardownPlan {
    pub source: TeardownSource,
    /// The window reaches back this far at least...
    pub min_back: Duration,
    /// ...and at least this far before the run's start (for runs longer than the profile's).
    pub before_start: Duration,
}

impl TeardownPlan {
    /// How far back the teardown window reaches after a run of `duration`.
    pub fn back(&self, duration: Duration) -> Duration {
        (duration + self.before_start).max(self.min_back)
    }
}

/// Fee per transaction of the two processors, in percent of the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub default_percent: u32,
    pub fallback_percent: u32,
}

impl Fees {
    pub fn default_fee(&self) -> Fee {
        Fee::from_percent(self.default_percent)
    }
    pub fn fallback_fee(&self) -> Fee {
        Fee::from_percent(self.fallback_percent)
    }
}

/// Everything that differs between the preview and the final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// The official script it reproduces.
    pub script: &'static str,
    /// Virtual users at the end of the ramp (`MAX_REQUESTS`).
    pub users: u64,
    pub duration_secs: u64,
    /// The amount of every payment, as the JSON body carries it.
    pub amount: &'static str,
    /// The processor stages; their seconds scale with the run's duration, the delays do not.
    pub stages: &'static [StageRow],
    pub check: CheckPlan,
    pub teardown: TeardownPlan,
    /// The fees the contest's processors charged in this run (the emulators' defaults).
    pub fees: Fees,
}

impl Profile {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// `rinha.js` (RINHA-2025.md section 4).
pub static PREVIEW: Profile = Profile {
    name: "preview",
    script: "rinha.js",
    users: 550,
    duration_secs: 60,
    amount: "19.90",
    stages: &[
        row(1, 0, false, 0, false),
        row(10, 100, false, 0, false),
        row(20, 100, true, 0, false),
        row(30, 2000, true, 1000, true),
        row(40, 20, false, 20, false),
        row(50, 0, false, 5000, false),
    ],
    check: CheckPlan {
        period_secs: 10,
        from_back: Duration::from_secs(15),
        to_back: Duration::from_millis(1500),
        formula: Inconsistency::Total,
    },
    teardown: TeardownPlan {
        source: TeardownSource::Backend,
        min_back: Duration::from_secs(70),
        before_start: Duration::from_secs(10),
    },
    fees: Fees {
        default_percent: 5,
        fallback_percent: 15,
    },
};

/// `rinha-final.js` (RINHA-2025.md section 4b).
pub static FINAL: Profile = Profile {
    name: "final",
    script: "rinha-final.js",
    users: 603,
    duration_secs: 300,
    amount: "20.05",
    stages: &[
        row(1, 0, false, 0, false),
        row(30, 1000, false, 0, false),
        row(60, 500, false, 0, false),
        row(90, 2000, true, 1000, false),
        row(120, 5000, true, 5, false),
        row(150, 0, false, 5, true),
        row(180, 100, false, 5, false),
        row(210, 50, false, 0, false),
        row(240, 103, false, 10, false),
        row(270, 2000, false, 0, false),
    ],
    check: CheckPlan {
        period_secs: 10,
        from_back: Duration::from_secs(15),
        to_back: Duration::from_secs(2),
        formula: Inconsistency::PerProcessor,
    },
    teardown: TeardownPlan {
        source: TeardownSource::Processors,
        min_back: Duration::from_secs(360),
        before_start: Duration::from_secs(60),
    },
    fees: Fees {
        default_percent: 7,
        fallback_percent: 10,
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_is_rinha_final_js() {
        let f = ProfileName::Final.profile();
        assert_eq!((f.users, f.duration_secs, f.amount), (603, 300, "20.05"));
        let at: Vec<u64> = f.stages.iter().map(|s| s.at_secs).collect();
        assert_eq!(at, [1, 30, 60, 90, 120, 150, 180, 210, 240, 270]);
        assert_eq!(f.stages[3], row(90, 2000, true, 1000, false));
        assert_eq!(f.stages[4], row(120, 5000, true, 5, false));
        assert_eq!(f.stages[5], row(150, 0, false, 5, true));
        assert_eq!(f.stages[8], row(240, 103, false, 10, false));
        assert_eq!(f.stages[9], row(270, 2000, false, 0, false));
        assert_eq!(f.check.to_back, Duration::from_secs(2));
        assert_eq!(f.teardown.source, TeardownSource::Processors);
        assert_eq!(f.teardown.back(f.duration()), Duration::from_secs(360));
        assert_eq!(
            (
                f.fees.default_fee().to_string(),
                f.fees.fallback_fee().to_string()
            ),
            ("0.07".into(), "0.1".into())
        );
    }

    #[test]
    fn the_preview_is_rinha_js() {
        let p = ProfileName::default().profile();
        assert_eq!((p.users, p.duration_secs, p.amount), (550, 60, "19.90"));
        assert_eq!(p.stages.len(), 6);
        assert_eq!(p.check.to_back, Duration::from_millis(1500));
        assert_eq!(p.teardown.source, TeardownSource::Backend);
        assert_eq!(p.teardown.back(p.duration()), Duration::from_secs(70));
        assert_eq!(
            p.teardown.back(Duration::from_secs(120)),
            Duration::from_secs(130)
        );
        assert_eq!((p.fees.default_percent, p.fees.fallback_percent), (5, 15));
    }

    #[test]
    fn the_final_counts_inconsistencies_per_processor() {
        // One payment the backend counts on the default but the processor holds on the
        // fallback: the preview's sum cancels it, the final counts it on both sides.
        assert_eq!(Inconsistency::Total.count((11, 4), (10, 5)), 0);
        assert_eq!(Inconsistency::PerProcessor.count((11, 4), (10, 5)), 2);
        // Missing on one side only: one either way.
        assert_eq!(Inconsistency::Total.count((9, 5), (10, 5)), 1);
        assert_eq!(Inconsistency::PerProcessor.count((9, 5), (10, 5)), 1);
        // Absolute values summed, never netted.
        assert_eq!(Inconsistency::PerProcessor.count((12, 3), (10, 5)), 4);
        assert_eq!(Inconsistency::PerProcessor.count((0, 0), (0, 0)), 0);
    }
}
