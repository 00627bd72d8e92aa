//! Tests of the journal through its files: round trips, torn tails, corruption, and a
//! property test against a deliberately naive in-memory model of the replay rules.

use std::path::Path;

use proptest::prelude::*;
use uuid::Uuid;

use super::record::Event;
use super::{Confirmed, Journal, JournalError, Processor, Replay, SyncMode, Unsettled};

fn write(j: &mut Journal, e: &Event) {
    match *e {
        Event::Accepted { id, cents } => j.accepted(id, cents),
        Event::Attempt {
            id,
            processor,
            requested_at_us,
        } => j.attempt(id, processor, requested_at_us),
        Event::Confirmed(c) => j.confirmed(c.id, c.processor, c.requested_at_us, c.cents),
        Event::Dropped { id } => j.dropped(id),
        Event::Purged => j.purged(),
        Event::Folded { .. } => unreachable!("only compaction writes buckets"),
    }
}

fn reopen(dir: &Path) -> Replay {
    Journal::open(dir, 0, SyncMode::None).unwrap().1
}

fn sorted(mut r: Replay) -> Replay {
    r.confirmed.sort_by_key(|c| c.id);
    r.unsettled.sort_by_key(|u| u.id);
    r
}

/// The replay rules written as plainly as possible: a list, searched linearly.
fn model(events: &[Event]) -> Replay {
    #[derive(Clone, Copy)]
    enum S {
        Unsettled(Unsettled),
        Confirmed(Confirmed),
    }
    let mut payments: Vec<(Uuid, S)> = Vec::new();
    for e in events {
        match *e {
            Event::Accepted { id, cents } => {
                if !payments.iter().any(|p| p.0 == id) {
                    payments.push((
                        id,
                        S::Unsettled(Unsettled {
                            id,
                            cents,
                            pinned: None,
                        }),
                    ));
                }
            }
            Event::Attempt {
                id,
                processor,
                requested_at_us,
            } => {
                for p in payments.iter_mut().filter(|p| p.0 == id) {
                    if let S::Unsettled(u) = &mut p.1 {
                        u.pinned = Some((processor, requested_at_us));
                    }
                }
            }
            Event::Confirmed(c) => {
                let i = payments.iter().position(|p| p.0 == c.id);
                match i.map(|i| payments[i].1) {
                    None => payments.push((c.id, S::Confirmed(c))),
                    Some(S::Unsettled(_)) => payments[i.unwrap()].1 = S::Confirmed(c),
                    Some(S::Confirmed(_)) => {}
                }
            }
            Event::Dropped { id } => {
                payments.retain(|p| !(p.0 == id && matches!(p.1, S::Unsettled(_))));
            }
            Event::Purged => payments.clear(),
            Event::Folded { .. } => unreachable!("not generated"),
        }
    }
    let mut r = Replay::default();
    for (_, s) in payments {
        match s {
            S::Unsettled(u) => r.unsettled.push(u),
            S::Confirmed(c) => r.confirmed.push(c),
        }
    }
    sorted(r)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn payment(n: u128, cents: u64) -> [Event; 3] {
    [
        Event::Accepted { id: id(n), cents },
        Event::Attempt {
            id: id(n),
            processor: Processor::Fallback,
            requested_at_us: n as i64,
        },
        Event::Confirmed(Confirmed {
            id: id(n),
            processor: Processor::Fallback,
            requested_at_us: n as i64,
            cents,
        }),
    ]
}

#[test]
fn every_event_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::Batch).unwrap();
    let mut events = payment(1, 1990).to_vec();
    events.extend([
        Event::Accepted {
            id: id(2),
            cents: 7,
        },
        Event::Attempt {
            id: id(2),
            processor: Processor::Default,
            requested_at_us: -1,
        },
        Event::Accepted {
            id: id(3),
            cents: 8,
        },
        Event::Accepted {
            id: id(4),
            cents: 9,
        },
        Event::Dropped { id: id(4) },
    ]);
    for e in &events {
        write(&mut j, e);
    }
    j.commit().unwrap();
    drop(j);
    let r = reopen(dir.path());
    assert_eq!(
        r.confirmed,
        vec![match events[2] {
            Event::Confirmed(c) => c,
            _ => unreachable!(),
        }]
    );
    assert_eq!(
        r.unsettled,
        vec![
            Unsettled {
                id: id(2),
                cents: 7,
                pinned: Some((Processor::Default, -1))
            },
            Unsettled {
                id: id(3),
                cents: 8,
                pinned: None
            },
        ]
    );
}

/// A purge forgets every payment before it, settled or not (issue 16, item 2): a journal
/// kept between runs must not bring back, after a restart, payments the purge dropped.
#[test]
fn purge_survives_a_restart_and_forgets_unsettled_payments_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
    payment(1, 1).iter().for_each(|e| write(&mut j, e));
    j.accepted(id(2), 2);
    j.attempt(id(2), Processor::Default, 5);
    j.accepted(id(4), 4);
    j.purged();
    payment(3, 3).iter().for_each(|e| write(&mut j, e));
    j.accepted(id(5), 5);
    j.commit().unwrap();
    drop(j);
    let r = reopen(dir.path());
    assert_eq!(
        r.confirmed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![id(3)]
    );
    assert_eq!(
        r.unsettled.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![id(5)]
    );
}

/// Cutting the file anywhere inside its last record replays to the state before that
/// record, and the journal keeps working after the cut.
#[test]
fn torn_tail_at_every_offset_replays_to_the_state_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = super::dir::journal_path(dir.path(), 0);
    let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
    let [accepted, attempt, confirmed] = payment(1, 100);
    write(&mut j, &accepted);
    write(&mut j, &attempt);
    j.commit().unwrap();
    let before_len = j.file_len();
    write(&mut j, &confirmed);
    j.commit().unwrap();
    let full_len = j.file_len();
    drop(j);
    let full = std::fs::read(&path).unwrap();
    let before = model(&[accepted, attempt]);
    for cut in before_len..full_len {
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        let (mut j, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        assert_eq!(sorted(r), before, "cut at {cut}");
        assert_eq!(j.file_len(), before_len, "cut at {cut}");
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes[before_len as usize..].iter().all(|&b| b == 0),
            "the torn bytes are gone: cut at {cut}"
        );
        write(&mut j, &confirmed);
        j.commit().unwrap();
        drop(j);
        assert_eq!(
            sorted(reopen(dir.path())),
            model(&payment(1, 100)),
            "cut at {cut}"
        );
    }
}

/// A crash can cut a multi-record batch anywhere: every cut of the whole file replays to
/// the model of the records that are whole before the cut.
#[test]
fn a_cut_anywhere_replays_to_the_whole_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = super::dir::journal_path(dir.path(), 0);
    let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
    let mut events = Vec::new();
    for n in 0..4 {
        events.extend(payment(n, n as u64 + 1));
    }
    events.insert(5, Event::Purged);
    events.insert(9, Event::Dropped { id: id(3) });
    events.iter().for_each(|e| write(&mut j, e));
    j.commit().unwrap();
    let records_end = j.file_len() as usize;
    drop(j);
    let mut full = std::fs::read(&path).unwrap();
    assert!(full[records_end..].iter().all(|&b| b == 0));
    full.truncate(records_end);
    // Offsets where each record ends.
    let mut ends = vec![8usize];
    for e in &events {
        let mut one = Vec::new();
        super::record::encode(&mut one, e);
        ends.push(ends.last().unwrap() + one.len());
    }
    assert_eq!(*ends.last().unwrap(), full.len());
    for cut in 8..=full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
        assert_eq!(
            sorted(reopen(dir.path())),
            model(&events[..whole]),
            "cut at {cut}"
        );
    }
}

/// `events` written to a fresh journal of core 0 in one commit; returns the file's bytes up
/// to its last record and the offset where each record ends (the magic's end first).
fn written(dir: &Path, events: &[Event]) -> (Vec<u8>, Vec<usize>) {
    let (mut j, _) = Journal::open(dir, 0, SyncMode::None).unwrap();
    events.iter().for_each(|e| write(&mut j, e));
    j.commit().unwrap();
    let len = j.file_len() as usize;
    drop(j);
    let mut ends = vec![8usize];
    for e in events {
        let mut one = Vec::new();
        super::record::encode(&mut one, e);
        ends.push(ends.last().unwrap() + one.len());
    }
    assert_eq!(*ends.last().unwrap(), len);
    let bytes = std::fs::read(super::dir::journal_path(dir, 0)).unwrap();
    (bytes[..len].to_vec(), ends)
}

/// The events whose records lie wholly outside every range of `damaged`.
fn outside(events: &[Event], ends: &[usize], damaged: &[std::ops::Range<usize>]) -> Vec<Event> {
    events
        .iter()
        .enumerate()
        .filter(|&(i, _)| {
            damaged
                .iter()
                .all(|d| ends[i + 1] <= d.start || ends[i] >= d.end)
        })
        .map(|(_, e)| *e)
        .collect()
}

/// Many payments, some settled, some pinned, some not: about 26 KB, seven pages.
fn history() -> Vec<Event> {
    let mut events = Vec::new();
    for n in 0..300u128 {
        let [accepted, attempt, confirmed] = payment(n, n as u64 + 1);
        events.push(accepted);
        if n % 3 != 0 {
            events.push(attempt);
        }
        if n % 3 == 2 {
            events.push(confirmed);
        }
    }
    events
}

/// A host crash writes pages back in any order: a page in the middle can be zeros while
/// later ones hold records (issue 16, item 4). Every record that verifies is kept, the file
/// is rewritten without the hole (the damaged one kept aside), and the journal goes on.
#[test]
fn a_zeroed_page_between_records_is_skipped_and_every_other_record_kept() {
    for page in [0usize, 1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = super::dir::journal_path(dir.path(), 0);
        let events = history();
        let (mut bytes, ends) = written(dir.path(), &events);
        let damaged = page * 4096..(page + 1) * 4096;
        bytes[damaged.clone()].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let kept = model(&outside(&events, &ends, std::slice::from_ref(&damaged)));
        assert!(kept.confirmed.len() > 50 && kept.unsettled.len() > 100);
        let (mut j, r) = Journal::open(dir.path(), 0, SyncMode::None)
            .unwrap_or_else(|e| panic!("page {page}: {e}"));
        assert_eq!(sorted(r), kept, "page {page}");
        j.accepted(id(1000), 5);
        j.commit().unwrap();
        drop(j);
        let mut after = kept.clone();
        after.unsettled.push(Unsettled {
            id: id(1000),
            cents: 5,
            pinned: None,
        });
        assert_eq!(sorted(reopen(dir.path())), sorted(after), "page {page}");
        let scan = super::replay::scan(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert!(!scan.damaged(), "rewritten without the hole");
        let aside = std::fs::read(super::dir::damaged_path(dir.path(), 0)).unwrap();
        assert_eq!(
            aside[..bytes.len()],
            bytes[..],
            "the damaged file is kept aside"
        );
    }
}

/// Bytes that are neither a record nor zeros (a flipped bit, a page of garbage) between good
/// records: skipped like a zero page, the records after them kept.
#[test]
fn garbage_in_the_middle_is_skipped_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = super::dir::journal_path(dir.path(), 0);
    let events = history();
    let (mut bytes, ends) = written(dir.path(), &events);
    // A bit in the payload of the 11th record, and a run of garbage over records 40..45.
    let bit = ends[10] + 20;
    bytes[bit] ^= 0x40;
    let garbage = ends[40] + 3..ends[45] - 2;
    bytes[garbage.clone()].fill(0xa5);
    std::fs::write(&path, &bytes).unwrap();
    let scan = super::replay::scan(&path, &bytes).unwrap();
    let offsets: Vec<u64> = scan.skipped.iter().map(|s| s.offset).collect();
    assert_eq!(offsets, vec![ends[10] as u64, ends[40] as u64]);
    assert!(scan.skipped.iter().all(|s| !s.zeros));
    let kept = outside(&events, &ends, &[bit..bit + 1, garbage]);
    let (_, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
    assert_eq!(sorted(r), model(&kept));
    assert_eq!(sorted(super::replay_dir(dir.path()).unwrap()), model(&kept));
}

#[test]
fn torn_creation_restarts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = super::dir::journal_path(dir.path(), 0);
    std::fs::write(&path, b"RNH").unwrap();
    let (mut j, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
    assert_eq!(r, Replay::default());
    j.accepted(id(1), 1);
    j.commit().unwrap();
    drop(j);
    assert_eq!(reopen(dir.path()).unsettled.len(), 1);
}

#[test]
fn failed_write_leaves_no_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
    j.accepted(id(1), 1);
    j.commit().unwrap();
    j.fail_writes_for_test().unwrap();
    j.accepted(id(2), 2);
    assert!(matches!(j.commit(), Err(JournalError::Io { .. })));
    assert_eq!(j.pending(), 0);
    drop(j);
    let r = reopen(dir.path());
    assert_eq!(
        r.unsettled.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![id(1)]
    );
}

/// `r` as compaction writes it: confirmed payments stamped before the settled horizon in
/// their buckets.
fn folded(mut r: Replay) -> Replay {
    let cutoff = crate::time::now_us() - crate::store::SETTLED_HORIZON.as_micros() as i64;
    let mut buckets = std::collections::BTreeMap::<i64, crate::store::Bucket>::new();
    r.confirmed.retain(|c| {
        if c.requested_at_us < cutoff {
            buckets
                .entry(c.requested_at_us)
                .or_default()
                .count(c.processor, c.cents);
        }
        c.requested_at_us >= cutoff
    });
    r.folded = buckets.into_iter().collect();
    r
}

fn arb_event() -> impl Strategy<Value = Event> {
    // Few ids, so events often meet the same payment in every state.
    let id = (0u128..6).prop_map(Uuid::from_u128);
    let processor = prop_oneof![Just(Processor::Default), Just(Processor::Fallback)];
    prop_oneof![
        4 => (id.clone(), any::<u64>()).prop_map(|(id, cents)| Event::Accepted { id, cents }),
        3 => (id.clone(), processor.clone(), any::<i64>()).prop_map(|(id, processor, t)| {
            Event::Attempt { id, processor, requested_at_us: t }
        }),
        3 => (id.clone(), processor, any::<i64>(), any::<u64>()).prop_map(|(id, processor, t, cents)| {
            Event::Confirmed(Confirmed { id, processor, requested_at_us: t, cents })
        }),
        1 => id.prop_map(|id| Event::Dropped { id }),
        1 => Just(Event::Purged),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Written in arbitrary commit batches, replayed after a restart, and again after a
    /// compaction: always the model's state.
    #[test]
    fn replay_matches_the_model(
        events in proptest::collection::vec(arb_event(), 0..60),
        batch in 1usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        for chunk in events.chunks(batch) {
            chunk.iter().for_each(|e| write(&mut j, e));
            j.commit().unwrap();
        }
        drop(j);
        let expected = model(&events);
        let (mut j, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        prop_assert_eq!(sorted(r), expected.clone());
        j.compact().unwrap();
        drop(j);
        prop_assert_eq!(sorted(reopen(dir.path())), folded(expected));
    }
}

/// `e` about the payment `id + by` instead of `id`.
fn shifted(e: &Event, by: u128) -> Event {
    let id = |id: Uuid| Uuid::from_u128(id.as_u128() + by);
    match *e {
        Event::Accepted { id: i, cents } => Event::Accepted { id: id(i), cents },
        Event::Attempt {
            id: i,
            processor,
            requested_at_us,
        } => Event::Attempt {
            id: id(i),
            processor,
            requested_at_us,
        },
        Event::Confirmed(c) => Event::Confirmed(Confirmed { id: id(c.id), ..c }),
        Event::Dropped { id: i } => Event::Dropped { id: id(i) },
        Event::Purged => Event::Purged,
        Event::Folded { at_us, bucket } => Event::Folded { at_us, bucket },
    }
}

/// `r` with its buckets of one `requestedAt` added up: files compacted more than once hold
/// a millisecond's payments in more than one bucket when some were folded later.
fn merged(mut r: Replay) -> Replay {
    let mut buckets = std::collections::BTreeMap::<i64, crate::store::Bucket>::new();
    for (at, b) in &r.folded {
        buckets.entry(*at).or_default().add(b);
    }
    r.folded = buckets.into_iter().collect();
    sorted(r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Compacted, appended to and compacted again (the second compaction copies the first
    /// one's buckets as they are, `replay::scan_file_for_compaction`): still the model's
    /// state, a purge among the later events included. The later events are about other
    /// payments: a folded payment's id is forgotten by design (docs/reliability.md, "Long
    /// life"), which the model does not know.
    #[test]
    fn compacting_twice_matches_the_model(
        first in proptest::collection::vec(arb_event(), 0..40),
        then in proptest::collection::vec(arb_event(), 0..40),
    ) {
        let then: Vec<Event> = then.iter().map(|e| shifted(e, 100)).collect();
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        first.iter().for_each(|e| write(&mut j, e));
        j.compact().unwrap();
        then.iter().for_each(|e| write(&mut j, e));
        j.compact().unwrap();
        drop(j);
        let all: Vec<Event> = first.iter().chain(&then).copied().collect();
        prop_assert_eq!(merged(reopen(dir.path())), merged(folded(model(&all))));
    }
}
