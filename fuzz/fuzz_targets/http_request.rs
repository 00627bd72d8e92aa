//! Fuzzes the HTTP/1.x request framing (`rinha::http::request::parse`) with arbitrary bytes,
//! as a client could send them, checking what the connection loop relies on:
//! - no panic, whatever the bytes;
//! - a complete request uses at least one byte and no more than it was given, and its path,
//!   query and body are slices of those bytes;
//! - framing is a function of the request's own bytes: parsing exactly the bytes it used
//!   gives the same request again (so a read boundary after it changes nothing);
//! - a partial buffer stays within the limits (8 KiB head + 4 KiB body), else it would be
//!   an error (the read buffer never has to grow).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rinha::http::request::{parse, Parsed, MAX_BODY, MAX_HEADER_BYTES};

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Complete(req, used) => {
            assert!(used > 0 && used <= data.len());
            let mine = &data[..used];
            assert!(within(mine, req.path) && within(mine, req.query) && within(mine, req.body));
            assert!(req.body.len() <= MAX_BODY);
            match parse(mine) {
                Parsed::Complete(again, n) => {
                    assert_eq!(n, used);
                    assert_eq!(again.path, req.path);
                    assert_eq!(again.body, req.body);
                    assert_eq!(again.keep_alive, req.keep_alive);
                }
                other => panic!("its own bytes parse as {other:?}"),
            }
        }
        Parsed::Partial => assert!(data.len() <= MAX_HEADER_BYTES + MAX_BODY + 1024),
        Parsed::Error(_) => {}
    }
});
