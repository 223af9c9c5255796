//! The ClientHello scanner: a connection's first bytes, any of them. A hello it reads must be
//! read the same with bytes appended after it, and no prefix of what it reads may already be a
//! different hello.
#![no_main]

use egress_policy_core::tls::{Scan, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let first = scan(bytes);
    if let Scan::Hello(hello) = &first {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x01\x00");
        assert_eq!(scan(&longer), Scan::Hello(hello.clone()));
    }
    for end in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
        if let Scan::Hello(other) = scan(&bytes[..end]) {
            assert_eq!(first, Scan::Hello(other), "a prefix read differently");
        }
    }
});
