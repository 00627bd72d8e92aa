//! The instrument every claim of this project is measured with. It shares no code path with
//! the monoio server it measures.
//!
//! Layers, which the subcommands use and never own (imports run down this list):
//! - [`measure`]: a process's CPU and memory, medians and percentiles, tables, SVG frames.
//! - [`load`]: the HTTP load generator (closed and open loop, HDR histograms, fresh payments).
//! - [`profile`]: the contest's two runs (preview and final) as data.
//! - [`stack`]: starts and stops the local stack (processors, backends, load balancer).
//! - [`contest`]: the contest's k6 test rebuilt (its client, users, checks, the score exactly as
//!   the contest computes it, the report and its chart).
//! - the processor emulator is a crate of its own, `rinha_emulator`.
//!
//! Subcommands, one module each, importing layers only:
//! - [`processor`]: runs the emulator; [`stack::command`]: runs the stack in the foreground.
//! - [`rinha`]: the contest's test and its score sheet.
//! - [`floor`]: the latency the instrument itself adds.
//! - [`lbs`]: rinha-lb against HAProxy and nginx.
//! - [`drivers`]: io_uring against epoll on the same stack.
//! - [`capacity`]: the highest payment rate the stack holds under the compose file's CPU quotas.
//! - [`soak`]: a long run at twice the contest's peak: leaks, lost payments.
//! - [`experiments::recv`]: a one-off kernel experiment, the receive paths (epoll, io_uring
//!   one-shot and multishot) on an echo, with its conclusion in its module doc.

/// Gives a subcommand's `Args` an inherent `from_flags`: its flags parsed from code (tests,
/// other subcommands) as the command line `rinha-bench NAME ...` would parse them.
macro_rules! from_flags {
    ($args:ty, $name:literal) => {
        impl $args {
            #[doc = concat!("Parses `", $name, "` flags from code, e.g. `Args::from_flags([\"--quiet\"])`.")]
            pub fn from_flags<I, T>(flags: I) -> Result<$args, clap::Error>
            where
                I: IntoIterator<Item = T>,
                T: Into<std::ffi::OsString> + Clone,
            {
                $crate::parse_flags($name, flags)
            }
        }
    };
}

pub mod capacity;
pub mod contest;
pub mod drivers;
pub mod experiments;
pub mod floor;
pub mod lbs;
pub mod load;
pub mod logging;
pub mod measure;
pub mod processor;
pub mod profile;
pub mod rinha;
pub mod soak;
pub mod stack;

/// Parses a subcommand's flags from code (tests, other subcommands), as the command line
/// would: `parse_flags::<contest::Args, _, _>("rinha", ["--duration", "12"])`.
pub fn parse_flags<A, I, T>(name: &'static str, flags: I) -> Result<A, clap::Error>
where
    A: clap::Args + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv =
        std::iter::once(std::ffi::OsString::from(name)).chain(flags.into_iter().map(Into::into));
    let mut matches = A::augment_args(clap::Command::new(name)).try_get_matches_from(argv)?;
    A::from_arg_matches_mut(&mut matches)
}
