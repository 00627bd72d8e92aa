//! The record format: encoding into the append buffer and checked decoding.
//!
//! Encoding only extends a caller-owned `Vec<u8>`, so the append path does not allocate once
//! the buffer has grown to its working size. The layout is in the parent module's doc.

use uuid::Uuid;

use super::{Confirmed, Processor};
use crate::store::Bucket;

/// The first bytes of every journal file; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"RNHJRNL1";

/// Bytes before the kind: `len: u32`, `crc: u32`.
pub const HEADER_LEN: usize = 8;

const KIND_ACCEPTED: u8 = 1;
const KIND_ATTEMPT: u8 = 2;
const KIND_CONFIRMED: u8 = 3;
const KIND_DROPPED: u8 = 4;
const KIND_PURGED: u8 = 5;
const KIND_FOLDED: u8 = 6;

/// One journal event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Accepted {
        id: Uuid,
        cents: u64,
    },
    Attempt {
        id: Uuid,
        processor: Processor,
        requested_at_us: i64,
    },
    Confirmed(Confirmed),
    Dropped {
        id: Uuid,
    },
    Purged,
    /// Settled payments folded by compaction: every payment stamped `at_us`, per processor.
    Folded {
        at_us: i64,
        bucket: Bucket,
    },
}

impl Processor {
    fn to_byte(self) -> u8 {
        match self {
            Processor::Default => 0,
            Processor::Fallback => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Processor> {
        match b {
            0 => Some(Processor::Default),
            1 => Some(Processor::Fallback),
            _ => None,
        }
    }
}

/// Payload size of a kind, or `None` for an unknown kind.
fn payload_len(kind: u8) -> Option<usize> {
    match kind {
        KIND_ACCEPTED => Some(24),
        KIND_ATTEMPT => Some(25),
        KIND_CONFIRMED => Some(33),
        KIND_DROPPED => Some(16),
        KIND_PURGED => Some(0),
        KIND_FOLDED => Some(40),
        _ => None,
    }
}

/// The largest record, header included.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + 1 + 40;

/// Appends `event` as one record to `buf`.
pub fn encode(buf: &mut Vec<u8>, event: &Event) {
    let start = buf.len();
    // Placeholder header, filled once the body length and checksum are known.
    buf.extend_from_slice(&[0; HEADER_LEN]);
    match *event {
        Event::Accepted { id, cents } => {
            buf.push(KIND_ACCEPTED);
            buf.extend_from_slice(id.as_bytes());
            buf.extend_from_slice(&cents.to_le_bytes());
        }
        Event::Attempt {
            id,
            processor,
            requested_at_us,
        } => {
            buf.push(KIND_ATTEMPT);
            buf.extend_from_slice(id.as_bytes());
            buf.push(processor.to_byte());
            buf.extend_from_slice(&requested_at_us.to_le_bytes());
        }
        Event::Confirmed(c) => {
            buf.push(KIND_CONFIRMED);
            buf.extend_from_slice(c.id.as_bytes());
            buf.push(c.processor.to_byte());
            buf.extend_from_slice(&c.requested_at_us.to_le_bytes());
            buf.extend_from_slice(&c.cents.to_le_bytes());
        }
        Event::Dropped { id } => {
            buf.push(KIND_DROPPED);
            buf.extend_from_slice(id.as_bytes());
        }
        Event::Purged => buf.push(KIND_PURGED),
        Event::Folded { at_us, bucket } => {
            buf.push(KIND_FOLDED);
            buf.extend_from_slice(&at_us.to_le_bytes());
            for n in bucket.requests.iter().chain(&bucket.cents) {
                buf.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    let body_len = (buf.len() - start - HEADER_LEN) as u32;
    let len_bytes = body_len.to_le_bytes();
    buf[start..start + 4].copy_from_slice(&len_bytes);
    let crc = checksum(&len_bytes, &buf[start + HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC covers the length too, so a flipped length cannot pass as a shorter record.
fn checksum(len_bytes: &[u8; 4], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(body);
    hasher.finalize()
}

/// Decodes the record at the start of `bytes`: the event and the record's total length, or
/// `None` when the bytes there are not a whole, valid record (short, bad length, bad CRC,
/// unknown kind or processor).
pub fn decode(bytes: &[u8]) -> Option<(Event, usize)> {
    let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let len_bytes: [u8; 4] = [header[0], header[1], header[2], header[3]];
    let body_len = u32::from_le_bytes(len_bytes) as usize;
    // Cheap rejection before touching the body: every kind has one fixed length.
    if body_len == 0 || body_len > MAX_RECORD_LEN - HEADER_LEN {
        return None;
    }
    let body = bytes.get(HEADER_LEN..HEADER_LEN + body_len)?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if checksum(&len_bytes, body) != crc {
        return None;
    }
    let kind = body[0];
    if payload_len(kind)? != body_len - 1 {
        return None;
    }
    let p = &body[1..];
    let id = |p: &[u8]| Uuid::from_slice(&p[..16]).ok();
    let u64_at = |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().unwrap_or([0; 8]));
    let event = match kind {
        KIND_ACCEPTED => Event::Accepted {
            id: id(p)?,
            cents: u64_at(16),
        },
        KIND_ATTEMPT => Event::Attempt {
            id: id(p)?,
            processor: Processor::from_byte(p[16])?,
            requested_at_us: u64_at(17) as i64,
        },
        KIND_CONFIRMED => Event::Confirmed(Confirmed {
            id: id(p)?,
            processor: Processor::from_byte(p[16])?,
            requested_at_us: u64_at(17) as i64,
            cents: u64_at(25),
        }),
        KIND_DROPPED => Event::Dropped { id: id(p)? },
        KIND_PURGED => Event::Purged,
        KIND_FOLDED => Event::Folded {
            at_us: u64_at(0) as i64,
            bucket: Bucket {
                requests: [u64_at(8), u64_at(16)],
                cents: [u64_at(24), u64_at(32)],
            },
        },
        _ => return None,
    };
    Some((event, HEADER_LEN + body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Event> {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        vec![
            Event::Accepted { id, cents: 1990 },
            Event::Attempt {
                id,
                processor: Processor::Fallback,
                requested_at_us: -5,
            },
            Event::Confirmed(Confirmed {
                id,
                processor: Processor::Default,
                requested_at_us: 1_752_582_896_000_000,
                cents: u64::MAX,
            }),
            Event::Dropped { id },
            Event::Purged,
            Event::Folded {
                at_us: 1_752_582_896_001_000,
                bucket: Bucket {
                    requests: [3, 1],
                    cents: [5970, u64::MAX],
                },
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let mut buf = Vec::new();
        for e in every_kind() {
            buf.clear();
            encode(&mut buf, &e);
            assert!(buf.len() <= MAX_RECORD_LEN);
            assert_eq!(decode(&buf), Some((e, buf.len())));
        }
    }

    #[test]
    fn sizes_match_the_documented_layout() {
        let mut buf = Vec::new();
        let sizes: Vec<usize> = every_kind()
            .iter()
            .map(|e| {
                buf.clear();
                encode(&mut buf, e);
                buf.len()
            })
            .collect();
        assert_eq!(sizes, vec![33, 34, 42, 25, 9, 49]);
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let mut buf = Vec::new();
        for e in every_kind() {
            buf.clear();
            encode(&mut buf, &e);
            for byte in 0..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[byte] ^= 1 << bit;
                    assert_eq!(decode(&bad), None, "{e:?} byte {byte} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn every_prefix_is_rejected() {
        let mut buf = Vec::new();
        for e in every_kind() {
            buf.clear();
            encode(&mut buf, &e);
            for cut in 0..buf.len() {
                assert_eq!(decode(&buf[..cut]), None);
            }
        }
    }

    #[test]
    fn bad_processor_byte_is_rejected_even_with_a_good_crc() {
        let id = Uuid::nil();
        let mut buf = Vec::new();
        encode(
            &mut buf,
            &Event::Attempt {
                id,
                processor: Processor::Default,
                requested_at_us: 0,
            },
        );
        buf[HEADER_LEN + 17] = 7;
        let crc = checksum(&buf[..4].try_into().unwrap(), &buf[HEADER_LEN..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&buf), None);
    }
}
