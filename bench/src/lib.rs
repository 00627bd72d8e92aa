//! The instrument every claim of this project is measured with.
//!
//! Layout:
//! - [`processor`]: a faithful emulator of the contest's payment processor (tokio + hyper).
//! - [`rinha`]: the contest's k6 load test rebuilt, with the score exactly as the contest computes it.
//! - [`profile`]: the contest's two runs (preview and final) as data.
//! - [`floor`]: the latency the instrument itself adds.
//! - [`stack`]: starts and stops the local stack (processors, backends, load balancer).
//! - [`lbs`]: rinha-lb against HAProxy and nginx.
//! - [`load`]: the HTTP load generator (closed and open loop, HDR histograms).
//! - [`drivers`]: io_uring against epoll on the same stack.
//! - [`recv`]: the kernel's receive paths (epoll, io_uring one-shot and multishot) on an echo.
//! - [`soak`]: a long run at twice the contest's peak: leaks, lost payments.
//!
//! It shares no code path with the monoio server it measures.

pub mod drivers;
pub mod floor;
pub mod lbs;
pub mod load;
pub mod logging;
pub mod measure;
pub mod processor;
pub mod profile;
pub mod recv;
pub mod rinha;
pub mod soak;
pub mod stack;

/// Parses a subcommand's flags from code (tests, other subcommands), as the command line
/// would: `parse_flags::<rinha::Args, _, _>("rinha", ["--duration", "12"])`.
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
