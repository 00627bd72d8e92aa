//! Reading a journal file back: the magic, every record, and where the good part ends.
//!
//! The records end where zeros begin: the writer preallocates the file, so every journal
//! has a zero tail. A record that does not decode, with bytes other than zeros after it, is
//! a torn tail when no valid record starts anywhere after it (a crash in the middle of a
//! copy leaves a partial record), and corruption otherwise: bytes we cannot explain sit
//! between good ones.

use std::path::Path;

use super::record::{self, MAGIC};
use super::state::LiveState;
use super::JournalError;

/// The outcome of reading one file.
#[derive(Debug)]
pub struct FileScan {
    pub state: LiveState,
    /// Bytes that hold the magic and whole valid records; 0 when the magic itself is torn
    /// (the file was being created).
    pub good_len: u64,
    /// Valid records read.
    pub records: u64,
    /// Whether bytes other than zeros follow the good part (a torn last record).
    pub torn: bool,
}

/// Folds the bytes of the journal at `path` into its live state.
pub fn scan(path: &Path, bytes: &[u8]) -> Result<FileScan, JournalError> {
    let mut scan = FileScan {
        state: LiveState::default(),
        good_len: 0,
        records: 0,
        torn: false,
    };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        let torn_creation = MAGIC.starts_with(bytes) || bytes.iter().all(|&b| b == 0);
        return if torn_creation {
            Ok(scan)
        } else {
            Err(JournalError::BadMagic {
                path: path.to_owned(),
            })
        };
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        match record::decode(&bytes[at..]) {
            Some((event, len)) => {
                scan.state.apply(&event);
                scan.records += 1;
                at += len;
            }
            None if is_zero(&bytes[at..]) => break,
            None => {
                if let Some(next) = next_valid_record(&bytes[at + 1..]) {
                    tracing::debug!(
                        offset = at,
                        next = at + 1 + next,
                        "valid record after bad one"
                    );
                    return Err(JournalError::Corrupt {
                        path: path.to_owned(),
                        offset: at as u64,
                    });
                }
                scan.torn = true;
                break;
            }
        }
    }
    scan.good_len = at as u64;
    Ok(scan)
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Offset of the first position in `bytes` where a whole valid record starts.
fn next_valid_record(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find(|&i| record::decode(&bytes[i..]).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{encode, Event};
    use uuid::Uuid;

    fn file(events: &[Event]) -> Vec<u8> {
        let mut buf = MAGIC.to_vec();
        events.iter().for_each(|e| encode(&mut buf, e));
        buf
    }

    #[test]
    fn empty_and_torn_magic_are_an_empty_journal() {
        let p = Path::new("x");
        for cut in 0..MAGIC.len() {
            let s = scan(p, &MAGIC[..cut]).unwrap();
            assert_eq!((s.good_len, s.records), (0, 0));
        }
        assert_eq!(scan(p, &[0; 40]).unwrap().good_len, 0);
        assert_eq!(scan(p, &MAGIC).unwrap().good_len, 8);
    }

    #[test]
    fn foreign_file_is_bad_magic() {
        let err = scan(Path::new("x"), b"hello world").unwrap_err();
        assert!(matches!(err, JournalError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn trailing_zeros_are_the_end_and_anything_else_a_torn_tail() {
        let mut bytes = file(&[Event::Accepted {
            id: Uuid::from_u128(1),
            cents: 1,
        }]);
        let good = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        let s = scan(Path::new("x"), &bytes).unwrap();
        assert_eq!((s.good_len, s.records, s.torn), (good as u64, 1, false));
        // Half of a record copied before a crash, zeros after it.
        let mut half = Vec::new();
        encode(&mut half, &Event::Purged);
        bytes[good..good + 5].copy_from_slice(&half[..5]);
        let s = scan(Path::new("x"), &bytes).unwrap();
        assert_eq!((s.good_len, s.records, s.torn), (good as u64, 1, true));
    }

    #[test]
    fn garbage_between_records_names_its_offset() {
        let a = Event::Accepted {
            id: Uuid::from_u128(1),
            cents: 1,
        };
        let mut bytes = file(&[a, a, a]);
        // Damage the second record's payload: the third is still valid after it.
        bytes[8 + 33 + 12] ^= 0xff;
        match scan(Path::new("x"), &bytes) {
            Err(JournalError::Corrupt { offset, .. }) => assert_eq!(offset, 8 + 33),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
