//! Unknown fees are loud: a fee read the processor refuses (a wrong `PROCESSOR_TOKEN`'s 401)
//! is warned about while payments keep flowing, and `PROCESSOR_FEES` sets the fees instead.

mod common;

use std::time::Duration;

use common::*;
use uuid::Uuid;

/// A wrong token: every core warns that it cannot read either fee, says why, and payments
/// are still processed (at the assumed fees).
fn a_wrong_token_is_warned_about(driver: &str) {
    let solo = Solo::start(driver, &[("PROCESSOR_TOKEN", "not-the-token")]);
    let warned = eventually(Duration::from_secs(5), || {
        let log = solo.inst.log_text();
        ["\"default\"", "\"fallback\""].iter().all(|p| {
            log.lines().any(|l| {
                l.contains("WARN")
                    && l.contains("cannot read the processor's fee")
                    && l.contains(p)
                    && l.contains("401")
            })
        })
    });
    assert!(
        warned,
        "no warning for both processors:\n{}",
        solo.inst.log_text()
    );
    for _ in 0..10 {
        assert_eq!(solo.inst.pay(Uuid::new_v4(), "19.90"), 202);
    }
    assert!(eventually(Duration::from_secs(10), || solo
        .procs
        .counts()
        .0
        + solo.procs.counts().1
        == 10));
    assert!(!solo.inst.log_text().contains("processor fee read"));
}
both_drivers!(a_wrong_token_is_warned_about);

/// `PROCESSOR_FEES` sets the fees, nothing is read (no warning despite the wrong token), and
/// routing follows them: told the fallback is the cheaper one, every payment goes there.
fn processor_fees_set_the_fees(driver: &str) {
    let solo = Solo::start(
        driver,
        &[
            ("PROCESSOR_TOKEN", "not-the-token"),
            ("PROCESSOR_FEES", "0.15,0.05"),
        ],
    );
    for _ in 0..10 {
        assert_eq!(solo.inst.pay(Uuid::new_v4(), "19.90"), 202);
    }
    assert!(eventually(Duration::from_secs(10), || solo.procs.counts() == (0, 10)));
    let log = solo.inst.log_text();
    assert!(
        log.contains("processor fees set by PROCESSOR_FEES"),
        "{log}"
    );
    assert!(!log.contains("cannot read the processor's fee"), "{log}");
}
both_drivers!(processor_fees_set_the_fees);

/// The log a file receives is plain text: no terminal styles around its fields, so a collector
/// or a `grep` for `processor="default"` reads what a terminal shows.
#[test]
fn the_log_in_a_file_is_plain_text() {
    let solo = Solo::start("auto", &[("PROCESSOR_TOKEN", "not-the-token")]);
    assert!(
        eventually(Duration::from_secs(5), || solo
            .inst
            .log_text()
            .contains("processor=\"default\"")),
        "no field written as such: {}",
        solo.inst.log_text()
    );
    let log = solo.inst.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "terminal styles in a file: {log:?}"
    );
}
