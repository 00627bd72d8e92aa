//! Fuzzes the `POST /payments` body parser (`rinha::payment::parse`) and the exact decimal
//! conversion behind it with arbitrary bytes: no panic; an accepted body has a positive
//! amount no larger than `MAX_CENTS`; the conversion agrees with itself on a JSON number
//! written back from the cents it returned (`c / 100 . c % 100` is exact, so it must give
//! `c` again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rinha::payment::{decimal_to_cents, parse, MAX_CENTS};

fuzz_target!(|data: &[u8]| {
    if let Ok(payment) = parse(data) {
        assert!(payment.cents >= 1 && payment.cents <= MAX_CENTS);
        let text = format!("{}.{:02}", payment.cents / 100, payment.cents % 100);
        assert_eq!(decimal_to_cents(text.as_bytes()), Ok(payment.cents));
    }
    if let Ok(cents) = decimal_to_cents(data) {
        assert!(cents >= 1 && cents <= MAX_CENTS);
    }
});
