//! One correlationId, one payment: the same id sent again is answered as before and queues
//! nothing; sent with another amount it is refused; and a copy that reached the other
//! instance is never counted twice, even when a processor loses responses (issue 16, item 1).

mod common;

use std::time::Duration;

use common::*;
use rinha_emulator::Chaos;
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(15);

/// One core (`WORKERS=1`), so every copy reaches the core that holds the id: the set of ids
/// is per core (docs/reliability.md, "One correlationId, one payment").
fn the_same_id_again_is_the_same_payment(driver: &str, journal: Option<&str>) {
    let data = TempDir::new();
    let dir = data.0.display().to_string();
    let mut env = vec![("WORKERS", "1")];
    if let Some(sync) = journal {
        env.extend([("DATA_DIR", dir.as_str()), ("JOURNAL_SYNC", sync)]);
    }
    let solo = Solo::start(driver, &env);
    let id = Uuid::new_v4();
    let pay = |id: &str, amount: &str| {
        solo.inst.post(
            "/payments",
            &format!(r#"{{"correlationId":"{id}","amount":{amount}}}"#),
        )
    };
    assert_eq!(pay(&id.to_string(), "10").0, 202);
    // The same id in other forms and the same amount in other spellings: the same answer.
    let braced = format!("{{{}}}", id.to_string().to_uppercase());
    assert_eq!(pay(&braced, "10.00").0, 202);
    assert_eq!(pay(&id.simple().to_string(), "1e1").0, 202);
    assert_eq!(pay(&format!("urn:uuid:{id}"), "10.001").0, 202);
    // Another amount under the same id is someone's mistake, never a second payment.
    let (status, body) = pay(&id.to_string(), "11");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("another amount"), "{body}");
    assert!(eventually(DRAIN, || solo.procs.counts() == (1, 0)));
    std::thread::sleep(Duration::from_millis(300));
    // Nothing was queued for the copies: the processor saw one request.
    assert_eq!(solo.procs.default.traffic().received, 1);
    assert_eq!(solo.inst.summary(""), ((1, 1000), (0, 0)));
    // After a purge the id is free again (the contest's setup purges before every run).
    assert_eq!(solo.inst.post("/purge-payments", "").0, 200);
    solo.procs.default.purge();
    assert_eq!(pay(&id.to_string(), "11").0, 202);
    assert!(eventually(DRAIN, || solo.procs.counts() == (1, 0)));
}

fn the_same_id_again_is_the_same_payment_in_memory(driver: &str) {
    the_same_id_again_is_the_same_payment(driver, None);
}
both_drivers!(the_same_id_again_is_the_same_payment_in_memory);

fn the_same_id_again_is_the_same_payment_journaled(driver: &str) {
    the_same_id_again_is_the_same_payment(driver, Some("batch"));
}
both_drivers!(the_same_id_again_is_the_same_payment_journaled);

/// The issue's reproduction: every id sent once to each instance while the processors reset
/// every second connection before storing. A copy whose attempt was reset looks its id up
/// and finds the *other* copy's payment: that one is not its own (its `requestedAt` is none
/// of this copy's stamps), so it is dropped, not counted a second time.
fn a_copy_at_the_other_instance_is_counted_once(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::with_chaos(Chaos {
        drop_every: 0,
        reset_every: 2,
    });
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    let n = 30;
    for _ in 0..n {
        let id = Uuid::new_v4();
        assert_eq!(a.pay(id, "19.90"), 202);
        // Copies sent within the same millisecond may share a stamp: the one case a lookup
        // cannot tell apart (docs/reliability.md).
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.pay(id, "19.90"), 202);
    }
    assert!(
        eventually(DRAIN, || {
            let (d, f) = procs.counts();
            d + f == n && {
                let (sd, sf) = a.summary("");
                sd.0 + sf.0 == n
            }
        }),
        "processors {:?}, ours {:?}",
        procs.counts(),
        a.summary("")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.summary(""), procs.window(None, None));
    assert_eq!(b.summary(""), procs.window(None, None));
}
both_drivers!(a_copy_at_the_other_instance_is_counted_once);
